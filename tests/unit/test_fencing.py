"""Fencing on the pure cores: a deposed leader's envelopes are dropped, a forged term is not
believed without keys (core/fencing.py, through the sequencer as the receiver runs it)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from vipcast.core.envelope import U64_MAX, Message
from vipcast.core.fencing import Fence
from vipcast.core.sequencer import GapUnrecoverable, Sequencer, SequencerConfig

from .test_sequencer import (
    FEED,
    MS,
    NODE_A,
    NODE_B,
    RELAYS,
    A,
    B,
    accept,
    data,
    delivered,
    eos,
    hb,
)

T1, T2 = 101, 205  # etcd creation revisions: A's term, then B's
FORGER = "198.18.0.66"  # a LAN host without keys, or a member's address spoofed
HANDOVER = SequencerConfig().handover_grace_ns


def under(term: int, *msgs: Message) -> list[Message]:
    return [replace(m, term=term) for m in msgs]


def lead(seqr: Sequencer, node: int, term: int, now: int = 0) -> list[object]:
    return list(seqr.set_leader(RELAYS[node], now, term))


def following_a(config: SequencerConfig | None = None) -> Sequencer:
    """A receiver delivering A's session under term T1, #1..#3 delivered."""
    seqr = Sequencer(config)
    lead(seqr, NODE_A, T1)
    accept(seqr, replace(eos(1, 0), term=T1))
    acts = [a for m in under(T1, data(A, 1, 3)) for a in accept(seqr, m)]
    assert delivered(acts) == [(A, 1), (A, 2), (A, 3)]
    return seqr


def deliver(seqr: Sequencer, msgs: list[Message], now: int = 0) -> list[tuple[int, int]]:
    return delivered([a for m in msgs for a in accept(seqr, m, now)])


def test_a_deposed_leaders_envelopes_are_dropped_and_counted() -> None:
    seqr = following_a()
    lead(seqr, NODE_B, T2, 10 * MS)
    assert seqr.term(FEED) == T2
    late = under(T1, data(A, 4, 2), hb(A, 5), eos(A, 5))  # A overlapping B: must not count
    assert deliver(seqr, late, 20 * MS) == []
    assert seqr.counters(FEED).fenced == 3
    got = deliver(seqr, under(T2, data(B, 1, 2)), 30 * MS)
    got += delivered(seqr.handle_timer(30 * MS + SequencerConfig().takeover_grace_ns))
    assert got == [(B, 1), (B, 2)]


def test_answers_to_nacks_of_a_lower_term_are_still_taken() -> None:
    seqr = following_a()
    accept(seqr, replace(data(A, 5), term=T1))  # #4 missing, asked for
    lead(seqr, NODE_B, T2, 10 * MS)
    resent = replace(data(A, 4, retrans=True), term=T1)
    assert deliver(seqr, [resent], 11 * MS) == [(A, 4), (A, 5)]
    assert seqr.counters(FEED).fenced == 0


def test_a_closing_session_may_finish_for_the_handover_grace_then_is_fenced() -> None:
    seqr = following_a()
    closing = replace(hb(A, 3), closing=True, term=T1)
    accept(seqr, closing)
    lead(seqr, NODE_B, T2, 10 * MS)  # A resigned; B won the key: make-before-break
    assert deliver(seqr, under(T1, data(A, 4)), 20 * MS) == [(A, 4)]
    assert deliver(seqr, under(T1, data(A, 5)), 10 * MS + HANDOVER) == []
    assert seqr.counters(FEED).fenced == 1


def test_a_closing_claim_under_a_lower_term_buys_nothing() -> None:
    seqr = following_a()
    lead(seqr, NODE_B, T2, 10 * MS)
    accept(seqr, replace(hb(A, 3), closing=True, term=T1), 11 * MS)  # fenced itself
    assert deliver(seqr, under(T1, data(A, 4)), 12 * MS) == []
    assert seqr.counters(FEED).fenced == 2


def test_without_keys_a_forged_higher_term_is_not_believed() -> None:
    seqr = following_a()
    forged = replace(hb(A, 3), term=U64_MAX, node=66)
    for i in range(10):  # repeated, over more than any confirmation time
        seqr.accept(forged, FORGER, i * 100 * MS)
        seqr.accept(replace(forged, session=A), RELAYS[NODE_A], i * 100 * MS)  # spoofed
    assert seqr.term(FEED) == T1
    assert deliver(seqr, under(T1, data(A, 4)), 2000 * MS) == [(A, 4)]
    assert seqr.counters(FEED).fenced == 0


def test_with_keys_an_authentic_higher_term_is_believed() -> None:
    seqr = following_a(SequencerConfig(trust_terms=True))
    accept(seqr, replace(data(B, 1), term=T2), 10 * MS)  # B's first envelope, before the op
    assert seqr.term(FEED) == T2
    assert deliver(seqr, under(T1, data(A, 4)), 11 * MS) == []
    assert seqr.counters(FEED).fenced == 1


def test_vrrp_terms_are_all_zero_and_nothing_is_fenced() -> None:
    seqr = Sequencer()
    seqr.set_leader(RELAYS[NODE_A], 0)
    accept(seqr, eos(1, 0))
    seqr.set_leader(RELAYS[NODE_B], 1 * MS)
    accept(seqr, data(A, 1, 2), 2 * MS)
    assert seqr.counters(FEED).fenced == 0


def test_a_feed_first_heard_after_the_op_starts_at_the_named_term() -> None:
    seqr = Sequencer()
    lead(seqr, NODE_B, T2)
    assert deliver(seqr, under(T1, data(A, 1)), 1 * MS) == []
    assert seqr.counters(FEED).fenced == 1


# ---------------------------------------------------------------- properties


ops = st.lists(
    st.one_of(
        st.tuples(st.just("op"), st.integers(0, 50)),  # the election names a term
        st.tuples(st.just("env"), st.integers(0, U64_MAX), st.booleans(), st.booleans()),
    ),
    max_size=60,
)


@given(ops, st.booleans())
def test_the_floor_is_the_highest_named_term_and_below_it_only_exemptions_pass(
    steps: list[tuple[object, ...]], trusted: bool
) -> None:
    """Without keys, envelopes never move the floor, however high their terms; with keys,
    the floor is the highest term seen at all. Below the floor only answers to NACKs and
    a session closed while its term was the floor pass."""
    fence = Fence(grace_ns=HANDOVER, trusted=trusted)
    named = seen = 0
    now = 0
    for step in steps:
        now += MS
        if step[0] == "op":
            term = int(step[1])  # type: ignore[call-overload]
            named = max(named, term)
            fence.believe(term, now)
            continue
        _, term, retrans, spoofed = step
        msg = replace(data(A, 1, retrans=bool(retrans)), term=int(term))  # type: ignore[call-overload]
        floor = fence.floor
        admitted = fence.admit(msg, FORGER if spoofed else RELAYS[NODE_A], now)
        assert admitted == (msg.term >= floor or bool(retrans))
        seen = max(seen, msg.term)
        assert fence.floor == (max(named, seen) if trusted else named)


@given(st.lists(st.integers(0, U64_MAX), max_size=30))
def test_no_forged_term_fences_the_real_leader_without_keys(forged: list[int]) -> None:
    seqr = following_a()
    for i, term in enumerate(forged):
        seqr.accept(replace(hb(B, 1), term=term), RELAYS[NODE_B], i * MS)
    assert deliver(seqr, under(T1, data(A, 4)), 100 * MS) == [(A, 4)]
    assert seqr.term(FEED) == T1
    assert seqr.counters(FEED).fenced == sum(term < T1 for term in forged)


def test_the_relay_stamps_its_sessions_term_on_everything_it_states() -> None:
    from vipcast.core.relay_session import RelaySession

    relay = RelaySession(FEED, NODE_A)
    relay.start(unix_ns=1 << 60, now=0, term=T2)
    relay.number(3, now=1)
    beat = relay.heartbeat(now=10**9)
    closing = relay.closing()
    end = relay.stop(now=10**9 + 1)
    assert beat is not None
    assert closing is not None
    assert end is not None
    assert (beat.term, closing.term, end.term) == (T2, T2, T2)
    relay.start(unix_ns=1 << 60, now=2 * 10**9)  # the next session, unfenced (VRRP)
    assert relay.closing() == replace(closing, session=relay.session, last_seq=0, term=0)


def test_a_deposed_leaders_end_still_reports_the_tail_this_node_missed() -> None:
    # A relayed #4..#6 into a dead link, then lost its term; B leads; A's end arrives
    seqr = following_a()
    lead(seqr, NODE_B, T2, 10 * MS)
    got = deliver(seqr, under(T2, data(B, 1, 2)), 20 * MS)
    acts = seqr.handle_timer(20 * MS + SequencerConfig().takeover_grace_ns)
    got += delivered(acts)
    assert got == [(B, 1), (B, 2)]
    acts = [a for m in under(T1, eos(A, 6)) for a in accept(seqr, m, 2000 * MS)]
    assert [a for a in acts if isinstance(a, GapUnrecoverable)] == [
        GapUnrecoverable(FEED, A, 4, 3, "failover")
    ]
    assert delivered(acts) == []
    assert seqr.counters(FEED).fenced == 1
