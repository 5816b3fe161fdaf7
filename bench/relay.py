"""Relay throughput: vipcast against a plain Python recvfrom/sendto relay, in a namespace site.

    sudo .venv/bin/python bench/relay.py [--quick] [--rates 10000,50000] [--seconds 3]
                                         [--mixed] [--only vipcast|plain] [--retries 2]
                                         [--keyed [--rounds 3]]

The standard site (remote centre, router, switch, node1, node2). The remote centre
sends datagrams to VIP:8600 at a series of rates, each for a fixed time
(``relay_peers.py send``: its own process, paced, 64-byte datagrams by UDP GSO, or
with ``--mixed`` 40..400-byte ones by ``sendmmsg``), numbered and stamped with
CLOCK_MONOTONIC (one clock for every namespace). On each node an unchanged app
(``relay_peers.py app``, its own process, a plain UDP socket on port 9600) counts
what arrives and the latency (receive - send). Two relays are measured in turn, on
the same site:

* plain: the samplicator model in Python (one ``recvfrom``, one ``sendto`` per
  receiver) on node1, which is given the VIP by hand; copies go to 127.0.0.1:9600
  and to node2's LAN address.
* vipcast: ``vipcast run`` on both nodes (node1 master), multicast envelopes on the
  LAN, payload delivery to 127.0.0.1:9600 on each node.

Per rate: the rate the sender achieved, datagrams delivered at each node (loss %),
the higher p99 latency of the two apps, CPU per datagram of the relay processes
(utime + stime from /proc/PID/stat; for vipcast the data-plane processes of both
nodes: the main processes only elect), the whole machine's CPU per datagram
(/proc/stat: sender, router, relays and apps), and the kernel's drops per socket
(/proc/PID/net/udp). A direct path (remote -> the app at node1's own address, no
relay) gives the latency each relay adds.

With ``--keyed`` the plain relay is not run: vipcast runs on the same site without and
with a cluster key (``[cluster.auth]``, a key file: every envelope and NACK carries the
auth block and the tag, every receiver checks it), ``--rounds`` times each in A B B A
order, and the data planes' CPU per datagram is printed side by side per rate, the
medians over the rounds: the relay's (the master's data plane; the issue's bound: keyed
within 15 %) and both nodes' (the receivers check every tag).

Headlines: the highest rate delivered without loss to both apps and kept up with
(p99 under 50 ms: not by filling socket buffers that a longer step would overflow),
and the highest rate without loss in a step.

The machine may be shared: before each step the bench waits (at most a minute) for
other processes to calm down, and runs a step again (``--retries``) when they used
more than a tenth of a core meanwhile. Bounded: a fixed list of steps of fixed
length; every process stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.lab.nodes import VipcastNode, start_node  # noqa: E402

from vipcast import keys  # noqa: E402
from vipcast.lab.netns import NETNS_DIR  # noqa: E402
from vipcast.lab.site import VIP, Host, Lab, Site, build_site, node_address  # noqa: E402

PEERS = str(Path(__file__).resolve().parent / "relay_peers.py")
RATES = (10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 120_000)
QUICK_RATES = (10_000, 40_000, 70_000, 100_000)
RELAY_PORT, APP_PORT = 8600, 9600
GROUP = "239.255.86.1:8601"
SETTLE = 0.5  # seconds after a step before counting (queues drain, gaps are recovered)
MAX_SETTLE = 5.0  # then counted again every 0.3 s until the counts stop growing
KEEPS_UP_US = 50_000  # p99 latency under 50 ms at both apps: the relay keeps up
OTHERS_NOTED = 0.05  # other processes' CPU (cores) worth a note beside a step
OTHERS_ACCEPTED = 0.10  # more than this while sending, and the step is run again
TICKS = 100  # clock ticks per second of /proc/PID/stat (USER_HZ)


# ---------------------------------------------------------------- processes in namespaces


class Peer:
    """A ``relay_peers.py`` role in a host's namespace, spoken to over stdin/stdout."""

    def __init__(self, host: Host, args: Sequence[str]) -> None:
        self.host = host
        self.popen = subprocess.Popen(
            ["nsenter", f"--net={NETNS_DIR / host.ns}", "--", sys.executable, PEERS, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def line(self, timeout: float = 30) -> dict[str, Any]:
        """The next JSON line it prints."""
        stdout = self._pipe(self.popen.stdout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = stdout.readline()
            if text:
                return dict(json.loads(text))
            if self.popen.poll() is not None:
                break
        raise RuntimeError(f"{self.host.name}: peer gave no answer ({self.popen.args})")

    def ask(self, command: str) -> dict[str, Any]:
        stdin = self._pipe(self.popen.stdin)
        stdin.write(command + "\n")
        stdin.flush()
        return self.line()

    @staticmethod
    def _pipe(pipe: IO[str] | None) -> IO[str]:
        assert pipe is not None
        return pipe

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(3)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def send(
    site: Site, dst: str, rate: int, seconds: float, step: int, *, latency: bool, mixed: bool
) -> float:
    """Run the sender in the remote centre; returns the rate it achieved."""
    args = ["send", "--dst", dst, "--rate", str(rate), "--seconds", str(seconds)]
    args += ["--step", str(step)] + (["--latency"] if latency else [])
    args += ["--mixed"] if mixed else []
    sender = Peer(site.remote, args)
    try:
        result = sender.line(timeout=seconds + 10)
    finally:
        sender.stop()
    return float(result["rate"])


# ---------------------------------------------------------------- /proc readings


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes, in seconds."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / TICKS


def socket_drops(pid: int) -> dict[int, int]:
    """Datagrams the kernel dropped per local UDP port, in the namespace of ``pid``."""
    drops: dict[int, int] = {}
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        port = int(fields[1].split(":")[1], 16)
        drops[port] = drops.get(port, 0) + int(fields[-1])
    return drops


def machine_busy() -> float:
    """CPU seconds all cores spent working so far (/proc/stat; idle, iowait, steal not)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / TICKS


def outside_cpu(site: Site) -> float:
    """CPU seconds used so far by processes outside the site's namespaces (not this one).

    The site shares the machine's cores: other work running meanwhile shows here,
    and the figures of that step are not to be trusted.
    """
    inside = {os.stat(NETNS_DIR / h.ns).st_ino for h in site.lab.hosts.values()}
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino in inside:
                continue
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def dataplane_pids(node: VipcastNode) -> list[int]:
    """The data-plane children of a ``vipcast run`` process."""
    found = []
    for task in Path(f"/proc/{node.proc.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"vipcast.daemon.dataplane" in cmdline:
                found.append(int(child))
    if not found:
        raise RuntimeError(f"node{node.index}: no data-plane process")
    return found


# ---------------------------------------------------------------- measuring


@dataclass
class Step:
    rate: int
    achieved: float = 0.0
    sent: int = 0
    delivered: list[int] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    cpu: float = 0.0  # seconds, relay processes
    cpu_master: float = 0.0  # seconds, of those the master node's (vipcast: its data plane)
    drops: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)  # at node1's app, us
    latency2: dict[str, float] = field(default_factory=dict)  # at node2's app, us
    worst_p99: float = 0.0  # the higher p99 latency of the two apps, us
    stalls: list[list[list[int]]] = field(default_factory=list)  # per app: late runs
    others: float = 0.0  # cores used by processes outside the site while sending
    machine: float = 0.0  # seconds, all CPUs busy (sender, router, relays, apps, others)

    @property
    def lossless(self) -> bool:
        return all(d >= self.sent for d in self.delivered) and not any(self.repeats)

    @property
    def sustained(self) -> bool:
        """Lossless, and not by buffering a backlog that a longer step would overflow."""
        return self.lossless and self.worst_p99 < KEEPS_UP_US

    def loss(self, i: int) -> float:
        return 100.0 * (self.sent - self.delivered[i]) / self.sent if self.sent else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.sent * 1e6 if self.sent else 0.0

    @property
    def master_us(self) -> float:
        return self.cpu_master / self.sent * 1e6 if self.sent else 0.0

    @property
    def machine_us(self) -> float:
        return self.machine / self.sent * 1e6 if self.sent else 0.0


@dataclass
class Bench:
    site: Site
    apps: list[Peer]
    seconds: float
    step_ids: Iterator[int]
    mixed: bool = False  # datagrams of 40..400 bytes rather than 64
    retries: int = 2  # runs again of a step other work disturbed
    quiet_wait: float = 60.0  # seconds to wait for a quiet machine before a step

    def measure(
        self,
        dst: str,
        rate: int,
        relay_pids: Sequence[int],
        *,
        latency: bool = False,
        master_pids: Sequence[int] = (),
    ) -> Step:
        step_id = next(self.step_ids)
        before = self._drops()
        cpu0, master0 = cpu_seconds(relay_pids), cpu_seconds(master_pids)
        others, machine0 = outside_cpu(self.site), machine_busy()
        achieved = send(
            self.site, dst, rate, self.seconds, step_id, latency=latency, mixed=self.mixed
        )
        busy = outside_cpu(self.site) - others
        reports = self._settled(step_id)
        cpu = cpu_seconds(relay_pids) - cpu0
        step_master = cpu_seconds(master_pids) - master0
        machine = machine_busy() - machine0
        after = self._drops()
        step = Step(rate, achieved, int(rate * self.seconds))
        step.delivered = [int(r["received"]) for r in reports]
        step.repeats = [int(r["repeats"]) for r in reports]
        step.cpu, step.cpu_master, step.machine = cpu, step_master, machine
        step.drops = {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
        step.latency = dict(reports[0].get("latency_us", {}))
        step.latency2 = dict(reports[1].get("latency_us", {}))
        step.stalls = [list(r.get("stalls", [])) for r in reports]
        step.worst_p99 = max(float(r.get("latency_us", {}).get("p99", 0.0)) for r in reports)
        step.others = busy / self.seconds
        return step

    def _settled(self, step_id: int) -> list[dict[str, Any]]:
        """The apps' counts once they stop growing (a relay may still drain a backlog)."""
        time.sleep(SETTLE)
        reports = [app.ask(f"report {step_id}") for app in self.apps]
        deadline = time.monotonic() + MAX_SETTLE
        while time.monotonic() < deadline:
            time.sleep(0.3)
            again = [app.ask(f"report {step_id}") for app in self.apps]
            if [r["received"] for r in again] == [r["received"] for r in reports]:
                break
            reports = again
        return reports

    def _drops(self) -> dict[str, int]:
        out = {}
        for i, app in enumerate(self.apps, 1):
            for port, n in socket_drops(app.pid).items():
                out[f"node{i}:{port}"] = n
        return out

    def series(
        self,
        dst: str,
        rates: Sequence[int],
        pids: Sequence[int],
        name: str,
        master_pids: Sequence[int] = (),
    ) -> list[Step]:
        """One step per rate; a step disturbed by other work on the machine is run again."""
        steps = []
        for rate in rates:
            for attempt in range(1 + self.retries):
                self.wait_quiet()
                step = self.measure(dst, rate, pids, latency=True, master_pids=master_pids)
                print(f"  {name:8} {progress(step)}", flush=True)
                if step.others <= OTHERS_ACCEPTED:
                    break
                if attempt < self.retries:
                    print(f"  {name:8} other work on the machine: step run again", flush=True)
            steps.append(step)
        return steps

    def wait_quiet(self) -> None:
        """Wait (at most QUIET_WAIT seconds) until processes outside the site are idle."""
        deadline = time.monotonic() + self.quiet_wait
        while True:
            before = outside_cpu(self.site)
            time.sleep(0.5)
            if (outside_cpu(self.site) - before) / 0.5 <= OTHERS_ACCEPTED:
                return
            if time.monotonic() > deadline:
                print("  (the machine stays busy with other work: measuring anyway)", flush=True)
                return


def progress(step: Step) -> str:
    delivered = " ".join(f"{d:>8}" for d in step.delivered)
    drops = " ".join(f"{k}={v}" for k, v in sorted(step.drops.items()))
    lat = step.latency
    lat_text = f" p50 {lat['p50']:.0f} p99 {lat['p99']:.0f} us" if lat else ""
    late = [run for runs in step.stalls for run in runs]
    if late:  # arrivals over 5 ms late: how many runs, how long the worst
        lat_text += f" late runs {len(late)} (worst {max(r[2] for r in late) / 1000:.1f} ms)"
    return (
        f"{step.rate:>7}/s sent {step.achieved:>9,.0f}/s delivered {delivered} of {step.sent}"
        f"  cpu {step.cpu_us:5.1f} us/dgram (machine {step.machine_us:5.1f}){lat_text}  {drops}"
        + (f"  (others busy: {step.others:.0%} of a core)" if step.others > OTHERS_NOTED else "")
    )


def plain_relay(bench: Bench, rates: Sequence[int]) -> list[Step]:
    """The reference: the samplicator model on node1, which holds the VIP by hand."""
    node1 = bench.site.nodes[0]
    node1.add_address("eth0", f"{VIP}/24")
    to = [f"127.0.0.1:{APP_PORT}", f"{node_address(2)}:{APP_PORT}"]
    args = ["plain", "--listen", f"{VIP}:{RELAY_PORT}"]
    relay = Peer(node1, args + [a for t in to for a in ("--to", t)])
    try:
        relay.line()
        warm_up(bench, f"{VIP}:{RELAY_PORT}")
        return bench.series(f"{VIP}:{RELAY_PORT}", rates, [relay.pid], "plain")
    finally:
        relay.stop()
        with node1.ipr() as ipr:
            ipr.addr("del", index=node1.ifindex("eth0"), address=VIP, prefixlen=24)


def key_section(site: Site) -> str:
    """A [cluster.auth] with a fresh key file in the lab's workdir."""
    path = site.lab.workdir / "bench-cluster.key"
    if not path.exists():
        keys.write_key_file(path, keys.new_key())
    return f'[cluster.auth]\nkeys = {{ 1 = "file:{path}" }}\nactive_key = 1\n'


def vipcast_relay(bench: Bench, rates: Sequence[int], *, keyed: bool = False) -> list[Step]:
    site = bench.site
    feeds = [
        {"name": "bench", "port": RELAY_PORT, "deliver": [f"127.0.0.1:{APP_PORT}"]},
    ]
    cluster = {"group": GROUP}
    extra = key_section(site) if keyed else ""
    name = "vipcast, key" if keyed else "vipcast"
    n1 = start_node(site, 1, election={"priority": 150}, cluster=cluster, feeds=feeds, extra=extra)
    n2 = start_node(site, 2, cluster=cluster, feeds=feeds, extra=extra)
    try:
        n1.wait_state("MASTER")
        n2.wait_state("BACKUP")
        master = dataplane_pids(n1)
        pids = master + dataplane_pids(n2)
        warm_up(bench, f"{VIP}:{RELAY_PORT}")
        before = [n.status()["feeds"]["bench"] for n in (n1, n2)]
        steps = bench.series(f"{VIP}:{RELAY_PORT}", rates, pids, name, master)
        after = [n.status()["feeds"]["bench"] for n in (n1, n2)]
        for i, (b, a) in enumerate(zip(before, after, strict=True), 1):
            moved = {k: a[k] - b[k] for k in a if k != "session" and a[k] != b[k]}
            print(f"  {name} node{i} counters over the series: {moved}")
        if keyed:
            refused = [n.status()["feeds"].get("rejected_envelopes") for n in (n1, n2)]
            print(f"  rejected envelopes: {refused}")
    finally:
        for node in (n2, n1):
            node.proc.stop()
    return steps


def keyed_rounds(
    bench: Bench, rates: Sequence[int], rounds: int
) -> tuple[list[list[Step]], list[list[Step]]]:
    """vipcast without and with a key, ``rounds`` times each, in A B B A order.

    On a shared machine other work comes and goes; alternating the two, and taking
    the median over the rounds, keeps a burst of it from landing on one side only.
    """
    unkeyed: list[list[Step]] = []
    keyed: list[list[Step]] = []
    for r in range(rounds):
        for with_key in (False, True) if r % 2 == 0 else (True, False):
            (keyed if with_key else unkeyed).append(vipcast_relay(bench, rates, keyed=with_key))
    return unkeyed, keyed


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def keyed_table(unkeyed: Sequence[Sequence[Step]], keyed: Sequence[Sequence[Step]]) -> str:
    """Data-plane CPU per datagram without and with a cluster key, per rate: the medians
    over the rounds of the relay (the master's data plane) and of both nodes'."""
    rows = [
        "| rate/s | delivered (no key / key) | relay, no key | relay, key | key / no key "
        "| both nodes, no key | both nodes, key | key / no key |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, rate in enumerate(unkeyed[0]):
        plain, signed = [run[i] for run in unkeyed], [run[i] for run in keyed]
        p_relay, k_relay = (_median([s.master_us for s in ss]) for ss in (plain, signed))
        p_both, k_both = (_median([s.cpu_us for s in ss]) for ss in (plain, signed))
        delivered = [min(min(s.delivered) for s in ss) for ss in (plain, signed)]
        rows.append(
            f"| {rate.rate:,} | {delivered[0]:,} / {delivered[1]:,} of {rate.sent:,} "
            f"| {p_relay:.2f} | {k_relay:.2f} | {k_relay / p_relay:.3f} "
            f"| {p_both:.2f} | {k_both:.2f} | {k_both / p_both:.3f} |"
        )
    return "\n".join(rows)


def rounds_lines(unkeyed: Sequence[Sequence[Step]], keyed: Sequence[Sequence[Step]]) -> str:
    """Every round's relay figure, so the spread the medians hide is in the record."""
    lines = []
    for i, step in enumerate(unkeyed[0]):
        plain = ", ".join(f"{run[i].master_us:.2f}" for run in unkeyed)
        signed = ", ".join(f"{run[i].master_us:.2f}" for run in keyed)
        lines.append(f"  {step.rate:,}/s relay us/dgram, no key: {plain}; key: {signed}")
    return "\n".join(lines)


def warm_up(bench: Bench, dst: str) -> None:
    """A short burst first: ARP resolved, sockets and sequencers past their first datagram."""
    send(bench.site, dst, 2000, 0.5, next(bench.step_ids), latency=False, mixed=bench.mixed)
    time.sleep(0.3)


# ---------------------------------------------------------------- report


def headline(steps: Sequence[Step], *, sustained: bool = True) -> int:
    """The highest rate delivered without loss (and, if ``sustained``, kept up with)."""
    ok = [s.rate for s in steps if (s.sustained if sustained else s.lossless)]
    return max(ok, default=0)


def table(vip: Sequence[Step], plain: Sequence[Step]) -> str:
    rows = [
        "| rate/s | sent/s "
        "| vipcast node1 / node2 | loss % | p99 ms | CPU us/dgram | machine us/dgram "
        "| plain node1 / node2 | loss % | p99 ms | CPU us/dgram | machine us/dgram "
        "| delivered v/p | CPU v/p |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v, p in zip(vip, plain, strict=True):
        ratio = min(v.delivered) / min(p.delivered) if min(p.delivered) else 0.0
        cpu_ratio = v.cpu_us / p.cpu_us if p.cpu_us else 0.0
        rows.append(
            f"| {v.rate:,} | {min(v.achieved, p.achieved):,.0f} {cells(v)} {cells(p)} "
            f"| {ratio:.2f} | {cpu_ratio:.2f} |"
        )
    return "\n".join(rows)


def cells(step: Step) -> str:
    loss = max(step.loss(0), step.loss(1))
    return (
        f"| {step.delivered[0]:,} / {step.delivered[1]:,} | {loss:.2f} "
        f"| {step.worst_p99 / 1e3:.1f} | {step.cpu_us:.1f} | {step.machine_us:.1f}"
    )


def latency_lines(direct: Step, vip: Step, plain: Step) -> str:
    """Latency at the first rate; "added" is over the direct path to node1's app."""
    lines = [
        f"latency at {direct.rate:,}/s (us, receive - send at the app):",
        f"  {'path':16} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'max':>7}"
        f" {'added p50':>10} {'added p99':>10}",
    ]
    rows = [("direct, node1", direct.latency)]
    for name, step in (("vipcast", vip), ("plain", plain)):
        rows += [(f"{name}, node1", step.latency), (f"{name}, node2", step.latency2)]
    base = direct.latency
    for name, lat in rows:
        if not lat:
            continue
        lines.append(
            f"  {name:16} {lat['p50']:7.0f} {lat['p90']:7.0f} {lat['p99']:7.0f} "
            f"{lat['p999']:7.0f} {lat['max']:7.0f} {lat['p50'] - base['p50']:10.0f} "
            f"{lat['p99'] - base['p99']:10.0f}"
        )
    return "\n".join(lines)


def report(direct: Sequence[Step], vip: Sequence[Step], plain: Sequence[Step]) -> None:
    print()
    print(table(vip, plain))
    print()
    print(latency_lines(direct[0], vip[0], plain[0]))
    print()
    for sustained, what in ((True, "and kept up with (p99 < 50 ms)"), (False, "in a step")):
        hv, hp = headline(vip, sustained=sustained), headline(plain, sustained=sustained)
        ratio = f" (x{hv / hp:.2f})" if hp else ""
        print(f"highest rate delivered without loss to both apps {what}:", end=" ")
        print(f"vipcast {hv:,}/s, plain {hp:,}/s{ratio}")


# ---------------------------------------------------------------- main


@contextlib.contextmanager
def apps_on(site: Site) -> Iterator[list[Peer]]:
    apps = [Peer(node, ["app", "--port", str(APP_PORT)]) for node in site.nodes]
    try:
        for app in apps:
            app.line()
        yield apps
    finally:
        for app in apps:
            app.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"rates {QUICK_RATES}, 1.5 s each")
    parser.add_argument("--rates", help="comma-separated datagrams/s (first: latency)")
    parser.add_argument("--seconds", type=float, help="length of each step (default 3)")
    parser.add_argument("--only", choices=("vipcast", "plain"), help="measure one relay")
    parser.add_argument("--mixed", action="store_true", help="datagrams of 40..400 bytes")
    parser.add_argument("--retries", type=int, default=2, help="runs again of a disturbed step")
    parser.add_argument("--keyed", action="store_true", help="vipcast without and with a key")
    parser.add_argument("--rounds", type=int, default=3, help="--keyed: runs of each (medians)")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="seconds to wait for a quiet machine"
    )
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")] if args.rates else None
    rates = rates or list(QUICK_RATES if args.quick else RATES)
    seconds = args.seconds or (1.5 if args.quick else 3.0)
    sizes = "40..400-byte (mixed)" if args.mixed else "64-byte"
    print(f"rates {rates}, {seconds} s each, {sizes} datagrams", flush=True)
    with Lab() as lab:
        site = build_site(lab)
        with apps_on(site) as apps:
            bench = Bench(site, apps, seconds, iter(range(1, 1 << 16)), args.mixed, args.retries)
            bench.quiet_wait = args.quiet_wait
            direct_dst = f"{node_address(1)}:{APP_PORT}"
            warm_up(bench, direct_dst)
            direct = bench.series(direct_dst, rates[:1], [], "direct")
            if args.keyed:
                unkeyed, keyed = keyed_rounds(bench, rates, max(1, args.rounds))
                print()
                print(rounds_lines(unkeyed, keyed))
                print()
                print(keyed_table(unkeyed, keyed))
                return 0
            plain = [] if args.only == "vipcast" else plain_relay(bench, rates)
            vip = [] if args.only == "plain" else vipcast_relay(bench, rates)
            if plain and vip:
                report(direct, vip, plain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
