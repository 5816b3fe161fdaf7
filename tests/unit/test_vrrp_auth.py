"""keepalived 2.4.3's auth_hmac trailer: its fixed wire vectors and its own test cases.

The two images and every case below come from keepalived's ``test/auth_hmac_test.c``
(the draft appendix vectors); the results are its results. Then what the daemon relies
on: the checksum forms with a trailer, modes, rotation, Hypothesis on the decoder.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vipcast.core.checksum import internet_checksum, ipv4_pseudo_header, ipv6_pseudo_header
from vipcast.core.vrrp import auth
from vipcast.core.vrrp.auth import Authenticator, encode_trailer, parse_trailer
from vipcast.core.vrrp.codec import (
    AUTH_TRAILER_LEN,
    VRRP_GROUP_V4,
    Advert,
    BadPacket,
    decode_advert_untrusted,
    decode_signed_untrusted,
    encode_advert,
    with_trailer,
)

KEY = bytes(range(32))
SRC4 = IPv4Address("198.51.100.10")
SRC6 = IPv6Address("fe80::10")
DST6 = IPv6Address("fe80::20")
VIP4 = IPv4Address("192.0.2.100")
VIP6 = IPv6Address("fe80::100")
SEQ = 0x6800000080000000
# keepalived's ipv4_vec and ipv6_vec: VRID 51, priority 200, key 00..1f, that sequence
IPV4_VEC = bytes.fromhex(
    "3133c80100644402c00002640101000068000000800000001b84bc4e8e43892dc6d98448f8ee2265"
)
IPV6_VEC = bytes.fromhex(
    "3133c8010064a2e9"
    "fe800000000000000000000000000100"
    "010100006800000080000000"
    "c8c56146ebfd66ee10ec4d8186461b78"
)
MSG4, MSG6 = 12, 24


def authenticator(*, anti_replay: auth.AntiReplay = "time", **kw: object) -> Authenticator:
    return Authenticator({1: KEY}, 1, "enforce", anti_replay=anti_replay, **kw)  # type: ignore[arg-type]


def verify(a: Authenticator, image: bytes, mlen: int, src: object, *, vrid: int = 51) -> str:
    """keepalived's result name for one image (OK or the reject reason)."""
    try:
        a.verify_untrusted(image[:mlen], image[mlen:], src=src, vrid=vrid, unix=time.time())  # type: ignore[arg-type]
    except BadPacket as e:
        return e.reason
    return "OK"


# -- keepalived's test_vectors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "mlen", "src"), [(IPV4_VEC, MSG4, SRC4), (IPV6_VEC, MSG6, SRC6)], ids=["v4", "v6"]
)
def test_appendix_vectors_verify(image: bytes, mlen: int, src: object) -> None:
    # the fixed stamps lie outside any live window: monotonic, as keepalived's test does
    assert verify(authenticator(anti_replay="monotonic"), image, mlen, src) == "OK"


@pytest.mark.parametrize(("image", "mlen", "src"), [(IPV4_VEC, MSG4, SRC4), (IPV6_VEC, MSG6, SRC6)])
def test_we_sign_the_appendix_vectors_byte_for_byte(image: bytes, mlen: int, src: object) -> None:
    trailer = encode_trailer(KEY, 1, SEQ, image[:mlen], src=src, vrid=51)  # type: ignore[arg-type]
    assert image[:mlen] + trailer == image


def test_we_encode_the_appendix_images_whole() -> None:
    """Our encoder, checksums included: IPv4 message-only, IPv6 over the trailer too."""
    v4 = Advert(vrid=51, priority=200, max_advert_int_cs=100, addresses=(VIP4,))
    m4 = encode_advert(v4, src=SRC4, dst=VRRP_GROUP_V4, checksum="message-only")
    t4 = encode_trailer(KEY, 1, SEQ, m4, src=SRC4, vrid=51)
    assert with_trailer(m4, t4, src=SRC4, dst=VRRP_GROUP_V4) == IPV4_VEC
    v6 = Advert(vrid=51, priority=200, max_advert_int_cs=100, addresses=(VIP6,))
    m6 = encode_advert(v6, src=SRC6, dst=DST6)
    t6 = encode_trailer(KEY, 1, SEQ, m6, src=SRC6, vrid=51)
    assert with_trailer(m6, t6, src=SRC6, dst=DST6) == IPV6_VEC


MUTATIONS = [  # (what, offset in the IPv6 image, keepalived's result)
    ("tampered priority", 2, "bad_hmac"),
    ("tampered advert interval", 4, "bad_hmac"),
    ("tampered checksum", 6, "OK"),
    ("tampered vip", 8 + 15, "bad_hmac"),
    ("unsupported ext type", MSG6 + 0, "malformed_trailer"),
    ("unknown key id", MSG6 + 1, "unknown_key"),
    ("nonzero reserved", MSG6 + 2, "malformed_trailer"),
    ("tampered seconds", MSG6 + 4, "bad_hmac"),
    ("tampered counter", MSG6 + 10, "bad_hmac"),
    ("tampered hmac", MSG6 + 12, "bad_hmac"),
]


@pytest.mark.parametrize(("what", "offset", "result"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_one_flipped_bit(what: str, offset: int, result: str) -> None:
    image = bytearray(IPV6_VEC)
    image[offset] ^= 0x01
    assert verify(authenticator(anti_replay="monotonic"), bytes(image), MSG6, SRC6) == result


def test_the_pseudo_header_binds_source_and_vrid() -> None:
    a = authenticator(anti_replay="monotonic")
    assert verify(a, IPV6_VEC, MSG6, DST6) == "bad_hmac"
    assert verify(authenticator(anti_replay="monotonic"), IPV6_VEC, MSG6, SRC6, vrid=52) == (
        "bad_hmac"
    )


# -- keepalived's test_ipv4, test_ipv6, test_window, test_sequence -----------------------


def signed6(a: Authenticator, unix: float | None = None) -> bytes:
    advert = Advert(vrid=51, priority=200, max_advert_int_cs=100, addresses=(VIP6,))
    message = encode_advert(advert, src=SRC6, dst=DST6)
    trailer = a.sign(message, src=SRC6, vrid=51, unix=time.time() if unix is None else unix)
    return with_trailer(message, trailer, src=SRC6, dst=DST6)


def test_ipv4_wire_image_signed_now_verifies() -> None:
    a = authenticator()
    advert = Advert(vrid=51, priority=200, max_advert_int_cs=100, addresses=(VIP4,))
    message = encode_advert(advert, src=SRC4, dst=VRRP_GROUP_V4, checksum="message-only")
    image = message + a.sign(message, src=SRC4, vrid=51, unix=time.time())
    assert verify(authenticator(), image, MSG4, SRC4) == "OK"


def test_ipv6_replayed_image_is_a_replay_and_a_second_receiver_accepts_it() -> None:
    image = signed6(authenticator())
    receiver = authenticator()
    assert verify(receiver, image, MSG6, SRC6) == "OK"
    assert verify(receiver, image, MSG6, SRC6) == "replay"
    assert verify(authenticator(), image, MSG6, SRC6) == "OK"  # the copy at a second peer


def test_receive_only_signs_nothing() -> None:
    a = Authenticator({1: KEY}, 1, "receive-only")
    assert not a.signs
    assert a.sign(IPV6_VEC[:MSG6], src=SRC6, vrid=51, unix=time.time()) == b""


@pytest.mark.parametrize("offset", [-100, 100])
def test_a_stamp_outside_the_window_is_stale(offset: int) -> None:
    image = bytearray(signed6(authenticator()))
    seconds = int(time.time()) + offset
    image[MSG6 + 4 : MSG6 + 8] = seconds.to_bytes(4, "big")
    assert verify(authenticator(), bytes(image), MSG6, SRC6) == "stale"


def test_time_mode_resets_a_stranded_future_sequence_to_the_clock() -> None:
    a = authenticator()
    now = int(time.time())
    a.set_send_sequence((now + 3600) << 32)
    image = signed6(a, now)
    assert abs(parse_trailer(image[MSG6:]).seconds - now) <= 1
    receiver = authenticator()
    receiver.set_mark(SRC6, (now + 3600) << 32)  # a receiver's mark stranded in the future
    assert verify(receiver, image, MSG6, SRC6) == "OK"  # expired
    assert verify(receiver, image, MSG6, SRC6) == "replay"


def test_monotonic_mode_keeps_growing_and_keeps_its_mark() -> None:
    a = authenticator(anti_replay="monotonic")
    now = int(time.time())
    a.set_send_sequence((now + 3600) << 32)
    t = parse_trailer(signed6(a, now)[MSG6:])
    assert t.seconds == now + 3600
    assert t.sequence & 0xFFFF == 1
    receiver = authenticator(anti_replay="monotonic")
    receiver.set_mark(SRC6, (now + 7200) << 32)
    assert verify(receiver, signed6(a, now), MSG6, SRC6) == "replay"


# -- what the daemon relies on ---------------------------------------------------------------


def test_sequences_grow_within_one_clock_tick() -> None:
    a = authenticator()
    seqs = [a.next_sequence(1_800_000_000.5) for _ in range(3)]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    assert seqs[0] == (1_800_000_000 << 32) | (0x8000 << 16)


def test_modes_on_an_advert_without_a_trailer() -> None:
    for mode in ("permissive", "receive-only"):
        a = Authenticator({1: KEY}, 1, mode)  # type: ignore[arg-type]
        checked = a.verify_untrusted(IPV6_VEC[:MSG6], None, src=SRC6, vrid=51, unix=0)
        assert not checked.authenticated
    with pytest.raises(BadPacket) as e:
        authenticator().verify_untrusted(IPV6_VEC[:MSG6], None, src=SRC6, vrid=51, unix=0)
    assert e.value.reason == "no_trailer"


def test_permissive_still_rejects_a_bad_trailer() -> None:
    a = Authenticator({1: KEY}, 1, "permissive", anti_replay="monotonic")
    image = bytearray(IPV6_VEC)
    image[-1] ^= 1
    assert verify(a, bytes(image), MSG6, SRC6) == "bad_hmac"


def test_rotation_keeps_the_sequence_and_the_replay_marks() -> None:
    sender, receiver = authenticator(), authenticator()
    now = time.time()
    first = signed6(sender, now)
    assert verify(receiver, first, MSG6, SRC6) == "OK"
    new = bytes(range(100, 132))
    receiver.configure({1: KEY, 2: new}, 1, "enforce")
    sender.configure({1: KEY, 2: new}, 2, "enforce")
    second = signed6(sender, now)  # same clock reading: the counter moves on
    assert parse_trailer(second[MSG6:]).key_id == 2
    assert verify(receiver, second, MSG6, SRC6) == "OK"
    assert verify(receiver, first, MSG6, SRC6) == "replay"
    receiver.configure({2: new}, 2, "enforce")
    assert verify(receiver, signed6(authenticator(), now + 1), MSG6, SRC6) == "unknown_key"


def test_forged_sources_do_not_move_any_mark() -> None:
    receiver = authenticator()
    image = bytearray(signed6(authenticator()))
    image[-1] ^= 1
    for i in range(10):
        src = IPv6Address(f"fe80::{i + 1:x}")
        assert verify(receiver, bytes(image), MSG6, src) == "bad_hmac"
        assert receiver.mark_of(src) is None


def test_replay_slots_are_bounded() -> None:
    receiver = authenticator(senders=4)
    for i in range(10):
        src = IPv4Address(f"198.18.0.{i + 1}")
        advert = Advert(vrid=51, priority=100, max_advert_int_cs=100, addresses=(VIP4,))
        message = encode_advert(advert, src=src, dst=VRRP_GROUP_V4)
        trailer = authenticator().sign(message, src=src, vrid=51, unix=time.time())
        receiver.verify_untrusted(message, trailer, src=src, vrid=51, unix=time.time())
    assert (
        sum(receiver.mark_of(IPv4Address(f"198.18.0.{i + 1}")) is not None for i in range(10)) == 4
    )


def test_default_time_window_as_keepalived_derives_it() -> None:
    assert auth.default_time_window(0.1) == 5
    assert auth.default_time_window(1) == 5
    assert auth.default_time_window(10) == 30
    assert auth.default_time_window(40.95) == 120


# -- the decoder with trailers -------------------------------------------------------------


def test_checksums_with_a_trailer() -> None:
    """IPv4: over the message only (pseudo-header length 12); IPv6: over the trailer too."""
    advert = Advert(vrid=51, priority=200, max_advert_int_cs=100, addresses=(VIP4,))
    m = encode_advert(advert, src=SRC4, dst=VRRP_GROUP_V4)
    ph = ipv4_pseudo_header(SRC4, VRRP_GROUP_V4, 112, MSG4)
    assert internet_checksum(ph + m) == 0
    image = with_trailer(
        m, authenticator().sign(m, src=SRC4, vrid=51, unix=1e9), src=SRC4, dst=VRRP_GROUP_V4
    )
    decoded, trailer = decode_signed_untrusted(image, src=SRC4, dst=VRRP_GROUP_V4)
    assert decoded.checksum_form == "pseudo-header"
    assert trailer == image[MSG4:]
    ph6 = ipv6_pseudo_header(SRC6, DST6, 112, len(IPV6_VEC))
    assert internet_checksum(ph6 + IPV6_VEC) == 0
    assert decode_signed_untrusted(IPV6_VEC, src=SRC6, dst=DST6)[1] == IPV6_VEC[MSG6:]


def test_an_unsigned_decoder_rejects_a_trailer_by_length() -> None:
    with pytest.raises(BadPacket) as e:
        decode_advert_untrusted(IPV6_VEC, src=SRC6, dst=DST6)
    assert e.value.reason == "length"


@given(st.binary(max_size=120), st.sampled_from([(SRC4, VRRP_GROUP_V4), (SRC6, DST6)]))
def test_the_signed_decoder_and_verifier_raise_only_bad_packet(data: bytes, ends: tuple) -> None:  # type: ignore[type-arg]
    src, dst = ends
    a = Authenticator({1: KEY}, 1, "permissive")
    try:
        advert, trailer = decode_signed_untrusted(data, src=src, dst=dst)
        message = data[:-AUTH_TRAILER_LEN] if trailer is not None else data
        a.verify_untrusted(message, trailer, src=src, vrid=advert.vrid, unix=time.time())
    except BadPacket:
        pass


@given(st.integers(0, len(IPV6_VEC) - 1), st.integers(1, 255), st.booleans())
def test_mutated_vectors_raise_only_bad_packet(offset: int, xor: int, v4: bool) -> None:
    image = bytearray(IPV4_VEC if v4 else IPV6_VEC)
    offset %= len(image)
    image[offset] ^= xor
    src, dst = (SRC4, VRRP_GROUP_V4) if v4 else (SRC6, DST6)
    a = authenticator(anti_replay="monotonic")
    try:
        advert, trailer = decode_signed_untrusted(bytes(image), src=src, dst=dst)
        mlen = MSG4 if v4 else MSG6
        a.verify_untrusted(bytes(image[:mlen]), trailer, src=src, vrid=advert.vrid, unix=0)
    except BadPacket:
        return
    # the HMAC covers all but the checksum, and a changed checksum no longer matches
    raise AssertionError(f"byte {offset} ^ {xor:#x} accepted")
