"""How this node holds its VIPs: on the LAN interface (ARP/NA) or as host routes (BGP).

``[vip] announce`` picks the adapter; the election backends (VRRP and etcd), the VIP
guard, the data plane's last-resort release and ``vipcast release`` all take it from
here, so whatever path removes the VIP removes the route with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from vipcast.config import Config, IPInterface
from vipcast.linux.route import RouteSpec, RouteVips
from vipcast.linux.vip import VipManager

Vips = VipManager | RouteVips
VipErrors = (OSError, LookupError)  # what Vips raise (LookupError: interface gone)

log = logging.getLogger("vipcast.vips")

# A planned handover in route mode, the old holder's side (make-before-break over BGP):
ROUTE_SETTLE = 0.25
"""s between seeing the successor and withdrawing our routes: its route reaches the
router first (learnt by its BIRD, sent over BGP)."""
ROUTE_HOLD = 0.75
"""s our addresses stay after our routes are withdrawn: the router keeps sending here
until the withdrawal reaches it over BGP (11-225 ms in the lab, idle), and what it sends
meanwhile is still received (and relayed, drained) here, not dropped."""


def route_spec(cfg: Config) -> RouteSpec | None:
    """The host routes' table, protocol and local interface; None with announce = "arp"."""
    v = cfg.vip
    if v.announce != "route":
        return None
    return RouteSpec(v.route_table, v.route_protocol, v.local_interface)


def open_vips(ifname: str, addresses: Sequence[IPInterface], route: RouteSpec | None) -> Vips:
    """The adapter: the VIPs on ``ifname``, or (``route``) local addresses plus host routes."""
    if route is None:
        return VipManager(ifname, addresses)
    return RouteVips(addresses, route)


def for_config(cfg: Config) -> Vips:
    return open_vips(cfg.node.interface, cfg.vip.addresses, route_spec(cfg))


def held_where(cfg: Config) -> str:
    """Where the VIPs are held, for messages: ``eth0``, or ``lo and table 100``."""
    route = route_spec(cfg)
    if route is None:
        return cfg.node.interface
    return f"{route.local_interface} and table {route.table}"


def announces_by_arp(cfg: Config) -> bool:
    """Whether the leader sends gratuitous ARP / unsolicited NA (not in route mode)."""
    return cfg.vip.announce == "arp"


async def withdraw_routes_first(vips: Vips) -> None:
    """Route mode, a planned handover's first step of letting go: after
    :data:`ROUTE_SETTLE`, our routes go (the router moves the traffic), our addresses
    stay :data:`ROUTE_HOLD` longer. ARP mode: nothing (the successor's announcement
    already moved the traffic)."""
    if not isinstance(vips, RouteVips):
        return
    await asyncio.sleep(ROUTE_SETTLE)
    try:
        vips.withdraw()
    except VipErrors as e:
        log.warning("routes not withdrawn before the addresses: %s", e)
        return
    await asyncio.sleep(ROUTE_HOLD)
