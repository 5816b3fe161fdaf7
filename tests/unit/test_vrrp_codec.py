"""VRRP adverts on the wire: reference vectors, round trips, hostile bytes, Scapy as oracle."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.vrrp import VRRP, VRRPv3

from vipcast.core.checksum import internet_checksum, ipv4_pseudo_header, ipv6_pseudo_header
from vipcast.core.vrrp.codec import (
    REJECT_REASONS,
    VRRP_GROUP_V4,
    VRRP_GROUP_V6,
    Address,
    Advert,
    BadPacket,
    ChecksumForm,
    check_source_untrusted,
    decode_advert_untrusted,
    encode_advert,
)

SRC4 = IPv4Address("192.168.200.1")
VIP4 = IPv4Address("192.168.200.17")
SRC6 = IPv6Address("fe80::1")
VIP6 = IPv6Address("2001:db8::17")

VECTOR = Advert(vrid=51, priority=100, max_advert_int_cs=100, addresses=(VIP4,))
VECTOR_PSEUDO = bytes.fromhex("31336401 0064 7873 c0a8c811")
VECTOR_MESSAGE_ONLY = bytes.fromhex("31336401 0064 e1ac c0a8c811")
VECTOR_RESIGN = bytes.fromhex("31330001 0064 dc73 c0a8c811")


def decode4(data: bytes) -> Advert:
    return decode_advert_untrusted(data, src=SRC4, dst=VRRP_GROUP_V4)


def decode6(data: bytes) -> Advert:
    return decode_advert_untrusted(data, src=SRC6, dst=VRRP_GROUP_V6)


def with_checksum(message: bytes, value: int) -> bytes:
    return message[:6] + value.to_bytes(2, "big") + message[8:]


def v3_message(*, first: int = 0x31, vrid: int = 51, count: int = 1, word: int = 100) -> bytes:
    """A v3 IPv4 message with the given header fields and a correct pseudo-header checksum."""
    body = bytes([first, vrid, 100, count]) + word.to_bytes(2, "big") + b"\0\0" + VIP4.packed
    pseudo = ipv4_pseudo_header(SRC4, VRRP_GROUP_V4, 112, len(body))
    return with_checksum(body, internet_checksum(pseudo + body))


# -- checksum -------------------------------------------------------------------


def naive_checksum(data: bytes) -> int:
    """RFC 1071 written the slow, obvious way."""
    data += b"\0" * (len(data) % 2)
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff\xff")
@example(b"\0\0\0")
def test_checksum_matches_the_obvious_loop(data: bytes) -> None:
    assert internet_checksum(data) == naive_checksum(data)


def test_ipv6_pseudo_header_layout() -> None:
    header = ipv6_pseudo_header(SRC6, VRRP_GROUP_V6, 112, 24)
    assert header == SRC6.packed + VRRP_GROUP_V6.packed + bytes.fromhex("00000018 000000 70")


# -- reference vectors ------------------------------------------------------------


def test_vector_with_ipv4_pseudo_header() -> None:
    assert encode_advert(VECTOR, src=SRC4, dst=VRRP_GROUP_V4) == VECTOR_PSEUDO


def test_vector_message_only() -> None:
    data = encode_advert(VECTOR, src=SRC4, dst=VRRP_GROUP_V4, checksum="message-only")
    assert data == VECTOR_MESSAGE_ONLY


def test_vector_priority_zero() -> None:
    resign = dataclasses.replace(VECTOR, priority=0)
    assert encode_advert(resign, src=SRC4, dst=VRRP_GROUP_V4) == VECTOR_RESIGN


@pytest.mark.parametrize(
    ("data", "form"),
    [(VECTOR_PSEUDO, "pseudo-header"), (VECTOR_MESSAGE_ONLY, "message-only")],
)
def test_both_ipv4_checksum_forms_are_accepted(data: bytes, form: ChecksumForm) -> None:
    assert decode4(data) == dataclasses.replace(VECTOR, checksum_form=form)


def test_pseudo_header_checksum_depends_on_the_addresses() -> None:
    with pytest.raises(BadPacket) as caught:
        decode_advert_untrusted(VECTOR_PSEUDO, src=IPv4Address("192.168.200.2"), dst=VRRP_GROUP_V4)
    assert caught.value.reason == "checksum"


def test_ipv6_does_not_accept_message_only() -> None:
    advert = Advert(vrid=1, priority=100, max_advert_int_cs=100, addresses=(VIP6,))
    data = encode_advert(advert, src=SRC6, dst=VRRP_GROUP_V6)
    assert decode6(data) == advert
    with pytest.raises(BadPacket, match="checksum"):
        decode6(with_checksum(data, internet_checksum(with_checksum(data, 0))))


# -- round trips ------------------------------------------------------------------

vrids = st.integers(1, 255)
priorities = st.integers(0, 255)
intervals = st.integers(1, 4095)
forms: st.SearchStrategy[ChecksumForm] = st.sampled_from(["pseudo-header", "message-only"])


def adverts(addresses: st.SearchStrategy[Address]) -> st.SearchStrategy[Advert]:
    return st.builds(
        Advert,
        vrid=vrids,
        priority=priorities,
        max_advert_int_cs=intervals,
        addresses=st.lists(addresses, min_size=1, max_size=255).map(tuple),
    )


@given(adverts(st.ip_addresses(v=4)), st.ip_addresses(v=4), st.ip_addresses(v=4), forms)
def test_ipv4_round_trip(
    advert: Advert, src: IPv4Address, dst: IPv4Address, form: ChecksumForm
) -> None:
    data = encode_advert(advert, src=src, dst=dst, checksum=form)
    decoded = decode_advert_untrusted(data, src=src, dst=dst)
    assert dataclasses.replace(decoded, checksum_form=None) == advert
    assert decoded.checksum_form in {form, "pseudo-header"}  # both match if the pseudo sum is 0


@given(adverts(st.ip_addresses(v=6)), st.ip_addresses(v=6), st.ip_addresses(v=6))
def test_ipv6_round_trip(advert: Advert, src: IPv6Address, dst: IPv6Address) -> None:
    data = encode_advert(advert, src=src, dst=dst, checksum="message-only")  # ignored for v6
    assert decode_advert_untrusted(data, src=src, dst=dst) == advert


@given(
    st.builds(
        Advert,
        vrid=vrids,
        priority=priorities,
        max_advert_int_cs=st.integers(1, 255).map(lambda s: s * 100),
        addresses=st.lists(st.ip_addresses(v=4), min_size=1, max_size=255).map(tuple),
        version=st.just(2),
    )
)
def test_vrrpv2_round_trip(advert: Advert) -> None:
    data = encode_advert(advert, src=SRC4, dst=VRRP_GROUP_V4)
    assert len(data) == 8 + 4 * len(advert.addresses) + 8
    assert decode4(data) == advert


# -- validation: each reason -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "length"),
        (VECTOR_PSEUDO[:7], "length"),
        (VECTOR_PSEUDO[:11], "length"),
        (v3_message(count=2), "length"),
        (v3_message() + b"\0\0\0\0", "length"),
        (v3_message(first=0x41), "version"),
        (v3_message(first=0x11), "version"),
        (v3_message(first=0x32), "type"),
        (v3_message(vrid=0), "vrid"),
        (v3_message(count=0), "count"),
        (v3_message(word=0), "interval"),
        (v3_message(word=0xF000), "interval"),
        (VECTOR_PSEUDO[:7] + b"\0" + VECTOR_PSEUDO[8:], "checksum"),
    ],
)
def test_rejects_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as caught:
        decode4(data)
    assert caught.value.reason == reason
    assert reason in REJECT_REASONS


def test_reserved_bits_are_ignored() -> None:
    assert decode4(v3_message(word=0xF064)).max_advert_int_cs == 100


def v2_message(*, seconds: int = 1, extra: bytes = bytes(8), checksum: int | None = None) -> bytes:
    body = bytes([0x21, 51, 100, 1, 0, seconds, 0, 0]) + VIP4.packed + extra
    return with_checksum(body, internet_checksum(body) if checksum is None else checksum)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v2_message(extra=bytes(4)), "length"),
        (v2_message(extra=bytes(9)), "length"),
        (v2_message(seconds=0), "interval"),
        (v2_message(checksum=0x1234), "checksum"),
    ],
)
def test_vrrpv2_rejects_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as caught:
        decode4(data)
    assert caught.value.reason == reason


def test_vrrpv2_with_and_without_auth_data() -> None:
    assert decode4(v2_message()).max_advert_int_cs == 100
    assert decode4(v2_message(extra=b"")).version == 2


def test_vrrpv2_over_ipv6_is_a_version_error() -> None:
    data = bytes([0x21]) + VECTOR_PSEUDO[1:8] + VIP6.packed
    with pytest.raises(BadPacket) as caught:
        decode6(data)
    assert caught.value.reason == "version"


def test_ipv6_length_counts_sixteen_bytes_per_address() -> None:
    with pytest.raises(BadPacket) as caught:
        decode6(VECTOR_PSEUDO)  # 4 bytes of address where 16 are due
    assert caught.value.reason == "length"


def decoded_or_reason(decode: Callable[[bytes], Advert], data: bytes) -> Advert | str:
    """The advert, or the reason it was rejected; any other exception escapes."""
    try:
        return decode(data)
    except BadPacket as exc:
        return exc.reason


@given(st.binary(max_size=64), st.sampled_from([4, 6]))
@example(b"\x31\x01\x64\x01\x00\x64", 4)
def test_random_bytes_raise_only_bad_packet(data: bytes, family: int) -> None:
    outcome = decoded_or_reason(decode4 if family == 4 else decode6, data)
    assert isinstance(outcome, Advert) or outcome in REJECT_REASONS


@given(st.data())
def test_mutated_packets_raise_only_bad_packet(data: st.DataObject) -> None:
    packet = bytearray(data.draw(st.sampled_from([VECTOR_PSEUDO, VECTOR_MESSAGE_ONLY])))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(packet) - 1))
        packet[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet) + 8))
    mutated = bytes(packet[:cut]) + data.draw(st.binary(max_size=max(0, cut - len(packet))))
    outcome = decoded_or_reason(decode4, mutated)
    assert isinstance(outcome, Advert) or outcome in REJECT_REASONS


@given(st.integers(0, len(VECTOR_PSEUDO) * 8 - 1), st.sampled_from([VECTOR_PSEUDO, VECTOR_RESIGN]))
def test_any_single_bit_flip_is_caught(bit: int, packet: bytes) -> None:
    flipped = bytearray(packet)
    flipped[bit // 8] ^= 0x80 >> (bit % 8)
    try:
        advert = decode4(bytes(flipped))
    except BadPacket:
        return
    # the only way through is to land exactly on the other checksum form
    assert advert.checksum_form == "message-only"


def test_bad_packet_is_a_value_error_with_a_reason() -> None:
    error = BadPacket("vrid", "virtual router id 0")
    assert isinstance(error, ValueError)
    assert (error.reason, str(error)) == ("vrid", "vrid: virtual router id 0")


def test_mixed_family_src_and_dst_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="one family") as caught:
        decode_advert_untrusted(VECTOR_PSEUDO, src=SRC4, dst=VRRP_GROUP_V6)
    assert not isinstance(caught.value, BadPacket)


# -- source checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "multicast", "ok"),
    [
        ("198.18.0.11", True, True),
        ("fe80::1", True, True),
        ("2001:db8::1", True, False),
        ("2001:db8::1", False, True),
        ("224.0.0.18", True, False),
        ("0.0.0.0", False, False),
        ("::", False, False),
    ],
)
def test_check_source(src: str, multicast: bool, ok: bool) -> None:
    address = ip_address(src)
    if ok:
        check_source_untrusted(address, multicast=multicast)
    else:
        with pytest.raises(BadPacket, match="address"):
            check_source_untrusted(address, multicast=multicast)


# -- building adverts ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"vrid": 0},
        {"vrid": 256},
        {"priority": -1},
        {"priority": 256},
        {"max_advert_int_cs": 0},
        {"max_advert_int_cs": 4096},
        {"addresses": ()},
        {"addresses": (VIP4, VIP6)},
        {"addresses": (VIP4,) * 256},
        {"version": 4},
        {"version": 2, "max_advert_int_cs": 150},
        {"version": 2, "addresses": (VIP6,)},
    ],
)
def test_invalid_adverts_cannot_be_built(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every field has its own message
        dataclasses.replace(VECTOR, **fields)  # type: ignore[arg-type]


def test_encode_needs_addresses_of_the_adverts_family() -> None:
    with pytest.raises(ValueError, match="IPv4"):
        encode_advert(VECTOR, src=SRC6, dst=VRRP_GROUP_V6)


# -- Scapy as an independent implementation -------------------------------------------


def scapy_v4(data: bytes, src: IPv4Address, dst: IPv4Address) -> VRRPv3:
    packet = IP(bytes(IP(src=str(src), dst=str(dst), proto=112, ttl=255) / data))
    layer = packet[VRRPv3]
    assert isinstance(layer, VRRPv3)
    return layer


def scapy_checksum_of(layer: VRRPv3) -> int:
    """Have Scapy compute the checksum afresh over its IP or IPv6 pseudo-header."""
    assert layer.underlayer is not None
    outer = layer.underlayer.copy()
    outer.payload.chksum = None
    return int(type(outer)(bytes(outer)).payload.chksum)


@given(adverts(st.ip_addresses(v=4)), st.ip_addresses(v=4))
def test_scapy_reads_our_ipv4_adverts(advert: Advert, src: IPv4Address) -> None:
    data = encode_advert(advert, src=src, dst=VRRP_GROUP_V4)
    layer = scapy_v4(data, src, VRRP_GROUP_V4)
    assert (layer.version, layer.type, layer.vrid, layer.priority) == (
        3,
        1,
        advert.vrid,
        advert.priority,
    )
    assert (layer.ipcount, layer.adv) == (len(advert.addresses), advert.max_advert_int_cs)
    assert [ip_address(a) for a in layer.addrlist] == list(advert.addresses)
    assert layer.chksum == scapy_checksum_of(layer)


@given(adverts(st.ip_addresses(v=6)), st.ip_addresses(network="fe80::/64"))
def test_scapy_reads_our_ipv6_adverts(advert: Advert, src: IPv6Address) -> None:
    data = encode_advert(advert, src=src, dst=VRRP_GROUP_V6)
    packet = IPv6(bytes(IPv6(src=str(src), dst=str(VRRP_GROUP_V6), nh=112, hlim=255) / data))
    layer = packet[VRRPv3]
    assert (layer.vrid, layer.priority, layer.adv) == (
        advert.vrid,
        advert.priority,
        advert.max_advert_int_cs,
    )
    assert [ip_address(a) for a in layer.addrlist] == list(advert.addresses)
    assert layer.chksum == scapy_checksum_of(layer)


@given(adverts(st.ip_addresses(v=4)), st.ip_addresses(v=4))
def test_we_read_scapys_ipv4_adverts(advert: Advert, src: IPv4Address) -> None:
    vrrp = VRRPv3(
        vrid=advert.vrid,
        priority=advert.priority,
        adv=advert.max_advert_int_cs,
        addrlist=[str(a) for a in advert.addresses],
    )
    packet = IP(bytes(IP(src=str(src), dst=str(VRRP_GROUP_V4), ttl=255) / vrrp))
    decoded = decode_advert_untrusted(bytes(packet.payload), src=src, dst=VRRP_GROUP_V4)
    assert decoded == dataclasses.replace(advert, checksum_form="pseudo-header")


@given(adverts(st.ip_addresses(v=6)))
def test_we_read_scapys_ipv6_adverts(advert: Advert) -> None:
    vrrp = VRRPv3(
        vrid=advert.vrid,
        priority=advert.priority,
        adv=advert.max_advert_int_cs,
        addrlist=[str(a) for a in advert.addresses],
    )
    packet = IPv6(bytes(IPv6(src=str(SRC6), dst=str(VRRP_GROUP_V6), hlim=255) / vrrp))
    assert decode6(bytes(packet.payload)) == advert


def scapy_vrrpv2() -> bytes:
    vrrp = VRRP(vrid=7, priority=150, adv=2, addrlist=[str(VIP4), "192.168.200.18"])
    return bytes(IP(bytes(IP(src=str(SRC4), dst=str(VRRP_GROUP_V4)) / vrrp)).payload)


def test_scapys_vrrpv2_advert_reads_as_version_2() -> None:
    expected = Advert(
        vrid=7,
        priority=150,
        max_advert_int_cs=200,
        addresses=(VIP4, IPv4Address("192.168.200.18")),
        version=2,
    )
    assert decode4(scapy_vrrpv2()) == expected


def test_vrrpv2_without_authentication_data_is_accepted() -> None:
    bare = scapy_vrrpv2()[:-8]
    advert = decode4(with_checksum(bare, internet_checksum(with_checksum(bare, 0))))
    assert (advert.version, advert.vrid) == (2, 7)


def test_our_vrrpv2_matches_scapys() -> None:
    ours = encode_advert(decode4(scapy_vrrpv2()), src=SRC4, dst=VRRP_GROUP_V4)
    assert ours == scapy_vrrpv2()
