"""An in-memory LAN of VirtualRouters with a fake clock and seeded packet fates.

Modelled on trio's ``testing/_fake_net.py``: every advert a node sends goes
through ``encode_advert``, then meets a fate drawn from a seeded
``random.Random`` per receiver (deliver, drop, duplicate, delay, corrupt), and
is read back with ``decode_advert_untrusted``. Time only moves in
``run_until``; events due at the same instant run in rounds (all due packets,
then all due timers) so that simultaneous timers really are simultaneous.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vipcast.core.vrrp.codec import (
    VRRP_GROUP_V4,
    Advert,
    BadPacket,
    ChecksumForm,
    decode_advert_untrusted,
    encode_advert,
)
from vipcast.core.vrrp.machine import (
    Action,
    AddVips,
    Announce,
    RemoveVips,
    RouterParams,
    SendAdvert,
    State,
    Transition,
    VirtualRouter,
)

VIPS = (IPv4Address("198.18.0.100"),)


@dataclass(frozen=True)
class Fates:
    """Per-receiver odds for each advert; ``latency`` and ``max_delay`` in seconds."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    corrupt: float = 0.0
    latency: float = 0.0
    max_delay: float = 0.0


LOSSLESS = Fates()


@dataclass
class Node:
    """One host on the LAN: its router and what it holds."""

    router: VirtualRouter
    checksum: ChecksumForm = "pseudo-header"
    alive: bool = True
    holds_vips: bool = False
    announcements: int = 0
    transitions: list[Transition] = field(default_factory=list)

    @property
    def address(self) -> IPv4Address:
        address = self.router.params.primary_address
        assert isinstance(address, IPv4Address)
        return address

    def became_master_at(self, after: float = 0.0) -> float:
        """When this node first entered MASTER at or after ``after`` (ValueError: never)."""
        return min(t.now for t in self.transitions if t.new is State.MASTER and t.now >= after)


@dataclass(frozen=True)
class Snapshot:
    """Who was master and who held the VIPs at the end of an instant."""

    now: float
    masters: frozenset[IPv4Address]
    holders: frozenset[IPv4Address]


@dataclass(order=True)
class _InFlight:
    arrival: float
    seq: int
    src: IPv4Address = field(compare=False)
    dst: IPv4Address = field(compare=False)
    data: bytes = field(compare=False)


class FakeLan:
    """A broadcast segment joining some nodes, driven by a fake clock."""

    def __init__(self, seed: int, fates: Fates = LOSSLESS) -> None:
        self.rng = random.Random(seed)
        self.fates = fates
        self.now = 0.0
        self.nodes: dict[IPv4Address, Node] = {}
        self.history: list[Snapshot] = []
        self.deliveries: list[tuple[float, IPv4Address, IPv4Address, int]] = []
        self.rejected: dict[str, int] = {}
        self._groups: list[frozenset[IPv4Address]] | None = None
        self._queue: list[_InFlight] = []
        self._seq = itertools.count()

    # -- building and steering

    def add(self, params: RouterParams, checksum: ChecksumForm = "pseudo-header") -> Node:
        node = Node(VirtualRouter(params), checksum)
        self.nodes[node.address] = node
        return node

    def start(self, *nodes: Node) -> None:
        for node in nodes or self.nodes.values():
            self._carry_out(node, node.router.start(self.now))
        self._record()

    def kill(self, node: Node) -> None:
        """The host dies: no shutdown advert, its VIPs go with it."""
        node.alive = False
        node.holds_vips = False
        self._record()

    def shutdown(self, node: Node) -> None:
        self._carry_out(node, node.router.shutdown(self.now))
        self._record()

    def partition(self, *groups: Iterable[Node]) -> None:
        self._groups = [frozenset(n.address for n in group) for group in groups]

    def heal(self) -> None:
        self._groups = None

    # -- observing

    def masters(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.alive and n.router.state is State.MASTER]

    def last_delivery(self, src: Node, dst: Node, before: float) -> float:
        """When ``dst`` last received a non-zero advert from ``src`` before ``before``."""
        return max(
            t
            for t, s, d, priority in self.deliveries
            if s == src.address and d == dst.address and priority and t < before
        )

    # -- running

    def run_until(self, end: float) -> None:
        while (instant := self._next_instant()) is not None and instant <= end:
            self.now = instant
            self._run_instant()
            self._record()
        self.now = end

    def _next_instant(self) -> float | None:
        times = [n.router.next_timer() for n in self.nodes.values() if n.alive]
        if self._queue:
            times.append(self._queue[0].arrival)
        return min((t for t in times if t is not None), default=None)

    def _run_instant(self) -> None:
        while True:
            packets = self._due_packets()
            timers = self._due_timers()
            if not packets and not timers:
                return
            for packet in packets:
                self._deliver(packet)
            for node in timers:
                self._carry_out(node, node.router.handle_timer(self.now))

    def _due_packets(self) -> list[_InFlight]:
        due = []
        while self._queue and self._queue[0].arrival <= self.now:
            due.append(heapq.heappop(self._queue))
        return due

    def _due_timers(self) -> list[Node]:
        return [
            n
            for n in self.nodes.values()
            if n.alive and (t := n.router.next_timer()) is not None and t <= self.now
        ]

    def _record(self) -> None:
        masters = frozenset(n.address for n in self.masters())
        holders = frozenset(n.address for n in self.nodes.values() if n.holds_vips)
        if not self.history or (self.history[-1].masters, self.history[-1].holders) != (
            masters,
            holders,
        ):
            self.history.append(Snapshot(self.now, masters, holders))

    # -- actions and packets

    def _carry_out(self, node: Node, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendAdvert):
                self._send(node, action)
            elif isinstance(action, AddVips):
                assert not node.holds_vips, "VIPs added twice"
                node.holds_vips = True
            elif isinstance(action, RemoveVips):
                assert node.holds_vips, "VIPs removed but not held"
                node.holds_vips = False
            elif isinstance(action, Announce):
                node.announcements += 1
            else:
                node.transitions.append(action)

    def _send(self, node: Node, action: SendAdvert) -> None:
        advert = Advert(
            vrid=node.router.params.vrid,
            priority=action.priority,
            max_advert_int_cs=action.interval_cs,
            addresses=VIPS,
        )
        data = encode_advert(advert, src=node.address, dst=VRRP_GROUP_V4, checksum=node.checksum)
        for other in self.nodes:
            if other != node.address:
                for arrival, copy in self._fate(data):
                    item = _InFlight(arrival, next(self._seq), node.address, other, copy)
                    heapq.heappush(self._queue, item)

    def _fate(self, data: bytes) -> list[tuple[float, bytes]]:
        fates, roll = self.fates, self.rng.random()
        arrival = self.now + fates.latency
        if roll < fates.drop:
            return []
        roll -= fates.drop
        if roll < fates.duplicate:
            return [(arrival, data), (self._late(arrival), data)]
        roll -= fates.duplicate
        if roll < fates.delay:
            return [(self._late(arrival), data)]
        if roll - fates.delay < fates.corrupt:
            return [(arrival, self._corrupted(data))]
        return [(arrival, data)]

    def _late(self, arrival: float) -> float:
        return arrival + self.rng.uniform(0.0, self.fates.max_delay)

    def _corrupted(self, data: bytes) -> bytes:
        position = self.rng.randrange(len(data))
        return (
            data[:position]
            + bytes([data[position] ^ 1 << self.rng.randrange(8)])
            + data[position + 1 :]
        )

    def _reachable(self, src: IPv4Address, dst: IPv4Address) -> bool:
        groups = self._groups
        return groups is None or any(src in g and dst in g for g in groups)

    def _deliver(self, packet: _InFlight) -> None:
        node = self.nodes[packet.dst]
        if not node.alive or not self._reachable(packet.src, packet.dst):
            return
        try:
            advert = decode_advert_untrusted(packet.data, src=packet.src, dst=VRRP_GROUP_V4)
        except BadPacket as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            return
        self.deliveries.append((self.now, packet.src, packet.dst, advert.priority))
        self._carry_out(node, node.router.receive_advert(advert, packet.src, self.now))
