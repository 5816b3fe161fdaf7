"""Receive-side sequencing: order, duplicates, gaps and recovery, sessions and handover."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vipcast.core.envelope import (
    Data,
    Datagram,
    EndOfSession,
    Heartbeat,
    Message,
    Nack,
    Unavailable,
    UnavailableReason,
)
from vipcast.core.sequencer import (
    Action,
    Deliver,
    GapUnrecoverable,
    RequestRetransmit,
    Sequencer,
    SequencerConfig,
    SessionStarted,
)

FEED, NODE_A, NODE_B = 1, 11, 12
A, B, C = 1000 << 16 | NODE_A, 2000 << 16 | NODE_B, 3000 << 16 | NODE_A
D = 4000 << 16 | NODE_A
MS = 1_000_000


def dgram(session: int, seq: int) -> Datagram:
    """A datagram whose payload names its session and number."""
    return Datagram(("198.18.0.7", 5000), ("198.18.0.100", 8600), b"%d/%d" % (session, seq), seq)


def node_of(session: int) -> int:
    return NODE_B if session == B else NODE_A


def data(session: int, first: int, count: int = 1, *, retrans: bool = False) -> Data:
    node = node_of(session)
    batch = tuple(dgram(session, s) for s in range(first, first + count))
    return Data(FEED, node, session, first, batch, retrans)


def hb(session: int, last: int) -> Heartbeat:
    return Heartbeat(FEED, node_of(session), session, last)


def eos(session: int, last: int, nxt: int = 0) -> EndOfSession:
    return EndOfSession(FEED, node_of(session), session, last, nxt)


def unavailable(session: int, first: int, count: int) -> Unavailable:
    return Unavailable(FEED, node_of(session), session, first, count, UnavailableReason.EVICTED)


def delivered(acts: Iterable[Action]) -> list[tuple[int, int]]:
    """(session, seq) of each Deliver, checking the datagram is the one numbered so."""
    out = []
    for act in acts:
        if isinstance(act, Deliver):
            assert act.datagram == dgram(act.session, act.seq)
            out.append((act.session, act.seq))
    return out


def of(kind: type, acts: Iterable[Action]) -> list[Action]:
    return [a for a in acts if isinstance(a, kind)]


RELAYS = {NODE_A: "198.18.0.11", NODE_B: "198.18.0.12"}


def accept(seqr: Sequencer, msg: Message, now: int = 0) -> list[Action]:
    """``msg`` as sent by its node's relay."""
    return seqr.accept(msg, RELAYS[msg.node], now)


def feed_all(seqr: Sequencer, msgs: Iterable[Message], now: int = 0) -> list[Action]:
    acts: list[Action] = []
    for msg in msgs:
        acts += accept(seqr, msg, now)
    return acts


def fresh(config: SequencerConfig | None = None) -> Sequencer:
    """A new sequencer whose election sees NODE_A as master."""
    seqr = Sequencer(config)
    seqr.set_leader(RELAYS[NODE_A], 0)
    return seqr


def lead(seqr: Sequencer, node: int, now: int = 0) -> list[Action]:
    """The election now sees ``node`` as master."""
    return seqr.set_leader(RELAYS[node], now)


def following(config: SequencerConfig | None = None) -> Sequencer:
    """A sequencer that already follows FEED: the next session is delivered from 1."""
    seqr = fresh(config)
    assert accept(seqr, eos(1, 0), 0) == []
    return seqr


# ---------------------------------------------------------------- one session


def test_in_order_stream_is_delivered_from_the_live_edge() -> None:
    seqr = fresh()
    acts = feed_all(seqr, [data(A, 100, 3), data(A, 103, 2)])
    assert acts[0] == SessionStarted(FEED, A, NODE_A, 100, "join")
    assert delivered(acts) == [(A, s) for s in range(100, 105)]
    assert seqr.counters(FEED).delivered == 5
    assert seqr.next_timer() is None
    assert seqr.session(FEED) == A


def test_late_joiner_after_a_heartbeat_starts_after_it() -> None:
    seqr = fresh()
    acts = feed_all(seqr, [hb(A, 50), data(A, 51)])
    assert acts[0] == SessionStarted(FEED, A, NODE_A, 51, "join")
    assert delivered(acts) == [(A, 51)]


def test_duplicates_are_dropped_and_counted() -> None:
    seqr = fresh()
    acts = feed_all(seqr, [data(A, 1, 3), data(A, 2, 2), data(A, 1), data(A, 5), data(A, 5)])
    assert delivered(acts) == [(A, 1), (A, 2), (A, 3)]
    assert seqr.counters(FEED).duplicates == 4  # 2, 3, 1 again, then 5 while held


def test_reordering_within_the_window_is_repaired() -> None:
    seqr = following()
    acts = feed_all(seqr, [data(A, 1), data(A, 3), data(A, 2), data(A, 4)])
    assert delivered(acts) == [(A, 1), (A, 2), (A, 3), (A, 4)]
    assert of(RequestRetransmit, acts) == [RequestRetransmit(FEED, A, 2, 1, NODE_A)]
    counts = seqr.counters(FEED)
    assert (counts.reordered, counts.recovered, counts.gaps_detected) == (1, 0, 1)


def test_request_delay_tolerates_reordering_without_a_request() -> None:
    seqr = following(SequencerConfig(request_delay_ns=2 * MS))
    acts = feed_all(seqr, [data(A, 1), data(A, 3)], now=0)
    assert of(RequestRetransmit, acts) == []
    assert seqr.next_timer() == 2 * MS
    acts = accept(seqr, data(A, 2), MS)
    assert delivered(acts) == [(A, 2), (A, 3)]
    assert seqr.next_timer() is None


def test_request_delay_expires_into_a_request() -> None:
    seqr = following(SequencerConfig(request_delay_ns=2 * MS))
    feed_all(seqr, [data(A, 1), data(A, 4)], now=0)
    assert seqr.handle_timer(2 * MS) == [RequestRetransmit(FEED, A, 2, 2, NODE_A)]


def test_gap_is_requested_and_filled_by_retransmission() -> None:
    seqr = following()
    acts = feed_all(seqr, [data(A, 1), data(A, 5, 2)])
    assert delivered(acts) == [(A, 1)]
    assert of(RequestRetransmit, acts) == [RequestRetransmit(FEED, A, 2, 3, NODE_A)]
    acts = accept(seqr, data(A, 2, 3, retrans=True), MS)
    assert delivered(acts) == [(A, s) for s in range(2, 7)]
    assert seqr.counters(FEED).recovered == 3
    assert seqr.next_timer() is None


def test_retransmission_filling_the_middle_of_a_gap_splits_it() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1), data(A, 10)])
    acts = accept(seqr, data(A, 5, retrans=True), 0)
    assert delivered(acts) == []
    acts = seqr.handle_timer(20 * MS)
    assert of(RequestRetransmit, acts) == [
        RequestRetransmit(FEED, A, 2, 3, NODE_A),
        RequestRetransmit(FEED, A, 6, 4, NODE_A),
    ]
    acts = feed_all(seqr, [data(A, 6, 4, retrans=True), data(A, 2, 3, retrans=True)])
    assert delivered(acts) == [(A, s) for s in range(2, 11)]


def test_requests_repeat_at_the_interval_then_give_up() -> None:
    cfg = SequencerConfig(retry_interval_ns=10 * MS, max_tries=3)
    seqr = following(cfg)
    feed_all(seqr, [data(A, 1), data(A, 3)])
    request = RequestRetransmit(FEED, A, 2, 1, NODE_A)
    assert seqr.handle_timer(5 * MS) == []
    assert seqr.next_timer() == 10 * MS
    assert seqr.handle_timer(10 * MS) == [request]
    assert seqr.handle_timer(20 * MS) == [request]
    acts = seqr.handle_timer(30 * MS)
    assert acts[0] == GapUnrecoverable(FEED, A, 2, 1, "tries")
    assert delivered(acts) == [(A, 3)]
    assert seqr.next_timer() is None
    counts = seqr.counters(FEED)
    assert (counts.requests, counts.unrecoverable) == (3, 1)
    assert accept(seqr, data(A, 2, retrans=True), 31 * MS) == []
    assert seqr.counters(FEED).duplicates == 1


def test_partial_answers_from_a_rate_limited_relay_do_not_use_up_tries() -> None:
    seqr = following(SequencerConfig(retry_interval_ns=10 * MS, max_tries=2))
    acts = feed_all(seqr, [data(A, 1), data(A, 12)])
    for i, first in enumerate(range(2, 12, 2)):
        assert of(RequestRetransmit, acts) == [
            RequestRetransmit(FEED, A, first, 12 - first, NODE_A)
        ]
        acts = accept(seqr, data(A, first, 2, retrans=True), i * 10 * MS + MS)
        acts += seqr.handle_timer((i + 1) * 10 * MS)
    assert of(GapUnrecoverable, acts) == []
    assert seqr.counters(FEED).delivered == 12


def test_unavailable_reports_the_exact_range_at_once() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1), data(A, 8)])
    acts = accept(seqr, unavailable(A, 2, 3), MS)  # 2..4 gone; 5..7 may still come
    assert acts == [GapUnrecoverable(FEED, A, 2, 3, "unavailable")]
    acts = accept(seqr, data(A, 5, 3, retrans=True), MS)
    assert delivered(acts) == [(A, s) for s in range(5, 9)]
    assert seqr.counters(FEED).unrecoverable == 3


def test_unavailable_in_the_middle_is_reported_in_its_place() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1), data(A, 10)])
    assert accept(seqr, unavailable(A, 5, 2), MS) == []  # 2..4 still to come first
    acts = accept(seqr, data(A, 2, 3, retrans=True), MS)
    assert acts == [
        *(Deliver(dgram(A, s), s, A, FEED) for s in (2, 3, 4)),
        GapUnrecoverable(FEED, A, 5, 2, "unavailable"),
    ]
    acts = accept(seqr, data(A, 7, 3, retrans=True), MS)
    assert delivered(acts) == [(A, s) for s in (7, 8, 9, 10)]


def test_late_original_after_a_gap_was_given_up_is_dropped() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1), data(A, 5)])
    accept(seqr, unavailable(A, 2, 3), 0)
    feed_all(seqr, [data(A, 3)])
    assert seqr.counters(FEED).duplicates == 1


def test_tail_loss_is_detected_by_heartbeat() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 5)])
    acts = accept(seqr, hb(A, 8), MS)
    assert acts == [RequestRetransmit(FEED, A, 6, 3, NODE_A)]
    assert accept(seqr, hb(A, 8), MS) == []  # already known
    acts = accept(seqr, data(A, 6, 3, retrans=True), 2 * MS)
    assert delivered(acts) == [(A, 6), (A, 7), (A, 8)]


def test_window_overflow_gives_up_the_oldest_gap() -> None:
    seqr = following(SequencerConfig(window=4))
    acts = feed_all(seqr, [data(A, 1), data(A, 3), data(A, 5, 3)])
    assert delivered(acts) == [(A, 1)]
    acts = accept(seqr, data(A, 8), 0)  # 3, 5, 6, 7, 8 would wait: one too many
    assert acts == [GapUnrecoverable(FEED, A, 2, 1, "window"), Deliver(dgram(A, 3), 3, A, FEED)]
    acts = accept(seqr, data(A, 9), 0)
    assert acts == [
        GapUnrecoverable(FEED, A, 4, 1, "window"),
        *(Deliver(dgram(A, s), s, A, FEED) for s in (5, 6, 7, 8, 9)),
    ]


def test_large_gap_is_requested_in_chunks() -> None:
    seqr = following(SequencerConfig(max_request=100))
    acts = feed_all(seqr, [data(A, 1), data(A, 1000)])
    assert of(RequestRetransmit, acts) == [RequestRetransmit(FEED, A, 2, 100, NODE_A)]


def test_data_after_a_claimed_end_withdraws_the_claim() -> None:
    seqr = following()
    acts = feed_all(seqr, [data(A, 1, 2), eos(A, 2), data(A, 3)])
    assert delivered(acts) == [(A, 1), (A, 2), (A, 3)]
    assert seqr.counters(FEED).withdrawn == 1


def test_nack_is_not_for_receivers() -> None:
    assert Sequencer().accept(Nack(FEED, 3, A, 1, 1), "198.18.0.11", 0) == []


def test_feeds_are_independent() -> None:
    seqr = fresh()
    other = Data(2, NODE_A, A, 1, (dgram(A, 1),))
    acts = feed_all(seqr, [data(A, 1), other, data(A, 3)])
    assert [(a.feed, a.seq) for a in acts if isinstance(a, Deliver)] == [(1, 1), (2, 1)]
    assert seqr.feeds() == [1, 2]
    assert seqr.totals().delivered == 2
    assert seqr.counters(99).delivered == 0


@pytest.mark.parametrize(
    "cfg",
    [{"window": 0}, {"max_tries": 0}, {"retry_interval_ns": -1}, {"takeover_grace_ns": -5}],
)
def test_config_rejects_nonsense(cfg: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=">="):
        SequencerConfig(**cfg)


# ---------------------------------------------------------------- sessions


def test_successor_is_delivered_from_its_first_sequence() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3), eos(A, 3, B)])
    lead(seqr, NODE_B)
    acts = accept(seqr, data(B, 3), 0)
    assert acts[0] == SessionStarted(FEED, B, NODE_B, 1, "successor")
    assert of(RequestRetransmit, acts) == [RequestRetransmit(FEED, B, 1, 2, NODE_B)]
    acts = accept(seqr, data(B, 1, 2, retrans=True), MS)
    assert delivered(acts) == [(B, 1), (B, 2), (B, 3)]


def test_make_before_break_delivers_the_old_tail_first() -> None:
    seqr = following()
    acts = feed_all(seqr, [data(A, 1, 3), eos(A, 5, B)])
    lead(seqr, NODE_B)
    acts += feed_all(seqr, [data(B, 1, 2), data(B, 3)])
    assert delivered(acts) == [(A, 1), (A, 2), (A, 3)]
    assert of(RequestRetransmit, acts) == [RequestRetransmit(FEED, A, 4, 2, NODE_A)]
    acts = accept(seqr, data(A, 4, 2, retrans=True), MS)
    assert acts == [
        Deliver(dgram(A, 4), 4, A, FEED),
        Deliver(dgram(A, 5), 5, A, FEED),
        SessionStarted(FEED, B, NODE_B, 1, "successor"),
        *(Deliver(dgram(B, s), s, B, FEED) for s in (1, 2, 3)),
    ]
    assert seqr.session(FEED) == B


def test_end_of_session_arriving_after_the_new_session_still_merges() -> None:
    seqr = following(SequencerConfig(takeover_grace_ns=10 * MS))
    acts = feed_all(seqr, [data(A, 1, 3)], now=0)
    lead(seqr, NODE_B)
    acts += feed_all(seqr, [data(B, 1)], now=0)
    assert delivered(acts) == [(A, 1), (A, 2), (A, 3)]
    assert seqr.next_timer() == 10 * MS
    acts = feed_all(seqr, [eos(A, 4, B), data(A, 4)], now=MS)
    assert delivered(acts) == [(A, 4), (B, 1)]
    assert of(SessionStarted, acts) == [SessionStarted(FEED, B, NODE_B, 1, "successor")]
    assert seqr.counters(FEED).unrecoverable == 0


def test_unrecoverable_old_tail_is_reported_then_the_successor_follows() -> None:
    seqr = following()
    acts = feed_all(seqr, [data(A, 1, 3), eos(A, 6, B)])
    lead(seqr, NODE_B)
    acts += feed_all(seqr, [data(B, 1), unavailable(A, 4, 3)])
    assert acts[-3:] == [
        GapUnrecoverable(FEED, A, 4, 3, "unavailable"),
        SessionStarted(FEED, B, NODE_B, 1, "successor"),
        Deliver(dgram(B, 1), 1, B, FEED),
    ]


def test_crash_failover_reports_the_exact_lost_range_at_once() -> None:
    seqr = following(SequencerConfig(takeover_grace_ns=0))
    feed_all(seqr, [data(A, 1, 5), data(A, 7), hb(A, 9)])
    lead(seqr, NODE_B, MS)
    acts = accept(seqr, data(B, 1, 2), MS)
    assert acts == [
        GapUnrecoverable(FEED, A, 6, 1, "failover"),
        Deliver(dgram(A, 7), 7, A, FEED),
        GapUnrecoverable(FEED, A, 8, 2, "failover"),
        SessionStarted(FEED, B, NODE_B, 1, "takeover"),
        Deliver(dgram(B, 1), 1, B, FEED),
        Deliver(dgram(B, 2), 2, B, FEED),
    ]
    assert seqr.counters(FEED).unrecoverable == 3
    assert feed_all(seqr, [data(A, 6), hb(A, 9)], 2 * MS) == []  # the old master: stale
    assert seqr.counters(FEED).stale == 2


def test_crash_failover_waits_out_the_grace_period() -> None:
    seqr = following(SequencerConfig(takeover_grace_ns=10 * MS, retry_interval_ns=50 * MS))
    feed_all(seqr, [data(A, 1, 2), data(A, 4)], now=0)
    lead(seqr, NODE_B, MS)
    assert delivered(accept(seqr, data(B, 1), MS)) == []
    assert seqr.next_timer() == 11 * MS
    assert seqr.handle_timer(5 * MS) == []
    acts = seqr.handle_timer(11 * MS)
    assert acts == [
        GapUnrecoverable(FEED, A, 3, 1, "failover"),
        Deliver(dgram(A, 4), 4, A, FEED),
        SessionStarted(FEED, B, NODE_B, 1, "takeover"),
        Deliver(dgram(B, 1), 1, B, FEED),
    ]


def test_a_closing_session_is_waited_for_longer_than_a_crashed_one() -> None:
    config = SequencerConfig(
        takeover_grace_ns=10 * MS, handover_grace_ns=500 * MS, silence_ns=10**12
    )
    seqr = following(config)
    feed_all(seqr, [data(A, 1, 2), Heartbeat(FEED, NODE_A, A, 2, closing=True)], now=0)
    lead(seqr, NODE_B, MS)
    assert delivered(accept(seqr, data(B, 1), MS)) == []
    assert seqr.next_timer() == 501 * MS  # not 11 ms: the old relay is draining
    assert delivered(seqr.handle_timer(100 * MS)) == []
    acts = feed_all(seqr, [data(A, 3), eos(A, 3, B)], now=200 * MS)
    assert delivered(acts) == [(A, 3), (B, 1)]  # its tail first: nothing lost
    assert of(GapUnrecoverable, acts) == []


def test_closing_announced_after_the_new_session_appeared_extends_the_grace() -> None:
    config = SequencerConfig(
        takeover_grace_ns=10 * MS, handover_grace_ns=500 * MS, silence_ns=10**12
    )
    seqr = following(config)
    feed_all(seqr, [data(A, 1)], now=0)
    lead(seqr, NODE_B, MS)
    accept(seqr, data(B, 1), MS)
    assert seqr.next_timer() == 11 * MS
    accept(seqr, Heartbeat(FEED, NODE_A, A, 1, closing=True), 2 * MS)
    assert seqr.next_timer() == 501 * MS


def test_new_session_backlog_beyond_the_window_ends_the_old_session() -> None:
    seqr = following(SequencerConfig(window=3, takeover_grace_ns=10**12))
    feed_all(seqr, [data(A, 1), data(A, 3)])
    lead(seqr, NODE_B)
    feed_all(seqr, [data(B, 1, 3)])
    acts = accept(seqr, data(B, 4), 0)
    assert acts[:2] == [
        GapUnrecoverable(FEED, A, 2, 1, "window"),
        Deliver(dgram(A, 3), 3, A, FEED),
    ]
    assert delivered(acts)[1:] == [(B, 1), (B, 2), (B, 3), (B, 4)]


def test_a_session_delivered_to_its_end_is_stale() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 5), eos(A, 5)])
    lead(seqr, NODE_B)
    feed_all(seqr, [data(B, 1)])
    lead(seqr, NODE_A)
    assert feed_all(seqr, [data(A, 1), hb(A, 5), eos(A, 5)]) == []
    assert seqr.counters(FEED).stale == 3


def test_retransmission_or_unavailable_for_an_unknown_session_is_ignored() -> None:
    seqr = fresh()
    assert feed_all(seqr, [data(A, 1, retrans=True), unavailable(A, 1, 1)]) == []
    assert seqr.session(FEED) is None


def test_several_waiting_sessions_follow_the_named_successor_chain() -> None:
    seqr = following()  # A, C and D: one relay restarting twice, each end naming the next
    msgs: list[Message] = [data(A, 1), eos(A, 2, C), data(D, 1), data(C, 1), eos(C, 1, D)]
    acts = feed_all(seqr, msgs)
    assert delivered(acts) == [(A, 1)]
    acts = accept(seqr, data(A, 2, retrans=True), 0)
    assert delivered(acts) == [(A, 2), (C, 1), (D, 1)]


# ---------------------------------------------------------------- simulated network


@dataclass
class Relay:
    """What the relays sent, per session: the oracle that answers every request."""

    sent: dict[int, int] = field(default_factory=dict)  # session -> last seq

    def answer(self, req: RequestRetransmit) -> Data:
        last = min(req.first + req.count - 1, self.sent[req.session])
        return data(req.session, req.first, last - req.first + 1, retrans=True)


@dataclass
class Fate:
    """What the network does to one message: drop it, or deliver copies after delays."""

    delays: list[int]


fates = st.lists(st.integers(0, 5 * MS), min_size=0, max_size=3).map(Fate)
sure_fates = st.lists(st.integers(0, 5 * MS), min_size=1, max_size=3).map(Fate)


def simulate(
    plan: list[tuple[int, Message, Fate]],
    seqr: Sequencer,
    relay: Relay,
    leader_b_at: int | None = None,
) -> list[Action]:
    """Run the sends in ``plan`` through the fates, answering requests; all actions.

    At ``leader_b_at`` the election starts to see NODE_B as master.
    """
    order = itertools.count()
    queue: list[tuple[int, int, Message]] = []
    for t, msg, fate in plan:
        for delay in fate.delays:
            heapq.heappush(queue, (t + delay, next(order), msg))
    actions: list[Action] = []

    def run(acts: list[Action], now: int) -> None:
        actions.extend(acts)
        for req in of(RequestRetransmit, acts):
            assert isinstance(req, RequestRetransmit)
            heapq.heappush(queue, (now + MS, next(order), relay.answer(req)))

    while queue or seqr.next_timer() is not None:
        timer = seqr.next_timer()
        due = queue[0][0] if queue else None
        at = leader_b_at
        if at is not None and (due is None or at <= due) and (timer is None or at <= timer):
            run(lead(seqr, NODE_B, at), at)
            leader_b_at = None
            continue
        if timer is not None and (due is None or timer < due):
            run(seqr.handle_timer(timer), timer)
            continue
        now, _, msg = heapq.heappop(queue)
        run(accept(seqr, msg, now), now)
    return actions


def stream_plan(
    session: int, count: int, *, batches: list[int], net: list[Fate], start: int, relay: Relay
) -> tuple[list[tuple[int, Message, Fate]], int]:
    """Sends of ``count`` datagrams in batches, then a heartbeat that gets through."""
    plan: list[tuple[int, Message, Fate]] = []
    seq, t, i = 1, start, 0
    while seq <= count:
        n = min(batches[i % len(batches)], count - seq + 1)
        plan.append((t, data(session, seq, n), net[i % len(net)]))
        seq, t, i = seq + n, t + 100_000, i + 1
    relay.sent[session] = count
    plan.append((t + 10 * MS, hb(session, count), Fate([0])))
    return plan, t + 10 * MS


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 120),
    st.lists(st.integers(1, 8), min_size=1, max_size=5),
    st.lists(fates, min_size=1, max_size=40),
)
def test_any_loss_duplication_or_reordering_is_repaired_exactly(
    count: int, batches: list[int], net: list[Fate]
) -> None:
    relay = Relay()
    plan, _ = stream_plan(A, count, batches=batches, net=net, start=MS, relay=relay)
    seqr = following()
    acts = simulate([(0, eos(1, 0), Fate([0])), *plan], seqr, relay)
    assert delivered(acts) == [(A, s) for s in range(1, count + 1)]
    assert of(GapUnrecoverable, acts) == []


@settings(max_examples=40, deadline=None)
@given(
    n_a=st.integers(1, 60),
    n_b=st.integers(1, 60),
    batches=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    net1=st.lists(fates, min_size=1, max_size=20),
    net2=st.lists(fates, min_size=1, max_size=20),
    end1=sure_fates,
    end2=sure_fates,
)
def test_two_nodes_with_different_losses_deliver_the_same_handover(
    *,
    n_a: int,
    n_b: int,
    batches: list[int],
    net1: list[Fate],
    net2: list[Fate],
    end1: Fate,
    end2: Fate,
) -> None:
    results = []
    for net, end in ((net1, end1), (net2, end2)):
        relay = Relay()
        plan_a, t = stream_plan(A, n_a, batches=batches, net=net, start=MS, relay=relay)
        plan_a.pop()  # A ends with END_OF_SESSION, not a heartbeat
        plan_a[0] = (*plan_a[0][:2], Fate([0]))  # the node was following A
        plan_b, _ = stream_plan(B, n_b, batches=batches, net=net[::-1], start=t, relay=relay)
        plan = [*plan_a, (t, eos(A, n_a, B), end), *plan_b]
        results.append(delivered(simulate(plan, following(), relay, leader_b_at=t)))
    expected = [(A, s) for s in range(1, n_a + 1)] + [(B, s) for s in range(1, n_b + 1)]
    assert results[0] == results[1] == expected


# ---------------------------------------------------------------- any input at all

sessions_ = st.sampled_from([A, B, C])
seqs = st.integers(1, 40)
anything = st.one_of(
    st.builds(lambda s, f, n, r: data(s, f, n, retrans=r), sessions_, seqs, st.integers(1, 4),
              st.booleans()),
    st.builds(hb, sessions_, st.integers(0, 45)),
    st.builds(eos, sessions_, st.integers(0, 45), st.sampled_from([0, A, B, C])),
    st.builds(unavailable, sessions_, seqs, st.integers(1, 10)),
)  # fmt: skip


leaders = st.sampled_from([NODE_A, NODE_B, None]).map(lambda n: ("leader", n))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(anything | leaders | st.none(), st.integers(0, 30 * MS)), max_size=60),
    st.integers(1, 8),
    st.sampled_from([0, 5 * MS]),
)
def test_any_input_keeps_delivery_consistent(
    steps: list[tuple[Message | tuple[str, int | None] | None, int]], window: int, grace: int
) -> None:
    seqr = fresh(SequencerConfig(window=window, takeover_grace_ns=grace, max_tries=2))
    now, acts = 0, []
    for step, dt in steps:
        now += dt
        while (timer := seqr.next_timer()) is not None and timer <= now:
            acts += seqr.handle_timer(timer)
        if step is None:
            acts += seqr.handle_timer(now)
        elif isinstance(step, tuple):
            acts += seqr.set_leader(None if step[1] is None else RELAYS[step[1]], now)
        else:
            acts += accept(seqr, step, now)
    check_consistent(acts)


def check_consistent(acts: list[Action]) -> None:
    """Per session, deliveries and reported losses form one gap-free run, never twice.

    Datagrams are delivered only for the session last started; a session may be
    left and resumed, from exactly where it was left; a split report may come
    for any session but must also continue its run.
    """
    current: int | None = None
    expect: dict[int, int] = {}

    def take(session: int, first: int, count: int) -> None:
        if session in expect:
            assert first == expect[session], (session, first, expect[session])
        expect[session] = first + count

    for act in acts:
        if isinstance(act, SessionStarted):
            current = act.session
            if act.session in expect:
                assert act.first_seq == expect[act.session]
        elif isinstance(act, Deliver):
            assert act.session == current
            assert act.datagram == dgram(act.session, act.seq)
            take(act.session, act.seq, 1)
        elif isinstance(act, GapUnrecoverable):
            # a session not delivered here: another relay's (split) or a dead one's tail
            assert act.reason in {"split", "failover"} or act.session == current
            take(act.session, act.first, act.count)
