"""The Python API: receive what a vipcast node delivers, and send replies through the master.

A feed in ``envelope`` mode delivers each datagram to a local port wrapped in a
one-record envelope; :class:`Receiver` listens there and yields :class:`Message`
objects, blocking or async::

    with vipcast.Receiver(port=9600) as rx:
        for msg in rx:
            print(msg.source, msg.sequence, msg.payload)

:class:`Sender` writes to a feed's ``outbound`` port; the master sends each
payload from VIP:port to the destination given, a backup drops it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from vipcast.core import envelope as env
from vipcast.core import replies

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Message:
    """One original datagram, as the relay received it, with its place in the stream."""

    source: Endpoint  # the original sender
    destination: Endpoint  # the address it was sent to: VIP and feed port
    payload: bytes
    feed: int
    session: int  # changes at each takeover
    sequence: int  # 1, 2, 3, ... within a session, gap-free
    timestamp_ns: int  # when the relay received it, ns since 1970 (relay's clock)
    term: int = 0  # the fencing term its relay held (etcd backend; 0 with VRRP)

    @property
    def timestamp(self) -> float:
        return self.timestamp_ns / 1e9


class Receiver:
    """Listens where a feed in ``envelope`` mode delivers; one message per datagram."""

    def __init__(self, address: str = "127.0.0.1", port: int = 9600) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((address, port))
        self._pending: list[Message] = []
        self.ignored = 0  # datagrams that were not vipcast envelopes

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next message; None if ``timeout`` seconds pass first."""
        self.sock.settimeout(timeout)
        while not self._pending:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            self._pending = self._decode(data)
        return self._pending.pop(0)

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self.receive()
            if msg is not None:
                yield msg

    async def __aiter__(self) -> AsyncIterator[Message]:
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        while True:
            while self._pending:
                yield self._pending.pop(0)
            self._pending = self._decode(await loop.sock_recv(self.sock, 65535))

    def _decode(self, data: bytes) -> list[Message]:
        try:
            msg = env.decode_message_untrusted(data)
        except env.BadEnvelope:
            self.ignored += 1
            return []
        if not isinstance(msg, env.Data):
            return []
        where = (msg.feed, msg.session)
        return [
            Message(d.src, d.dst, d.payload, *where, msg.first_seq + i, d.ingress_ns, msg.term)
            for i, d in enumerate(msg.datagrams)
        ]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sender:
    """Sends replies to a feed's ``outbound`` port, each to its own destination."""

    def __init__(self, outbound: Endpoint = ("127.0.0.1", 9700), feed: int = 1) -> None:
        family = socket.AF_INET6 if ":" in outbound[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.outbound = outbound
        self.feed = feed
        self._framer = env.DataFramer(feed, 0, replies.UNNAMED)
        self._seq = 0

    def send(
        self, payload: bytes, destination: Endpoint, *, term: int = 0, session: int = 0
    ) -> None:
        """Ask the master to send ``payload`` from VIP:port to ``destination``.

        ``session`` and ``term``: the :attr:`Message.session` and :attr:`Message.term` of
        the request this answers. A reply naming a session leaves only from the node
        whose relay relayed that request, while it holds the VIPs: each request is
        answered once, even across a handover, by the node that took it in (without
        one, by whichever node is delivering its own relay's session when the reply
        arrives). A reply with a term leaves only while this node's relay holds that
        very term (etcd backend): a request relayed under a deposed leader is answered
        by nobody else.
        """
        self._seq += 1
        named = session or replies.UNNAMED
        if self._framer.term != term or self._framer.session != named:
            self._framer = env.DataFramer(self.feed, 0, named, term=term)
        record = env.encode_record(env.Datagram(("0.0.0.0", 0), destination, payload, 0))
        self.sock.sendto(self._framer.frame(self._seq, [record]), self.outbound)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
