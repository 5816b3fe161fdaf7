"""Faults against a two-node site carrying steady traffic, and the run that records them.

:func:`start_cluster` builds the system under test in a site: node1 (priority 150) and
node2 (100), one feed in envelope mode, a recorder app on each node that answers
through the feed's outbound port, a remote sender through the router to the VIP that
keeps the answers, an events recorder per node, the state/VIP sampler, and
an intruder host on the LAN (198.18.0.50) that listens to the cluster's group so it can
forge envelopes that matter (the current session, the next sequence numbers).

Each fault is a function ``(cluster, rng, seconds) -> str`` that applies the fault,
holds it ``seconds`` (the sleep *is* the fault), undoes it, and returns a description;
:meth:`Cluster.inject` times it. :func:`schedule` draws a seeded sequence of faults;
:meth:`Cluster.finish` stops the traffic, waits for the nodes to settle and hands the
records to :mod:`tests.lab.checker`. Every loop is bounded in count and time; traffic
stays inside the lab's namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab import checker, faults, oracles
from tests.lab.nodes import START_TIMEOUT, VipcastNode, start_node
from tests.lab.recorder import PAYLOAD_SIZE, REPLY_EVERY, EventsRecorder, Sampler
from tests.lab.wait import wait_until
from vipcast.core import envelope as env
from vipcast.core.vrrp import codec
from vipcast.core.vrrp.timers import skew_time
from vipcast.daemon import control
from vipcast.lab import etcd
from vipcast.lab.process import NsProcess
from vipcast.lab.site import (
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    REMOTE,
    ROUTER_LAN,
    VIP,
    WITNESS,
    Host,
    Site,
    node_address,
)

FEED_PORT = 8600
APP_PORT = 9600
OUTBOUND_PORT = 9601  # the apps' answers, on each node's loopback
CLUSTER_PORT = 8601
GROUP = "239.255.86.1"
VRRP_GROUP = "224.0.0.18"
VRID = 51
INTRUDER = "198.18.0.50"
ADVERT_INTERVAL = 0.1
PRIORITIES = {1: 150, 2: 100}
RATE = 2000
FEED_NAME = "radar"
SETTLE_TIMEOUT = 15.0
WRITE_TIMEOUT = 30.0  # for an app to write its records (~250,000 of them) on SIGTERM
NACK_FLOOD_RATE = 500  # NACKs per second, bounded by the fault's duration
ADVERT_FORGE_INTERVAL = 0.05

Fn = Callable[["Cluster", random.Random, float], str]


def liveness_bound(advert_interval: float = ADVERT_INTERVAL) -> float:
    """3 x advert_interval + the lowest priority's skew, plus 1 s (property 1)."""
    cs = round(advert_interval * 100)
    return 3 * advert_interval + skew_time(min(PRIORITIES.values()), cs) + 1.0


ETCD_TTL = 2  # s: the etcd campaign's lease (rides out a raft election at 0.5 s timeouts)
ETCD_RENEW = 0.25
ETCD_SWEEP = 0.5  # s: etcd revokes expired leases this often


def etcd_liveness_bound(ttl: float = ETCD_TTL) -> float:
    """A dead or cut-off leader's lease outlives it by up to ``ttl``, etcd's sweep, then a
    campaign and the announcement: plus 1 s (property 1, etcd backend)."""
    return ttl + ETCD_SWEEP + 1.0


# ---------------------------------------------------------------- the cluster


def _nsrun(host: Host, *args: str, stdin: str | None = None, check: bool = True) -> str:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.ns}", "--", *args],
        input=stdin,
        text=True,
        check=check,
        capture_output=True,
    ).stdout


@dataclass
class Spy:
    """The intruder's ear on the cluster's group: the latest DATA envelope's header."""

    host: Host
    latest: env.Data | None = None
    relay: tuple[str, int] | None = None  # where the relay sends from (and hears NACKs)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.sock = self.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", CLUSTER_PORT))
        mreq = socket.inet_aton(GROUP) + socket.inet_aton(INTRUDER)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True, name="spy")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(env.BadEnvelope):
                msg = env.decode_message_untrusted(data)
                if isinstance(msg, env.Data) and not msg.retransmission:
                    self.latest, self.relay = msg, (src[0], src[1])

    def current(self, timeout: float = 5) -> tuple[env.Data, tuple[str, int]]:
        wait_until(lambda: self.latest is not None, timeout, what="the spy heard a DATA")
        assert self.latest is not None
        assert self.relay is not None
        return self.latest, self.relay

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@dataclass
class AppProcess:
    proc: NsProcess
    out: Path

    def result(self) -> list[list[Any]]:
        self.proc.stop(WRITE_TIMEOUT)
        return list(json.loads(self.out.read_text())["records"])


@dataclass
class Cluster:
    site: Site
    intruder: Host
    nodes: dict[int, VipcastNode]
    specs: dict[int, dict[str, Any]]
    apps: dict[int, AppProcess]
    events: dict[int, EventsRecorder]
    sampler: Sampler
    spy: Spy
    sender: NsProcess
    sender_out: Path
    advert_interval: float
    reply_every: int = REPLY_EVERY
    t0: float = 0.0
    faults: list[checker.Fault] = field(default_factory=list)
    restarts: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    liveness: float | None = None  # property 1's bound, if not the VRRP one (etcd)

    def liveness_bound(self) -> float:
        return liveness_bound(self.advert_interval) if self.liveness is None else self.liveness

    # --- who is who

    def name(self, i: int) -> str:
        return f"node{i}"

    def host(self, i: int) -> Host:
        return self.site.nodes[i - 1]

    def master(self) -> int:
        """The node that holds the VIP now (the oracle), else the first that says MASTER."""
        for i in self.nodes:
            if VIP in oracles.addresses(self.host(i)):
                return i
        for i, node in self.nodes.items():
            if node.state() == "MASTER":
                return i
        return 1

    def pick(self, rng: random.Random, who: str) -> int:
        """``who``: master, backup or any."""
        m = self.master()
        if who == "master":
            return m
        if who == "backup":
            return 3 - m
        return rng.choice(sorted(self.nodes))

    # --- faults

    def inject(self, fn: Fn, rng: random.Random, seconds: float) -> str:
        start = time.monotonic()
        what = fn(self, rng, seconds)
        heal = time.monotonic()
        self.faults.append(checker.Fault(what, start, heal))
        return what

    def settle(self) -> None:
        """Let the heal show: the liveness bound plus a margin, with traffic flowing."""
        time.sleep(self.liveness_bound() + 0.5)  # observation time, not sync

    # --- the end

    def finish(self) -> checker.Run:
        """Stop the sender, wait for every node to settle, collect every record."""
        self.sender.signal(signal.SIGTERM)
        self.sender.wait(10)
        end = time.monotonic()
        self._wait_settled()
        finals = {i: self._feed(n) for i, n in self.nodes.items()}
        apps = {i: a.result() for i, a in self.apps.items()}
        self.sampler.close()
        for rec in self.events.values():
            rec.close()
        self.spy.close()
        log = json.loads(self.sender_out.read_text())
        sender = checker.SenderLog(
            int(log["count"]), [(int(n), float(t)) for n, t in log["marks"]], float(log["end"])
        )
        run = self._run(apps, finals, sender, end)
        run.replies = [
            checker.Reply(int(n), str(o), (str(h), int(p)), float(t))
            for n, o, h, p, t in log["replies"]
        ]
        run.reply_source, run.reply_every = (VIP, FEED_PORT), self.reply_every
        return run

    def _feed(self, node: VipcastNode) -> dict[str, Any]:
        try:
            return dict(node.status()["feeds"].get(FEED_NAME, {}))
        except (OSError, ValueError, KeyError):
            return {}

    def _wait_settled(self) -> None:
        """Until no node's delivered + lost has moved for half a second (bounded)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last: tuple[int, ...] = ()
        while time.monotonic() < deadline:
            now = tuple(
                int(f.get("delivered", 0)) + int(f.get("lost", 0))
                for f in (self._feed(n) for n in self.nodes.values())
            )
            if now == last:
                return
            last = now
            time.sleep(0.5)  # the quiet period being measured
        self.notes.append("nodes still delivering when the run was collected")

    def _run(
        self,
        apps: dict[int, list[list[Any]]],
        finals: dict[int, dict[str, Any]],
        sender: checker.SenderLog,
        end: float,
    ) -> checker.Run:
        records = {}
        for i in self.nodes:
            name = self.name(i)
            rec = self.events[i]
            records[name] = checker.NodeRecord(
                name,
                deliveries=[
                    checker.Delivery(int(s), int(q), int(n), float(t)) for s, q, n, t, *_ in apps[i]
                ],
                gaps=[_gap(e) for e in rec.of_kind("gap")],
                splits=[_split(e) for e in rec.of_kind("split_brain")],
                restarts=self.restarts.get(i, []),
                reported_lost=_int_or_none(finals[i].get("lost")),
                reported_duplicates=_int_or_none(finals[i].get("duplicates")),
                recorder_problems=list(rec.problems),
            )
        bound = self.liveness_bound()
        slack = 2 * 0.02 + 0.02  # two sample intervals and the sampler's own lag
        return checker.Run(
            nodes=records,
            faults=list(self.faults),
            sender=sender,
            liveness_bound=bound,
            vip_tolerance=self.advert_interval + slack,
            split_tolerance=2 * self.advert_interval + slack,
            t0=self.t0,
            end=end,
            status_samples=[checker.StatusSample(*s) for s in sorted(self.sampler.status)],
            addr_samples=[checker.AddrSample(*s) for s in self.sampler.addrs],
            arp_samples=[checker.ArpSample(*s) for s in self.sampler.arp],
            macs={self.name(i): oracles.link_mac(self.host(i)) for i in self.nodes},
        )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _gap(event: dict[str, Any]) -> checker.Gap:
    d = event.get("data", {})
    return checker.Gap(
        int(d["session"]),
        int(d["first"]),
        int(d["count"]),
        float(event["at"]),
        str(d.get("reason")),
    )


def _split(event: dict[str, Any]) -> checker.SplitEvent:
    d = event.get("data", {})
    sessions = tuple(int(s) for s in d.get("sessions", ()))
    return checker.SplitEvent(float(event["at"]), sessions, dict(d))


def add_intruder(site: Site) -> Host:
    lab = site.lab
    host = lab.host("intruder")
    lab.plug(site.switch, host, "eth0")
    host.add_address("eth0", f"{INTRUDER}/24")
    host.default_route(ROUTER_LAN)
    return host


def start_cluster(
    site: Site,
    *,
    rate: int = RATE,
    max_seconds: float = 600,
    advert_interval: float = ADVERT_INTERVAL,
    cluster: dict[str, Any] | None = None,
    reply_every: int = REPLY_EVERY,
    named_replies: bool = True,
    sections: Callable[[int], dict[str, dict[str, Any]]] | None = None,
) -> Cluster:
    """The system under test, delivering; returns once both apps' nodes deliver.

    ``sections(i)``: more config tables for node ``i`` (``election``'s keys merged);
    with an ``etcd`` table node1 starts first and leads before node2 starts.
    """
    intruder = add_intruder(site)
    feeds = [
        {
            "name": FEED_NAME,
            "port": FEED_PORT,
            "deliver": [f"127.0.0.1:{APP_PORT}"],
            "mode": "envelope",
            "outbound": f"127.0.0.1:{OUTBOUND_PORT}",
        }
    ]
    cluster_cfg = {"group": f"{GROUP}:{CLUSTER_PORT}", **(cluster or {})}
    specs = {
        i: {
            "election": {"priority": p, "advert_interval": advert_interval},
            "cluster": cluster_cfg,
            "feeds": feeds,
        }
        for i, p in PRIORITIES.items()
    }
    for i, spec in specs.items():
        for name, table in (sections(i) if sections else {}).items():
            spec[name] = {**spec.get(name, {}), **table}
    nodes: dict[int, VipcastNode] = {}
    for i, spec in specs.items():
        nodes[i] = start_node(site, i, **spec)
        if "etcd" in spec and i == 1:  # a race for the key otherwise
            nodes[1].wait_state("MASTER")
    nodes[1].wait_state("MASTER")
    nodes[2].wait_state("BACKUP")
    apps = {i: start_app(site, i, reply_every, named_replies) for i in nodes}
    nodes_ref = nodes  # the dict a restart updates: recorders follow it
    events = {i: EventsRecorder(f"node{i}", lambda i=i: nodes_ref[i].socket) for i in nodes}
    sampler = Sampler(
        {f"node{i}": (lambda i=i: nodes_ref[i].socket, site.nodes[i - 1].ns) for i in nodes},
        site.router.ns,
        VIP,
    )
    spy = Spy(intruder)
    spy.start()
    out = site.lab.workdir / f"sender-{len(site.lab.processes)}.json"
    sender = site.remote.spawn(
        [
            sys.executable,
            "-m",
            "tests.lab.recorder",
            "send",
            VIP,
            str(FEED_PORT),
            "--count",
            str(int(rate * max_seconds)),
            "--rate",
            str(rate),
            "--replies",
            "--out",
            str(out),
        ],
        name="sender",
    )
    c = Cluster(
        site,
        intruder,
        nodes,
        specs,
        apps,
        events,
        sampler,
        spy,
        sender,
        out,
        advert_interval,
        reply_every,
    )
    for i in nodes:
        wait_until(lambda i=i: _delivered(c, i) > rate // 2, 10, what=f"node{i} delivering")
    spy.current()
    c.t0 = time.monotonic()
    return c


def _delivered(c: Cluster, i: int) -> int:
    return int(c._feed(c.nodes[i]).get("delivered", 0))


def start_app(site: Site, i: int, reply_every: int = REPLY_EVERY, named: bool = True) -> AppProcess:
    out = site.lab.workdir / f"app-node{i}-{len(site.lab.processes)}.json"
    args = ["app", str(APP_PORT), "--reply", str(OUTBOUND_PORT), "--name", f"node{i}"]
    args += ["--reply-every", str(reply_every), *([] if named else ["--unnamed"])]
    proc = site.nodes[i - 1].spawn(
        [sys.executable, "-m", "tests.lab.recorder", *args, "--out", str(out)], name="app"
    )
    wait_until(lambda: out.with_suffix(".ready").exists(), 10, what="app ready")
    return AppProcess(proc, out)


# ---------------------------------------------------------------- nftables and bridges


def _nft(host: Host, table: str, family: str, chain: str) -> None:
    _nsrun(host, "nft", "-f", "-", stdin=f"table {family} {table} {{\n{chain}\n}}\n")


def _nft_delete(host: Host, table: str, family: str) -> None:
    _nsrun(host, "nft", "delete", "table", family, table, check=False)


@contextlib.contextmanager
def bridge_cut(site: Site, a: str, b: str) -> Iterator[None]:
    """The switch forwards nothing between hosts ``a`` and ``b`` (both ways)."""
    pa, pb = f"p-{a}"[:15], f"p-{b}"[:15]
    chain = f"""  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "{pa}" oifname "{pb}" drop
    iifname "{pb}" oifname "{pa}" drop
  }}"""
    _nft(site.switch, "vipcast_cut", "bridge", chain)
    try:
        yield
    finally:
        _nft_delete(site.switch, "vipcast_cut", "bridge")


@contextlib.contextmanager
def output_drop(host: Host, match: str) -> Iterator[None]:
    chain = f"""  chain output {{
    type filter hook output priority 0; policy accept;
    {match} drop
  }}"""
    _nft(host, "vipcast_out", "inet", chain)
    try:
        yield
    finally:
        _nft_delete(host, "vipcast_out", "inet")


# ---------------------------------------------------------------- raw sends


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_packet(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0x4000,
        ttl,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + payload


def udp_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    return ip_packet(src[0], dst[0], socket.IPPROTO_UDP, udp, ttl=1 if _mcast(dst[0]) else 64)


def _mcast(address: str) -> bool:
    return ipaddress.ip_address(address).is_multicast


def send_raw(host: Host, packets: list[tuple[bytes, str]]) -> None:
    """IP packets (with their own headers, any source) from ``host``."""
    sock = host.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for packet, dst in packets:
            sock.sendto(packet, (dst, 0))
    finally:
        sock.close()


def send_udp(host: Host, payload: bytes, dsts: list[tuple[str, int]], src_port: int = 0) -> None:
    sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("0.0.0.0", src_port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(INTRUDER))
        for dst in dsts:
            sock.sendto(payload, dst)
    finally:
        sock.close()


# ---------------------------------------------------------------- forged envelopes

FORGED = ("end_of_session", "heartbeat_far_ahead", "data_newer_session", "unavailable_ahead")
FAR_AHEAD = 10**12


def forged_envelope(kind: str, data: env.Data) -> bytes:
    """An envelope that, believed, would derail receivers following ``data``'s session."""
    last = data.first_seq + len(data.datagrams) - 1
    feed, node, session = data.feed, data.node, data.session
    if kind == "end_of_session":
        return env.encode_end_of_session(env.EndOfSession(feed, node, session, last, 0))
    if kind == "heartbeat_far_ahead":
        return env.encode_heartbeat(env.Heartbeat(feed, node, session, FAR_AHEAD))
    if kind == "unavailable_ahead":
        return env.encode_unavailable(env.Unavailable(feed, node, session, last + 1, 5000))
    if kind == "data_newer_session":
        payload = struct.pack("!Q", checker.FOREIGN_NUMBER) + bytes(PAYLOAD_SIZE - 8)
        gram = env.Datagram((REMOTE, 40000), (VIP, FEED_PORT), payload, time.time_ns())
        newer = session + (1000 << 16)
        return env.encode_data(env.Data(feed, node, newer, 1, (gram,)))
    raise ValueError(f"unknown forged envelope {kind!r}")


def forge(c: Cluster, kind: str, spoof: bool) -> str:
    """One forged envelope to the group and to each node: from the intruder, or spoofed
    from the relay's own address and port."""
    data, relay = c.spy.current()
    payload = forged_envelope(kind, data)
    dsts = [(GROUP, CLUSTER_PORT)] + [(node_address(i), CLUSTER_PORT) for i in c.nodes]
    if spoof:
        send_raw(c.intruder, [(udp_packet(relay, d, payload), d[0]) for d in dsts])
    else:
        send_udp(c.intruder, payload, dsts)
    who = f"spoofed from {relay[0]}:{relay[1]}" if spoof else f"from {INTRUDER}"
    return f"forged {kind} ({who})"


def forged_envelope_fault(kind: str, spoof: bool) -> Fn:
    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        return forge(c, kind, spoof)

    return fault


# ---------------------------------------------------------------- NACKs


def nack_for(data: env.Data, count: int = 4096) -> bytes:
    last = data.first_seq + len(data.datagrams) - 1
    first = max(1, last - count + 1)
    return env.encode_nack(env.Nack(data.feed, 0, data.session, first, last - first + 1))


class Listener:
    """Counts the bytes that come back to one UDP socket (the NACK's source)."""

    def __init__(self, host: Host, address: str) -> None:
        self.sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.bytes = self.datagrams = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.bytes += len(data)
            self.datagrams += 1

    def send(self, payload: bytes, dst: tuple[str, int]) -> None:
        self.sock.sendto(payload, dst)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def nack_exchange(c: Cluster, origin: str, count: int, wait: float = 1.0) -> tuple[int, int]:
    """Send ``count`` NACKs from ``origin`` (remote or intruder); (bytes sent, bytes back)."""
    data, relay = c.spy.current()
    host, address = (c.site.remote, REMOTE) if origin == "remote" else (c.intruder, INTRUDER)
    nack = nack_for(data)
    listener = Listener(host, address)
    try:
        for _ in range(count):
            listener.send(nack, relay)
            if count > 1:
                time.sleep(1 / NACK_FLOOD_RATE)  # the flood's pacing, bounded by count
        time.sleep(wait)  # time for answers to arrive: what is measured
    finally:
        listener.close()
    return len(nack) * count, listener.bytes


def nack_flood(origin: str) -> Fn:
    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        n = max(1, int(seconds * NACK_FLOOD_RATE))
        sent, back = nack_exchange(c, origin, n, wait=0.2)
        return f"NACK flood from {origin} ({n} NACKs, {sent} B sent, {back} B back)"

    return fault


def spoofed_nack_flood(c: Cluster, rng: random.Random, seconds: float) -> str:
    """NACKs claiming to come from the backup: the relay's answers go to that member."""
    data, relay = c.spy.current()
    victim = node_address(c.pick(rng, "backup"))
    n = max(1, int(seconds * NACK_FLOOD_RATE))
    packet = udp_packet((victim, CLUSTER_PORT), relay, nack_for(data))
    end = time.monotonic() + seconds
    for _ in range(n):
        send_raw(c.intruder, [(packet, relay[0])])
        if time.monotonic() > end:
            break
        time.sleep(1 / NACK_FLOOD_RATE)  # pacing
    return f"spoofed NACK flood as {victim} ({n} NACKs)"


# ---------------------------------------------------------------- adverts


def forged_adverts(spoof_master: bool) -> Fn:
    """VRRP adverts for our VRID: priority 255 from the intruder, or priority 0 spoofed
    from the master's address (it resigns, says the forger)."""

    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        m = c.master()
        src = node_address(m) if spoof_master else INTRUDER
        prio = 0 if spoof_master else 255
        cs = round(c.advert_interval * 100)
        advert = codec.Advert(
            vrid=VRID, priority=prio, max_advert_int_cs=cs, addresses=(ipaddress.ip_address(VIP),)
        )
        payload = codec.encode_advert(
            advert, src=ipaddress.ip_address(src), dst=ipaddress.ip_address(VRRP_GROUP)
        )
        packet = ip_packet(src, VRRP_GROUP, 112, payload, ttl=255)
        end = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < end and sent < 10_000:
            send_raw(c.intruder, [(packet, VRRP_GROUP)])
            sent += 1
            time.sleep(ADVERT_FORGE_INTERVAL)  # the forger's pacing
        return f"forged adverts priority {prio} from {src} for {seconds:.1f}s ({sent})"

    return fault


# ---------------------------------------------------------------- process faults


def _dataplane_pid(node: VipcastNode) -> int:
    with open(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children") as f:
        return int(f.read().split()[0])


def freeze(who: str, part: str) -> Fn:
    """SIGSTOP of a node's main process, its data plane, or its whole process group."""

    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        i = c.pick(rng, who)
        node = c.nodes[i]
        if part == "both":
            node.proc.kill_group(signal.SIGSTOP)
            try:
                time.sleep(seconds)  # the freeze
            finally:
                node.proc.kill_group(signal.SIGCONT)
        else:
            pid = node.proc.pid if part == "main" else _dataplane_pid(node)
            with faults.stalled(pid):
                time.sleep(seconds)  # the freeze
        return f"freeze {who} node{i} ({part}) {seconds:.1f}s"

    return fault


STARTING = (None, "INITIALIZE")  # states of a node not yet up: no answer, or starting


def kill_restart(who: str) -> Fn:
    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        i = c.pick(rng, who)
        node = c.nodes[i]
        killed = time.monotonic()
        node.proc.kill_group(signal.SIGKILL)
        node.proc.wait(5)
        time.sleep(seconds)  # down time
        c.nodes[i] = node = start_node(c.site, i, **c.specs[i])
        # up once started (systemd's READY=1): past INITIALIZE, its data plane running
        wait_until(lambda: node.state() not in STARTING, START_TIMEOUT, what=f"node{i} up")
        c.restarts.setdefault(i, []).append((killed, time.monotonic()))
        return f"SIGKILL {who} node{i}, restarted after {seconds:.1f}s"

    return fault


# ---------------------------------------------------------------- network faults


def partition_nodes(c: Cluster, rng: random.Random, seconds: float) -> str:
    with bridge_cut(c.site, "node1", "node2"):
        time.sleep(seconds)  # the partition
    return f"partition node1 | node2 {seconds:.1f}s"


def partition_router(who: str) -> Fn:
    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        i = c.pick(rng, who)
        with bridge_cut(c.site, f"node{i}", "router"):
            time.sleep(seconds)  # the partition
        return f"partition {who} node{i} | router {seconds:.1f}s"

    return fault


def _link_down_for(host: Host, seconds: float) -> None:
    """``host``'s eth0, already down, stays down ``seconds``; then up, its route back."""
    try:
        time.sleep(seconds)  # the cut
    finally:
        host.set_link("eth0", up=True)
        _nsrun(host, "ip", "route", "replace", "default", "via", ROUTER_LAN, check=False)


def link_cut(who: str) -> Fn:
    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        i = c.pick(rng, who)
        host = c.host(i)
        host.set_link("eth0", up=False)
        _link_down_for(host, seconds)
        return f"link cut {who} node{i} {seconds:.1f}s"

    return fault


TAIL_SECONDS = 0.05  # the master's envelopes dropped before its link goes down


def lost_tail_then_link_cut(c: Cluster, rng: random.Random, seconds: float) -> str:
    """The master's last envelopes never leave it, then its link goes down.

    Its own apps had that tail; the backup heard nothing of it, and the master's end
    of session goes into a dead link. After the heal the backup must learn the tail
    (and report it), not lose it silently.
    """
    i = c.master()
    host = c.host(i)
    with output_drop(host, f"udp dport {CLUSTER_PORT}"):
        time.sleep(TAIL_SECONDS)  # relayed to its own apps only
        host.set_link("eth0", up=False)
    _link_down_for(host, seconds)
    return f"tail lost, then link cut master node{i} {seconds:.1f}s"


@contextlib.contextmanager
def lan_loss(host: Host, percent: int) -> Iterator[None]:
    """Drop ``percent`` % of what enters ``host`` from the LAN (eth0; never loopback,
    which is how the node delivers to its apps)."""
    chain = f"""  chain input {{
    type filter hook input priority -300; policy accept;
    iifname "eth0" numgen random mod 100 < {percent} drop
  }}"""
    _nft(host, "vipcast_lanloss", "inet", chain)
    try:
        yield
    finally:
        _nft_delete(host, "vipcast_lanloss", "inet")


def random_loss(who: str, percent: tuple[int, int] = (5, 20)) -> Fn:
    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        pct = rng.randint(*percent)
        targets = sorted(c.nodes) if who == "both" else [c.pick(rng, who)]
        with contextlib.ExitStack() as stack:
            for i in targets:
                stack.enter_context(lan_loss(c.host(i), pct))
            time.sleep(seconds)  # the loss period
        return f"{pct}% LAN loss into {','.join(f'node{i}' for i in targets)} {seconds:.1f}s"

    return fault


def handover(c: Cluster, rng: random.Random, seconds: float) -> str:
    """A planned handover (not a fault: the baseline every campaign must pass)."""
    i = c.master()
    answer = control.request(c.nodes[i].socket, "handover", timeout=20, wait=10)
    wait_until(lambda: c.nodes[3 - i].state() == "MASTER", 5, what="the successor MASTER")
    return f"planned handover from node{i} ({answer.get('message') or answer.get('error')})"


def send_failure(who: str, what: str) -> Fn:
    """Adverts (ip protocol 112) or envelopes (udp dport 8601) cannot leave a node."""
    match = "ip protocol 112" if what == "adverts" else f"udp dport {CLUSTER_PORT}"

    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        i = c.pick(rng, who)
        with output_drop(c.host(i), match):
            time.sleep(seconds)  # the failure
        return f"{what} cannot leave {who} node{i} {seconds:.1f}s"

    return fault


def vip_removed(c: Cluster, rng: random.Random, seconds: float) -> str:
    i = c.master()
    _nsrun(c.host(i), "ip", "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)
    return f"VIP removed by hand from node{i}"


@contextlib.contextmanager
def etcd_cut(host: Host, peers: list[str]) -> Iterator[None]:
    """``host`` exchanges no etcd traffic (client and peer ports) with ``peers``; the
    rest (the router, the tee) flows."""
    ports = f"{{ {ETCD_CLIENT_PORT}, {ETCD_PEER_PORT} }}"
    them = f"{{ {', '.join(peers)} }}"
    chains = f"""  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {them} tcp sport {ports} drop
    ip saddr {them} tcp dport {ports} drop
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr {them} tcp dport {ports} drop
    ip daddr {them} tcp sport {ports} drop
  }}"""
    _nft(host, "vipcast_etcdcut", "inet", chains)
    try:
        yield
    finally:
        _nft_delete(host, "vipcast_etcdcut", "inet")


def partition_etcd(who: str) -> Fn:
    """A node cut off from the etcd majority (the other node's member and the witness's),
    not from the router nor the other node's envelopes."""

    def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
        i = c.pick(rng, who)
        with etcd_cut(c.host(i), [node_address(3 - i), WITNESS]):
            time.sleep(seconds)  # the partition
        return f"partition {who} node{i} | etcd majority {seconds:.1f}s"

    return fault


# ---------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Kind:
    name: str
    fn: Fn
    seconds: tuple[float, float]  # how long the fault is held, drawn uniformly


CATALOGUE: tuple[Kind, ...] = (
    *(
        Kind(f"freeze {w} {p}", freeze(w, p), (0.3, 2.0))
        for w in ("master", "backup")
        for p in ("main", "dataplane", "both")
    ),
    Kind("kill master", kill_restart("master"), (0.2, 1.0)),
    Kind("kill backup", kill_restart("backup"), (0.2, 1.0)),
    Kind("partition nodes", partition_nodes, (0.5, 3.0)),
    Kind("partition master|router", partition_router("master"), (0.5, 2.0)),
    Kind("partition backup|router", partition_router("backup"), (0.5, 2.0)),
    Kind("link cut master", link_cut("master"), (0.3, 2.0)),
    Kind("link cut backup", link_cut("backup"), (0.3, 2.0)),
    Kind("loss any", random_loss("any"), (1.0, 3.0)),
    Kind("loss both", random_loss("both"), (1.0, 3.0)),
    Kind("adverts blocked master", send_failure("master", "adverts"), (0.5, 2.0)),
    Kind("envelopes blocked master", send_failure("master", "envelopes"), (0.5, 2.0)),
    Kind("envelopes blocked backup", send_failure("backup", "envelopes"), (0.5, 2.0)),
    Kind("VIP removed", vip_removed, (0.0, 0.0)),
    Kind("handover", handover, (0.0, 0.0)),
    *(
        Kind(f"forged {k}{' spoofed' if s else ''}", forged_envelope_fault(k, s), (0.0, 0.0))
        for k in FORGED
        for s in (False, True)
    ),
    Kind("forged adverts 255", forged_adverts(spoof_master=False), (0.3, 1.0)),
    Kind("forged adverts 0 spoofed", forged_adverts(spoof_master=True), (0.3, 1.0)),
    Kind("NACK flood LAN", nack_flood("intruder"), (0.2, 1.0)),
    Kind("NACK flood outside", nack_flood("remote"), (0.2, 1.0)),
    Kind("NACK flood spoofed", spoofed_nack_flood, (0.2, 1.0)),
)

# VRRP's own faults, which mean nothing to the etcd backend (no adverts are sent or heard)
NOT_ETCD = ("adverts blocked master", "forged adverts 255", "forged adverts 0 spoofed")
ETCD_CATALOGUE: tuple[Kind, ...] = (
    *(k for k in CATALOGUE if k.name not in NOT_ETCD),
    Kind("partition master|etcd", partition_etcd("master"), (0.5, 3.0)),
    Kind("partition backup|etcd", partition_etcd("backup"), (0.5, 2.0)),
)

BY_NAME = {k.name: k for k in (*CATALOGUE, *ETCD_CATALOGUE)}
BACKENDS = ("vrrp", "etcd")


def schedule(
    seed: int, count: int, kinds: tuple[Kind, ...] = CATALOGUE
) -> list[tuple[Kind, float]]:
    """``count`` faults drawn with ``seed``: (kind, seconds held)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.choice(kinds)
        lo, hi = kind.seconds
        out.append((kind, round(rng.uniform(lo, hi), 2)))
    return out


def run_schedule(
    c: Cluster, seed: int, plan: list[tuple[Kind, float]], budget: float
) -> list[tuple[str, str, float]]:
    """Apply each planned fault then let it heal; stop early when ``budget`` seconds pass.

    Returns (kind name, description, heal time) of the faults applied.
    """
    rng = random.Random(seed + 1)
    done = []
    deadline = time.monotonic() + budget
    for kind, seconds in plan:
        if time.monotonic() + seconds + c.liveness_bound() > deadline:
            break
        what = c.inject(kind.fn, rng, seconds)
        done.append((kind.name, what, c.faults[-1].heal))
        c.settle()
    return done


def campaign(
    site: Site,
    seed: int,
    seconds: float,
    kinds: tuple[Kind, ...] | None = None,
    backend: str = "vrrp",
) -> tuple[checker.Run, list[tuple[str, str, float]], list[checker.Violation]]:
    """One seeded campaign in ``site``: faults for ``seconds``, then the checker's verdict.

    ``backend`` "etcd": a 3-member etcd in the site (raft leader on the witness), the
    nodes on it, :data:`ETCD_CATALOGUE` by default, and no duplicate reply excused
    (fencing: two leaders never overlap). Returns the records, the faults applied (kind,
    description, heal time), and the violations found.
    """
    c = start_etcd_cluster(site) if backend == "etcd" else start_cluster(site)
    default = ETCD_CATALOGUE if backend == "etcd" else CATALOGUE
    plan = schedule(seed, max(1, int(seconds)), kinds or default)  # the budget stops it
    done = run_schedule(c, seed, plan, seconds)
    run = c.finish()
    run.excuse_split_replies = backend != "etcd"
    return run, done, checker.check(run)


def start_etcd_cluster(site: Site) -> Cluster:
    """:func:`start_cluster` on the etcd backend: three etcd members (node1, node2, the
    witness, raft leader), each node listing its own member first."""
    members = etcd.build_etcd_cluster(site, raft_leader="witness")

    def sections(i: int) -> dict[str, dict[str, Any]]:
        settings = {
            "endpoints": members.endpoints(first=f"node{i}"),
            "lease_ttl": ETCD_TTL,
            "renew_interval": ETCD_RENEW,
        }
        return {"election": {"backend": "etcd"}, "etcd": settings}

    c = start_cluster(site, sections=sections)
    c.liveness = etcd_liveness_bound()
    return c


# ---------------------------------------------------------------- role faults (issue 13)


@dataclass
class RoleCluster:
    """Two nodes with a critical master role, a notify hook and a weighted track, each
    switched to failing by a flag file the faults create (``flag(i, what)``)."""

    site: Site
    nodes: dict[int, VipcastNode]
    extra: dict[int, str]
    hold_time: float
    dir: Path
    t0: float = 0.0
    faults: list[checker.Fault] = field(default_factory=list)

    def flag(self, i: int, what: str) -> Path:
        return self.dir / f"{what}-node{i}"

    def pids(self, i: int, what: str) -> list[int]:
        path = self.dir / f"{what}-node{i}.pids"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def master(self) -> int | None:
        states = {i: n.state() for i, n in self.nodes.items()}
        return next((i for i, s in states.items() if s == "MASTER"), None)

    def restart(self, i: int) -> None:
        self.nodes[i] = start_node(self.site, i, extra=self.extra[i], **_role_spec(i, self))


def _role_spec(i: int, c: RoleCluster) -> dict[str, Any]:
    return {"election": {"priority": PRIORITIES[i]}, "health": {"hold_time": c.hold_time}}


def start_role_cluster(site: Site, hold_time: float = 2.0) -> RoleCluster:
    d = site.lab.workdir / "roles"
    d.mkdir()
    c = RoleCluster(site, {}, {}, hold_time, d)
    for i in PRIORITIES:
        crash, hang, fail = c.flag(i, "crash"), c.flag(i, "hang"), c.flag(i, "track")
        role = (
            f"echo $$ >> {d}/role-node{i}.pids; "
            f"while :; do [ -e {crash} ] && exit 1; sleep 0.05; done"
        )
        hook = (
            f"[ -e {hang} ] || exit 0; sleep 60 & echo $! >> {d}/hook-node{i}.pids; "
            f"echo $$ >> {d}/hook-node{i}.pids; sleep 60"
        )
        c.extra[i] = (
            f"notify = {json.dumps(['sh', '-c', hook, 'hook'])}\nnotify_timeout = 1.0\n"
            '[[role]]\nname = "watch"\nwhen = "master"\ncritical = true\n'
            f"command = {json.dumps(['sh', '-c', role])}\n"
            '[[track]]\nname = "feed"\nkind = "script"\n'
            f"target = {json.dumps(f'test ! -e {fail}')}\n"
            "interval = 0.2\nfall = 1\nrise = 1\nweight = -100\n"
        )
        c.nodes[i] = start_node(site, i, extra=c.extra[i], **_role_spec(i, c))
    c.nodes[1].wait_state("MASTER")
    c.nodes[2].wait_state("BACKUP")
    c.t0 = time.monotonic()
    return c


def _held(c: RoleCluster, name: str, flags: list[Path], seconds: float) -> None:
    start = time.monotonic()
    for f in flags:
        f.touch()
    time.sleep(seconds)  # the fault's duration
    for f in flags:
        f.unlink()
    c.faults.append(checker.Fault(name, start, time.monotonic()))


def role_crash_loop(c: RoleCluster, both: bool, seconds: float) -> str:
    m = c.master() or 1
    who = sorted(c.nodes) if both else [m]
    _held(c, f"role crash loop on {who}", [c.flag(i, "crash") for i in who], seconds)
    return f"role crash loop on node(s) {who} for {seconds:g} s"


def hook_hangs_and_forks(c: RoleCluster, seconds: float) -> str:
    """Hooks that hang and fork, through a handover (two transitions per node)."""
    start = time.monotonic()
    for i in c.nodes:
        c.flag(i, "hang").touch()
    m = c.master() or 1
    with contextlib.suppress(OSError, RuntimeError):
        control.request(c.nodes[m].socket, "handover", timeout=10, wait=5)
    time.sleep(seconds)  # the hooks hang this long (their timeout is 1 s)
    for i in c.nodes:
        c.flag(i, "hang").unlink()
    c.faults.append(checker.Fault("hooks hang and fork", start, time.monotonic()))
    return f"hooks hang and fork across a handover, {seconds:g} s"


def sighup_during_failing_track(c: RoleCluster, seconds: float) -> str:
    m = c.master() or 1
    start = time.monotonic()
    c.flag(m, "track").touch()
    wait_until(lambda: c.nodes[m].status()["priority"] < PRIORITIES[m], 5, what="penalty")
    c.nodes[m].proc.signal(signal.SIGHUP)
    time.sleep(seconds)  # the track keeps failing after the reload
    kept = c.nodes[m].status()["priority"] < PRIORITIES[m]
    c.flag(m, "track").unlink()
    name = f"SIGHUP node{m} during a failing track"
    c.faults.append(checker.Fault(name, start, time.monotonic()))
    assert kept, f"{name}: the reload dropped the track's penalty"
    return f"SIGHUP node{m} while its weighted track fails, {seconds:g} s"


def sigkill_with_roles(c: RoleCluster, seconds: float) -> str:
    m = c.master() or 1
    start = time.monotonic()
    c.nodes[m].proc.signal(signal.SIGKILL)  # the daemon alone: its guard and roles remain
    c.nodes[m].proc.wait(5)
    time.sleep(seconds)  # down time
    c.restart(m)
    c.faults.append(checker.Fault(f"SIGKILL node{m} with roles", start, time.monotonic()))
    return f"SIGKILL node{m}'s daemon with its roles running, restarted after {seconds:g} s"


def live(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] not in ("Z", "X"):
                out.append(pid)
    return out


class RoleSampler:
    """Samples live master-role copies and who is master, every 20 ms, in a thread."""

    def __init__(self, c: RoleCluster) -> None:
        self.c = c
        self.samples: list[checker.RoleSample] = []
        self.masters: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            copies = {f"node{i}": live(self.c.pids(i, "role")) for i in self.c.nodes}
            now = time.monotonic()
            self.samples.append(checker.RoleSample(now, {"watch": copies}))
            self.masters.append((now, self.c.master()))

    def close(self) -> list[float]:
        """Stop; the takeovers: when the master changed from one node to the other."""
        self._stop.set()
        self._thread.join(5)
        takeovers, last = [], None
        for at, m in self.masters:
            if m is not None and m != last:
                if last is not None:
                    takeovers.append(at)
                last = m
        return takeovers
