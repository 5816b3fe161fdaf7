"""The LAN envelope codec: round trips, hostile bytes, authentication, versioning, sizes."""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import ipaddress
import itertools
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vipcast.core.envelope import (
    AUTH_OVERHEAD,
    AUTH_TAG_SIZE,
    COMMON_HEADER_SIZE,
    DATA_HEADER_SIZE,
    MAX_UDP_PAYLOAD_V4,
    RECORD_HEADER_V4,
    RECORD_HEADER_V6,
    U64_MAX,
    BadEnvelope,
    Data,
    DataFramer,
    Datagram,
    EndOfSession,
    Heartbeat,
    Message,
    Nack,
    RecordEncoder,
    Signer,
    Unavailable,
    UnavailableReason,
    Verifier,
    decode_message_untrusted,
    encode_data,
    encode_heartbeat,
    encode_message,
    encode_nack,
    encode_record,
    envelope_budget,
    max_payload,
    max_relayable_payload,
    new_session_id,
    plan_batches,
)

KEY = b"cluster key for tests, 32 bytes!"

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
sessions = st.integers(1, U64_MAX)
terms = st.just(0) | st.integers(0, U64_MAX)
v4 = st.ip_addresses(v=4).map(str)


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """IPv4-mapped addresses travel as IPv4 (tested on their own)."""
    return isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None


v6 = st.ip_addresses(v=6).filter(_unmapped).map(str)


@st.composite
def datagrams(draw: st.DrawFn) -> Datagram:
    hosts = draw(st.sampled_from([v4, v6]))
    src, dst = (draw(hosts), draw(u16)), (draw(hosts), draw(u16))
    payload = draw(st.binary(max_size=300) | st.sampled_from([b"", bytes(1400)]))
    return Datagram(src, dst, payload, draw(st.integers(0, U64_MAX)))


@st.composite
def data_messages(draw: st.DrawFn) -> Data:
    batch = tuple(draw(st.lists(datagrams(), min_size=1, max_size=12)))
    first = draw(st.integers(1, U64_MAX - len(batch) + 1))
    origin = (draw(u16), draw(u32), draw(sessions))
    return Data(*origin, first, batch, draw(st.booleans()), draw(terms))


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int]:
    count = draw(st.integers(1, 0xFFFFFFFF))
    return draw(st.integers(1, U64_MAX - count + 1)), count


origin = (u16, u32, sessions)
u64 = st.integers(0, U64_MAX)
heartbeats = st.builds(Heartbeat, *origin, u64, st.booleans(), terms)
ends = st.builds(EndOfSession, *origin, u64, u64, terms)
nacks = st.builds(lambda f, n, s, r, t: Nack(f, n, s, r[0], r[1], t), *origin, ranges(), terms)
unavailables = st.builds(
    lambda f, n, s, r, why, t: Unavailable(f, n, s, r[0], r[1], why, t),
    *origin,
    ranges(),
    st.sampled_from(UnavailableReason),
    terms,
)
messages = data_messages() | heartbeats | ends | nacks | unavailables
keys = st.none() | st.just(KEY)


def signer(key: bytes | None) -> Signer | None:
    """A fresh signer for ``key`` as id 1 (counters from 1: ``now`` is left at 0)."""
    return None if key is None else Signer(1, key)


def verifier(key: bytes | None) -> Verifier | None:
    """A fresh verifier accepting ``key`` as id 1 (monotonic: no clock involved)."""
    return None if key is None else Verifier({1: key})


def reason_of(data: bytes, key: bytes | None = None) -> str:
    with pytest.raises(BadEnvelope) as caught:
        decode_message_untrusted(data, auth=verifier(key))
    return caught.value.reason


def reseal(message: bytes) -> bytes:
    """``message`` (no tag yet, AUTH flag set) with a valid tag for KEY."""
    return message + hmac.digest(KEY, message, "sha256")[:AUTH_TAG_SIZE]


def some_data() -> Data:
    d1 = Datagram(("198.18.0.1", 4000), ("198.18.0.100", 8600), b"hello", 1)
    d2 = Datagram(("2001:db8::1", 4001), ("2001:db8::100", 8600), b"", 2)
    return Data(1, 7, 42, 100, (d1, d2))


# ---------------------------------------------------------------- round trips


@given(messages, keys)
def test_every_message_round_trips(msg: Message, key: bytes | None) -> None:
    wire = encode_message(msg, auth=signer(key))
    assert decode_message_untrusted(wire, auth=verifier(key)) == msg


@given(data_messages())
def test_framer_and_record_encoder_match_the_plain_encoder(msg: Data) -> None:
    framer = DataFramer(msg.feed, msg.node, msg.session, term=msg.term)
    records = [RecordEncoder(d.dst).encode(d.payload, d.src, d.ingress_ns) for d in msg.datagrams]
    framed = framer.frame(msg.first_seq, records, retransmission=msg.retransmission)
    assert framed == encode_data(msg)
    assert records == [encode_record(d) for d in msg.datagrams]


def test_records_have_the_documented_size() -> None:
    d4 = Datagram(("198.18.0.1", 1), ("198.18.0.2", 2), b"abc", 0)
    d6 = Datagram(("2001:db8::1", 1), ("2001:db8::2", 2), b"abc", 0)
    assert len(encode_record(d4)) == RECORD_HEADER_V4 + 3 == 27
    assert len(encode_record(d6)) == RECORD_HEADER_V6 + 3 == 51
    assert len(encode_data(Data(1, 2, 3, 4, (d4,)))) == DATA_HEADER_SIZE + 27


def test_data_header_bytes_are_as_documented() -> None:
    d4 = Datagram(("198.18.0.1", 0x1234), ("198.18.0.2", 8600), b"\xaa", 0x0102030405060708)
    msg = Data(0x0A0B, 0x01020304, 0x1122334455667788, 5, (d4,), term=0x2A)
    wire = encode_data(msg)
    assert wire[:DATA_HEADER_SIZE].hex() == (
        "5643" "12" "01" "28" "00" "0a0b" "01020304" "1122334455667788"
        "0000000000000005" "0001" "0000" "000000000000002a"
    )  # fmt: skip
    assert wire[DATA_HEADER_SIZE:].hex() == (
        "0102030405060708" "0001" "04" "00" "1234" "2198" "c6120001" "c6120002" "aa"
    )  # fmt: skip


def test_recvfrom_tuples_and_mapped_addresses_are_accepted() -> None:
    enc = RecordEncoder(("::ffff:198.18.0.100", 8600))
    record = enc.encode(b"x", ("::ffff:198.18.0.1", 5000, 0, 0), 9)
    assert len(record) == RECORD_HEADER_V4 + 1
    msg = decode_message_untrusted(DataFramer(1, 1, 1).frame(1, [record]))
    assert isinstance(msg, Data)
    assert msg.datagrams[0] == Datagram(("198.18.0.1", 5000), ("198.18.0.100", 8600), b"x", 9)


def test_mixed_families_travel_as_ipv6() -> None:
    d = Datagram(("198.18.0.1", 1), ("2001:db8::2", 2), b"", 0)
    msg = decode_message_untrusted(encode_data(Data(1, 1, 1, 1, (d,))))
    assert isinstance(msg, Data)
    assert msg.datagrams[0].src[1] == 1
    mapped = ipaddress.IPv6Address(msg.datagrams[0].src[0]).ipv4_mapped
    assert mapped == ipaddress.IPv4Address("198.18.0.1")


def test_largest_relayable_payload_round_trips() -> None:
    size = max_relayable_payload()
    d = Datagram(("198.18.0.1", 1), ("198.18.0.2", 2), bytes(size), 0)
    wire = encode_data(Data(1, 1, 1, 1, (d,)))
    assert len(wire) == MAX_UDP_PAYLOAD_V4
    assert decode_message_untrusted(wire) == Data(1, 1, 1, 1, (d,))


def test_datagram_repr_shows_payload_as_hex() -> None:
    d = Datagram(("198.18.0.1", 1), ("198.18.0.2", 2), b"\x01\xff" * 20, 0)
    assert "payload[40]=01ff01ff" in repr(d)
    assert repr(d).endswith("..., ingress_ns=0)")


# ---------------------------------------------------------------- local errors


@pytest.mark.parametrize(
    "bad",
    [
        lambda: encode_data(Data(1, 1, 1, 1, ())),
        lambda: encode_data(Data(1, 1, 0, 1, some_data().datagrams)),
        lambda: encode_data(Data(1, 1, 1, 0, some_data().datagrams)),
        lambda: encode_data(Data(1 << 16, 1, 1, 1, some_data().datagrams)),
        lambda: encode_record(Datagram(("198.18.0.1", 70000), ("198.18.0.2", 1), b"", 0)),
        lambda: encode_record(Datagram(("198.18.0.1", 1), ("198.18.0.2", 1), bytes(70000), 0)),
        lambda: encode_record(Datagram(("not an address", 1), ("198.18.0.2", 1), b"", 0)),
        lambda: encode_nack(Nack(1, 1, 1, U64_MAX, 2)),
        lambda: encode_heartbeat(Heartbeat(1, 1, 1, -1)),
        lambda: DataFramer(1, 1, 1).frame(1, [b""] * 0x10000),
    ],
)
def test_encoders_reject_what_cannot_be_sent(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        bad()


# ---------------------------------------------------------------- hostile bytes


@given(st.binary(max_size=200), keys)
def test_random_bytes_raise_only_bad_envelope(data: bytes, key: bytes | None) -> None:
    with contextlib.suppress(BadEnvelope):
        decode_message_untrusted(data, auth=verifier(key))


@given(st.binary(max_size=120))
def test_random_bodies_behind_a_valid_header_raise_only_bad_envelope(body: bytes) -> None:
    for mtype in range(7):
        for hlen, version, flags in itertools.product(
            (20, 28, 32, 36, 40, 44, 48, 52, 56), (0x10, 0x11, 0x12), (0, 1, 3)
        ):
            head = struct.pack(">2sBBBBHIQ", b"VC", version, mtype, hlen, flags, 1, 2, 3)
            with contextlib.suppress(BadEnvelope):
                decode_message_untrusted(head + body)
            with contextlib.suppress(BadEnvelope):
                decode_message_untrusted(head + body, auth=verifier(KEY))


@given(messages, keys, st.data())
def test_mutated_messages_raise_only_bad_envelope(
    msg: Message, key: bytes | None, data: st.DataObject
) -> None:
    wire = bytearray(encode_message(msg, auth=signer(key)))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(wire) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "grow", "drop"]))
        if op == "flip":
            wire[where] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del wire[where:]
        elif op == "grow":
            wire[where:where] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del wire[where]
        if not wire:
            break
    try:
        decoded = decode_message_untrusted(bytes(wire), auth=verifier(key))
    except BadEnvelope:
        return
    assert isinstance(decoded, Data | Heartbeat | EndOfSession | Nack | Unavailable)


@given(messages, keys)
def test_every_truncation_is_rejected(msg: Message, key: bytes | None) -> None:
    wire = encode_message(msg, auth=signer(key))
    for n in range(len(wire)):
        with pytest.raises(BadEnvelope):
            decode_message_untrusted(wire[:n], auth=verifier(key))


def test_each_rejection_names_its_reason() -> None:
    good = encode_data(some_data())
    assert reason_of(b"") == "truncated"
    assert reason_of(b"XX" + good[2:]) == "magic"
    assert reason_of(good[:19]) == "truncated"
    assert reason_of(good[:2] + b"\x20" + good[3:]) == "version"
    assert reason_of(good[:3] + b"\x09" + good[4:]) == "type"
    assert reason_of(good[:4] + b"\x1f" + good[5:]) == "length"
    assert reason_of(good[:4] + b"\xff" + good[5:]) == "truncated"
    assert reason_of(good[:12] + bytes(8) + good[20:]) == "session"
    assert reason_of(good[:20] + bytes(8) + good[28:]) == "sequence"
    assert reason_of(good[:28] + bytes(2) + good[30:]) == "count"
    assert reason_of(good[:28] + b"\x00\x03" + good[30:]) == "truncated"
    assert reason_of(good[:-1]) == "truncated"
    assert reason_of(good + b"\0") == "length"
    assert reason_of(good[: DATA_HEADER_SIZE + 10] + b"\x05" + good[DATA_HEADER_SIZE + 11 :]) == (
        "address"
    )
    hb = encode_heartbeat(Heartbeat(1, 1, 1, 5))
    assert reason_of(hb + b"\0") == "length"
    nack = encode_nack(Nack(1, 1, 1, 5, 2))
    assert reason_of(nack[:28] + bytes(4) + nack[32:]) == "count"
    assert reason_of(nack[:20] + b"\xff" * 8 + nack[28:]) == "sequence"


def test_unknown_unavailable_reason_reads_as_unspecified() -> None:
    wire = bytearray(encode_message(Unavailable(1, 2, 3, 4, 5, UnavailableReason.EVICTED)))
    wire[32] = 200
    msg = decode_message_untrusted(bytes(wire))
    assert msg == Unavailable(1, 2, 3, 4, 5, UnavailableReason.UNSPECIFIED)


# ---------------------------------------------------------------- authentication


@given(messages)
def test_wrong_key_is_rejected(msg: Message) -> None:
    assert reason_of(encode_message(msg, auth=signer(KEY)), key=b"another key") == "bad_tag"


@given(messages)
def test_unauthenticated_message_is_rejected_when_a_key_is_set(msg: Message) -> None:
    assert reason_of(encode_message(msg), key=KEY) == "no_tag"


@given(messages, st.data())
def test_any_tampered_byte_is_rejected(msg: Message, data: st.DataObject) -> None:
    wire = bytearray(encode_message(msg, auth=signer(KEY)))
    where = data.draw(st.integers(0, len(wire) - 1))
    wire[where] ^= data.draw(st.integers(1, 255))
    reason = reason_of(bytes(wire), key=KEY)
    if where >= 5:  # past magic, version, type and length: only the auth checks can tell
        # a session id of 0 is caught before them; a cleared AUTH flag is "no_tag"
        assert reason in {"bad_tag", "unknown_key", "no_tag", "session"}


def test_node_without_key_reads_authenticated_messages() -> None:
    msg = some_data()
    assert decode_message_untrusted(encode_message(msg, auth=signer(KEY))) == msg


# ---------------------------------------------------------------- versioning


def _newer(wire: bytes, extra: bytes, *, auth: bool) -> bytes:
    """``wire`` as a version 1.2 sender would write it: ``extra`` header bytes appended
    (after the auth block, which stays where 1.1 puts it)."""
    if auth:
        wire = wire[:-AUTH_TAG_SIZE]
    hlen = wire[4]
    head = wire[:2] + b"\x12" + wire[3:4] + bytes([hlen + len(extra)]) + wire[5:hlen]
    newer = head + extra + wire[hlen:]
    return reseal(newer) if auth else newer


@given(messages, st.binary(min_size=1, max_size=40), st.booleans())
def test_newer_minor_version_with_longer_header_is_decoded(
    msg: Message, extra: bytes, auth: bool
) -> None:
    key = KEY if auth else None
    wire = _newer(encode_message(msg, auth=signer(key)), extra, auth=auth)
    assert decode_message_untrusted(wire, auth=verifier(key)) == msg


def test_header_length_is_checked_against_the_type() -> None:
    wire = encode_heartbeat(Heartbeat(1, 1, 1, 5))
    assert reason_of(wire[:4] + bytes([COMMON_HEADER_SIZE + 7]) + wire[5:]) == "length"


# ---------------------------------------------------------------- sizes, batches, sessions


def test_max_payload_fills_the_mtu_exactly() -> None:
    assert envelope_budget(1500) == 1472
    assert envelope_budget(1500, lan_ipv6=True) == 1452
    assert max_payload(1500) == 1472 - 40 - 24 == 1408
    assert max_payload(1500, addr_v6=True, auth=True) == 1472 - 40 - 48 - 12 - 16
    d = Datagram(("198.18.0.1", 1), ("198.18.0.2", 2), bytes(max_payload(1500)), 0)
    assert len(encode_data(Data(1, 1, 1, 1, (d,)))) == envelope_budget(1500)
    d = Datagram(("198.18.0.1", 1), ("198.18.0.2", 2), bytes(max_payload(1500, auth=True)), 0)
    assert len(encode_data(Data(1, 1, 1, 1, (d,)), auth=signer(KEY))) == envelope_budget(1500)


@given(st.lists(st.integers(1, 3000), max_size=60), st.integers(200, 9000), st.booleans())
def test_plan_batches_keeps_order_and_the_budget(sizes: list[int], budget: int, auth: bool) -> None:
    counts = plan_batches(sizes, budget, auth=auth)
    assert sum(counts) == len(sizes)
    assert all(c >= 1 for c in counts)
    room = budget - DATA_HEADER_SIZE - (AUTH_OVERHEAD if auth else 0)
    start = 0
    for c in counts:
        batch = sizes[start : start + c]
        assert c == 1 or sum(batch) <= room  # a lone oversize record is allowed
        start += c
    start = 0
    for c in counts[:-1]:  # greedy: the next record did not fit
        assert sum(sizes[start : start + c + 1]) > room
        start += c


def test_new_session_ids_order_by_time_and_never_repeat() -> None:
    t = 1_700_000_000_000_000_000
    a = new_session_id(1, t)
    assert a & 0xFFFF == 1
    assert new_session_id(2, t) != a
    assert new_session_id(1, t + 1_000_000) > a
    assert new_session_id(2, t - 10**12, previous=a) > a  # a clock behind still moves on
    assert new_session_id(1, t, previous=a) > a


def test_a_closing_heartbeat_round_trips_with_its_flag() -> None:
    from vipcast.core.envelope import FLAG_CLOSING, Heartbeat, encode_heartbeat

    beat = Heartbeat(1, 11, 1 << 40, 99, closing=True)
    raw = encode_heartbeat(beat)
    assert raw[5] & FLAG_CLOSING
    assert decode_message_untrusted(raw) == beat
    assert not decode_message_untrusted(encode_heartbeat(Heartbeat(1, 11, 1 << 40, 99))).closing


# ---------------------------------------------------------------- the term (1.2)


def _as_1_1(wire: bytes) -> bytes:
    """A 1.2 envelope without AUTH rewritten as its sender before 1.2 would have sent it."""
    hlen = wire[4]
    return b"VC\x11" + wire[3:4] + bytes([hlen - 8]) + wire[5 : hlen - 8] + wire[hlen:]


@given(messages)
def test_the_term_round_trips_and_1_1_messages_read_as_term_0(msg: Message) -> None:
    wire = encode_message(msg)
    assert wire[2] == 0x12
    assert int.from_bytes(wire[wire[4] - 8 : wire[4]]) == msg.term  # the header's last 8 bytes
    assert decode_message_untrusted(wire) == msg
    old = decode_message_untrusted(_as_1_1(wire))
    assert old.term == 0
    assert dataclasses.replace(old, term=msg.term) == msg


def test_a_1_2_header_too_short_for_the_term_is_refused() -> None:
    wire = bytearray(encode_heartbeat(Heartbeat(1, 2, 3, 4, term=5)))
    wire[4] = 28  # the 1.0 size: no room for the term
    assert reason_of(bytes(wire[:28])) == "length"
