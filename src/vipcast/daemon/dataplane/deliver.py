"""Handing datagrams to local applications: payload, envelope or transparent mode.

Sending is the costly part of delivery: the kernel's work per datagram, more than
Python's. A flush sends the queued datagrams to each app in order with a
:class:`~vipcast.linux.mmsg.RunSender`: runs of equal-sized datagrams as UDP GSO
sends, which the kernel cuts into the same datagrams for a fraction of the cost,
the rest by ``sendmmsg``, a lone datagram by one ``sendto``.
"""

from __future__ import annotations

import logging
import socket

from vipcast.config import Endpoint, FeedConfig
from vipcast.core import envelope as env
from vipcast.daemon.dataplane.stats import FeedStats
from vipcast.daemon.quietlog import QuietLogger
from vipcast.linux import udp
from vipcast.linux.mmsg import RunSender
from vipcast.linux.spoof import SpoofingSender

log = logging.getLogger("vipcast.deliver")
quiet = QuietLogger(log)


class Delivery:
    """Queues the datagrams of one feed for its local apps; ``flush()`` sends them."""

    def __init__(self, feed: FeedConfig, stats: FeedStats, node_id: int) -> None:
        self.feed, self.stats, self.node_id = feed, stats, node_id
        self.endpoints: list[Endpoint] = list(feed.deliver)
        self._families = [udp.family_of(host) for host, _ in self.endpoints]
        self._queue: list[bytes] = []
        self._payload_mode = feed.mode == "payload"
        self._socks: list[socket.socket] = []
        self._senders: dict[int, RunSender] = {}
        self._spoofer = SpoofingSender() if feed.mode == "transparent" else None
        self._framers: dict[int, env.DataFramer] = {}

    def add(self, datagram: env.Datagram, seq: int, session: int, term: int = 0) -> None:
        self.stats.delivered += 1
        if self._spoofer is not None:
            for endpoint in self.endpoints:
                if not self._spoofer.send(datagram.payload, datagram.src, endpoint):
                    self.stats.delivery_errors += 1
            return
        if self._payload_mode:
            self._queue.append(datagram.payload)
        else:
            self._queue.append(self._wrap(datagram, seq, session, term))

    def _wrap(self, datagram: env.Datagram, seq: int, session: int, term: int) -> bytes:
        """The datagram as a one-record DATA envelope, for apps using vipcast.Receiver
        (which reads the session's term from it too)."""
        framer = self._framers.get(session)
        if framer is None or framer.term != term:
            framer = env.DataFramer(self.feed.feed_id, self.node_id, session, term=term)
            self._framers = {session: framer}
        return framer.frame(seq, [env.encode_record(datagram)])

    def flush(self) -> None:
        queue = self._queue
        if not queue:
            return
        self._queue = []
        for endpoint, family in zip(self.endpoints, self._families, strict=True):
            failed = self._send(queue, endpoint, family)
            if failed:
                self.stats.delivery_errors += failed
                quiet.warning(
                    f"deliver:{self.feed.name}",
                    "feed %s: %d datagrams not delivered (app not listening?)",
                    self.feed.name,
                    failed,
                )

    # --- sending ----------------------------------------------------------------------

    def _send(self, queue: list[bytes], endpoint: Endpoint, family: int) -> int:
        """Send every queued datagram to one app, in order; returns the failures."""
        sender = self._senders.get(family) or self._sender(family)
        result = sender.send(queue, endpoint)
        return result.failed + result.unsent

    def _sender(self, family: int) -> RunSender:
        sock = udp.udp_socket(socket.AddressFamily(family), sndbuf=8 << 20)
        self._socks.append(sock)
        sender = self._senders[family] = RunSender(sock, capacity=256, arena=4 << 20)
        return sender

    def close(self) -> None:
        for sock in self._socks:
            sock.close()
        if self._spoofer is not None:
            self._spoofer.close()
