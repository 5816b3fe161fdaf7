"""Handing datagrams to local applications: payload, envelope or transparent mode."""

from __future__ import annotations

import logging
import socket

from vipcast.config import Endpoint, FeedConfig
from vipcast.core import envelope as env
from vipcast.daemon.dataplane.stats import FeedStats
from vipcast.daemon.quietlog import QuietLogger
from vipcast.linux import udp
from vipcast.linux.mmsg import Sender, make_sender
from vipcast.linux.spoof import SpoofingSender

log = logging.getLogger("vipcast.deliver")
quiet = QuietLogger(log)


class Delivery:
    """Queues the datagrams of one feed for its local apps; ``flush()`` sends them."""

    def __init__(self, feed: FeedConfig, stats: FeedStats, node_id: int) -> None:
        self.feed, self.stats, self.node_id = feed, stats, node_id
        self.endpoints: list[Endpoint] = list(feed.deliver)
        self._queue: list[tuple[bytes, Endpoint]] = []
        self._senders: dict[int, Sender] = {}
        self._socks: list[socket.socket] = []
        self._spoofer = SpoofingSender() if feed.mode == "transparent" else None
        self._framers: dict[int, env.DataFramer] = {}

    def add(self, datagram: env.Datagram, seq: int, session: int) -> None:
        self.stats.delivered += 1
        if self._spoofer is not None:
            for endpoint in self.endpoints:
                if not self._spoofer.send(datagram.payload, datagram.src, endpoint):
                    self.stats.delivery_errors += 1
            return
        data = (
            datagram.payload if self.feed.mode == "payload" else self._wrap(datagram, seq, session)
        )
        for endpoint in self.endpoints:
            self._queue.append((data, endpoint))

    def _wrap(self, datagram: env.Datagram, seq: int, session: int) -> bytes:
        """The datagram as a one-record DATA envelope, for apps using vipcast.Receiver."""
        framer = self._framers.get(session)
        if framer is None:
            self._framers = {session: env.DataFramer(self.feed.feed_id, self.node_id, session)}
            framer = self._framers[session]
        return framer.frame(seq, [env.encode_record(datagram)])

    def flush(self) -> None:
        if not self._queue:
            return
        by_family: dict[int, list[tuple[bytes, Endpoint]]] = {}
        for item in self._queue:
            by_family.setdefault(udp.family_of(item[1][0]), []).append(item)
        self._queue.clear()
        for family, items in by_family.items():
            result = self._sender(family).send(items)
            failed = result.failed + result.unsent
            if failed:
                self.stats.delivery_errors += failed
                quiet.warning(
                    f"deliver:{self.feed.name}",
                    "feed %s: %d datagrams not delivered (app not listening?)",
                    self.feed.name,
                    failed,
                )

    def _sender(self, family: int) -> Sender:
        sender = self._senders.get(family)
        if sender is None:
            sock = udp.udp_socket(socket.AddressFamily(family), sndbuf=8 << 20)
            self._socks.append(sock)
            sender = self._senders[family] = make_sender(sock, capacity=256, arena=4 << 20)
        return sender

    def close(self) -> None:
        for sock in self._socks:
            sock.close()
        if self._spoofer is not None:
            self._spoofer.close()
