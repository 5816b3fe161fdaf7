"""Failover outage of vipcast and keepalived, side by side, in a namespace site.

    .venv/bin/python bench/failover.py                      # 1 s, 0.1 s, 0.01 s; 3 runs each
    .venv/bin/python bench/failover.py --quick              # 0.1 s and 0.01 s, 1 run each
    .venv/bin/python bench/failover.py --intervals 0.1 --repeats 5 --rate 2000
    .venv/bin/python bench/failover.py --soak 60            # 10 ms adverts under a CPU hog

Needs root (namespaces) and keepalived. Each run builds a fresh standard site
(remote -> router -> switch -> node1, node2), starts two daemons of one kind (node1
priority 150, node2 priority 100, the same advert interval), and has the remote send
``--rate`` numbered datagrams/s through the router to VIP:8600. Both nodes run a UDP
receiver bound to VIP:8600 with IP_FREEBIND, so whichever node holds the VIP gets the
traffic; arrival times are the kernel's receive timestamps (SO_TIMESTAMPNS). Once the
router's ARP entry for the VIP points at node1 (``ip -json neigh``) the master fails:

* link cut: the switch port of node1 (``p-node1`` in the switch namespace) goes down;
* stop: SIGTERM to node1's daemon (keepalived resigns with priority 0; vipcast hands
  over, keeping the VIP until it hears the new master).

The outage is the longest gap in the merged arrival stream of both receivers; lost is
how many numbered datagrams arrived nowhere.

Made comparable: both send their first gratuitous ARP as they take over. keepalived
keeps its defaults (5 GARPs back to back, vrrp_garp_interval 0) but
``vrrp_garp_master_delay 0`` drops its second block 5 s later (after the run anyway);
vipcast uses its defaults (5 GARPs, request and reply, 50 ms apart). vipcast's election
process asks for SCHED_RR priority 1 by itself (vipcast.daemon.scheduling); keepalived
gets the same with ``vrrp_rt_priority 1``.

Soak: two daemons at 10 ms adverts while two busy loops (which exit by themselves after
the soak) saturate both cores; counts the state changes after convergence (want 0), the
longest gap between the master's adverts as captured at the backup, vipcast's own timer
lateness, and the daemons' CPU use. Bounded: every sender, hog and wait has a count or
a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.lab import oracles  # noqa: E402
from tests.lab.keepalived_peer import KeepalivedPeer, start_peer  # noqa: E402
from tests.lab.nodes import VipcastNode, start_node  # noqa: E402
from tests.lab.wait import wait_until  # noqa: E402

from vipcast.lab import netns  # noqa: E402
from vipcast.lab.process import NsProcess  # noqa: E402
from vipcast.lab.site import VIP, Host, Lab, Site, build_site, node_address, sweep  # noqa: E402

Impl = Literal["vipcast", "keepalived"]
Failure = Literal["link cut", "stop"]
IMPLS: tuple[Impl, ...] = ("vipcast", "keepalived")
FAILURES: tuple[Failure, ...] = ("link cut", "stop")

PORT = 8600
WARMUP = 1.0  # seconds of traffic before the failure
SEQ = struct.Struct("!Q")
TIMESPEC = struct.Struct("=qq")
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003  # outgoing frames reach only ETH_P_ALL packet sockets
KEEPALIVED_GLOBALS = (
    "vrrp_garp_master_delay 0",  # no second GARP block 5 s later (after the run anyway)
    "vrrp_rt_priority 1",  # SCHED_RR 1 for the VRRP process, as vipcast's election asks
)
VIPCAST_VIP = {"garp_count": 5, "garp_interval": 0.05, "garp_form": "both"}  # its defaults
HOG = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass\n"
)


# -- receiving --------------------------------------------------------------------------


def kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            return float(sec) + float(nsec) / 1e9
    return None


class Receiver:
    """UDP on VIP:port in one node, bound before the VIP exists (IP_FREEBIND)."""

    def __init__(self, host: Host, port: int = PORT, vip: str = VIP) -> None:
        self.host = host
        self.sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((vip, port))
        self.sock.settimeout(0.05)
        self.arrivals: list[tuple[float, int]] = []  # (kernel receive time, number)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        space = socket.CMSG_SPACE(TIMESPEC.size)
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(2048, space)
            except TimeoutError:
                continue
            except OSError:
                return
            when = kernel_time(ancillary) or time.time()
            if len(data) >= SEQ.size:
                self.arrivals.append((when, SEQ.unpack_from(data)[0]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class AdvertWatch:
    """Kernel-timestamped VRRP adverts from one source, seen on a node's eth0 (in or out)."""

    def __init__(self, host: Host, source: str) -> None:
        self.src = socket.inet_aton(source)
        self.sock = host.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.sock.bind(("eth0", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.05)
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        space = socket.CMSG_SPACE(TIMESPEC.size)
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(256, space)
            except TimeoutError:
                continue
            except OSError:
                return
            if (
                addr[1] == ETH_P_IP
                and len(data) >= 20
                and data[9] == 112
                and data[12:16] == self.src
            ):
                self.times.append(kernel_time(ancillary) or time.time())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# -- the daemons ------------------------------------------------------------------------


class Daemon(Protocol):
    proc: NsProcess


def start_pair(site: Site, impl: Impl, interval: float) -> tuple[Daemon, Daemon]:
    """node1 (priority 150) master, node2 (100) backup, both at ``interval``."""
    first_election = 4 * interval + 10
    if impl == "vipcast":
        nodes: list[VipcastNode] = []
        for i, priority in ((1, 150), (2, 100)):
            election = {"priority": priority, "advert_interval": interval}
            nodes.append(start_node(site, i, election=election, vip=VIPCAST_VIP))
            nodes[-1].wait_state("MASTER" if i == 1 else "BACKUP", first_election)
        wait_until(
            lambda: nodes[1].status()["master"] == node_address(1), 5, what="node2 hears node1"
        )
        return nodes[0], nodes[1]
    peers: list[KeepalivedPeer] = []
    for i, priority in ((1, 150), (2, 100)):
        peer = start_peer(
            site, i, priority=priority, advert_int=interval, extra_globals=KEEPALIVED_GLOBALS
        )
        peer.wait_state("MASTER" if i == 1 else "BACKUP", first_election)
        peers.append(peer)
    return peers[0], peers[1]


def holders(site: Site) -> set[int]:
    return {i for i, node in enumerate(site.nodes, 1) if VIP in oracles.addresses(node)}


def fail(site: Site, master: Daemon, failure: Failure) -> None:
    if failure == "link cut":
        site.switch.set_link("p-node1", up=False)
    else:
        master.proc.signal(signal.SIGTERM)


def state_changes(text: str, impl: Impl) -> int:
    """State changes a daemon logged (vipcast: ``A -> B (why)``; keepalived: ``Entering``)."""
    if impl == "keepalived":
        return text.count(") Entering ")
    return sum(1 for line in text.splitlines() if "vipcast.election:" in line and " -> " in line)


def cpu_seconds(ns: str) -> float:
    """User + system CPU time of every process in a namespace."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in netns.pids(ns):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# -- one failover -----------------------------------------------------------------------


@dataclass
class Outcome:
    impl: str
    failure: str
    interval: float
    outage_ms: float
    lost: int
    sent: int
    gap_after_failure_ms: float  # where the longest gap began, relative to the failure
    took_over: bool
    floor_ms: float  # the longest gap before the failure: the measurement's noise floor
    after_last_advert_ms: float  # end of the gap - the old master's last advert at node2
    changes_before_failure: int = 0  # state changes between convergence and the failure


def sender(site: Site, count: int, rate: float, vip: str = VIP) -> NsProcess:
    """tests.lab.traffic's bounded sender in the remote host."""
    args = ["-m", "tests.lab.traffic", "send", vip, str(PORT), "--count", str(count)]
    return site.remote.spawn(
        [sys.executable, *args, "--rate", f"{rate:g}"],
        name="sender",
        env={"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
    )


def steady_pacing(proc: NsProcess) -> None:
    """Real-time scheduling for the running sender, so its pacing holds under load.

    Only once it runs: a real-time Python starting up would hold a core for tens of ms
    and starve the daemons (10 ms adverts flap).
    """
    with contextlib.suppress(OSError):
        os.sched_setscheduler(proc.pid, os.SCHED_FIFO, os.sched_param(20))


def failover_once(impl: Impl, failure: Failure, interval: float, rate: float) -> Outcome:
    with Lab() as lab:
        site = build_site(lab)
        master, backup = start_pair(site, impl, interval)
        logs = [d.proc.output() for d in (master, backup)]
        receivers = [Receiver(node) for node in site.nodes]
        watch = AdvertWatch(site.nodes[1], node_address(1))
        after = max(1.0, 6 * interval) + 0.5
        count = int(rate * (WARMUP + after))
        proc = sender(site, count, rate)
        try:
            wait_until(lambda: receivers[0].arrivals, 5, what="traffic reaches node1")
            steady_pacing(proc)
            wait_until(
                lambda: len(receivers[0].arrivals) >= rate * WARMUP * 0.9,
                WARMUP + 5,
                what="a second of traffic at node1",
            )
            node1_mac = oracles.link_mac(site.nodes[0])
            wait_until(
                lambda: oracles.neighbour_mac(site.router, VIP) == node1_mac,
                2,
                what="router's ARP entry for the VIP -> node1",
            )
            if holders(site) != {1}:
                raise RuntimeError(f"before the failure the VIP is on nodes {holders(site)}")
            flaps = sum(
                state_changes(d.proc.output()[len(log) :], impl)
                for d, log in zip((master, backup), logs, strict=True)
            )
            failed_at = time.time()
            fail(site, master, failure)
            proc.wait(count / rate + 10)
            time.sleep(0.2)  # the last datagrams in flight
        finally:
            proc.stop()
            watch.close()
            for r in receivers:
                r.close()
        outcome = assess(impl, failure, interval, receivers, count, failed_at, watch.times)
        outcome.changes_before_failure = flaps
        return outcome


def assess(
    impl: Impl,
    failure: Failure,
    interval: float,
    receivers: Sequence[Receiver],
    sent: int,
    failed_at: float,
    adverts: Sequence[float],
) -> Outcome:
    arrivals = sorted(a for r in receivers for a in r.arrivals)
    gaps = [(b[0] - a[0], a[0]) for a, b in itertools.pairwise(arrivals)]
    gap, began = max(gaps, default=(0.0, failed_at))
    floor = max((g for g, at in gaps if at + g < failed_at), default=0.0)
    took_over = any(t > failed_at for t, _ in receivers[1].arrivals)
    ended = began + gap
    last_advert = max((t for t in adverts if t < ended), default=float("nan"))
    lost = sent - len({n for _, n in arrivals})
    if not lost:  # then the longest gap is the noise floor, not a takeover
        last_advert = float("nan")
    return Outcome(
        impl=impl,
        failure=failure,
        interval=interval,
        outage_ms=gap * 1000,
        lost=lost,
        sent=sent,
        gap_after_failure_ms=(began - failed_at) * 1000,
        took_over=took_over,
        floor_ms=floor * 1000,
        after_last_advert_ms=(ended - last_advert) * 1000,
    )


# -- the table --------------------------------------------------------------------------


def summary(outcomes: Sequence[Outcome]) -> tuple[float, str]:
    """The median outage, and "median [min-max] lost N" as text."""
    if not outcomes:
        return float("nan"), "-"
    outages = [o.outage_ms for o in outcomes]
    med = statistics.median(outages)
    lost = statistics.median(o.lost for o in outcomes)
    flag = "" if all(o.took_over for o in outcomes) else " NO TAKEOVER"
    if any(o.changes_before_failure for o in outcomes):
        flag += " FLAPPED BEFORE THE FAILURE"
    text = f"{med:.1f} [{min(outages):.1f}-{max(outages):.1f}] lost {lost:g}{flag}"
    return med, text


def table(outcomes: Sequence[Outcome], intervals: Sequence[float]) -> str:
    """Markdown: one row per (interval, failure), vipcast and keepalived side by side."""
    lines = [
        "| advert_int | failure | vipcast outage ms | keepalived outage ms | ratio "
        "| takeover: gap end after the last advert ms (vipcast / keepalived) "
        "| noise floor ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for interval in intervals:
        for failure in FAILURES:
            cell = {
                impl: [
                    o
                    for o in outcomes
                    if (o.impl, o.failure, o.interval) == (impl, failure, interval)
                ]
                for impl in IMPLS
            }
            if not any(cell.values()):
                continue
            (v_med, v_text), (k_med, k_text) = summary(cell["vipcast"]), summary(cell["keepalived"])
            ratio = v_med / k_med if k_med else float("nan")
            ends = " / ".join(_median(cell[i], "after_last_advert_ms") for i in IMPLS)
            floor = _median([o for i in IMPLS for o in cell[i]], "floor_ms")
            lines.append(
                f"| {interval:g} s | {failure} | {v_text} | {k_text} | {ratio:.2f} "
                f"| {ends} | {floor} |"
            )
    return "\n".join(lines)


def _median(outcomes: Sequence[Outcome], name: str) -> str:
    values = [v for o in outcomes if not math.isnan(v := getattr(o, name))]
    return f"{statistics.median(values):.1f}" if values else "-"


def run_failovers(args: argparse.Namespace) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for interval in args.intervals:
        for failure in args.failures:
            for repeat in range(args.repeats):
                for impl in args.impls:  # interleaved: drift on the machine hits both alike
                    outcome = failover_once(impl, failure, interval, args.rate)
                    outcomes.append(outcome)
                    print(
                        f"{interval:g} s  {failure:8}  #{repeat + 1}  {describe(outcome)}",
                        flush=True,
                    )
    return outcomes


def describe(o: Outcome) -> str:
    notes = [f"{o.changes_before_failure} STATE CHANGES BEFORE THE FAILURE"] * bool(
        o.changes_before_failure
    ) + ["NO TAKEOVER"] * (not o.took_over)
    return (
        f"{o.impl:10}  outage {o.outage_ms:8.1f} ms  lost {o.lost:5}  "
        f"gap began {o.gap_after_failure_ms:+7.1f} ms after the failure, "
        f"ended {o.after_last_advert_ms:7.1f} ms after the last advert; "
        f"floor {o.floor_ms:4.1f} ms  {'  '.join(notes)}"
    )


# -- soak -------------------------------------------------------------------------------


@dataclass
class SoakResult:
    impl: str
    seconds: float
    changes_after_convergence: int
    max_advert_gap_ms: float  # between the master's adverts, as captured at the backup
    adverts_late: int  # gaps longer than 3 intervals (a backup would be close to taking over)
    lateness_max_ms: list[float]  # vipcast only: status()["timer_lateness_max_ms"] per node
    cpu_percent: list[float]  # per node, of one core, during the soak
    cpu_wait_max_ms: list[float]  # per node: longest wait for a CPU within 100 ms windows
    load: tuple[float, float]  # 1-minute load average at the start and the end


@contextlib.contextmanager
def cpu_hogs(count: int, seconds: float) -> Iterator[None]:
    """``count`` busy loops that exit by themselves after ``seconds``."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG, f"{seconds:g}"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            with contextlib.suppress(ProcessLookupError):
                hog.kill()
            hog.wait()


class SchedWatch:
    """How long the processes of each namespace waited for a CPU, per 100 ms window.

    From ``/proc/PID/schedstat`` (time on CPU, time runnable but waiting, slices): tells
    a daemon that was starved of CPU from one that was busy or blocked.
    """

    def __init__(self, namespaces: Sequence[str]) -> None:
        self.pids = [netns.pids(ns) for ns in namespaces]
        self.worst = [0.0] * len(namespaces)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = [self._waited(p) for p in self.pids]
        while not self._stop.wait(0.1):
            now = [self._waited(p) for p in self.pids]
            for i, (a, b) in enumerate(zip(last, now, strict=True)):
                self.worst[i] = max(self.worst[i], (b - a) / 1e6)
            last = now

    @staticmethod
    def _waited(pids: Sequence[int]) -> int:
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
        return total

    def close(self) -> list[float]:
        self._stop.set()
        self._thread.join(2)
        return self.worst


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def soak_once(impl: Impl, seconds: float, interval: float, hogs: int) -> SoakResult:
    with Lab() as lab:
        site = build_site(lab)
        master, backup = start_pair(site, impl, interval)
        watch = AdvertWatch(site.nodes[1], node_address(1))
        sched = SchedWatch([n.ns for n in site.nodes])
        try:
            logs = [d.proc.output() for d in (master, backup)]
            cpu0 = [cpu_seconds(n.ns) for n in site.nodes]
            load0, start = load_average(), time.time()
            with cpu_hogs(hogs, seconds):
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:  # bounded: the soak's own length
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            elapsed = time.time() - start
            cpu = [
                (cpu_seconds(n.ns) - c) / elapsed * 100
                for n, c in zip(site.nodes, cpu0, strict=True)
            ]
            changes = sum(
                state_changes(d.proc.output()[len(before) :], impl)
                for d, before in zip((master, backup), logs, strict=True)
            )
            lateness = []
            if impl == "vipcast":
                assert isinstance(master, VipcastNode)
                assert isinstance(backup, VipcastNode)
                lateness = [float(n.status()["timer_lateness_max_ms"]) for n in (master, backup)]
        finally:
            waits = sched.close()
            watch.close()
        times = [t for t in watch.times if start <= t <= start + elapsed]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return SoakResult(
            impl=impl,
            seconds=elapsed,
            changes_after_convergence=changes,
            max_advert_gap_ms=max(gaps, default=0.0) * 1000,
            adverts_late=sum(1 for g in gaps if g > 3 * interval),
            lateness_max_ms=lateness,
            cpu_percent=cpu,
            cpu_wait_max_ms=waits,
            load=(load0, load_average()),
        )


def run_soak(args: argparse.Namespace) -> list[SoakResult]:
    results = []
    for repeat in range(args.soak_repeats):
        for impl in args.impls:
            print(
                f"soak #{repeat + 1}: {impl}, {args.soak:g} s at {args.soak_interval:g} s "
                f"adverts, {args.hogs} CPU hogs ...",
                flush=True,
            )
            result = soak_once(impl, args.soak, args.soak_interval, args.hogs)
            results.append(result)
            print(f"  {result}", flush=True)
    print(soak_table(results, args.soak_interval))
    return results


def soak_table(results: Sequence[SoakResult], interval: float) -> str:
    down = 3 * interval * 1000
    lines = [
        "",
        "| daemon | state changes after convergence | longest gap between the master's "
        f"adverts ms | gaps > {down:g} ms | vipcast timer lateness max ms (master, backup) "
        "| CPU % of a core (master, backup) | longest CPU wait per 100 ms (master, backup) "
        "| load avg (start, end) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        late = ", ".join(f"{x:.1f}" for x in r.lateness_max_ms) or "-"
        cpu = ", ".join(f"{x:.1f}" for x in r.cpu_percent)
        wait = ", ".join(f"{x:.1f}" for x in r.cpu_wait_max_ms)
        lines.append(
            f"| {r.impl} | {r.changes_after_convergence} | {r.max_advert_gap_ms:.1f} "
            f"| {r.adverts_late} | {late} | {cpu} | {wait} "
            f"| {r.load[0]:.2f}, {r.load[1]:.2f} |"
        )
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--intervals",
        type=_floats,
        default=[1.0, 0.1, 0.01],
        help="advert intervals in seconds, comma separated (default 1,0.1,0.01)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per cell (default 3)")
    p.add_argument("--rate", type=float, default=1000.0, help="datagrams/s (default 1000)")
    p.add_argument(
        "--failures",
        type=_failures,
        default=list(FAILURES),
        help='"link cut", "stop" or both, comma separated',
    )
    p.add_argument("--impls", type=_impls, default=list(IMPLS), help="vipcast, keepalived or both")
    p.add_argument("--quick", action="store_true", help="0.1 s and 0.01 s, one run each")
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    p.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="soak instead: 10 ms adverts under a CPU hog for SECONDS (max 600)",
    )
    p.add_argument("--soak-interval", type=float, default=0.01)
    p.add_argument("--soak-repeats", type=int, default=1, help="soaks per daemon (default 1)")
    p.add_argument(
        "--hogs",
        type=int,
        default=os.cpu_count() or 2,
        help="busy-loop processes during the soak (default: one per core)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.intervals, args.repeats = [0.1, 0.01], 1
    if not 1 <= args.repeats <= 50 or not 1 <= args.rate <= 20000:
        p.error("--repeats 1..50, --rate 1..20000")
    if args.soak is not None and not 1 <= args.soak <= 600:
        p.error("--soak: 1..600 seconds")
    if not 0 <= args.hogs <= 16 or not 1 <= args.soak_repeats <= 10:
        p.error("--hogs: 0..16, --soak-repeats: 1..10")
    return args


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _impls(text: str) -> list[Impl]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    for x in chosen:
        if x not in IMPLS:
            raise argparse.ArgumentTypeError(f"{x!r}: one of {', '.join(IMPLS)}")
    return chosen  # type: ignore[return-value]


def _failures(text: str) -> list[Failure]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    for x in chosen:
        if x not in FAILURES:
            raise argparse.ArgumentTypeError(f"{x!r}: one of {', '.join(FAILURES)}")
    return chosen  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    sweep()
    started = time.monotonic()
    record: dict[str, object] = {"argv": sys.argv}
    if args.soak is not None:
        record["soak"] = [asdict(r) for r in run_soak(args)]
    else:
        outcomes = run_failovers(args)
        print(
            f"\nrate {args.rate:g}/s, {args.repeats} run(s) per cell: "
            "median [min-max] outage, median lost; ratio = vipcast/keepalived medians\n"
        )
        print(table(outcomes, args.intervals))
        record["failover"] = [asdict(o) for o in outcomes]
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
