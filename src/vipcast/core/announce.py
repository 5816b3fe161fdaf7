"""Frames that tell a LAN where a floating address now lives: gratuitous ARP and unsolicited NA.

Pure: bytes in, bytes out. The Linux adapter (:mod:`vipcast.linux.announce`) sends them
on an AF_PACKET socket, so every header, Ethernet included, is built here.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

__all__ = ["garp_reply", "garp_request", "unsolicited_na"]

ETH_BROADCAST = b"\xff" * 6
ETH_ALL_NODES = bytes.fromhex("333300000001")  # IPv6 multicast MAC of ff02::1
ALL_NODES = IPv6Address("ff02::1")
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD

# Ethernet II header, 14 bytes:
#   0  6  destination MAC
#   6  6  source MAC
#  12  2  ethertype
_ETHERNET = struct.Struct("!6s6sH")

# ARP for IPv4 over Ethernet (RFC 826), 28 bytes after the Ethernet header:
#   0  2  hardware type = 1 (Ethernet)
#   2  2  protocol type = 0x0800 (IPv4)
#   4  1  hardware length = 6
#   5  1  protocol length = 4
#   6  2  operation: 1 request, 2 reply
#   8  6  sender MAC (ours)
#  14  4  sender IP (the VIP)
#  18  6  target MAC: zero (request) or our MAC again (reply)
#  24  4  target IP (the VIP again: that is what makes it gratuitous)
#
# Why the reply repeats our MAC as target, not the broadcast address: RFC 2002 section 4.6
# asks for it, iputils' ``arping -A`` does it, and Linux treats a reply as gratuitous only
# then (net/ipv4/arp.c ``arp_is_garp``). A broadcast-target reply is taken as an ordinary
# unsolicited reply, ignored for ``locktime`` (1 s) after the entry's last update; measured
# in tests/integration/test_linux_adapters.py.
_ARP = struct.Struct("!HHBBH6s4s6s4s")
ARP_REQUEST, ARP_REPLY = 1, 2

# IPv6 header (RFC 8200), 40 bytes:
#   0  4  version (4 bits) = 6 | traffic class (8) = 0 | flow label (20) = 0
#   4  2  payload length
#   6  1  next header = 58 (ICMPv6)
#   7  1  hop limit = 255 (RFC 4861 receivers drop anything else)
#   8 16  source address
#  24 16  destination address
_IPV6 = struct.Struct("!IHBB16s16s")
NEXT_HEADER_ICMPV6 = 58

# ICMPv6 Neighbour Advertisement (RFC 4861 section 4.4) with one option, 32 bytes:
#   0  1  type = 136
#   1  1  code = 0
#   2  2  checksum over the IPv6 pseudo-header and this message
#   4  4  flags: Router (bit 31), Solicited (30), Override (29); rest reserved, zero
#   8 16  target address (the VIP)
#  24  1  option type = 2 (target link-layer address)
#  25  1  option length = 1 (in units of 8 bytes)
#  26  6  our MAC
_NA = struct.Struct("!BBHI16sBB6s")
NA_TYPE = 136
NA_FLAG_OVERRIDE = 0x2000_0000
OPT_TARGET_LLADDR = 2

# The IPv6 pseudo-header the ICMPv6 checksum covers (RFC 8200 section 8.1), 40 bytes:
#   0 16  source, 16 16  destination, 32 4  upper-layer length, 36 3  zero, 39 1  next header
_PSEUDO6 = struct.Struct("!16s16sI3xB")


def garp_request(mac: bytes, ip: IPv4Address) -> bytes:
    """A 42-byte gratuitous ARP request: "who has VIP? tell VIP (at MAC)"."""
    return _garp(mac, ip, ARP_REQUEST, b"\x00" * 6)


def garp_reply(mac: bytes, ip: IPv4Address) -> bytes:
    """A 42-byte gratuitous ARP reply: "VIP is at MAC", for switches that ignore requests."""
    return _garp(mac, ip, ARP_REPLY, mac)


def unsolicited_na(mac: bytes, ip: IPv6Address, source: IPv6Address | None = None) -> bytes:
    """An 86-byte unsolicited Neighbour Advertisement for ``ip`` to all nodes (ff02::1).

    Override is set so neighbours replace the cached MAC; Router and Solicited are not.
    The IPv6 source is the VIP itself unless ``source`` is given.
    """
    src = source or ip
    na = _NA.pack(NA_TYPE, 0, 0, NA_FLAG_OVERRIDE, ip.packed, OPT_TARGET_LLADDR, 1, _mac(mac))
    pseudo = _PSEUDO6.pack(src.packed, ALL_NODES.packed, len(na), NEXT_HEADER_ICMPV6)
    na = na[:2] + internet_checksum(pseudo + na).to_bytes(2, "big") + na[4:]
    ipv6 = _IPV6.pack(6 << 28, len(na), NEXT_HEADER_ICMPV6, 255, src.packed, ALL_NODES.packed)
    return _ETHERNET.pack(ETH_ALL_NODES, mac, ETHERTYPE_IPV6) + ipv6 + na


def internet_checksum(data: bytes) -> int:
    """The RFC 1071 ones'-complement sum, complemented (odd lengths padded with a zero)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(int(word) for word in struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _garp(mac: bytes, ip: IPv4Address, op: int, target_mac: bytes) -> bytes:
    arp = _ARP.pack(1, 0x0800, 6, 4, op, _mac(mac), ip.packed, target_mac, ip.packed)
    return _ETHERNET.pack(ETH_BROADCAST, mac, ETHERTYPE_ARP) + arp


def _mac(mac: bytes) -> bytes:
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}: {mac.hex(':')}")
    return mac
