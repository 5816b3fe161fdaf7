"""UDP socket setup for the relay and the receivers.

Small named functions, one socket option each, in the order a caller needs them::

    sock = udp_socket(socket.AF_INET, rcvbuf=32 << 20)
    bind_freebind(sock, "198.18.0.100", 8600)   # before the VIP exists
    enable_pktinfo(sock)                        # learn each datagram's destination

Every errno we expect is turned into a :class:`UdpSetupError` that says what to do
(a capability, a sysctl, a missing interface); anything else is re-raised as is.
The batched send and receive paths are in :mod:`vipcast.linux.mmsg`; delivery from
the original sender's address is in :mod:`vipcast.linux.spoof`.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Mapping
from typing import Final

log = logging.getLogger(__name__)

__all__ = [
    "UdpSetupError",
    "family_of",
    "interface_index",
    "sockaddr",
    "udp_socket",
    "set_buffers",
    "bind_freebind",
    "enable_pktinfo",
    "join_group",
    "multicast_sender",
    "transparent_socket",
    "enable_gso",
]

# Linux option numbers the socket module does not always export
# (include/uapi/asm-generic/socket.h, linux/in.h, linux/in6.h, linux/udp.h).
SO_SNDBUFFORCE: Final = 32
SO_RCVBUFFORCE: Final = 33
IP_PKTINFO: Final = 8
IP_FREEBIND: Final = 15
IP_TRANSPARENT: Final = 19
IP_MULTICAST_ALL: Final = 49
IPV6_MULTICAST_ALL: Final = 29
IPV6_RECVPKTINFO: Final = 49
IPV6_PKTINFO: Final = 50
IPV6_TRANSPARENT: Final = 75
IPV6_FREEBIND: Final = 78
UDP_SEGMENT: Final = 103

DEFAULT_BUFFER: Final = 32 << 20  # 32 MiB: ~0.2 s of 100k datagrams/s of 1 KiB

# struct ip_mreqn: group, local address (unused: 0.0.0.0), interface index
_IP_MREQN: Final = struct.Struct("=4s4si")
# struct ipv6_mreq: group, interface index
_IPV6_MREQ: Final = struct.Struct("=16sI")


class UdpSetupError(OSError):
    """A socket could not be set up; the message says what to change."""


def _explain(exc: OSError, what: str, hints: Mapping[int, str]) -> OSError:
    """``exc`` as a :class:`UdpSetupError` when its errno is expected, else unchanged."""
    hint = hints.get(exc.errno or 0)
    if hint is None:
        return exc
    return UdpSetupError(exc.errno, f"{what}: {exc.strerror} ({hint})")


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for an address written as text."""
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def interface_index(interface: str | int) -> int:
    """The index of an interface given by name or index."""
    if isinstance(interface, int):
        return interface
    try:
        return socket.if_nametoindex(interface)
    except OSError as exc:
        raise UdpSetupError(errno.ENODEV, f"no network interface named {interface!r}") from exc


def sockaddr(
    address: str, port: int, interface: str | int | None = None
) -> tuple[str, int] | tuple[str, int, int, int]:
    """What ``bind``/``sendto`` take for ``address``: IPv6 link-local gets its scope id.

    A link-local address means nothing without an interface: ``interface`` (or a
    ``%eth0`` suffix on the address) gives it. Other addresses ignore ``interface``.
    """
    host, _, scope = address.partition("%")
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return (host, port)
    if not ip.is_link_local:
        return (host, port, 0, 0)
    where = scope or interface
    if where is None:
        raise UdpSetupError(
            errno.EINVAL, f"{host} is link-local: it needs an interface (e.g. {host}%eth0)"
        )
    index = int(where) if isinstance(where, str) and where.isdigit() else interface_index(where)
    return (host, port, 0, index)


def udp_socket(
    family: socket.AddressFamily,
    *,
    rcvbuf: int = DEFAULT_BUFFER,
    sndbuf: int = DEFAULT_BUFFER,
    reuse_port: bool = False,
) -> socket.socket:
    """A non-blocking UDP socket with large buffers (0 keeps the kernel default)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        set_buffers(sock, rcvbuf=rcvbuf, sndbuf=sndbuf)
    except BaseException:
        sock.close()
        raise
    return sock


def set_buffers(sock: socket.socket, *, rcvbuf: int = 0, sndbuf: int = 0) -> tuple[int, int]:
    """Ask for buffer sizes in bytes (0: leave as is); returns what each now holds."""
    if rcvbuf:
        _set_buffer(sock, _RCV, rcvbuf)
    if sndbuf:
        _set_buffer(sock, _SND, sndbuf)
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2,
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2,
    )


# (name, option needing CAP_NET_ADMIN, plain option, sysctl capping the plain one)
_RCV: Final = ("SO_RCVBUF", SO_RCVBUFFORCE, socket.SO_RCVBUF, "net.core.rmem_max")
_SND: Final = ("SO_SNDBUF", SO_SNDBUFFORCE, socket.SO_SNDBUF, "net.core.wmem_max")


def _set_buffer(sock: socket.socket, which: tuple[str, int, int, str], size: int) -> int:
    """Set one buffer, FORCE first; log what was obtained (the kernel reports double)."""
    name, force, plain, sysctl = which
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
        how = name + "FORCE"
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)
        how = f"{name}, capped by {sysctl}"
    got = sock.getsockopt(socket.SOL_SOCKET, plain) // 2
    if got < size:
        log.warning(
            "%s: asked %d bytes, got %d (%s): give CAP_NET_ADMIN or raise %s",
            name,
            size,
            got,
            how,
            sysctl,
        )
    else:
        log.debug("%s: %d bytes (%s)", name, got, how)
    return got


def bind_freebind(
    sock: socket.socket, address: str, port: int, interface: str | int | None = None
) -> None:
    """Bind to ``address:port`` even when no interface has ``address`` yet.

    A relay binds the VIP at start; datagrams flow the moment the VIP is added.
    The relay's fan-out socket binds this node's own address, which for IPv6 may
    still be in duplicate address detection. IPv6 sockets use IPV6_FREEBIND
    (Linux 4.15); older kernels take IP_FREEBIND. An IPv6 link-local address is
    bound on ``interface`` (its scope), which the socket then sends out of.
    """
    if sock.family == socket.AF_INET6:
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        except OSError:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    try:
        sock.bind(sockaddr(address, port, interface))
    except OSError as exc:
        raise _explain(
            exc,
            f"bind {address} port {port}",
            {
                errno.EADDRINUSE: "another program already receives on this address and port",
                errno.EACCES: "ports below 1024 need CAP_NET_BIND_SERVICE",
                errno.EINVAL: "the socket is already bound",
            },
        ) from exc


def enable_pktinfo(sock: socket.socket) -> None:
    """Have each received datagram carry its destination address (IP_PKTINFO).

    On a dual-stack IPv6 socket, IPv4 destinations come as ::ffff:a.b.c.d, like
    the sources.
    """
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


_JOIN_HINTS: Final = {
    errno.ENOBUFS: "too many groups: raise net.ipv4.igmp_max_memberships",
    errno.ENODEV: "the interface does not exist or has no address",
    errno.EINVAL: "not a multicast address, or the wrong address family",
}


def join_group(sock: socket.socket, group: str, interface: str | int) -> None:
    """Receive ``group`` on ``interface`` (name or index), and no other group.

    Joining twice is harmless. IP_MULTICAST_ALL is turned off so a socket bound to
    the wildcard address gets only the groups it joined itself.
    """
    index = interface_index(interface)
    try:
        if sock.family == socket.AF_INET6:
            _join6(sock, group, index)
        else:
            _join4(sock, group, index)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.debug("already a member of %s on interface %d", group, index)
            return
        raise _explain(exc, f"join {group} on interface {interface}", _JOIN_HINTS) from exc


def _join4(sock: socket.socket, group: str, index: int) -> None:
    mreq = _IP_MREQN.pack(socket.inet_aton(group), bytes(4), index)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)


def _join6(sock: socket.socket, group: str, index: int) -> None:
    mreq = _IPV6_MREQ.pack(socket.inet_pton(socket.AF_INET6, group), index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
    except OSError:
        log.debug("IPV6_MULTICAST_ALL needs Linux 4.20; other groups may be seen")


def multicast_sender(
    sock: socket.socket, interface: str | int, *, ttl: int = 1, loop: bool = True
) -> None:
    """Send multicast out of ``interface``; with ``loop`` this host's members get it too.

    TTL 1 keeps the datagrams on the LAN. Loop must stay on: the master's own
    receiver is a member of the group it sends to.
    """
    index = interface_index(interface)
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))
        else:
            mreqn = _IP_MREQN.pack(bytes(4), bytes(4), index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
    except OSError as exc:
        raise _explain(exc, f"multicast out of interface {interface}", _JOIN_HINTS) from exc


def transparent_socket(family: socket.AddressFamily, *, sndbuf: int = 0) -> socket.socket:
    """A non-blocking UDP socket that may bind to, and send from, a foreign address.

    IP_TRANSPARENT / IPV6_TRANSPARENT need CAP_NET_RAW or CAP_NET_ADMIN. SO_REUSEADDR
    lets two receivers on one node borrow the same foreign (address, port).
    """
    sock = udp_socket(family, rcvbuf=0, sndbuf=sndbuf)
    level, option = (
        (socket.IPPROTO_IPV6, IPV6_TRANSPARENT)
        if family == socket.AF_INET6
        else (socket.IPPROTO_IP, IP_TRANSPARENT)
    )
    try:
        sock.setsockopt(level, option, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError as exc:
        sock.close()
        raise _explain(
            exc,
            "transparent socket (sending from the original sender's address)",
            {errno.EPERM: "needs CAP_NET_RAW or CAP_NET_ADMIN"},
        ) from exc
    return sock


def enable_gso(sock: socket.socket, segment_size: int) -> None:
    """Split every send into ``segment_size``-byte datagrams in the kernel (UDP_SEGMENT).

    Linux 4.18+. A single ``sendmsg`` can also ask for it with a control message;
    see :func:`vipcast.linux.mmsg.send_segments`.
    """
    try:
        sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, segment_size)
    except OSError as exc:
        raise _explain(
            exc,
            "UDP segmentation offload",
            {
                errno.ENOPROTOOPT: "needs Linux 4.18 or later",
                errno.EINVAL: "segment size out of range",
            },
        ) from exc
