"""Delivering a datagram to a local app from its original sender's address and port.

In transparent mode the app's ``recvfrom`` must name the original sender, not
vipcast. What works on Linux, IPv4 and IPv6 alike (tested on 6.18):

- A UDP socket with IP_TRANSPARENT / IPV6_TRANSPARENT may bind to a foreign
  (address, port) and send from it. Needs CAP_NET_RAW or CAP_NET_ADMIN; no sysctl.
- Every local destination works: 127.0.0.0/8 and ::1 (no ``route_localnet``:
  the datagram keeps its output route through loopback, so input routing's
  martian checks never run), the node's own addresses, the VIP. An IPv4 sender
  reaches an app bound to ``::`` through ``::ffff:127.0.0.1``.
- When no app listens, the kernel answers with an ICMP port unreachable addressed
  to the original sender, which leaves the node. IPv4: only for LAN-address
  destinations; from 127.0.0.1 the ICMP is dropped as martian, so prefer
  loopback. IPv6: even from ::1 the ICMPv6 goes out (seen on 6.18). Both are
  rate-limited per sender (net.ipv4.icmp_ratelimit, net.ipv6.icmp.ratelimit:
  1 s); a firewall rule (``oifname != "lo" ip6 saddr ::1 drop``) stops the
  IPv6 one.
- One socket per sender (address, port), kept in a bounded LRU. A sender whose
  (address, port) a local socket holds (the sender runs on this node) cannot be
  bound (EADDRINUSE); neither can port 0. Those datagrams go out of a raw socket
  (IPPROTO_RAW, headers written here; IPv6 needs Linux 4.5), CAP_NET_RAW.

The datagram never leaves the node when the destination is local; a non-local
destination would put a foreign source address on the wire, which vipcast never
asks for.
"""

from __future__ import annotations

import collections
import errno
import functools
import ipaddress
import logging
import socket
import struct
from typing import Final

from vipcast.core.checksum import internet_checksum
from vipcast.linux.mmsg import Address, Bytes
from vipcast.linux.udp import UdpSetupError, transparent_socket

log = logging.getLogger(__name__)

__all__ = ["SpoofingSender", "RawUdpSender"]

DEFAULT_MAX_SOCKETS: Final = 256

# IPv4 header, 20 bytes: version/IHL, TOS, total length, id (0: the kernel picks),
# flags/fragment (DF), TTL, protocol 17, checksum (the kernel fills it), src, dst
_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
# IPv6 header, 40 bytes: version/class/flow, payload length, next header 17, hop limit
_IPV6: Final = struct.Struct("!IHBB16s16s")
# UDP header, 8 bytes: source port, destination port, length, checksum
_UDP: Final = struct.Struct("!HHHH")
# IPv6 pseudo-header for the UDP checksum: src, dst, upper-layer length, 0, 0, 0, 17
_PSEUDO6: Final = struct.Struct("!16s16sI3xB")
_TTL: Final = 64


@functools.lru_cache(maxsize=4096)
def _normalize(address: Address) -> tuple[int, bytes, int]:
    """(4 or 6, packed address, port); IPv4-mapped IPv6 addresses become IPv4."""
    ip = ipaddress.ip_address(address[0].partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version, ip.packed, address[1]


class RawUdpSender:
    """Sends UDP datagrams with any source, writing the IP and UDP headers itself."""

    def __init__(self) -> None:
        self._sockets: dict[int, socket.socket] = {}

    def send(self, payload: Bytes, source: Address, destination: Address) -> None:
        """Send one datagram; raises OSError (a ValueError when families differ)."""
        version, src, sport = _normalize(source)
        dversion, dst, dport = _normalize(destination)
        if version != dversion:
            raise ValueError(f"cannot send from {source[0]} to {destination[0]}")
        udp_len = 8 + len(payload)
        if version == 4:
            head = _IPV4.pack(0x45, 0, 20 + udp_len, 0, 0x4000, _TTL, 17, 0, src, dst)
            # checksum 0: none, allowed for UDP over IPv4
            packet = head + _UDP.pack(sport, dport, udp_len, 0) + payload
            self._socket(socket.AF_INET).sendto(packet, (socket.inet_ntop(socket.AF_INET, dst), 0))
            return
        udp = _UDP.pack(sport, dport, udp_len, 0)
        checksum = internet_checksum(_PSEUDO6.pack(src, dst, udp_len, 17) + udp + payload)
        udp = _UDP.pack(sport, dport, udp_len, checksum or 0xFFFF)
        head = _IPV6.pack(6 << 28, udp_len, 17, _TTL, src, dst)
        self._socket(socket.AF_INET6).sendto(
            head + udp + payload, (socket.inet_ntop(socket.AF_INET6, dst), 0)
        )

    def _socket(self, family: socket.AddressFamily) -> socket.socket:
        sock = self._sockets.get(family)
        if sock is None:
            try:
                sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            except PermissionError as exc:
                raise UdpSetupError(
                    errno.EPERM, "raw socket for spoofed delivery: needs CAP_NET_RAW"
                ) from exc
            sock.setblocking(False)
            self._sockets[family] = sock
        return sock

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


class SpoofingSender:
    """Sends datagrams to local apps from the original sender's (address, port).

    ``send`` never raises for one bad datagram: it returns False and counts the
    errno in ``errors``. The constructor raises :class:`UdpSetupError` when the
    process lacks CAP_NET_RAW and CAP_NET_ADMIN.
    """

    def __init__(self, *, max_sockets: int = DEFAULT_MAX_SOCKETS) -> None:
        transparent_socket(socket.AF_INET).close()  # fail now, not at the first datagram
        self.max_sockets = max_sockets
        self.sent = self.failed = self.evicted = self.raw_sent = 0
        self.errors: collections.Counter[int] = collections.Counter()
        self._sockets: collections.OrderedDict[tuple[int, bytes, int], socket.socket] = (
            collections.OrderedDict()
        )
        self._unbindable: set[tuple[int, bytes, int]] = set()
        self._raw = RawUdpSender()

    @property
    def open_sockets(self) -> int:
        return len(self._sockets)

    def send(self, payload: Bytes, source: Address, destination: Address) -> bool:
        """Deliver ``payload`` to ``destination`` as if ``source`` had sent it."""
        key = _normalize(source)
        dversion, dst, dport = _normalize(destination)
        if key[0] != dversion:
            self.errors[errno.EAFNOSUPPORT] += 1
            self.failed += 1
            return False
        try:
            sock = self._sockets.get(key)
            if sock is not None:
                self._sockets.move_to_end(key)
            elif key not in self._unbindable:
                sock = self._bound(key)
            if sock is None:
                self._raw.send(payload, source, destination)
                self.raw_sent += 1
            else:
                family = socket.AF_INET if dversion == 4 else socket.AF_INET6
                sock.sendto(payload, (socket.inet_ntop(family, dst), dport))
        except OSError as exc:
            self.errors[exc.errno or 0] += 1
            self.failed += 1
            return False
        self.sent += 1
        return True

    def _bound(self, key: tuple[int, bytes, int]) -> socket.socket | None:
        """A transparent socket bound to the sender's (address, port); None: use raw."""
        version, packed, port = key
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        if port == 0:
            self._unbindable.add(key)
            return None
        sock = transparent_socket(family)
        try:
            sock.bind((socket.inet_ntop(family, packed), port))
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EINVAL):
                raise
            log.info(
                "cannot borrow %s port %d (%s): sending its datagrams from a raw socket",
                socket.inet_ntop(family, packed),
                port,
                exc.strerror,
            )
            self._remember_unbindable(key)
            return None
        self._sockets[key] = sock
        if len(self._sockets) > self.max_sockets:
            _, oldest = self._sockets.popitem(last=False)
            oldest.close()
            self.evicted += 1
        return sock

    def _remember_unbindable(self, key: tuple[int, bytes, int]) -> None:
        if len(self._unbindable) >= self.max_sockets:
            self._unbindable.clear()  # a local sender may have gone: try binding again
        self._unbindable.add(key)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._raw.close()

    def __enter__(self) -> SpoofingSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
