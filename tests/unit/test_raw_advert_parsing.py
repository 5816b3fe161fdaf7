"""What an IPv4 raw socket reads is split into header facts and the VRRP message, defensively."""

from __future__ import annotations

import socket
import struct
import time
from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.packet import Raw

from vipcast.linux.vrrp_socket import MAX_AGE, SO_TIMESTAMPNS, RawAdvert, _age, parse_ipv4_untrusted

MESSAGE = bytes.fromhex("3133640100647873c0a8c811")


def _packet(ttl: int, options: bytes = b"") -> bytes:
    header = IP(src="198.18.0.11", dst="224.0.0.18", proto=112, ttl=ttl, options=options)
    return bytes(header / Raw(MESSAGE))


def test_header_facts_and_payload() -> None:
    advert = parse_ipv4_untrusted(_packet(ttl=255))
    assert advert == RawAdvert(MESSAGE, IPv4Address("198.18.0.11"), IPv4Address("224.0.0.18"), 255)


def test_ip_options_are_skipped_and_padding_after_total_length_dropped() -> None:
    packet = bytes(IP(bytes(_packet(ttl=64, options=b"\x94\x04\x00\x00")))) + b"\x00" * 6
    advert = parse_ipv4_untrusted(packet)
    assert advert is not None
    assert (advert.payload, advert.ttl) == (MESSAGE, 64)


def test_malformed_headers_are_refused() -> None:
    good = _packet(ttl=255)
    assert parse_ipv4_untrusted(good[:19]) is None  # shorter than a header
    assert parse_ipv4_untrusted(b"\x65" + good[1:]) is None  # version 6
    assert parse_ipv4_untrusted(b"\x44" + good[1:]) is None  # header length 16
    assert parse_ipv4_untrusted(good[:-1]) is None  # total length beyond what was read
    assert parse_ipv4_untrusted(good[:9] + b"\x11" + good[10:]) is None  # not protocol 112


def test_repr_shows_the_payload_in_hex() -> None:
    advert = parse_ipv4_untrusted(_packet(ttl=255))
    assert "payload=3133640100647873c0a8c811" in repr(advert)


@given(st.binary(max_size=80))
def test_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = parse_ipv4_untrusted(data)
    assert result is None or isinstance(result, RawAdvert)


def _stamp(seconds_ago: float) -> list[tuple[int, int, bytes]]:
    """The SO_TIMESTAMPNS control message of a packet received ``seconds_ago``."""
    ns = time.time_ns() - int(seconds_ago * 1e9)
    timespec = struct.pack("=qq", ns // 1_000_000_000, ns % 1_000_000_000)
    return [(socket.IPPROTO_IP, 8, b"\x00" * 12), (socket.SOL_SOCKET, SO_TIMESTAMPNS, timespec)]


def test_the_age_since_arrival_comes_from_the_kernels_stamp() -> None:
    assert 0.005 <= _age(_stamp(0.005)) < 0.5
    assert _age([]) == 0.0  # no stamp: the read is the arrival
    assert _age(_stamp(-3.0)) == 0.0  # the wall clock was stepped back
    assert _age(_stamp(30.0)) == MAX_AGE  # ... or forward: bounded
    assert _age([(socket.SOL_SOCKET, SO_TIMESTAMPNS, b"\x01")]) == 0.0  # truncated


def test_the_age_is_not_part_of_an_adverts_identity() -> None:
    src, dst = IPv4Address("198.18.0.11"), IPv4Address("224.0.0.18")
    assert RawAdvert(MESSAGE, src, dst, 255, 0.002) == RawAdvert(MESSAGE, src, dst, 255)
