"""Sends gratuitous ARP and unsolicited NA frames on one interface (AF_PACKET).

The frames come from :mod:`vipcast.core.announce`; this module only puts them on the
wire. Send errors (queue full, link down, anything else) are counted, never raised: an
announcement is best effort and is repeated anyway.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Literal

from vipcast.core.announce import garp_reply, garp_request, unsolicited_na
from vipcast.linux import interfaces
from vipcast.linux.privileges import explain

__all__ = ["Announcer", "Form"]

log = logging.getLogger(__name__)

Form = Literal["request", "reply", "both"]
Announceable = IPv4Address | IPv6Address | IPv4Interface | IPv6Interface


class Announcer:
    """Tells the LAN that the given addresses are at this interface's MAC.

    Raises at construction :class:`PermissionError` (needs CAP_NET_RAW) or
    :class:`LookupError` (no such interface). Sending never raises: ``failures`` counts
    unsent frames by errno name, ``last_error`` says what the last one met.
    """

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.mac = interfaces.mac_address(ifname)
        self.failures: Counter[str] = Counter()
        self.last_error = ""
        self._frames: dict[tuple[tuple[Announceable, ...], Form], list[bytes]] = {}
        self._sock = self._open()

    def announce(self, addresses: Iterable[Announceable], form: Form = "both") -> int:
        """Send the frames for ``addresses``; returns how many went out.

        IPv4: a gratuitous ARP request, reply or both per address; IPv6: one unsolicited
        Neighbour Advertisement per address (``form`` does not apply).
        """
        return sum(self._send(frame) for frame in self.prepare(addresses, form))

    def prepare(self, addresses: Iterable[Announceable], form: Form = "both") -> list[bytes]:
        """:meth:`frames`, built once: a takeover's first announcement sends ready bytes."""
        key = (tuple(addresses), form)
        frames = self._frames.get(key)
        if frames is None:  # a daemon has one set of VIPs: a handful of frames
            frames = self._frames[key] = self.frames(key[0], form)
        return frames

    def frames(self, addresses: Iterable[Announceable], form: Form = "both") -> list[bytes]:
        """The frames :meth:`announce` sends, in order."""
        frames = []
        for address in addresses:
            ip = address.ip if isinstance(address, IPv4Interface | IPv6Interface) else address
            if isinstance(ip, IPv6Address):
                frames.append(unsolicited_na(self.mac, ip))
                continue
            if form in ("request", "both"):
                frames.append(garp_request(self.mac, ip))
            if form in ("reply", "both"):
                frames.append(garp_reply(self.mac, ip))
        return frames

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Announcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, frame: bytes) -> bool:
        try:
            self._sock.send(frame)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self.failures[name] += 1
            self.last_error = f"{name} ({exc.strerror})"
            log.debug("announcement on %s not sent: %s", self.ifname, self.last_error)
            return False
        return True

    def _open(self) -> socket.socket:
        # protocol 0: this socket only sends, the kernel queues nothing for it to read
        with self._explained("open an AF_PACKET socket"):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            with self._explained("bind the AF_PACKET socket"):
                sock.bind((self.ifname, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    @contextlib.contextmanager
    def _explained(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                message = explain(["CAP_NET_RAW"], f"{what} on {self.ifname} (ARP/NA)")
                raise PermissionError(message) from exc
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise interfaces.no_such_interface(self.ifname) from exc
            raise
