"""The VIPs announced by routing (``[vip] announce = "route"``): host routes for BGP.

The leader holds each VIP twice over:

- as a local address on ``local_interface`` (``lo`` unless configured), a /32 or /128, so
  apps bind to it, the relay's feed sockets receive on it and replies leave from it.
  Nothing announces it (no GARP, no NA) and a host prefix draws no connected route;
- as the host route ``VIP dev local_interface proto PROTOCOL table TABLE``, in a table of
  its own that no ``ip rule`` consults: it changes no forwarding on the node and only
  carries the announcement. The node's BIRD (``protocol kernel { kernel table TABLE;
  learn; }``) or FRR learns it from the kernel and exports it over BGP to the site router.

Adding is address first, then route (traffic the route draws finds the address);
removing is route first (the announcement is withdrawn before the address goes). Both
idempotent, as :class:`vipcast.linux.vip.VipManager`, whose interface this class has.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_interface
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from vipcast.linux._rtnl import RT_SCOPE_LINK, IPInterface, Rtnl, encode_request, find_link
from vipcast.linux.privileges import explain
from vipcast.linux.vip import VipManager

__all__ = ["RouteSpec", "RouteVips", "host_routes", "route_request"]

RT_TABLE_COMPAT = 252  # rtm_table for a table above 255 (the id then is in RTA_TABLE)
RTN_UNICAST = 1
RT_SCOPE_NOWHERE = 255  # in a delete: any scope
_ALREADY_GONE = frozenset({errno.ESRCH, errno.ENOENT, errno.ENODEV})


@dataclass(frozen=True)
class RouteSpec:
    """Where route mode puts the VIPs: the routing table, our protocol number, the address."""

    table: int
    protocol: int
    local_interface: str


def host_routes(addresses: Sequence[IPInterface]) -> tuple[IPInterface, ...]:
    """Each VIP as a host prefix (/32, /128): what is routed, and what the local address is."""
    return tuple(ip_interface(f"{a.ip}/{a.max_prefixlen}") for a in addresses)


def route_request(vip: IPInterface, spec: RouteSpec, oif: int, *, add: bool) -> bytes:
    """RTM_NEWROUTE (create or replace: idempotent) or RTM_DELROUTE of our host route.

    A delete names table, destination and our protocol, so it never takes a route of
    the same prefix that someone else put there; it ignores the interface, so a route
    left on an interface since re-created is withdrawn too.
    """
    msg = rtmsg()
    msg["family"] = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    msg["dst_len"] = vip.max_prefixlen
    msg["table"] = spec.table if spec.table < 256 else RT_TABLE_COMPAT
    msg["proto"] = spec.protocol
    msg["scope"] = RT_SCOPE_LINK if add else RT_SCOPE_NOWHERE
    msg["type"] = RTN_UNICAST if add else 0
    msg["attrs"] = [("RTA_DST", str(vip.ip)), ("RTA_TABLE", spec.table)]
    if add:
        msg["attrs"].append(("RTA_OIF", oif))
        return encode_request(msg, RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
    return encode_request(msg, RTM_DELROUTE, NLM_F_ACK)


def _dump_request(family: int, spec: RouteSpec) -> bytes:
    """Routes of our table and protocol (the kernel filters with strict checking)."""
    msg = rtmsg()
    msg["family"] = family
    msg["table"] = spec.table if spec.table < 256 else RT_TABLE_COMPAT
    msg["proto"] = spec.protocol
    msg["attrs"] = [("RTA_TABLE", spec.table)]
    return encode_request(msg, RTM_GETROUTE, NLM_F_DUMP)


def _is_ours(msg: Any, spec: RouteSpec) -> bool:
    table = msg.get_attr("RTA_TABLE")
    table = int(msg["table"] if table is None else table)
    return table == spec.table and int(msg["proto"]) == spec.protocol


class RouteVips:
    """Adds and removes the VIPs as local addresses plus host routes; see the module.

    Raises what :class:`VipManager` raises: :class:`PermissionError` (CAP_NET_ADMIN),
    :class:`LookupError` (no local interface), :class:`OSError` naming the route.
    """

    def __init__(self, addresses: Sequence[IPInterface], spec: RouteSpec) -> None:
        self.spec = spec
        self.ifname = spec.local_interface
        self.addresses = host_routes(addresses)
        self._local = VipManager(spec.local_interface, self.addresses)
        self._rtnl = Rtnl(strict=True)
        self._known: tuple[int, list[bytes]] | None = None  # the index and the add requests
        try:
            self._lookup()
        except BaseException:
            self.close()
            raise

    def add(self) -> list[IPInterface]:
        """Address, then route, for every VIP; returns those whose address was not there."""
        added = self._local.add()
        try:
            self._add_routes(*(self._known or self._lookup()))
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                raise
            self._add_routes(*self._lookup())  # the interface was re-created: a new index
        return added

    def remove(self) -> list[IPInterface]:
        """Route, then address, of every VIP; returns those that had either."""
        withdrawn = self.withdraw()
        removed = set(self._local.remove())
        return [vip for vip in self.addresses if vip in withdrawn | removed]

    def withdraw(self) -> set[IPInterface]:
        """The routes only (the router moves the traffic), the local addresses kept (what
        is still on its way is received): a planned handover's first step of letting go.
        Returns the VIPs whose route was there."""
        withdrawn = set()
        for vip in self.addresses:
            try:
                self._rtnl.send_encoded(route_request(vip, self.spec, 0, add=False))
            except OSError as exc:
                if exc.errno not in _ALREADY_GONE:
                    raise self._explain(exc, f"withdraw the route to {vip}") from exc
                continue
            withdrawn.add(vip)
        return withdrawn

    def present(self) -> set[IPInterface]:
        """The VIPs held now: local address and route both in place."""
        return self._local.present() & self.routed()

    def routed(self) -> set[IPInterface]:
        """The VIPs whose host route is in our table now."""
        family = socket.AF_INET if self.addresses[0].version == 4 else socket.AF_INET6
        found = set()  # the VIPs are of one family (config._check_cross)
        for msg in self._rtnl.send_encoded(_dump_request(family, self.spec)):
            dst = msg.get_attr("RTA_DST")
            if dst is not None and _is_ours(msg, self.spec):
                found.add(ip_interface(f"{dst}/{msg['dst_len']}"))
        return found & set(self.addresses)

    def close(self) -> None:
        self._rtnl.close()
        self._local.close()

    def __enter__(self) -> RouteVips:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_routes(self, index: int, requests: list[bytes]) -> None:
        for vip, request in zip(self.addresses, requests, strict=True):
            try:
                self._rtnl.send_encoded(request)
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise
                raise self._explain(
                    exc, f"add the route to {vip} in table {self.spec.table}"
                ) from exc

    def _lookup(self) -> tuple[int, list[bytes]]:
        index = find_link(self._rtnl, self.ifname).index
        if self._known is None or self._known[0] != index:
            requests = [route_request(vip, self.spec, index, add=True) for vip in self.addresses]
            self._known = (index, requests)
        return self._known

    @staticmethod
    def _explain(exc: OSError, what: str) -> OSError:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return PermissionError(explain(["CAP_NET_ADMIN"], what))
        return OSError(exc.errno, f"cannot {what}: {exc.strerror}")
