"""Replies: local apps send to a port per feed; only the master sends them on, from VIP:port.

A plain datagram goes to each of the feed's ``send_to``; a DATA envelope (what
``vipcast.Sender`` writes) names its own destination per record. A backup drops
and counts them: in hot standby both servers compute, only the master speaks.
"The master" here is the node that holds the VIPs and whose own relay's session is
being delivered (:mod:`vipcast.core.replies`), so each reply leaves once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vipcast.config import Endpoint, FeedConfig
from vipcast.core import envelope as env
from vipcast.core import replies
from vipcast.daemon.dataplane.relay import FeedRelay
from vipcast.daemon.dataplane.stats import FeedStats
from vipcast.daemon.quietlog import QuietLogger
from vipcast.linux import udp
from vipcast.linux.mmsg import make_receiver, make_sender

log = logging.getLogger("vipcast.outbound")
quiet = QuietLogger(log)


class Outbound:
    def __init__(
        self,
        feed: FeedConfig,
        relay: FeedRelay,
        stats: FeedStats,
        speaking: Callable[[], bool],
        answers_for: Callable[[int], bool],
    ) -> None:
        assert feed.outbound is not None
        self.feed, self.relay, self.stats, self.speaking = feed, relay, stats, speaking
        self.answers_for = answers_for  # a reply naming its request's session
        host, port = feed.outbound
        self.sock = udp.udp_socket(udp.family_of(host), rcvbuf=8 << 20, sndbuf=1 << 20)
        self.sock.bind((host, port))
        self.receiver = make_receiver(self.sock, batch=64)
        # replies leave from the feed's own socket, bound to VIP:port
        self.sender = make_sender(relay.sock, capacity=128, arena=2 << 20)

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def on_readable(self) -> None:
        while batch := self.receiver.receive():
            speaking = self.speaking()
            out: list[tuple[bytes, Endpoint]] = []
            for r in batch:
                out.extend(self._destinations(bytes(r.payload), speaking))
            if out:
                result = self.sender.send(out)
                self.stats.replies_sent += result.sent
                if result.failed or result.unsent:
                    quiet.warning(
                        f"reply:{self.feed.name}",
                        "feed %s: %d replies not sent",
                        self.feed.name,
                        result.failed + result.unsent,
                    )

    def _destinations(self, data: bytes, speaking: bool) -> list[tuple[bytes, Endpoint]]:
        """Where a reply goes: none unless this node answers it (:mod:`vipcast.core.replies`).

        A plain datagram goes to ``send_to`` while the node is speaking; a ``Sender``
        envelope to its records' destinations, if it names a session this node's relay
        ran (or none, while speaking) and no other term than ours.
        """
        msg = _reply_envelope(data)
        if msg is None:
            if not speaking:
                self.stats.replies_dropped += 1
                return []
            return [(data, dst) for dst in self.feed.send_to]
        named = msg.session != replies.UNNAMED
        ours = self.answers_for(msg.session) if named else speaking
        if not ours or (msg.term and msg.term != self.relay.state.term):
            self.stats.replies_dropped += len(msg.datagrams)
            return []
        return [(d.payload, d.dst) for d in msg.datagrams]

    def close(self) -> None:
        self.sock.close()


def _reply_envelope(data: bytes) -> env.Data | None:
    """The ``vipcast.Sender`` envelope ``data`` is, if it is one."""
    if data[:2] != env.MAGIC:
        return None
    try:
        msg = env.decode_message_untrusted(data)
    except env.BadEnvelope:
        return None
    return msg if isinstance(msg, env.Data) else None
