"""The relay: on the master, every datagram sent to VIP:port goes to every receiver.

Each feed's socket is bound to VIP:port with IP_FREEBIND before the VIP exists,
so becoming master only flips ``active``: nothing waits. A batch drained from
the socket becomes as few DATA envelopes as fit the LAN MTU (never waiting for
more datagrams, so a lone datagram leaves at once), sent to the group or to every
receiver in as few system calls as the kernel allows (a run of full envelopes as
one UDP GSO send, else ``sendmmsg``, a lone envelope by ``sendto``); a receiver
that fails costs the others nothing. This node's own receiver takes them without
the kernel (:meth:`Fanout.deliver_locally`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence

from vipcast.config import ClusterConfig, Endpoint, FeedConfig
from vipcast.core import envelope as env
from vipcast.core.relay_session import RelaySession
from vipcast.core.retransmit import ByteBudget, NackLimiter, RetransmitBuffer
from vipcast.daemon.dataplane.stats import FeedStats
from vipcast.daemon.quietlog import QuietLogger
from vipcast.linux import udp
from vipcast.linux.mmsg import Received, RunSender, endpoint, make_receiver

log = logging.getLogger("vipcast.relay")
quiet = QuietLogger(log)

SOCKET_BUFFER = 32 << 20


LocalReceiver = Callable[[Sequence[bytes | env.Message], Endpoint], None]
"""Takes what this node sent (envelopes, or the messages they encode) and its address."""


class Fanout:
    """The socket envelopes leave from, to the group or to each receiver.

    Receivers send their NACKs back to its address, so it is also where the relay
    reads them. This node's own receiver either reads its copy back from the kernel
    (multicast loop, or a unicast to itself), or, after :meth:`deliver_locally`,
    takes every envelope straight from :meth:`send`.
    """

    def __init__(self, cluster: ClusterConfig, interface: str, source: str) -> None:
        self.destinations: list[Endpoint] = (
            [cluster.group] if cluster.group else list(cluster.receivers)
        )
        family = udp.family_of(self.destinations[0][0])
        self.sock = udp.udp_socket(family, rcvbuf=4 << 20, sndbuf=SOCKET_BUFFER)
        # from the address the election knows this node by; IPv6 link-local (multicast
        # VRRP) is bound with the interface's scope, so envelopes come from fe80::x%eth0
        udp.bind_freebind(self.sock, source, 0, interface)
        self.address: Endpoint = endpoint(self.sock.getsockname())
        self.interface, self.group = interface, cluster.group
        if cluster.group:
            udp.multicast_sender(self.sock, interface, ttl=1, loop=True)
        # envelopes of full batches have one size: they leave as UDP GSO sends
        budget = env.envelope_budget(cluster.mtu, lan_ipv6=family == socket.AF_INET6)
        self.sender = RunSender(self.sock, capacity=256, arena=4 << 20, max_segment=budget)
        self.receiver = make_receiver(self.sock, batch=32)
        self.local: LocalReceiver | None = None
        self.errors = 0

    def deliver_locally(self, receiver: LocalReceiver, own: Endpoint) -> None:
        """Hand this node's receiver (listening at ``own``) every envelope directly.

        The kernel's copy to ourselves costs, per batch, a packet through the stack,
        a wakeup and a read: the master's busiest path. Multicast loop goes off; a
        unicast list drops this node's own entry.
        """
        self.local = receiver
        if self.group:
            udp.multicast_sender(self.sock, self.interface, ttl=1, loop=False)
        else:
            self.destinations = [d for d in self.destinations if not _same(d, own)]

    def send(
        self, envelopes: Sequence[bytes], messages: Sequence[env.Message] | None = None
    ) -> int:
        """Send every envelope to every destination; returns the failures.

        This node's receiver takes them first (as ``messages``, when the caller has
        them: the envelopes decoded), so its apps do not wait behind the LAN sends,
        which in a one-machine lab also wake the other nodes.
        """
        if self.local is not None:
            self.local(envelopes if messages is None else messages, self.address)
        failed = 0
        for destination in self.destinations:
            result = self.sender.send(envelopes, destination)
            failed += result.failed + result.unsent
        if failed:
            self.errors += failed
            quiet.warning("fanout", "%d envelope sends failed (receiver down?)", failed)
        return failed

    def send_to(self, envelopes: Sequence[bytes], destination: Endpoint) -> None:
        """Answers to one receiver's NACK; failures counted like the fan-out's."""
        result = self.sender.send(envelopes, destination)
        if result.failed or result.unsent:
            self.errors += result.failed + result.unsent
            quiet.warning("nack-answer", "answers to %s not sent", destination[0])

    def close(self) -> None:
        self.sock.close()


def _same(a: Endpoint, b: Endpoint) -> bool:
    """The same (address, port), however the addresses are spelled."""
    return a[1] == b[1] and ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0])


class FeedRelay:
    """One feed: VIP:port in, envelopes out, a retransmission buffer for NACKs."""

    def __init__(
        self,
        feed: FeedConfig,
        vip: str,
        cluster: ClusterConfig,
        node_id: int,
        fanout: Fanout,
        stats: FeedStats,
        auth: env.Signer | None = None,
    ) -> None:
        self.feed, self.node_id, self.fanout, self.stats = feed, node_id, fanout, stats
        self.auth = auth  # shared by every relay and the receiver's NACKs: one counter
        self.sock = udp.udp_socket(udp.family_of(vip), rcvbuf=SOCKET_BUFFER, sndbuf=4 << 20)
        udp.bind_freebind(self.sock, vip, feed.port)
        self.receiver = make_receiver(self.sock, batch=128, bufsize=env.MAX_UDP_PAYLOAD_V4)
        self.encoder = env.RecordEncoder((vip, feed.port))
        self.destination: env.Address = (vip, feed.port)
        lan_v6 = ":" in fanout.destinations[0][0]
        sizes = {"lan_ipv6": lan_v6, "addr_v6": ":" in vip, "auth": auth is not None}
        self.budget = env.envelope_budget(cluster.mtu, lan_ipv6=lan_v6)
        self.max_payload = env.max_payload(cluster.mtu, **sizes)
        self.max_relayable = env.max_relayable_payload(**sizes)
        self.buffer = RetransmitBuffer(
            max_count=max(1, cluster.retransmit_buffer),
            max_age_ns=int(cluster.retransmit_age * 1e9),
        )
        self.limiter = NackLimiter()
        self.budget_out = ByteBudget()
        self.state = RelaySession(feed.feed_id, node_id)
        self.framer: env.DataFramer | None = None  # the active session's
        self.served: env.DataFramer | None = None  # the session NACKs are answered for

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def session(self) -> int:
        return self.state.session

    def start(self, term: int = 0) -> int:
        """Become the feed's relay under a new session stamped with the fencing ``term``
        (0: unfenced), numbering from 1; its id."""
        session = self.state.start(time.time_ns(), time.monotonic_ns(), term)
        self.framer = self.served = env.DataFramer(
            self.feed.feed_id, self.node_id, session, auth=self.auth, term=term
        )
        self.buffer.clear()
        return session

    def stop(self, next_session: int = 0) -> env.EndOfSession | None:
        """Stop relaying; returns the END_OF_SESSION to send (:meth:`seal`), if active."""
        end = self.state.stop(time.monotonic_ns(), next_session)
        self.framer = None  # ``served`` still answers NACKs for the tail
        return end

    def seal(self, msg: env.Message) -> bytes:
        """``msg`` as an envelope, signed now (each copy of a repeated message anew)."""
        return env.encode_message(msg, auth=self.auth, now=time.time_ns())

    # --- the hot path -----------------------------------------------------------

    def on_readable(self) -> None:
        """Relay what waits on the socket.

        A batch shorter than the receiver's batch means the socket was empty: stop
        there rather than pay one more system call to hear so (the loop's epoll is
        level-triggered and calls again for anything that came since).
        """
        receive, full = self.receiver.receive, self.receiver.batch
        while batch := receive():
            if self.framer is None:
                self.stats.not_master += len(batch)
            else:
                self._relay(batch)
            if len(batch) < full:
                return

    def _relay(self, batch: list[Received]) -> None:
        ingress = time.time_ns()
        encode, limit = self.encoder.encode, self.max_payload
        # this node's receiver, if any, takes the datagrams as they are, not re-decoded
        local = self.fanout.local is not None
        records, datagrams, dst, new = [], [], self.destination, tuple.__new__
        for r in batch:
            if len(r.payload) > limit and not self._fits(len(r.payload)):
                continue
            payload = bytes(r.payload) if local else r.payload
            records.append(encode(payload, r.source, ingress))  # copies out of the buffer
            if local:
                datagrams.append(new(env.Datagram, (r.source, dst, payload, ingress)))
        if records:
            self._send(records, datagrams if local else None, ingress)

    def _fits(self, size: int) -> bool:
        if size <= self.max_payload:
            return True
        if size > self.max_relayable:
            self.stats.dropped_too_big += 1
            quiet.warning(
                "too-big",
                "feed %s: a %d-byte datagram cannot be relayed; dropped",
                self.feed.name,
                size,
            )
            return False
        self.stats.oversized += 1
        quiet.warning(
            "oversized",
            "feed %s: %d-byte datagram relayed in a fragmented envelope",
            self.feed.name,
            size,
        )
        return True

    def _send(self, records: list[bytes], datagrams: list[env.Datagram] | None, now: int) -> None:
        """Frame, buffer and send ``records``; ``datagrams`` (the same) for this node."""
        framer = self.framer
        assert framer is not None
        first = self.state.number(len(records), time.monotonic_ns())
        envelopes, seq = [], first
        messages: list[env.Message] | None = None if datagrams is None else []
        auth = self.auth is not None
        for count in env.plan_batches([len(r) for r in records], self.budget, auth=auth):
            at = seq - first
            envelopes.append(framer.frame(seq, records[at : at + count], now=now))
            if messages is not None and datagrams is not None:
                chunk = tuple(datagrams[at : at + count])
                origin = (framer.feed, framer.node, framer.session)
                messages.append(env.Data(*origin, seq, chunk, term=framer.term))
            seq += count
        self.buffer.extend(first, records, time.monotonic_ns())
        self.stats.fanout_errors += self.fanout.send(envelopes, messages)
        self.stats.relayed += len(records)
        self.stats.envelopes += len(envelopes)

    # --- idle and recovery ---------------------------------------------------------

    def idle_messages(self) -> list[bytes]:
        """A HEARTBEAT if the feed has been idle, and the last session's end, if due."""
        now = time.monotonic_ns()
        due = (self.state.heartbeat(now), self.state.end_refresh(now))
        return [self.seal(msg) for msg in due if msg is not None]

    def closing_heartbeat(self) -> env.Heartbeat | None:
        """A HEARTBEAT flagged closing (to :meth:`seal`): receivers will wait for the end."""
        return self.state.closing()

    def serve_nack(self, nack: env.Nack, peer: Endpoint) -> list[bytes]:
        """The envelopes that answer a receiver's NACK (resent DATA and UNAVAILABLE)."""
        framer = self.served
        if framer is None or nack.session != framer.session:
            return [
                self._unavailable(
                    nack.session, nack.first_seq, nack.count, env.UnavailableReason.UNKNOWN_SESSION
                )
            ]
        now = time.monotonic_ns()
        granted = self.limiter.grant(peer, nack.count, now)
        if granted == 0:
            return []
        served = self.buffer.get_range(nack.first_seq, granted, now)
        records = list(served.records)
        allowed = self.budget_out.take(peer, [len(r) for r in records], now)
        if allowed < len(records):
            self.stats.nacks_refused += 1  # over its byte budget: the rest when asked again
            del records[allowed:]
        replies = self._resend(framer, served.first, records)
        for first, count, reason in served.unavailable:
            self.stats.unavailable += count
            replies.append(self._unavailable(framer.session, first, count, reason))
        return replies

    def _resend(self, framer: env.DataFramer, first: int, records: list[bytes]) -> list[bytes]:
        out, seq, now = [], first, time.time_ns()
        sizes = [len(r) for r in records]
        for count in env.plan_batches(sizes, self.budget, auth=self.auth is not None):
            chunk = records[seq - first : seq - first + count]
            out.append(framer.frame(seq, chunk, retransmission=True, now=now))
            seq += count
        self.stats.retransmitted += len(records)
        return out

    def _unavailable(
        self, session: int, first: int, count: int, reason: env.UnavailableReason
    ) -> bytes:
        origin = (self.feed.feed_id, self.node_id, session)
        msg = env.Unavailable(*origin, first, count, reason, self.state.term)
        return self.seal(msg)

    def close(self) -> None:
        self.sock.close()
