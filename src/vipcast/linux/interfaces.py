"""What the kernel says about one interface: index, MAC, addresses, subnets, link state.

Every call opens a short-lived rtnetlink socket in the calling thread's network
namespace; it blocks for well under a millisecond and is safe inside a coroutine.
"""

from __future__ import annotations

import socket
from collections.abc import Collection
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal

from vipcast.linux import _rtnl
from vipcast.linux._rtnl import (
    IFA_F_SECONDARY,
    IFA_F_TENTATIVE,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    Address,
    IPInterface,
    Link,
    Rtnl,
)

__all__ = [
    "IPAddress",
    "addresses",
    "can_send_from",
    "ifindex",
    "link_is_up",
    "mac_address",
    "no_such_interface",
    "primary_address",
    "subnets",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def ifindex(ifname: str) -> int:
    """The interface's index; :class:`LookupError` naming the interfaces that do exist."""
    return _link(ifname).index


def mac_address(ifname: str) -> bytes:
    """The interface's 6-byte hardware address."""
    return _link(ifname).mac


def link_is_up(ifname: str) -> bool:
    """Up administratively and operationally (IFF_UP and IFF_RUNNING: carrier present)."""
    return _link(ifname).up


def addresses(ifname: str, version: Literal[4, 6] | None = None) -> list[IPInterface]:
    """Every address on the interface, in the kernel's order (IPv4 first)."""
    return [a.interface for a in _addresses(ifname, version)]


def subnets(ifname: str, version: Literal[4, 6] | None = None) -> list[IPNetwork]:
    """The networks of the interface's addresses, without duplicates, link-local included.

    Use it to warn when a VIP lies outside every subnet of its interface.
    """
    return list(dict.fromkeys(a.network for a in addresses(ifname, version)))


def primary_address(
    ifname: str,
    version: Literal[4, 6],
    *,
    exclude: Collection[IPAddress] = (),
    link_local: bool | None = None,
) -> IPAddress:
    """The address VRRP adverts are sent from (and the relay's envelopes).

    IPv4: the first global, non-secondary address that is not in ``exclude`` (pass the
    VIPs), else the first global one not in ``exclude``. IPv6: the link-local address,
    as RFC 9568 requires of multicast VRRP; with ``link_local=False`` (unicast VRRP to
    global or unique-local peers) the first global one not in ``exclude``. Usable
    addresses are preferred over ones still in DAD.
    """
    found = _addresses(ifname, version)
    if version == 4:
        candidates = [a for a in found if a.scope == RT_SCOPE_UNIVERSE]
        candidates.sort(key=lambda a: bool(a.flags & IFA_F_SECONDARY))
    else:
        scope = RT_SCOPE_UNIVERSE if link_local is False else RT_SCOPE_LINK
        candidates = [a for a in found if a.scope == scope]
        candidates.sort(key=lambda a: not a.usable)
    for address in candidates:
        if address.interface.ip not in exclude:
            return address.interface.ip
    raise LookupError(_no_address_message(ifname, version, link_local is not False))


def can_send_from(ifname: str, ip: IPAddress) -> bool:
    """Whether ``ip`` is on the interface and usable as a source (IPv6: not in DAD)."""
    try:
        found = _addresses(ifname, 4 if ip.version == 4 else 6)
    except LookupError:
        return False
    return any(a.interface.ip == ip and not a.flags & IFA_F_TENTATIVE for a in found)


def no_such_interface(ifname: str) -> LookupError:
    """``LookupError("no interface 'eth9'; interfaces here: eth0, lo")``."""
    with Rtnl() as rtnl:
        return _rtnl.no_such_interface(ifname, [link.name for link in rtnl.links()])


def _link(ifname: str) -> Link:
    with Rtnl() as rtnl:
        return _rtnl.find_link(rtnl, ifname)


def _addresses(ifname: str, version: Literal[4, 6] | None) -> list[Address]:
    family = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[version]
    with Rtnl() as rtnl:
        return rtnl.addresses(family, _rtnl.find_link(rtnl, ifname).index)


def _no_address_message(ifname: str, version: int, link_local: bool) -> str:
    if version == 4:
        return f"{ifname} has no IPv4 address besides the VIPs: give it one of its own"
    if not link_local:
        return (
            f"{ifname} has no global IPv6 address besides the VIPs, only link-local: "
            "VRRP to global election.unicast_peers speaks from one; give it one"
        )
    return f"{ifname} has no IPv6 link-local address (is IPv6 disabled on it?)"
