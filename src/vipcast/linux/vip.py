"""The floating addresses on the interface, and a watch on what happens to them and the link.

Both classes hold a netlink socket opened at construction, so they stay in the network
namespace they were made in and work from any thread or coroutine (see
:mod:`vipcast.linux._rtnl` for why not ``pyroute2.IPRoute``). Messages are encoded and
decoded by pyroute2.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from vipcast.linux._rtnl import (
    IFA_F_NODAD,
    IPInterface,
    Link,
    Rtnl,
    address_from_message,
    find_link,
    is_bridge_port_message,
    link_from_message,
    no_such_interface,
)
from vipcast.linux.privileges import explain

__all__ = [
    "LinkDown",
    "LinkUp",
    "NetlinkWatcher",
    "VipAdded",
    "VipManager",
    "VipRemoved",
    "WatchEvent",
]

log = logging.getLogger(__name__)

GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
RCVBUF = 1 << 20
_ALREADY_GONE = frozenset({errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV, errno.ESRCH})


class VipManager:
    """Adds and removes the VIPs on one interface; both idempotent.

    IPv6 VIPs are added with IFA_F_NODAD, usable at once. Raises
    :class:`PermissionError` (needs CAP_NET_ADMIN) and :class:`LookupError` (no such
    interface); other refusals are :class:`OSError` naming the address. A call that
    failed part-way is finished by calling it again (an address already there, or
    already gone, is no error): the election retries every advert interval.
    """

    def __init__(self, ifname: str, addresses: Sequence[IPInterface]) -> None:
        self.ifname = ifname
        self.addresses = tuple(addresses)
        self._rtnl = Rtnl()
        self._known: tuple[int, list[bytes]] | None = None  # see _lookup
        try:
            self._lookup()
        except BaseException:
            self._rtnl.close()
            raise

    def add(self) -> list[IPInterface]:
        """Put every VIP on the interface; returns those that were not there yet.

        Uses the index looked up last: a takeover's VIP add makes no lookup. An
        interface deleted and re-created has a new index; the kernel then answers
        ENODEV, and the add is made again after a fresh lookup.
        """
        try:
            return self._add(*(self._known or self._lookup()), stale_ok=True)
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                raise
        return self._add(*self._lookup(), stale_ok=False)

    def _add(self, index: int, requests: list[bytes], *, stale_ok: bool) -> list[IPInterface]:
        added = []
        for vip, request in zip(self.addresses, requests, strict=True):
            try:
                self._rtnl.send_encoded(request)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    continue
                if exc.errno == errno.ENODEV and stale_ok:
                    raise
                raise self._explain(exc, f"add {vip} to {self.ifname}") from exc
            added.append(vip)
        return added

    def remove(self) -> list[IPInterface]:
        """Take every VIP off the interface; returns those that were there."""
        removed, (index, _) = [], self._lookup()
        for vip in self.addresses:
            try:
                self._rtnl.delete_address(index, vip)
            except OSError as exc:
                if exc.errno not in _ALREADY_GONE:
                    raise self._explain(exc, f"remove {vip} from {self.ifname}") from exc
                continue
            removed.append(vip)
        return removed

    def present(self) -> set[IPInterface]:
        """The VIPs (matched by address) the interface holds now."""
        index, _ = self._lookup()
        held = {a.interface.ip for a in self._rtnl.addresses(index=index)}
        return {vip for vip in self.addresses if vip.ip in held}

    def close(self) -> None:
        self._rtnl.close()

    def _lookup(self) -> tuple[int, list[bytes]]:
        """The interface's index now, and the RTM_NEWADDR requests for it.

        The requests are encoded again only when the index changed (see
        ``Rtnl.encode_add_address``); :meth:`add` keeps using what this returned last.
        """
        index = find_link(self._rtnl, self.ifname).index
        if self._known is None or self._known[0] != index:
            flags = [IFA_F_NODAD if vip.version == 6 else 0 for vip in self.addresses]
            requests = [
                self._rtnl.encode_add_address(index, vip, flag)
                for vip, flag in zip(self.addresses, flags, strict=True)
            ]
            self._known = (index, requests)
        return self._known

    def __enter__(self) -> VipManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _explain(self, exc: OSError, what: str) -> OSError | LookupError:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return PermissionError(explain(["CAP_NET_ADMIN"], what))
        if exc.errno == errno.ENODEV:
            return no_such_interface(self.ifname, [link.name for link in self._rtnl.links()])
        return OSError(exc.errno, f"cannot {what}: {exc.strerror}")


@dataclass(frozen=True)
class LinkDown:
    """The interface lost carrier, was set down, or was deleted."""

    ifname: str


@dataclass(frozen=True)
class LinkUp:
    """The interface is up with carrier again."""

    ifname: str


@dataclass(frozen=True)
class VipRemoved:
    """One of our VIPs left the interface (us, an operator, NetworkManager, link down)."""

    address: IPInterface


@dataclass(frozen=True)
class VipAdded:
    """One of our VIPs appeared on the interface."""

    address: IPInterface


WatchEvent = LinkDown | LinkUp | VipRemoved | VipAdded


class NetlinkWatcher:
    """Link and VIP changes on one interface, as transitions, from a non-blocking socket.

    Use ``loop.add_reader(watcher.fileno(), ...)`` and call :meth:`read_events` there.
    Events are reported only when the state changes (link up/down reflects IFF_RUNNING,
    i.e. carrier, not just the administrative flag). Our own ``VipManager`` changes are
    reported too, and so is the kernel's: setting a link administratively down removes
    its IPv6 addresses, VIPs included (unless ``keep_addr_on_down``). If the kernel drops
    notifications (receive queue overrun), the state is re-read and the differences are
    reported as events.
    """

    def __init__(self, ifname: str, vips: Sequence[IPInterface]) -> None:
        self.ifname = ifname
        self.vips = tuple(vips)
        self._marshal = MarshalRtnl()
        self._sock = _subscribe()
        self._rtnl = Rtnl()
        try:
            link = find_link(self._rtnl, ifname)
        except BaseException:
            self.close()
            raise
        self.ifindex, self._up = link.index, link.up
        self._present = self._held_vips()

    @property
    def link_up(self) -> bool:
        """The link state as of the last event read."""
        return self._up

    @property
    def present(self) -> frozenset[IPInterface]:
        """Our VIPs on the interface as of the last event read."""
        return frozenset(self._present)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_events(self) -> list[WatchEvent]:
        """Every event queued now; an empty list when there is none."""
        events: list[WatchEvent] = []
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return events
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.warning("netlink notifications lost on %s; re-reading state", self.ifname)
                events.extend(self._resync())
                continue
            for msg in self._marshal.parse(data):
                events.extend(self._on_message(msg))

    def close(self) -> None:
        self._sock.close()
        self._rtnl.close()

    def __enter__(self) -> NetlinkWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_message(self, msg: Any) -> list[WatchEvent]:
        kind = msg["header"]["type"]
        if kind in (RTM_NEWLINK, RTM_DELLINK) and not is_bridge_port_message(msg):
            link = link_from_message(msg)
            if link.name != self.ifname:
                return []
            self.ifindex = link.index
            return self._link_state(link.up and kind == RTM_NEWLINK)
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            address = address_from_message(msg)
            if address is None or address.index != self.ifindex:
                return []
            return self._vip_state(address.interface, present=kind == RTM_NEWADDR)
        return []

    def _link_state(self, up: bool) -> list[WatchEvent]:
        if up == self._up:
            return []
        self._up = up
        return [LinkUp(self.ifname) if up else LinkDown(self.ifname)]

    def _vip_state(self, address: IPInterface, *, present: bool) -> list[WatchEvent]:
        events: list[WatchEvent] = []
        for vip in self.vips:
            if vip.ip != address.ip or (vip in self._present) == present:
                continue
            if present:
                self._present.add(vip)
                events.append(VipAdded(vip))
            else:
                self._present.discard(vip)
                events.append(VipRemoved(vip))
        return events

    def _resync(self) -> list[WatchEvent]:
        try:
            link: Link | None = find_link(self._rtnl, self.ifname)
        except LookupError:
            link = None
        events = self._link_state(link is not None and link.up)
        if link is not None:
            self.ifindex = link.index
        held = self._held_vips() if link is not None else set()
        for vip in self.vips:
            events.extend(self._vip_state(vip, present=vip in held))
        return events

    def _held_vips(self) -> set[IPInterface]:
        held = {a.interface.ip for a in self._rtnl.addresses(index=self.ifindex)}
        return {vip for vip in self.vips if vip.ip in held}


def _subscribe() -> socket.socket:
    """A non-blocking rtnetlink socket bound to the link and address notification groups."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, GROUPS))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
