"""VRRP advertisements on the wire: VRRPv3 (RFC 9568) both ways, VRRPv2 (RFC 3768) read.

``decode_advert_untrusted`` takes bytes from the network and raises only
``BadPacket``, whose ``reason`` names the check that failed so callers can count
rejects. Checks that need the IP header (TTL 255, a known unicast peer, an IPv6
source that is link-local) belong to the caller; ``check_source_untrusted``
covers the last one.

IPv4 VRRPv3 checksums come in two forms: keepalived, Wireshark and Scapy cover
the IPv4 pseudo-header, RFC 9568 and several routers cover the message only.
We send either and accept both; the decoded advert records which one matched.

An advert may end in keepalived's ``auth_hmac`` trailer (28 bytes after the addresses,
:mod:`vipcast.core.vrrp.auth`): ``decode_signed_untrusted`` returns it apart, unverified.
An IPv4 checksum never covers it (its pseudo-header length is the message's); an IPv6
one does (the kernel's IPV6_CHECKSUM covers the whole payload), see ``with_trailer``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final, Literal, NamedTuple, get_args

from vipcast.core.checksum import internet_checksum, ipv4_pseudo_header, ipv6_pseudo_header

__all__ = [
    "IPPROTO_VRRP",
    "VRRP_GROUP_V4",
    "VRRP_GROUP_V6",
    "Address",
    "ChecksumForm",
    "RejectReason",
    "REJECT_REASONS",
    "BadPacket",
    "Advert",
    "AUTH_TRAILER_LEN",
    "encode_advert",
    "with_trailer",
    "decode_advert_untrusted",
    "decode_signed_untrusted",
    "check_source_untrusted",
]

IPPROTO_VRRP: Final = 112
VRRP_GROUP_V4: Final = IPv4Address("224.0.0.18")
VRRP_GROUP_V6: Final = IPv6Address("ff02::12")

Address = IPv4Address | IPv6Address
ChecksumForm = Literal["pseudo-header", "message-only"]
RejectReason = Literal[
    "length",
    "version",
    "type",
    "vrid",
    "count",
    "interval",
    "checksum",
    "address",
    "own_address",  # our own source from the wire: spoofed (multicast loopback is off)
    # the auth_hmac trailer (vipcast.core.vrrp.auth)
    "no_trailer",
    "malformed_trailer",
    "unknown_key",
    "bad_hmac",
    "stale",
    "replay",
    # an unauthenticated advert out of bounds (vipcast.core.vrrp.plausible)
    "implausible_priority",
    "implausible_interval",
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)

# VRRP header, 8 bytes, then ``count`` addresses (4 or 16 bytes each):
#   0      version (high 4 bits) | type (low 4 bits, 1 = advertisement)
#   1      virtual router id, 1..255
#   2      priority: 255 address owner, 1..254 backup, 0 master resigning
#   3      count of addresses, >= 1
#   4..5   v3: 4 reserved bits | max advert interval in centiseconds (12 bits)
#          v2: byte 4 authentication type, byte 5 advert interval in seconds
#   6..7   checksum
# VRRPv2 then carries 8 bytes of authentication data (keepalived may omit them).
_HEADER: Final = struct.Struct("!BBBBHH")
AUTH_TRAILER_LEN: Final = 28  # keepalived's auth_hmac trailer, see vipcast.core.vrrp.auth


class _Header(NamedTuple):
    first: int
    vrid: int
    priority: int
    naddr: int
    word: int
    checksum: int


_V2_AUTH_LEN: Final = 8
_ADVERTISEMENT: Final = 1
_INTERVAL_MASK: Final = 0x0FFF
_MAX_V3_INTERVAL_CS: Final = 0x0FFF


class BadPacket(ValueError):  # noqa: N818 - the name trio gave this idea
    """Bytes from the network that are not a valid VRRP advertisement."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Advert:
    """One VRRP advertisement.

    ``max_advert_int_cs`` is in centiseconds for both versions (a VRRPv2
    interval of ``n`` seconds reads as ``100 * n``). ``checksum_form`` is set only
    on decoded VRRPv3 IPv4 adverts: the form their checksum matched.
    """

    vrid: int
    priority: int
    max_advert_int_cs: int
    addresses: tuple[Address, ...]
    version: Literal[2, 3] = 3
    checksum_form: ChecksumForm | None = None

    def __post_init__(self) -> None:
        _check_range("vrid", self.vrid, 1, 255)
        _check_range("priority", self.priority, 0, 255)
        _check_range("address count", len(self.addresses), 1, 255)
        if len({a.version for a in self.addresses}) != 1:
            raise ValueError("addresses: all of one family")
        if self.version == 3:
            _check_range("max_advert_int_cs", self.max_advert_int_cs, 1, _MAX_V3_INTERVAL_CS)
        elif self.version == 2:
            _check_v2(self)
        else:
            raise ValueError(f"version: 2 or 3, got {self.version}")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}: {low}..{high}, got {value}")


def _check_v2(advert: Advert) -> None:
    seconds, rest = divmod(advert.max_advert_int_cs, 100)
    if rest or not 1 <= seconds <= 255:
        raise ValueError(f"max_advert_int_cs: whole seconds 1..255 for VRRPv2, got {seconds}")
    if advert.addresses[0].version != 4:
        raise ValueError("addresses: VRRPv2 is IPv4 only")


# -- encoding -----------------------------------------------------------------


def encode_advert(
    advert: Advert, *, src: Address, dst: Address, checksum: ChecksumForm = "pseudo-header"
) -> bytes:
    """The advertisement's bytes (the IP payload) as sent from ``src`` to ``dst``.

    ``checksum`` picks the IPv4 VRRPv3 form; IPv6 always uses its pseudo-header,
    VRRPv2 always the message only.
    """
    _check_families(advert, src, dst)
    if advert.version == 2:
        checksum = "message-only"
    elif src.version == 6:
        checksum = "pseudo-header"
    message = _pack(advert, 0)
    value = _checksum(message, src, dst, checksum)
    return message[:6] + value.to_bytes(2, "big") + message[8:]


def with_trailer(message: bytes, trailer: bytes, *, src: Address, dst: Address) -> bytes:
    """``message`` (from ``encode_advert``) with an auth trailer after its addresses.

    IPv4: the checksum stays (it covers the message only). IPv6: it is computed again
    over the whole payload, trailer included, as the kernel's IPV6_CHECKSUM does.
    """
    if src.version == 4:
        return message + trailer
    payload = message[:6] + b"\0\0" + message[8:] + trailer
    value = internet_checksum(_pseudo_header(src, dst, len(payload)) + payload)
    return payload[:6] + value.to_bytes(2, "big") + payload[8:]


def _check_families(advert: Advert, src: Address, dst: Address) -> None:
    family = advert.addresses[0].version
    if src.version != family or dst.version != family:
        raise ValueError(f"src {src} and dst {dst} must be IPv{family} like the addresses")


def _pack(advert: Advert, checksum: int) -> bytes:
    interval = advert.max_advert_int_cs
    word = interval if advert.version == 3 else interval // 100  # v2: auth type 0
    header = _HEADER.pack(
        advert.version << 4 | _ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        word,
        checksum,
    )
    auth = bytes(_V2_AUTH_LEN) if advert.version == 2 else b""
    return header + b"".join(a.packed for a in advert.addresses) + auth


def _checksum(message: bytes, src: Address, dst: Address, form: ChecksumForm) -> int:
    if form == "message-only":
        return internet_checksum(message)
    return internet_checksum(_pseudo_header(src, dst, len(message)) + message)


def _pseudo_header(src: Address, dst: Address, length: int) -> bytes:
    if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
        return ipv4_pseudo_header(src, dst, IPPROTO_VRRP, length)
    if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
        return ipv6_pseudo_header(src, dst, IPPROTO_VRRP, length)
    raise ValueError(f"src {src} and dst {dst} must be of one family")


# -- decoding -----------------------------------------------------------------


def decode_advert_untrusted(data: bytes, *, src: Address, dst: Address) -> Advert:
    """Parse and validate the IP payload ``data`` received from ``src`` at ``dst``.

    Raises ``BadPacket`` for anything but a valid advertisement (one with an auth
    trailer included: its length is wrong); ``ValueError`` only when ``src`` and
    ``dst`` are of different families (a caller bug).
    """
    return _decode(data, src, dst, signed=False)[0]


def decode_signed_untrusted(
    data: bytes, *, src: Address, dst: Address
) -> tuple[Advert, bytes | None]:
    """Like ``decode_advert_untrusted``; a VRRPv3 advert may end in an auth trailer.

    Returns the advert and the trailer's 28 bytes (None without one), not verified:
    that is :class:`vipcast.core.vrrp.auth.Authenticator`'s job, which also needs the
    message itself, ``data[:-AUTH_TRAILER_LEN]`` when a trailer is there.
    """
    return _decode(data, src, dst, signed=True)


def _decode(
    data: bytes, src: Address, dst: Address, *, signed: bool
) -> tuple[Advert, bytes | None]:
    if src.version != dst.version:
        raise ValueError(f"src {src} and dst {dst} must be of one family")
    if len(data) < _HEADER.size:
        raise BadPacket("length", f"{len(data)} bytes, shorter than the header")
    head = _Header._make(_HEADER.unpack_from(data))
    version = _check_version_and_type(head.first, src)
    _check_vrid_and_count(head.vrid, head.naddr)
    if version == 3:
        return _decode_v3(data, head, src, dst, signed=signed)
    return _decode_v2(data, head), None


def _check_version_and_type(first: int, src: Address) -> Literal[2, 3]:
    version, kind = first >> 4, first & 0x0F
    if version == 3 or (version == 2 and src.version == 4):
        if kind != _ADVERTISEMENT:
            raise BadPacket("type", f"type {kind}, not an advertisement")
        return 3 if version == 3 else 2
    raise BadPacket("version", f"version {version} over IPv{src.version}")


def _check_vrid_and_count(vrid: int, count: int) -> None:
    if vrid == 0:
        raise BadPacket("vrid", "virtual router id 0")
    if count == 0:
        raise BadPacket("count", "no addresses")


def _decode_v3(
    data: bytes, head: _Header, src: Address, dst: Address, *, signed: bool
) -> tuple[Advert, bytes | None]:
    size = 4 if src.version == 4 else 16
    expected = _HEADER.size + head.naddr * size
    trailer = None
    if signed and len(data) == expected + AUTH_TRAILER_LEN:
        trailer = data[expected:]
    else:
        _check_length(data, expected)
    interval = head.word & _INTERVAL_MASK
    if interval == 0:
        raise BadPacket("interval", "max advert interval 0")
    # IPv4: the message only; IPv6: the whole payload (keepalived's kernel checksum)
    form = _matching_form(data if src.version == 6 else data[:expected], src, dst)
    advert = Advert(
        vrid=head.vrid,
        priority=head.priority,
        max_advert_int_cs=interval,
        addresses=_addresses(data[_HEADER.size : expected], size),
        checksum_form=form if src.version == 4 else None,
    )
    return advert, trailer


def _decode_v2(data: bytes, head: _Header) -> Advert:
    bare = _HEADER.size + head.naddr * 4
    if len(data) != bare + _V2_AUTH_LEN:
        _check_length(data, bare)
    seconds = head.word & 0xFF
    if seconds == 0:
        raise BadPacket("interval", "advert interval 0 s")
    if internet_checksum(data):
        raise BadPacket("checksum", f"VRRPv2 checksum 0x{data[6:8].hex()} is wrong")
    return Advert(
        vrid=head.vrid,
        priority=head.priority,
        max_advert_int_cs=seconds * 100,
        addresses=_addresses(data[_HEADER.size : bare], 4),
        version=2,
    )


def _check_length(data: bytes, expected: int) -> None:
    if len(data) != expected:
        raise BadPacket("length", f"{len(data)} bytes, the address count needs {expected}")


def _matching_form(data: bytes, src: Address, dst: Address) -> ChecksumForm:
    if internet_checksum(_pseudo_header(src, dst, len(data)) + data) == 0:
        return "pseudo-header"
    if src.version == 4 and internet_checksum(data) == 0:
        return "message-only"
    raise BadPacket("checksum", f"checksum 0x{data[6:8].hex()} matches no accepted form")


def _addresses(raw: bytes, size: int) -> tuple[Address, ...]:
    kind = IPv4Address if size == 4 else IPv6Address
    return tuple(kind(raw[i : i + size]) for i in range(0, len(raw), size))


def check_source_untrusted(src: Address, *, multicast: bool = True) -> None:
    """Raise ``BadPacket("address")`` unless ``src`` may send adverts.

    Never a multicast or unspecified address; in multicast mode an IPv6 source
    must be link-local (RFC 9568). Unicast peers may use any unicast address.
    """
    if src.is_multicast or src.is_unspecified:
        raise BadPacket("address", f"source {src} cannot send adverts")
    if multicast and src.version == 6 and not src.is_link_local:
        raise BadPacket("address", f"IPv6 source {src} is not link-local")
