"""A small blocking rtnetlink channel: pyroute2 encodes and decodes, we only send and wait.

Why not ``pyroute2.IPRoute``: in 0.9 the synchronous ``IPRoute`` drives a private asyncio
loop with ``run_until_complete``, so it raises ``RuntimeError: This event loop is already
running`` when called from a coroutine, and it binds to the calling thread. The kernel
answers an rtnetlink request inside ``send()``, so a plain ``AF_NETLINK`` socket and
pyroute2's message classes (:class:`ifinfmsg`, :class:`ifaddrmsg`, ``MarshalRtnl``) give
the same result, usable from any thread or coroutine, and pinned to the network namespace
the socket was opened in.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from typing import Any

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_GETADDR, RTM_GETLINK, RTM_NEWADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

IPInterface = IPv4Interface | IPv6Interface

_NLMSG_SEQ = struct.Struct("=I")  # nlmsghdr: len u32, type u16, flags u16, seq u32 (at 8), pid
IFF_UP = 0x1
IFF_RUNNING = 0x40  # RFC 2863 operational state up: carrier and not dormant
IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12  # Linux 4.20: dumps filtered by the kernel (table, protocol)


@dataclass(frozen=True)
class Link:
    """One interface as RTM_NEWLINK describes it."""

    index: int
    name: str
    flags: int
    mac: bytes

    @property
    def up(self) -> bool:
        """Administratively up *and* operationally up (carrier present)."""
        return bool(self.flags & IFF_UP and self.flags & IFF_RUNNING)


@dataclass(frozen=True)
class Address:
    """One address as RTM_NEWADDR describes it."""

    index: int
    interface: IPInterface
    flags: int
    scope: int

    @property
    def usable(self) -> bool:
        """Neither tentative (DAD running) nor failed DAD nor deprecated."""
        return not self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED | IFA_F_DEPRECATED)


def is_bridge_port_message(msg: Any) -> bool:
    """AF_BRIDGE link messages describe bridge-port state, not the interface itself."""
    return int(msg["family"]) == socket.AF_BRIDGE


def link_from_message(msg: Any) -> Link:
    mac = msg.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
    return Link(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME") or ""),
        flags=int(msg["flags"]),
        mac=bytes.fromhex(mac.replace(":", "")),
    )


def address_from_message(msg: Any) -> Address | None:
    """The address of an ifaddrmsg (IFA_LOCAL for IPv4, IFA_ADDRESS for IPv6), if any."""
    ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if not ip:
        return None
    flags = msg.get_attr("IFA_FLAGS")
    return Address(
        index=int(msg["index"]),
        interface=ip_interface(f"{ip}/{msg['prefixlen']}"),
        flags=int(msg["flags"] if flags is None else flags),
        scope=int(msg["scope"]),
    )


class Rtnl:
    """Requests to the kernel's routing netlink, answered synchronously."""

    def __init__(self, *, timeout: float = 2.0, strict: bool = False) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        if strict:  # an older kernel dumps everything: callers filter the answers too
            with contextlib.suppress(OSError):
                self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self._sock.bind((0, 0))
        self._sock.settimeout(timeout)
        self._marshal = MarshalRtnl()
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def link(self, ifname: str) -> Link:
        """One link by name; ``OSError(ENODEV)`` when there is none."""
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["attrs"] = [("IFLA_IFNAME", ifname)]
        return link_from_message(self._request(msg, RTM_GETLINK, NLM_F_ACK)[0])

    def links(self) -> list[Link]:
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        return [link_from_message(m) for m in self._request(msg, RTM_GETLINK, NLM_F_DUMP)]

    def addresses(self, family: int = socket.AF_UNSPEC, index: int | None = None) -> list[Address]:
        msg = ifaddrmsg()
        msg["family"] = family
        found = (address_from_message(m) for m in self._request(msg, RTM_GETADDR, NLM_F_DUMP))
        return [a for a in found if a is not None and index in (None, a.index)]

    @staticmethod
    def encode_add_address(index: int, iface: IPInterface, flags: int = 0) -> bytes:
        """An RTM_NEWADDR request, for :meth:`send_encoded` (EEXIST if already there).

        pyroute2 takes ~0.1 ms to encode it (~0.35 ms the first time), the kernel
        ~0.02 ms to act on it: a takeover's VIP add sends one encoded in advance.
        """
        msg = _address_message(index, iface, flags)
        msg["attrs"].append(("IFA_FLAGS", flags))
        return encode_request(msg, RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)

    def send_encoded(self, request: bytes) -> list[Any]:
        """Send an encoded request under a new sequence number; its replies, or OSError."""
        with self._lock:
            seq = next(self._seq)
            data = bytearray(request)
            _NLMSG_SEQ.pack_into(data, 8, seq)
            self._sock.send(data)
            return list(self._replies(seq))

    def delete_address(self, index: int, iface: IPInterface) -> None:
        """RTM_DELADDR; raises ``OSError(EADDRNOTAVAIL)`` when it is not there."""
        self._request(_address_message(index, iface, 0), RTM_DELADDR, NLM_F_ACK)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, msg: Any, msg_type: int, flags: int) -> list[Any]:
        return self.send_encoded(encode_request(msg, msg_type, flags))

    def _replies(self, seq: int) -> Iterator[Any]:
        while True:
            for msg in self._marshal.parse(self._sock.recv(1 << 16)):
                header = msg["header"]
                if header["sequence_number"] != seq:
                    continue
                if header["type"] in (NLMSG_DONE, NLMSG_ERROR):
                    _raise_error(header.get("error"))
                    return
                yield msg


def find_link(rtnl: Rtnl, ifname: str) -> Link:
    """The link named ``ifname``, or ``LookupError`` listing the interfaces there are."""
    try:
        return rtnl.link(ifname)
    except OSError as exc:
        if exc.errno not in (errno.ENODEV, errno.EINVAL, errno.ERANGE):  # bad or long name
            raise
    raise no_such_interface(ifname, [link.name for link in rtnl.links()])


def no_such_interface(ifname: str, names: Iterable[str]) -> LookupError:
    return LookupError(f"no interface {ifname!r}; interfaces here: {', '.join(sorted(names))}")


def encode_request(msg: Any, msg_type: int, flags: int) -> bytes:
    """``msg`` as a request of ``msg_type``; :meth:`Rtnl.send_encoded` numbers it."""
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = NLM_F_REQUEST | flags
    msg.encode()
    return bytes(msg.data)


def _address_message(index: int, iface: IPInterface, flags: int) -> Any:
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    msg["prefixlen"] = iface.network.prefixlen
    msg["flags"] = flags & 0xFF
    msg["scope"] = RT_SCOPE_UNIVERSE
    msg["index"] = index
    msg["attrs"] = [("IFA_LOCAL", str(iface.ip)), ("IFA_ADDRESS", str(iface.ip))]
    return msg


def _raise_error(error: object) -> None:
    """pyroute2 puts a NetlinkError (``.code``) or an OSError in the header; raise OSError."""
    if error is None:
        return
    code = int(getattr(error, "code", getattr(error, "errno", 0)) or errno.EIO)
    raise OSError(code, f"{os.strerror(code)} (netlink)")
