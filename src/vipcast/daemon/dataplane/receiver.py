"""The receiver, on every node: envelopes in, the original datagrams out, in order.

Envelopes are accepted only from cluster members (and, with cluster keys, only
when they name a configured key, their HMAC verifies and their counter is new:
``core/replay.py``), all before the sequencer sees them. The sequencer follows
the relay of the node the election sees as master
(:meth:`ClusterReceiver.set_leader`), puts its datagrams in order, asks the relay
for what is missing and reports what cannot be had.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from vipcast.config import ClusterConfig, Endpoint, IPAddress
from vipcast.core import envelope as env
from vipcast.core import sequencer as seq
from vipcast.daemon.dataplane.deliver import Delivery
from vipcast.daemon.dataplane.stats import FeedStats
from vipcast.daemon.quietlog import QuietLogger
from vipcast.linux import interfaces, udp
from vipcast.linux.mmsg import make_receiver, make_sender

log = logging.getLogger("vipcast.receiver")
quiet = QuietLogger(log)

EventSink = Callable[..., None]
MEMBERSHIP_CACHE = 1024  # source hosts remembered as member or not (bounded: hostile input)
RELAY_CACHE = 256  # (feed, session) -> relay address, for NACKs (bounded: hostile input)


def relay_host(host: str) -> str:
    """One spelling per relay: no IPv6 scope, IPv4-mapped IPv6 as IPv4."""
    address: IPAddress = ipaddress.ip_address(host.split("%", maxsplit=1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


class ClusterReceiver:
    def __init__(
        self,
        cluster: ClusterConfig,
        interface: str,
        deliveries: dict[int, Delivery],
        stats: dict[int, FeedStats],
        emit: EventSink,
        node_id: int = 0,
        signer: env.Signer | None = None,
        verifier: env.Verifier | None = None,
    ) -> None:
        self.cluster, self.deliveries, self.stats, self.emit = cluster, deliveries, stats, emit
        self.node_id = node_id  # named in our NACKs
        self.signer, self.verifier = signer, verifier  # both or neither: cluster keys
        self.sock = self._open(cluster, interface)
        self.receiver = make_receiver(self.sock, batch=128)
        self.nack_sender = make_sender(self.sock, capacity=16, arena=1 << 16)
        self.sequencer = seq.Sequencer(
            seq.SequencerConfig(
                window=cluster.reorder_window,
                takeover_grace_ns=int(cluster.takeover_grace * 1e9),
                handover_grace_ns=int(cluster.handover_grace * 1e9),
                max_jump=max(1, cluster.retransmit_buffer),
                trust_terms=verifier is not None,
            ),
            joined_unix_ns=time.time_ns(),
        )
        self.members = self._members(cluster, interface)
        self._membership: dict[str, bool] = {}  # source host -> member? (checked once)
        self.relays: dict[tuple[int, int], Endpoint] = {}  # (feed, session) -> relay address
        self.terms: dict[tuple[int, int], int] = {}  # (feed, session) -> its term, as first heard
        self.rejected: dict[str, int] = {}
        self.leader: str | None = None
        self.leader_term = 0

    @staticmethod
    def _open(cluster: ClusterConfig, interface: str) -> Any:
        group = cluster.group[0] if cluster.group else None
        family = udp.family_of(
            group or (cluster.receivers[0][0] if cluster.receivers else "0.0.0.0")
        )
        sock = udp.udp_socket(family, rcvbuf=32 << 20, sndbuf=1 << 20, reuse_port=False)
        sock.bind(("::" if family.name == "AF_INET6" else "0.0.0.0", cluster.port))
        if group:
            udp.join_group(sock, group, interface)
        return sock

    @staticmethod
    def _members(cluster: ClusterConfig, interface: str) -> list[Any]:
        if cluster.members:
            return [ipaddress.ip_network(str(m)) for m in cluster.members]
        return list(interfaces.subnets(interface))

    def fileno(self) -> int:
        return int(self.sock.fileno())

    # --- the hot path -------------------------------------------------------------

    def on_readable(self) -> None:
        """Take the envelopes waiting, then send what they release to the apps.

        A batch shorter than the receiver's batch means the socket was empty: no
        further call to hear so (the loop's epoll is level-triggered).
        """
        now, wall = time.monotonic_ns(), time.time_ns()
        receive, full = self.receiver.receive, self.receiver.batch
        accept, decode = self.sequencer.accept, self._decode
        while batch := receive():
            for r in batch:
                msg = decode(bytes(r.payload), r.source, wall)
                if msg is not None:
                    self._act(accept(msg, relay_host(r.source[0]), now), now)
            if len(batch) < full:
                break
        for delivery in self.deliveries.values():
            delivery.flush()

    def accept_local(self, items: Sequence[bytes | env.Message], source: Endpoint) -> None:
        """What this node's relay just sent from ``source`` (``Fanout.deliver_locally``).

        The relay hands DATA over as messages (no encoding to undo) and control as
        envelopes, decoded here without the tag check: none of it left this process.
        """
        now = time.monotonic_ns()
        accept, decode, admit = self.sequencer.accept, self._decode, self._admit
        relay = relay_host(source[0])
        for item in items:
            msg = (
                decode(item, source, 0, local=True)
                if isinstance(item, bytes)
                else admit(item, source)
            )
            if msg is not None:
                self._act(accept(msg, relay, now), now)
        for delivery in self.deliveries.values():
            delivery.flush()

    def _decode(
        self, data: bytes, source: Endpoint, wall: int, *, local: bool = False
    ) -> env.Message | None:
        """``data`` from ``source`` at ``wall`` (Unix ns), checked; None if rejected."""
        if not self._is_member(source[0]):
            self._reject("foreign", source, "not a cluster member")
            return None
        try:
            auth = None if local else self.verifier
            msg = env.decode_message_untrusted(data, auth=auth, now=wall)
        except env.BadEnvelope as e:
            self._reject(e.reason, source, str(e))
            return None
        return self._admit(msg, source)

    def _admit(self, msg: env.Message, source: Endpoint) -> env.Message | None:
        """A decoded message for the sequencer, or None; learns where relays are."""
        if isinstance(msg, env.Nack):
            return None
        if msg.feed not in self.deliveries:
            self._reject("feed", source, f"unknown feed id {msg.feed}")
            return None
        if not isinstance(msg, env.Unavailable) and (msg.feed, msg.session) not in self.relays:
            if len(self.relays) >= RELAY_CACHE:
                del self.relays[next(iter(self.relays))]
                del self.terms[next(iter(self.terms))]
            self.relays[(msg.feed, msg.session)] = source
            self.terms[(msg.feed, msg.session)] = msg.term
        return msg

    def is_member(self, host: str) -> bool:
        """Whether ``host`` is a cluster member (cluster.members, else the LAN's subnets)."""
        return self._is_member(host)

    def _is_member(self, host: str) -> bool:
        known = self._membership.get(host)
        if known is None:
            if len(self._membership) >= MEMBERSHIP_CACHE:
                self._membership.clear()
            known = self._membership[host] = self._check_member(host)
        return known

    def _check_member(self, host: str) -> bool:
        address = ipaddress.ip_address(relay_host(host))
        return any(address in net for net in self.members)

    def _reject(self, reason: str, source: Endpoint, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        quiet.warning(f"envelope:{reason}", "envelope from %s ignored: %s", source[0], detail)

    def set_leader(self, host: str | None, term: int = 0) -> None:
        """The election sees ``host`` as master under ``term``: follow its relay from now
        on, and fence what lower terms send."""
        leader = None if host is None else relay_host(host)
        if leader == self.leader and term <= self.leader_term:
            return
        self.leader, self.leader_term = leader, max(self.leader_term, term)
        now = time.monotonic_ns()
        self._act(self.sequencer.set_leader(leader, now, term), now)
        for delivery in self.deliveries.values():
            delivery.flush()

    def session_of(self, feed: int) -> int:
        """The session this node delivers on ``feed`` (0: none)."""
        return self.sequencer.session(feed) or 0

    # --- actions --------------------------------------------------------------------

    def _act(self, actions: list[seq.Action], now: int) -> None:
        deliveries = self.deliveries
        for action in actions:
            if type(action) is seq.Deliver:
                term = self.terms.get((action.feed, action.session), 0)
                deliveries[action.feed].add(action.datagram, action.seq, action.session, term)
            elif isinstance(action, seq.RequestRetransmit):
                self._nack(action)
            elif isinstance(action, seq.GapUnrecoverable):
                self._lost(action)
            elif isinstance(action, seq.SplitBrain):
                self._split(action)
            elif isinstance(action, seq.SessionStarted):
                self.emit(
                    "session",
                    f"feed {action.feed}: following session {action.session:x} "
                    f"from #{action.first_seq} ({action.reason})",
                    feed=action.feed,
                    session=action.session,
                    reason=action.reason,
                )

    def _split(self, split: seq.SplitBrain) -> None:
        log.error(
            "feed %d: split brain: relay %s ran session %x (#%d..#%d) while this node "
            "followed %s (session %x); those datagrams are reported lost here",
            split.feed,
            split.relay,
            split.session,
            split.first,
            split.last,
            split.leader,
            split.leader_session,
        )
        self.emit(
            "split_brain",
            f"feed {split.feed}: relay {split.relay} session {split.session:x} "
            f"#{split.first}..#{split.last} ran beside {split.leader} "
            f"session {split.leader_session:x}",
            feed=split.feed,
            relays=[split.leader, split.relay],
            sessions=[split.leader_session, split.session],
            first=split.first,
            last=split.last,
        )

    def _nack(self, action: seq.RequestRetransmit) -> None:
        relay = self.relays.get((action.feed, action.session))
        if relay is None:
            return
        term = self.terms.get((action.feed, action.session), 0)
        origin = (action.feed, self.node_id, action.session)
        nack = env.Nack(*origin, action.first, action.count, term)
        wire = env.encode_nack(nack, auth=self.signer, now=time.time_ns())
        self.nack_sender.send([(wire, relay)])

    def _lost(self, gap: seq.GapUnrecoverable) -> None:
        last = gap.first + gap.count - 1
        log.warning(
            "feed %d session %d: lost #%d..#%d (%d datagrams, %s)",
            gap.feed,
            gap.session,
            gap.first,
            last,
            gap.count,
            gap.reason,
        )
        self.emit(
            "gap",
            f"feed {gap.feed} session {gap.session}: lost #{gap.first}..#{last} "
            f"({gap.count}, {gap.reason})",
            feed=gap.feed,
            session=gap.session,
            first=gap.first,
            count=gap.count,
            reason=gap.reason,
        )

    # --- timers and counters ----------------------------------------------------------

    def on_timer(self) -> None:
        now = time.monotonic_ns()
        self._act(self.sequencer.handle_timer(now), now)
        for delivery in self.deliveries.values():
            delivery.flush()

    def next_timer(self) -> float | None:
        """When the sequencer wants waking, on the time.monotonic() scale."""
        at = self.sequencer.next_timer()
        return None if at is None else at / 1e9

    def refresh_stats(self) -> None:
        for feed, stats in self.stats.items():
            c = self.sequencer.counters(feed)
            stats.recovered, stats.duplicates = c.recovered, c.duplicates
            stats.lost = c.unrecoverable
            stats.split_brains, stats.not_leader = c.split_brains, c.not_leader
            stats.implausible, stats.withdrawn = c.implausible, c.withdrawn
            stats.wrong_relay, stats.fenced = c.wrong_relay, c.fenced

    def close(self) -> None:
        self.sock.close()
