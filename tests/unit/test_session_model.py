"""The session model: follow the election's master, survive splits, disbelieve forgeries.

Each test is one finding of the fault campaign, replayed on the pure sequencer with
a fake clock: the master frozen and thawed, a partition between the nodes healed,
single forged envelopes of every type.
"""

from __future__ import annotations

from vipcast.core.envelope import EndOfSession, Heartbeat, Unavailable, UnavailableReason
from vipcast.core.sequencer import (
    GapUnrecoverable,
    Sequencer,
    SequencerConfig,
    SessionStarted,
    SplitBrain,
)

from .test_sequencer import (
    FEED,
    MS,
    NODE_A,
    NODE_B,
    RELAYS,
    A,
    B,
    C,
    accept,
    data,
    delivered,
    eos,
    feed_all,
    following,
    hb,
    lead,
    of,
)

SILENCE = SequencerConfig().silence_ns
CONFIRM = SequencerConfig().confirm_ns


def settle(seqr: Sequencer, until: int) -> list[object]:
    """Run every timer due up to ``until``."""
    acts: list[object] = []
    while (at := seqr.next_timer()) is not None and at <= until:
        acts += seqr.handle_timer(at)
    return acts


def test_an_old_master_that_resumes_is_followed_again_from_where_it_was_left() -> None:
    # node2's view: A (node1) frozen, B (node2) takes over, node1 thaws and wins back
    seqr = following()
    feed_all(seqr, [data(A, 1, 10)], now=0)
    lead(seqr, NODE_B, 100 * MS)
    acts = feed_all(seqr, [data(B, 1, 5)], now=100 * MS)
    acts += settle(seqr, 200 * MS)
    assert of(SessionStarted, acts) == [SessionStarted(FEED, B, NODE_B, 1, "takeover")]
    lead(seqr, NODE_A, 2000 * MS)
    acts = feed_all(seqr, [eos(B, 5), data(A, 14, 2)], now=2000 * MS)
    assert of(SessionStarted, acts) == [SessionStarted(FEED, A, NODE_A, 11, "resume")]
    acts += accept(seqr, data(A, 11, 3, retrans=True), 2001 * MS)
    assert delivered(acts) == [(A, s) for s in range(11, 16)]  # nothing twice, nothing lost
    assert seqr.counters(FEED).unrecoverable == 0


def test_the_winning_side_reports_what_the_other_side_relayed_during_a_split() -> None:
    # node1's view: it stayed master (A); node2 ran B during the split and ends it on heal
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    acts = feed_all(seqr, [hb(B, 700)], now=3000 * MS)
    acts += feed_all(seqr, [eos(B, 700)], now=3000 * MS + CONFIRM)
    assert of(SplitBrain, acts) == [SplitBrain(FEED, RELAYS[NODE_A], A, RELAYS[NODE_B], B, 1, 700)]
    assert of(GapUnrecoverable, acts) == [GapUnrecoverable(FEED, B, 1, 700, "split")]
    assert seqr.counters(FEED).split_brains == 1
    assert delivered(accept(seqr, data(A, 4), 3200 * MS)) == [(A, 4)]  # delivery goes on


def test_the_losing_side_recovers_the_winners_session_after_the_heal() -> None:
    # node2's view: it followed A, became master with B during the split, then lost
    seqr = following(SequencerConfig(silence_ns=10**12))
    feed_all(seqr, [data(A, 1, 3)], now=0)
    lead(seqr, NODE_B, 10 * MS)
    feed_all(seqr, [data(B, 1, 50)], now=10 * MS)
    settle(seqr, 100 * MS)
    lead(seqr, NODE_A, 3000 * MS)
    acts = feed_all(seqr, [data(A, 40), eos(B, 50)], now=3000 * MS)
    assert of(SessionStarted, acts) == [SessionStarted(FEED, A, NODE_A, 4, "resume")]
    acts = accept(seqr, data(A, 4, 36, retrans=True), 3001 * MS)
    assert delivered(acts) == [(A, s) for s in range(4, 41)]


def test_a_relay_that_restarts_is_followed_under_its_new_session() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    new = 5000 << 16 | NODE_A
    acts = feed_all(seqr, [data(new, 1, 2)], now=10 * MS)
    assert delivered(acts) == []  # A may still be alive: the newcomer waits
    for t in range(50, 300, 50):  # the new session keeps talking, A is silent
        acts += accept(seqr, hb(new, 2), t * MS)
        acts += settle(seqr, t * MS)
    assert (new, 1) in delivered(acts)
    assert of(SessionStarted, acts)[0].reason == "takeover"  # type: ignore[attr-defined]


def test_a_forged_end_of_session_does_not_stop_delivery() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    assert accept(seqr, eos(A, 3), MS) == []
    acts = feed_all(seqr, [data(A, 4, 2)], now=2 * MS)
    assert delivered(acts) == [(A, 4), (A, 5)]
    assert seqr.counters(FEED).withdrawn == 1


def test_a_forged_end_before_held_data_is_not_believed() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3), data(A, 6)], now=0)
    assert accept(seqr, eos(A, 4), MS) == []
    assert seqr.counters(FEED).implausible == 1


def test_a_forged_heartbeat_far_ahead_is_not_believed() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    assert accept(seqr, hb(A, 10**12), MS) == []
    acts = feed_all(seqr, [data(A, 4)], now=2 * MS)
    assert delivered(acts) == [(A, 4)]
    counts = seqr.counters(FEED)
    assert (counts.implausible, counts.unrecoverable, counts.requests) == (1, 0, 0)


def test_a_real_far_jump_is_believed_once_it_lasts_and_only_the_unbufferable_is_lost() -> None:
    seqr = following(SequencerConfig(max_jump=100))
    feed_all(seqr, [data(A, 1, 3)], now=0)
    assert accept(seqr, data(A, 1000), MS) == []  # not yet: one packet could be forged
    acts = accept(seqr, data(A, 1001), MS + CONFIRM)
    assert of(GapUnrecoverable, acts) == [GapUnrecoverable(FEED, A, 4, 898, "window")]
    gap = [a for a in acts if type(a).__name__ == "RequestRetransmit"]
    assert gap  # the last max_jump numbers are asked for


def test_a_forged_heartbeat_a_little_ahead_is_withdrawn_by_the_relays_answer() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    accept(seqr, hb(A, 500), MS)  # plausible, so asked for...
    not_sent = Unavailable(FEED, NODE_A, A, 4, 497, UnavailableReason.NOT_SENT)
    assert accept(seqr, not_sent, 2 * MS) == []  # ...and the relay never sent them
    assert delivered(accept(seqr, data(A, 4), 3 * MS)) == [(A, 4)]
    assert seqr.counters(FEED).unrecoverable == 0


def test_a_forged_newer_session_from_the_leaders_address_never_takes_over() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    forged = (A >> 16) + 10**6 << 16 | NODE_A
    accept(seqr, data(forged, 1), MS)
    acts: list[object] = []
    for t in range(50, 1000, 50):  # A goes on; the forgery is never heard again
        acts += accept(seqr, data(A, 3 + t // 50), t * MS)
        acts += settle(seqr, t * MS)
    assert delivered(acts) == [(A, s) for s in range(4, 23)]
    assert seqr.session(FEED) == A
    assert seqr.next_timer() is None


def test_one_forged_envelope_of_another_members_relay_is_not_reported_as_a_split() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    for msg in (data(B, 1), hb(B, 10**12), EndOfSession(FEED, NODE_B, B, 10**12, A)):
        assert accept(seqr, msg, MS) == []
    acts = settle(seqr, MS + SILENCE)
    assert of(SplitBrain, acts) == []
    assert seqr.counters(FEED).unrecoverable == 0
    assert delivered(accept(seqr, data(A, 4), 2 * SILENCE)) == [(A, 4)]


def test_a_session_id_reused_from_another_address_is_rejected() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    assert seqr.accept(data(A, 4), RELAYS[NODE_B], MS) == []
    assert seqr.counters(FEED).wrong_relay == 1


def test_no_leader_known_yet_joins_once_the_election_names_one() -> None:
    seqr = Sequencer()
    assert feed_all(seqr, [data(A, 100, 2)], now=0) == []
    acts = lead(seqr, NODE_A, MS)
    assert of(SessionStarted, acts) == [SessionStarted(FEED, A, NODE_A, 100, "join")]
    acts = accept(seqr, data(A, 100, 3, retrans=True), 2 * MS)
    acts += accept(seqr, data(A, 103), 2 * MS)
    assert delivered(acts) == [(A, 100), (A, 101), (A, 102), (A, 103)]


def test_a_closing_heartbeat_from_a_member_not_leading_changes_nothing() -> None:
    seqr = following()
    feed_all(seqr, [data(A, 1, 3)], now=0)
    assert accept(seqr, Heartbeat(FEED, NODE_B, B, 0, closing=True), MS) == []
    assert delivered(accept(seqr, data(A, 4), 2 * MS)) == [(A, 4)]


def test_a_tail_learned_after_a_failover_is_reported_as_lost_not_as_a_split() -> None:
    # node1's view: it followed B (node2); node2's link went down after relaying #1..#10,
    # of which node1 heard #1..#7; node1 took over; node2's end arrives once its link is back
    seqr = following()
    lead(seqr, NODE_B, 0)
    feed_all(seqr, [data(B, 1, 7)], now=0)
    lead(seqr, NODE_A, 500 * MS)
    acts = feed_all(seqr, [data(A, 1)], now=500 * MS)
    acts += settle(seqr, 600 * MS)
    acts += accept(seqr, eos(B, 10), 2000 * MS)
    acts += accept(seqr, eos(B, 10), 3000 * MS)  # its once-a-second repeat confirms it
    assert of(SplitBrain, acts) == []
    assert of(GapUnrecoverable, acts) == [GapUnrecoverable(FEED, B, 8, 3, "failover")]


def test_a_relay_states_its_last_end_once_a_second_for_a_minute() -> None:
    from vipcast.core import timing
    from vipcast.core.relay_session import RelaySession

    relay = RelaySession(FEED, NODE_A)
    relay.start(10**18, 0)
    relay.number(5, 0)
    end = relay.stop(MS)
    assert end == EndOfSession(FEED, NODE_A, relay.served, 5, 0)
    assert relay.end_refresh(MS + timing.END_REFRESH_NS // 2) is None
    assert relay.end_refresh(MS + timing.END_REFRESH_NS) == end
    assert relay.end_refresh(MS + timing.END_REFRESH_NS + 1) is None
    assert relay.end_refresh(MS + timing.END_REFRESH_FOR_NS + timing.END_REFRESH_NS) is None


def test_a_relay_relaying_again_still_states_its_last_end() -> None:
    """A receiver cut off when the old session ended learns its tail even so."""
    from vipcast.core import timing
    from vipcast.core.relay_session import RelaySession

    relay = RelaySession(FEED, NODE_A)
    relay.start(10**18, 0)
    relay.number(5, 0)
    end = relay.stop(MS)
    relay.start(10**18 + 10**9, 2 * MS)
    at = MS + timing.END_REFRESH_NS
    assert relay.end_refresh(at) == end
    relay.number(3, at + MS)
    assert relay.end_refresh(at + timing.END_REFRESH_NS) == end  # traffic does not hide it


def test_a_tail_learned_after_its_relay_led_again_is_reported_not_resumed() -> None:
    # node2's view: it followed A (node1), which relayed #1..#10 but only #1..#7 reached
    # node2 before node1's link went down; node2 took over (B); node1's link came back
    # and it led again under a newer session C; only then its end of A arrives
    seqr = following()
    feed_all(seqr, [data(A, 1, 7)], now=0)
    lead(seqr, NODE_B, 500 * MS)
    acts = feed_all(seqr, [data(B, 1, 3)], now=500 * MS)
    acts += settle(seqr, 600 * MS)
    lead(seqr, NODE_A, 1500 * MS)
    acts += feed_all(seqr, [eos(B, 3), data(C, 1, 2)], now=1500 * MS)
    acts += accept(seqr, eos(A, 10), 2000 * MS)  # its once-a-second restatement
    assert of(GapUnrecoverable, acts) == [GapUnrecoverable(FEED, A, 8, 3, "failover")]
    assert of(SplitBrain, acts) == []
    acts = accept(seqr, data(C, 3), 2001 * MS)
    acts += accept(seqr, eos(A, 10), 3000 * MS)  # stated again: already reported
    assert delivered(acts) == [(C, 3)]
    assert of(GapUnrecoverable, acts) == []
    assert seqr.counters(FEED).unrecoverable == 3
