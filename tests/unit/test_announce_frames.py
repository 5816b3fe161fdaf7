"""Announcement frames, decoded by Scapy as an independent oracle."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from vipcast.core.announce import garp_reply, garp_request, internet_checksum, unsolicited_na

MAC = bytes.fromhex("027663000401")
MAC_TEXT = "02:76:63:00:04:01"
VIP4 = IPv4Address("198.18.0.100")
VIP6 = IPv6Address("fd00:198:18::100")


def _arp(frame: bytes) -> tuple[Ether, ARP]:
    pkt = Ether(frame)
    return pkt, pkt[ARP]


def test_garp_request_is_a_broadcast_who_has_the_vip_tell_the_vip() -> None:
    frame = garp_request(MAC, VIP4)
    eth, arp = _arp(frame)
    assert len(frame) == 42
    assert (eth.dst, eth.src, eth.type) == ("ff:ff:ff:ff:ff:ff", MAC_TEXT, 0x0806)
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, 1)
    assert (arp.hwsrc, arp.psrc) == (MAC_TEXT, str(VIP4))
    assert (arp.hwdst, arp.pdst) == ("00:00:00:00:00:00", str(VIP4))


def test_garp_reply_is_broadcast_and_names_our_mac_as_target_too() -> None:
    # RFC 2002 4.6; Linux (arp_is_garp) takes a reply as gratuitous only when tha == sha
    frame = garp_reply(MAC, VIP4)
    eth, arp = _arp(frame)
    assert len(frame) == 42
    assert eth.dst == "ff:ff:ff:ff:ff:ff"
    assert arp.op == 2
    assert (arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst) == (MAC_TEXT, str(VIP4), MAC_TEXT, str(VIP4))


def test_unsolicited_na_headers_flags_and_option() -> None:
    frame = unsolicited_na(MAC, VIP6)
    pkt = Ether(frame)
    assert len(frame) == 86
    assert (pkt.dst, pkt.src, pkt.type) == ("33:33:00:00:00:01", MAC_TEXT, 0x86DD)
    ip6 = pkt[IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.nh, ip6.plen) == (str(VIP6), "ff02::1", 255, 58, 32)
    na = pkt[ICMPv6ND_NA]
    assert (na.type, na.code, na.R, na.S, na.O, na.tgt) == (136, 0, 0, 0, 1, str(VIP6))
    opt = pkt[ICMPv6NDOptDstLLAddr]
    assert (opt.type, opt.len, opt.lladdr) == (2, 1, MAC_TEXT)


def _scapy_checksum(frame: bytes) -> tuple[int, int]:
    pkt = Ether(frame)
    ours = pkt[ICMPv6ND_NA].cksum
    del pkt[ICMPv6ND_NA].cksum
    return ours, Ether(bytes(pkt))[ICMPv6ND_NA].cksum


def test_unsolicited_na_checksum_matches_scapys() -> None:
    ours, scapys = _scapy_checksum(unsolicited_na(MAC, VIP6))
    assert ours == scapys


def test_unsolicited_na_from_a_given_source() -> None:
    source = IPv6Address("fe80::7663:ff:fe00:401")
    frame = unsolicited_na(MAC, VIP6, source)
    assert Ether(frame)[IPv6].src == str(source)
    ours, scapys = _scapy_checksum(frame)
    assert ours == scapys


@given(
    mac=st.binary(min_size=6, max_size=6),
    ip=st.integers(0, 2**128 - 1).map(IPv6Address),
)
def test_unsolicited_na_checksum_holds_for_any_mac_and_address(mac: bytes, ip: IPv6Address) -> None:
    ours, scapys = _scapy_checksum(unsolicited_na(mac, ip))
    assert ours == scapys


@given(mac=st.binary(min_size=6, max_size=6), ip=st.integers(0, 2**32 - 1).map(IPv4Address))
def test_garps_carry_any_mac_and_address(mac: bytes, ip: IPv4Address) -> None:
    for frame in (garp_request(mac, ip), garp_reply(mac, ip)):
        _, arp = _arp(frame)
        assert (bytes.fromhex(arp.hwsrc.replace(":", "")), arp.psrc, arp.pdst) == (
            mac,
            str(ip),
            str(ip),
        )


def test_a_mac_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        garp_request(b"\x02\x00", VIP4)
    with pytest.raises(ValueError, match="6 bytes"):
        unsolicited_na(MAC + b"\x00", VIP6)


def test_internet_checksum_of_rfc1071_example() -> None:
    # RFC 1071 section 3: the sum of these words is 0xddf2, so the checksum is its complement
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert internet_checksum(data) == ~0xDDF2 & 0xFFFF
    assert internet_checksum(data + internet_checksum(data).to_bytes(2, "big")) == 0
    assert internet_checksum(b"\x01") == ~0x0100 & 0xFFFF
