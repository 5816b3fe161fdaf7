"""The internet checksum (RFC 1071) and the pseudo-headers it covers.

The one's complement sum of 16-bit big-endian words equals the whole message,
read as one big integer, modulo 0xFFFF (because 0x10000 is 1 modulo 0xFFFF).
That turns the sum into a single ``int.from_bytes`` and one ``%``, both in C.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Final

__all__ = ["internet_checksum", "ipv4_pseudo_header", "ipv6_pseudo_header"]

# IPv4 pseudo-header (RFC 768 / RFC 793), 12 bytes:
#   0..3   source address
#   4..7   destination address
#   8      zero
#   9      protocol
#   10..11 upper-layer length
_IPV4_PSEUDO: Final = struct.Struct("!4s4sxBH")

# IPv6 pseudo-header (RFC 8200 section 8.1), 40 bytes:
#   0..15  source address
#   16..31 destination address
#   32..35 upper-layer length
#   36..38 zero
#   39     next header
_IPV6_PSEUDO: Final = struct.Struct("!16s16sI3xB")


def internet_checksum(data: bytes) -> int:
    """Return the RFC 1071 checksum of ``data``; an odd tail is padded with zero.

    Over a message that already carries a correct checksum the result is 0.
    """
    if len(data) % 2:
        data += b"\x00"
    whole = int.from_bytes(data, "big")
    folded = whole % 0xFFFF
    if folded == 0 and whole:
        folded = 0xFFFF  # a non-zero sum folds to "negative zero", never to +0
    return ~folded & 0xFFFF


def ipv4_pseudo_header(src: IPv4Address, dst: IPv4Address, protocol: int, length: int) -> bytes:
    """The 12-byte IPv4 pseudo-header for ``length`` bytes of ``protocol``."""
    return _IPV4_PSEUDO.pack(src.packed, dst.packed, protocol, length)


def ipv6_pseudo_header(src: IPv6Address, dst: IPv6Address, next_header: int, length: int) -> bytes:
    """The 40-byte IPv6 pseudo-header (RFC 8200) for ``length`` bytes of ``next_header``."""
    return _IPV6_PSEUDO.pack(src.packed, dst.packed, length, next_header)
