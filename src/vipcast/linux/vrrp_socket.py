"""The raw IP protocol 112 socket VRRP adverts travel on, bound to one interface.

Multicast mode (the default) joins 224.0.0.18 / ff02::12 and sends there; unicast mode
(``unicast_peers``) joins nothing and sends one copy per peer. Sent packets carry TTL /
hop limit 255 and TOS / traffic class 0xc0, from the node's own address (``source``),
with multicast loopback off so a node never hears its own adverts.

Received packets are reported as they are (:class:`RawAdvert`): the caller decodes the
VRRP message and rejects what RFC 9568 says to reject: TTL other than 255, and in unicast
mode a source that is not a configured peer (:meth:`VrrpSocket.is_known_source`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from vipcast.linux import interfaces
from vipcast.linux.interfaces import IPAddress
from vipcast.linux.privileges import explain

__all__ = ["GROUP_V4", "GROUP_V6", "RawAdvert", "VrrpSocket"]

log = logging.getLogger(__name__)

IPPROTO_VRRP = 112
GROUP_V4 = IPv4Address("224.0.0.18")
GROUP_V6 = IPv6Address("ff02::12")
HOP_LIMIT = 255
TRAFFIC_CLASS = 0xC0  # DSCP CS6, "network control"
# Not every Python build exports these <linux/in.h> / <linux/in6.h> values.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
# struct ip_mreqn (IP_ADD_MEMBERSHIP, IP_MULTICAST_IF): group, local address, ifindex
_MREQN = struct.Struct("=4s4si")
# struct in_pktinfo (IP_PKTINFO on send): ifindex, source ("spec_dst"), unused
_IN_PKTINFO = struct.Struct("=i4s4s")
# struct ipv6_mreq (IPV6_JOIN_GROUP): group, ifindex
_IPV6_MREQ = struct.Struct("=16si")
# struct in6_pktinfo (IPV6_PKTINFO both ways): address, ifindex
_IN6_PKTINFO = struct.Struct("=16si")
_HOPLIMIT = struct.Struct("=i")
# SO_TIMESTAMPNS: the kernel's receive time of each packet, a struct timespec (REALTIME)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("=qq")
MAX_AGE = 1.0  # seconds; an older stamp means the wall clock was stepped meanwhile
_ANCILLARY_SIZE = (
    socket.CMSG_SPACE(_HOPLIMIT.size)
    + socket.CMSG_SPACE(_IN6_PKTINFO.size)
    + socket.CMSG_SPACE(_TIMESPEC.size)
)
_RECV_SIZE = 65535


@dataclass(frozen=True)
class RawAdvert:
    """One received protocol-112 packet: the VRRP message and what the IP layer said."""

    payload: bytes  # the VRRP message, IP header removed
    src: IPAddress
    dst: IPAddress
    ttl: int  # TTL (IPv4) or hop limit (IPv6) as received; RFC 9568 wants 255
    # seconds from the kernel's receipt to the read: timers count from the arrival
    age: float = field(default=0.0, compare=False)

    def __repr__(self) -> str:
        return f"RawAdvert({self.src} -> {self.dst} ttl={self.ttl} payload={self.payload.hex()})"


class VrrpSocket:
    """Sends and receives VRRP on one interface; non-blocking, for ``loop.add_reader``.

    ``send()`` never raises: any refusal returns False, counted by errno name in
    ``send_errors`` and kept as ``last_error`` (ENOBUFS, ENETDOWN, EPERM from a firewall's
    drop in the output hook, EINVAL while the IPv6 link-local source is in DAD after the
    link came up). An advert is repeated every interval: the caller counts, logs, goes on.
    Setup errors raise: :class:`PermissionError` (needs CAP_NET_RAW), :class:`LookupError`
    (no such interface, or no address to send from) and :class:`OSError` with an
    explanation for the rest.
    """

    def __init__(
        self,
        ifname: str,
        version: Literal[4, 6],
        *,
        unicast_peers: Sequence[IPAddress] = (),
        source: IPAddress | None = None,
    ) -> None:
        self.ifname = ifname
        self.version = version
        self.ifindex = interfaces.ifindex(ifname)
        self.unicast_peers = tuple(unicast_peers)
        self.source = source or interfaces.primary_address(ifname, version)
        self.send_errors: Counter[str] = Counter()
        self.last_error = ""  # what the last failed send() met, for the caller's log
        self.malformed = 0
        _check_versions(version, self.source, self.unicast_peers)
        _check_source_is_local(ifname, version, self.source)
        self._sock = self._open()
        log.debug("VRRP socket on %s: to %s from %s", ifname, self.destinations(), self.source)

    @property
    def unicast(self) -> bool:
        return bool(self.unicast_peers)

    def destinations(self) -> list[IPAddress]:
        """Where each advert goes: the VRRP group, or every unicast peer."""
        if self.unicast:
            return list(self.unicast_peers)
        return [GROUP_V4 if self.version == 4 else GROUP_V6]

    def is_known_source(self, src: IPAddress) -> bool:
        """In unicast mode only configured peers may speak ("unknown unicast source")."""
        return not self.unicast or src in self.unicast_peers

    def send(self, message: bytes, dst: IPAddress) -> bool:
        """Send one encoded VRRP message to ``dst``; False (counted) on any OSError."""
        try:
            self._sock.sendmsg([message], [self._source_cmsg()], 0, self._sockaddr(dst))
        except OSError as exc:
            self.last_error = self._describe(exc)
            self.send_errors[errno_name(exc)] += 1
            log.debug("VRRP advert to %s on %s not sent: %s", dst, self.ifname, self.last_error)
            return False
        return True

    def _describe(self, exc: OSError) -> str:
        name = errno_name(exc)
        if exc.errno == errno.EPERM:
            return f"{name} (a firewall rule dropping VRRP output?)"
        if exc.errno == errno.EINVAL and self.version == 6:  # IPV6_PKTINFO source refused
            return f"{name} (is {self.source} in DAD, or gone with the link?)"
        return f"{name} ({exc.strerror})"

    def recv(self) -> RawAdvert | None:
        """The next queued packet, or None when nothing is queued (malformed ones skipped)."""
        while True:
            try:
                advert = self._recv4() if self.version == 4 else self._recv6()
            except (BlockingIOError, InterruptedError):
                return None
            if advert is not None:
                return advert
            self.malformed += 1

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> VrrpSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # setup, one named step each

    def _open(self) -> socket.socket:
        family = socket.AF_INET if self.version == 4 else socket.AF_INET6
        with self._explained("open a raw VRRP socket (IP protocol 112)"):
            sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            self._configure(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _configure(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        with self._explained("bind the VRRP socket to the interface"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
        if self.version == 4:
            _set_ipv4_options(sock, self.ifindex)
        else:
            _set_ipv6_options(sock, self.ifindex)
        if not self.unicast:
            with self._explained("join the VRRP multicast group"):
                self._join(sock)

    def _join(self, sock: socket.socket) -> None:
        if self.version == 4:
            mreq = _MREQN.pack(GROUP_V4.packed, bytes(4), self.ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            mreq6 = _IPV6_MREQ.pack(GROUP_V6.packed, self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)

    @contextlib.contextmanager
    def _explained(self, what: str) -> Iterator[None]:
        """Turn the errnos a setup step can expect into messages that say what to do."""
        try:
            yield
        except OSError as exc:
            explained = _explain(exc, self.ifname, self.version, what)
            if explained is exc:
                raise
            raise explained from exc

    # the data path

    def _source_cmsg(self) -> tuple[int, int, bytes]:
        if self.version == 4:
            info = _IN_PKTINFO.pack(self.ifindex, self.source.packed, bytes(4))
            return socket.IPPROTO_IP, IP_PKTINFO, info
        info6 = _IN6_PKTINFO.pack(self.source.packed, self.ifindex)
        return socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info6

    def _sockaddr(self, dst: IPAddress) -> tuple[str, int] | tuple[str, int, int, int]:
        if self.version == 4:
            return str(dst), 0
        return str(dst), 0, 0, self.ifindex

    def _recv4(self) -> RawAdvert | None:
        data, ancillary, _flags, _addr = self._sock.recvmsg(_RECV_SIZE, _ANCILLARY_SIZE)
        advert = parse_ipv4_untrusted(data)
        return None if advert is None else replace(advert, age=_age(ancillary))

    def _recv6(self) -> RawAdvert | None:
        data, ancillary, flags, addr = self._sock.recvmsg(_RECV_SIZE, _ANCILLARY_SIZE)
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            return None
        hop_limit, dst = _ipv6_ancillary(ancillary)
        if hop_limit is None or dst is None:
            return None
        src = IPv6Address(addr[0].partition("%")[0])  # without the "%eth0" scope
        return RawAdvert(data, src, dst, hop_limit, _age(ancillary))


def errno_name(exc: OSError) -> str:
    """``EPERM`` for an OSError with errno 1; the number itself when it has no name."""
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def parse_ipv4_untrusted(packet: bytes) -> RawAdvert | None:
    """Split what an IPv4 raw socket reads into header facts and payload; None if malformed.

    IPv4 header: byte 0 version (4 bits) | header length in 32-bit words (4 bits);
    bytes 2-3 total length; byte 8 TTL; byte 9 protocol; 12-15 source; 16-19 destination.
    """
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_len = (packet[0] & 0x0F) * 4
    total_len = int.from_bytes(packet[2:4], "big")
    if header_len < 20 or not header_len <= total_len <= len(packet):
        return None
    if packet[9] != IPPROTO_VRRP:
        return None
    src, dst = IPv4Address(packet[12:16]), IPv4Address(packet[16:20])
    return RawAdvert(packet[header_len:total_len], src, dst, packet[8])


def _age(ancillary: list[tuple[int, int, bytes]]) -> float:
    """Seconds since the kernel stamped the packet (0 without a stamp), at most MAX_AGE."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            stamp = float(sec) + float(nsec) / 1e9
            return min(max(time.time() - stamp, 0.0), MAX_AGE)
    return 0.0


def _ipv6_ancillary(
    ancillary: list[tuple[int, int, bytes]],
) -> tuple[int | None, IPv6Address | None]:
    hop_limit, dst = None, None
    for level, kind, data in ancillary:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_HOPLIMIT and len(data) >= _HOPLIMIT.size:
            hop_limit = _HOPLIMIT.unpack_from(data)[0]
        elif kind == socket.IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
            dst = IPv6Address(_IN6_PKTINFO.unpack_from(data)[0])
    return hop_limit, dst


def _set_ipv4_options(sock: socket.socket, ifindex: int) -> None:
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, HOP_LIMIT)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, HOP_LIMIT)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TRAFFIC_CLASS)
    mreqn = _MREQN.pack(bytes(4), bytes(4), ifindex)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    # only the groups this socket joined, not those other sockets of the host joined
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)


def _set_ipv6_options(sock: socket.socket, ifindex: int) -> None:
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, HOP_LIMIT)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, HOP_LIMIT)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TRAFFIC_CLASS)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    with contextlib.suppress(OSError):  # kernels before 4.20 lack it
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)


def _check_versions(version: int, source: IPAddress, peers: Sequence[IPAddress]) -> None:
    for address in (source, *peers):
        if address.version != version:
            raise ValueError(f"{address} is not an IPv{version} address (VRRP over IPv{version})")


def _check_source_is_local(ifname: str, version: Literal[4, 6], source: IPAddress) -> None:
    own = [a.ip for a in interfaces.addresses(ifname, version)]
    if source not in own:
        raise OSError(
            errno.EADDRNOTAVAIL,
            f"cannot send VRRP from {source}: it is not an address of {ifname} "
            f"(which has {', '.join(map(str, own)) or 'none'})",
        )


def _explain(exc: OSError, ifname: str, version: int, what: str) -> Exception:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return PermissionError(explain(["CAP_NET_RAW"], f"{what} on {ifname}"))
    if exc.errno == errno.ENODEV:
        return interfaces.no_such_interface(ifname)
    if exc.errno == errno.ENOBUFS and version == 4:
        hint = "too many multicast memberships: raise net.ipv4.igmp_max_memberships"
        return OSError(exc.errno, f"cannot {what} on {ifname}: {hint}")
    if exc.errno == errno.EADDRNOTAVAIL:
        hint = "the interface has no usable address for it (is it up, with IPv4/IPv6 enabled?)"
        return OSError(exc.errno, f"cannot {what} on {ifname}: {hint}")
    return exc
