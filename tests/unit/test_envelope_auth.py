"""Keyed envelopes (protocol 1.1, with 1.2's term): the auth block, key ids and rotation,
anti-replay.

The pinned vector's tag was computed with OpenSSL, not with this codec::

    echo -n 564312023001...17979cfe3d85cd15000000000000002a | xxd -r -p |
      openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f
"""

from __future__ import annotations

import contextlib
import hmac
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.legacy import envelope_1_0 as v10
from tests.unit.test_envelope import messages, some_data
from vipcast.core import replay
from vipcast.core.envelope import (
    AUTH_BLOCK_SIZE,
    AUTH_TAG_SIZE,
    BadEnvelope,
    Data,
    DataFramer,
    Heartbeat,
    Message,
    Nack,
    Signer,
    Verifier,
    decode_message_untrusted,
    encode_data,
    encode_heartbeat,
    encode_message,
    encode_nack,
    encode_record,
)

KEY1 = bytes(range(32))
KEY2 = b"the second cluster key, 32 bytes"
NOW = 0x17979CFE3D85CD15  # Unix ns, late 2025
SECOND = 1_000_000_000


def decode(wire: bytes, verifier: Verifier, now: int = NOW) -> Message:
    return decode_message_untrusted(wire, auth=verifier, now=now)


def reason(wire: bytes, verifier: Verifier, now: int = NOW) -> str:
    with pytest.raises(BadEnvelope) as caught:
        decode(wire, verifier, now)
    return caught.value.reason


def timed(*keys: tuple[int, bytes]) -> Verifier:
    """A verifier in time mode (5 s window), as a node runs by default."""
    return Verifier(dict(keys), window_ns=5 * SECOND)


# ---------------------------------------------------------------- the bytes


def test_a_keyed_heartbeat_is_byte_for_byte_as_documented() -> None:
    beat = Heartbeat(1, 7, 0x018BCFE568000007, 5, term=0x2A)
    wire = encode_heartbeat(beat, auth=Signer(1, KEY1), now=NOW)
    assert wire.hex() == (
        "5643" "12" "02" "30" "01" "0001" "00000007" "018bcfe568000007"  # hlen 48, AUTH
        "0000000000000005"  # last sequence
        "01" "000000" "17979cfe3d85cd15"  # auth block: key id 1, reserved, counter
        "000000000000002a"  # term 42, after the auth block (1.2)
        "cca93c60eac55c1a9208ef64a8b6ad29"  # HMAC-SHA256 (OpenSSL), first 16 bytes
    )  # fmt: skip
    assert decode(wire, timed((1, KEY1))) == beat


def test_the_auth_block_follows_the_fixed_fields_of_every_type() -> None:
    signer = Signer(9, KEY1)
    data = encode_data(replace(some_data(), term=7), auth=signer, now=NOW)
    assert data[4] == 32 + AUTH_BLOCK_SIZE + 8  # DATA's header grows by the block and the term
    assert data[32] == 9
    assert int.from_bytes(data[36:44]) == NOW
    assert int.from_bytes(data[44:52]) == 7  # the term follows the auth block
    nack = encode_nack(Nack(1, 2, 3, 4, 5, term=7), auth=signer, now=NOW)
    assert nack[4] == 32 + AUTH_BLOCK_SIZE + 8
    assert len(nack) == 32 + AUTH_BLOCK_SIZE + 8 + AUTH_TAG_SIZE
    assert nack[-AUTH_TAG_SIZE:] == hmac.digest(KEY1, nack[:-AUTH_TAG_SIZE], "sha256")[:16]


# ---------------------------------------------------------------- keys and rotation


@given(messages)
def test_every_message_round_trips_with_any_configured_key_id(msg: Message) -> None:
    verifier, signer = timed((1, KEY1), (2, KEY2)), Signer(1, KEY1)
    for key_id, key in ((1, KEY1), (2, KEY2)):
        signer.rotate(key_id, key)
        assert decode(encode_message(msg, auth=signer, now=NOW), verifier) == msg


def test_a_rotation_loses_nothing_and_the_old_key_goes_when_removed() -> None:
    signer, receiver = Signer(1, KEY1), timed((1, KEY1), (2, KEY2))
    before = encode_heartbeat(Heartbeat(1, 7, 9, 1), auth=signer, now=NOW)
    signer.rotate(2, KEY2)
    after = encode_heartbeat(Heartbeat(1, 7, 9, 2), auth=signer, now=NOW + 1)
    assert after[28] == 2  # signed with key 2 now (the block follows the 28 fixed bytes)
    assert decode(before, receiver).last_seq == 1  # type: ignore[union-attr]
    assert decode(after, receiver).last_seq == 2  # type: ignore[union-attr]
    receiver.set_keys({2: KEY2}, window_ns=5 * SECOND)  # key 1 removed everywhere
    late = encode_heartbeat(Heartbeat(1, 7, 9, 3), auth=Signer(1, KEY1), now=NOW + 2)
    assert reason(late, receiver, NOW + 2) == "unknown_key"
    # the replay state survived the key change: the message signed before is still spent
    assert reason(after, receiver, NOW + 2) == "replay"


def test_each_rejection_reason() -> None:
    wire = encode_heartbeat(Heartbeat(1, 7, 9, 1), auth=Signer(1, KEY1), now=NOW)
    assert reason(encode_heartbeat(Heartbeat(1, 7, 9, 1)), timed((1, KEY1))) == "no_tag"
    assert reason(wire, timed((2, KEY1))) == "unknown_key"
    assert reason(wire, timed((1, KEY2))) == "bad_tag"
    assert reason(wire[:-1] + bytes([wire[-1] ^ 1]), timed((1, KEY1))) == "bad_tag"
    assert reason(wire, timed((1, KEY1)), NOW + 6 * SECOND) == "stale"
    assert reason(wire, timed((1, KEY1)), NOW - 6 * SECOND) == "stale"  # from the future
    v = timed((1, KEY1))
    decode(wire, v)
    assert reason(wire, v) == "replay"


def test_a_version_1_0_tag_is_refused_naming_the_upgrade() -> None:
    old = v10.encode_heartbeat(v10.Heartbeat(1, 7, 9, 1), key=KEY1)
    with pytest.raises(BadEnvelope, match="upgrade the sender") as caught:
        decode(old, timed((1, KEY1)))
    assert caught.value.reason == "no_tag"


@given(messages, st.booleans())
def test_a_1_0_node_still_reads_1_2_envelopes(msg: Message, keyed: bool) -> None:
    """The minor bumps' promise: a node not yet upgraded decodes (and, with the same
    key bytes, verifies) what an upgraded one sends; the auth block and the term are
    header fields it skips."""
    wire = encode_message(msg, auth=Signer(1, KEY1) if keyed else None, now=NOW)
    decoded = v10.decode_message_untrusted(wire, key=KEY1 if keyed else None)
    assert repr(decoded).replace("v10.", "") == repr(msg).replace(f", term={msg.term})", ")")


# ---------------------------------------------------------------- replay


def test_a_replayed_envelope_is_refused_and_changes_nothing() -> None:
    signer, v = Signer(1, KEY1), timed((1, KEY1))
    first = encode_data(some_data(), auth=signer, now=NOW)
    second = encode_data(some_data(), auth=signer, now=NOW)  # same clock: counter + 1
    assert decode(first, v) == some_data()
    assert reason(first, v) == "replay"
    assert decode(second, v) == some_data()
    assert reason(second, v) == "replay"
    assert reason(first, v, NOW + 10 * SECOND) == "stale"  # much later: stale first


def test_retransmitted_records_travel_in_new_envelopes_that_are_accepted() -> None:
    """Retransmissions repeat records, never envelopes: each is framed (and counted) anew."""
    signer, v = Signer(1, KEY1), timed((1, KEY1))
    framer = DataFramer(1, 7, 42, auth=signer)
    records = [encode_record(d) for d in some_data().datagrams]
    sent = framer.frame(100, records, now=NOW)
    again = framer.frame(100, records, retransmission=True, now=NOW)
    assert decode(sent, v) == some_data()
    resent = decode(again, v)
    assert isinstance(resent, Data)
    assert resent.retransmission
    assert resent.datagrams == some_data().datagrams
    assert reason(again, v) == "replay"


def test_rejected_messages_do_not_move_the_replay_state() -> None:
    v = timed((1, KEY1))
    forged_future = encode_heartbeat(Heartbeat(1, 7, 9, 1), auth=Signer(1, KEY2), now=NOW + 2)
    assert reason(forged_future, v) == "bad_tag"
    real = encode_heartbeat(Heartbeat(1, 7, 9, 1), auth=Signer(1, KEY1), now=NOW + 1)
    assert decode(real, v).last_seq == 1  # type: ignore[union-attr]
    # a key holder's message that does not decode (a bad record family, tag valid)
    message = bytearray(encode_data(some_data(), auth=Signer(1, KEY1), now=NOW + 5)[:-16])
    message[52 + 10] = 5  # the first record's family: header 32 + auth 12 + term 8, offset 10
    sealed = bytes(message) + hmac.digest(KEY1, bytes(message), "sha256")[:16]
    assert reason(sealed, v) == "address"
    assert v.replay.highest(7) == NOW + 1  # neither the forgery nor the malformed one counted


def test_senders_have_separate_counters_and_nacks_are_checked_too() -> None:
    v = timed((1, KEY1))
    a, b = Signer(1, KEY1), Signer(1, KEY1)
    nack_a = encode_nack(Nack(1, 11, 5, 1, 3), auth=a, now=NOW)
    nack_b = encode_nack(Nack(1, 12, 5, 1, 3), auth=b, now=NOW)  # same counter, other node
    assert decode(nack_a, v) == Nack(1, 11, 5, 1, 3)
    assert decode(nack_b, v) == Nack(1, 12, 5, 1, 3)
    assert reason(nack_a, v) == "replay"
    assert reason(nack_b, v) == "replay"


def test_a_little_reordering_is_accepted_once() -> None:
    signer, v = Signer(1, KEY1), timed((1, KEY1))
    early = encode_heartbeat(Heartbeat(1, 7, 9, 1), auth=signer, now=NOW)
    later = encode_heartbeat(Heartbeat(1, 7, 9, 2), auth=signer, now=NOW + 1_000_000)
    assert decode(later, v).last_seq == 2  # type: ignore[union-attr]
    assert decode(early, v).last_seq == 1  # type: ignore[union-attr]  # 1 ms late: fine
    assert reason(early, v) == "replay"
    much_later = encode_heartbeat(Heartbeat(1, 7, 9, 3), auth=signer, now=NOW + SECOND)
    too_late = encode_heartbeat(Heartbeat(1, 7, 9, 4), auth=signer, now=NOW + SECOND)
    assert too_late != much_later
    decode(too_late, v)  # counter NOW + 1 s + 1: the newest now
    decode(much_later, v)  # NOW + 1 s: just behind it, accepted
    stale = encode_heartbeat(Heartbeat(1, 7, 9, 5), auth=Signer(1, KEY1), now=NOW + 2)
    assert reason(stale, v, NOW + SECOND) == "replay"  # 1 s behind: beyond REORDER_NS


def test_a_receiver_refuses_its_own_node_id_from_the_network() -> None:
    v = Verifier({1: KEY1}, own=7)
    wire = encode_heartbeat(Heartbeat(1, 7, 9, 1), auth=Signer(1, KEY1), now=NOW)
    assert reason(wire, v) == "replay"  # never seen, but node 7's envelopes stay in node 7
    assert decode(wire, Verifier({1: KEY1}, own=8)).node == 7


def test_monotonic_mode_has_no_clock_but_still_refuses_replays() -> None:
    v = Verifier({1: KEY1})  # window 0: monotonic
    wire = encode_heartbeat(Heartbeat(1, 7, 9, 1), auth=Signer(1, KEY1), now=5)
    assert decode(wire, v, now=NOW).last_seq == 1  # type: ignore[union-attr]
    assert reason(wire, v, now=NOW) == "replay"


def test_a_receiver_that_just_started_refuses_a_capture_older_than_the_window() -> None:
    capture = encode_heartbeat(Heartbeat(1, 7, 9, 1), auth=Signer(1, KEY1), now=NOW)
    assert reason(capture, timed((1, KEY1)), NOW + 6 * SECOND) == "stale"


# ---------------------------------------------------------------- the counter


def test_the_counter_follows_the_clock_and_always_grows() -> None:
    s = Signer(1, KEY1)
    assert [s.next_counter(NOW) for _ in range(3)] == [NOW, NOW + 1, NOW + 2]
    assert s.next_counter(NOW + 100) == NOW + 100
    assert s.next_counter(NOW - SECOND) == NOW + 101  # a clock stepped back: still grows


def test_in_time_mode_a_counter_far_ahead_of_the_clock_restarts_from_it() -> None:
    s = Signer(1, KEY1, window_ns=5 * SECOND)
    s.next_counter(NOW + 60 * SECOND)  # the clock was an hour... a minute fast, then fixed
    assert s.next_counter(NOW) == NOW  # receivers would refuse the old count as stale


# ---------------------------------------------------------------- the guard itself


def test_the_guard_is_bounded_in_senders_and_counters() -> None:
    g = replay.ReplayGuard(senders=4)
    for sender in range(10):
        g.record(sender, NOW + sender, NOW)
    assert len(g) == 4
    assert g.highest(9) == NOW + 9
    assert g.highest(0) is None  # the oldest went first
    for i in range(replay.REMEMBERED * 2):
        g.record(9, NOW + 10 + i, NOW)
    w = g._windows[9]
    assert len(w.seen) == len(w.order) == replay.REMEMBERED
    assert not g.new(9, NOW + 10, NOW)  # forgotten, but below the floor: still refused


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200_000_000)), max_size=300))
def test_no_counter_is_ever_accepted_twice(arrivals: list[tuple[int, int]]) -> None:
    g = replay.ReplayGuard(window_ns=5 * SECOND)
    accepted: set[tuple[int, int]] = set()
    for sender, offset in arrivals:
        counter = NOW + offset
        if g.new(sender, counter, NOW):
            assert (sender, counter) not in accepted
            accepted.add((sender, counter))
            g.record(sender, counter, NOW)
    in_order = sorted({o for _, o in arrivals})
    fresh = replay.ReplayGuard()
    for offset in in_order:  # in order, nothing new is ever refused
        assert fresh.new(1, offset, 0)
        fresh.record(1, offset, 0)


# ---------------------------------------------------------------- fuzz: only BadEnvelope


@given(
    messages,
    st.integers(0, 255),
    st.integers(0, (1 << 64) - 1),
    st.binary(min_size=AUTH_TAG_SIZE, max_size=AUTH_TAG_SIZE),
    st.booleans(),
)
def test_any_auth_block_and_tag_raise_only_bad_envelope(
    msg: Message, key_id: int, counter: int, tag: bytes, keep_tag: bool
) -> None:
    wire = bytearray(encode_message(msg, auth=Signer(1, KEY1), now=NOW))
    at = {1: 32, 2: 28, 3: 36, 4: 32, 5: 36}[wire[3]]
    wire[at] = key_id
    wire[at + 4 : at + 12] = counter.to_bytes(8, "big")
    if not keep_tag:
        wire[-AUTH_TAG_SIZE:] = tag
    for v in (timed((1, KEY1)), Verifier({1: KEY1, 2: KEY2})):
        with contextlib.suppress(BadEnvelope):
            got = decode(bytes(wire), v)
            assert (key_id, counter, keep_tag) == (1, NOW, True)  # only the original passes
            assert got == msg


@given(st.binary(max_size=120), st.sampled_from([0x11, 0x12, 0x1F]), st.integers(1, 5))
def test_random_keyed_bodies_raise_only_bad_envelope(body: bytes, version: int, mtype: int) -> None:
    for hlen in range(20, 64, 4):
        head = bytes([0x56, 0x43, version, mtype, hlen, 0x01]) + bytes(6) + b"\x00" * 7 + b"\x01"
        with contextlib.suppress(BadEnvelope):
            decode(head + body, timed((1, KEY1)))


@pytest.mark.parametrize("size", [1, 32, 64, 65, 200])
def test_the_precomputed_mac_is_hmac_sha256_truncated(size: int) -> None:
    """The signer's tag is RFC 2104's HMAC-SHA256 (as the stdlib computes it), 16 bytes."""
    secret = bytes((7 * i + size) & 0xFF for i in range(size))
    signer = Signer(1, secret)
    for message in (b"", b"x", bytes(range(256)) * 7):
        assert signer.tag(message) == hmac.digest(secret, message, "sha256")[:16]
