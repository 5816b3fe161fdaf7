"""The relay's retransmission buffer and NACK limiter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vipcast.core.envelope import UnavailableReason
from vipcast.core.retransmit import NackLimiter, RetransmitBuffer, Served

EVICTED, NOT_SENT = UnavailableReason.EVICTED, UnavailableReason.NOT_SENT
S = 1_000_000_000


def rec(seq: int) -> bytes:
    return b"record %d" % seq


def filled(first: int, last: int, **bounds: int) -> RetransmitBuffer:
    buf = RetransmitBuffer(**bounds)
    for seq in range(first, last + 1):
        buf.append(seq, rec(seq), 0)
    return buf


def test_a_held_range_is_served_whole() -> None:
    buf = filled(1, 10)
    assert buf.get_range(3, 4, 0) == Served(3, tuple(rec(s) for s in range(3, 7)), ())
    assert (buf.first_seq, buf.last_seq, len(buf)) == (1, 10, 10)


def test_evicted_and_unsent_parts_are_unavailable() -> None:
    buf = filled(1, 10, max_count=5)
    assert buf.first_seq == 6
    served = buf.get_range(4, 10, 0)  # 4..13
    assert served.first == 6
    assert served.records == tuple(rec(s) for s in range(6, 11))
    assert served.unavailable == ((4, 2, EVICTED), (11, 3, NOT_SENT))


def test_a_range_entirely_gone_or_ahead_has_no_records() -> None:
    buf = filled(1, 10, max_count=5)
    assert buf.get_range(1, 3, 0) == Served(6, (), ((1, 3, EVICTED),))
    assert buf.get_range(20, 2, 0) == Served(20, (), ((20, 2, NOT_SENT),))
    assert RetransmitBuffer().get_range(1, 2, 0) == Served(1, (), ((1, 2, NOT_SENT),))


def test_records_older_than_the_age_bound_are_evicted() -> None:
    buf = RetransmitBuffer(max_age_ns=2 * S)
    for seq in range(1, 6):
        buf.append(seq, rec(seq), seq * S)  # appended at 1 s .. 5 s
    assert buf.first_seq == 3
    served = buf.get_range(1, 5, 6 * S)
    assert served.records == (rec(4), rec(5))
    assert served.unavailable == ((1, 3, EVICTED),)


def test_the_byte_bound_evicts_the_oldest() -> None:
    buf = RetransmitBuffer(max_bytes=20)
    for seq in range(1, 4):
        buf.append(seq, bytes(8), 0)
    assert (buf.first_seq, buf.nbytes) == (2, 16)


@settings(max_examples=60)
@given(
    st.lists(st.lists(st.integers(1, 12), max_size=20), min_size=1, max_size=40),
    st.integers(1, 60),
    st.integers(30, 400),
)
def test_a_batch_is_kept_as_its_appends_would_be(
    batches: list[list[int]], max_count: int, max_bytes: int
) -> None:
    """``extend`` (what the relay calls per batch) ends where one append per record ends."""
    whole = RetransmitBuffer(max_count=max_count, max_bytes=max_bytes, max_age_ns=3 * S)
    single = RetransmitBuffer(max_count=max_count, max_bytes=max_bytes, max_age_ns=3 * S)
    seq = 1
    for i, sizes in enumerate(batches):
        records = [bytes([s]) * s for s in sizes]
        whole.extend(seq, records, i * S)
        for j, record in enumerate(records):
            single.append(seq + j, record, i * S)
        seq += len(records)
        assert (whole.first_seq, whole.last_seq, whole.nbytes) == (
            single.first_seq,
            single.last_seq,
            single.nbytes,
        )
    assert whole.get_range(1, seq, len(batches) * S) == single.get_range(1, seq, len(batches) * S)


def test_appends_must_be_consecutive() -> None:
    buf = filled(5, 6)
    with pytest.raises(ValueError, match="after 6"):
        buf.append(8, b"", 0)
    buf.clear()
    buf.append(1, b"x", 0)  # a new session starts anywhere
    assert (buf.first_seq, buf.last_seq) == (1, 1)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        RetransmitBuffer(max_count=0)


@settings(max_examples=60)
@given(
    st.integers(1, 50),
    st.lists(st.integers(0, 3 * S // 10), min_size=1, max_size=600),
    st.integers(1, 10**6),
    st.data(),
)
def test_buffer_agrees_with_a_model(
    max_count: int, steps: list[int], start: int, data: st.DataObject
) -> None:
    """Many appends (compaction included): every lookup matches a plain dict."""
    buf = RetransmitBuffer(max_count=max_count, max_age_ns=S)
    sent: dict[int, tuple[bytes, int]] = {}
    now = 0
    for i, step in enumerate(steps):
        now += step
        seq = start + i
        buf.append(seq, rec(seq), now)
        sent[seq] = (rec(seq), now)
    first = data.draw(st.integers(max(1, start - 5), start + len(steps) + 5))
    count = data.draw(st.integers(1, 80))
    served = buf.get_range(first, count, now)
    kept = [
        s for s, (_, t) in sent.items() if t >= now - S and s > start + len(steps) - 1 - max_count
    ]
    want = [s for s in range(first, first + count) if s in kept]
    assert served.records == tuple(rec(s) for s in want)
    if want:
        assert served.first == want[0]
    covered = sum(c for _, c, _ in served.unavailable) + len(want)
    assert covered == count


def test_limiter_grants_a_burst_then_the_rate() -> None:
    lim = NackLimiter(rate=1000.0, burst=100)
    assert lim.grant("r1", 80, 0) == 80
    assert lim.grant("r1", 80, 0) == 20
    assert lim.grant("r1", 80, 0) == 0
    assert lim.grant("r1", 80, S // 100) == 10  # 10 ms at 1000/s
    assert lim.grant("r2", 50, 0) == 50  # each receiver has its own bucket
    assert lim.grant("r1", 500, 10 * S) == 100  # refills up to the burst only


def test_limiter_forgets_the_least_recent_receivers() -> None:
    lim = NackLimiter(rate=1.0, burst=10, max_peers=2)
    lim.grant("a", 10, 0)
    lim.grant("b", 10, 0)
    lim.grant("c", 10, 0)  # "a" is forgotten: it starts again with a full bucket
    assert lim.grant("a", 10, 0) == 10
    assert lim.grant("c", 10, 0) == 0
