"""Flap damping (core/damping.py): holds, doubling, unknown causes, the election's inputs."""

from __future__ import annotations

from vipcast.core.damping import DEMOTED_PRIORITY, MAX_HOLD_FACTOR, Damping, election_inputs

HOLD = 10.0


def test_a_cause_starts_unknown_and_has_its_effect_until_it_first_passes() -> None:
    d = Damping(HOLD)
    d.add("track:witness", "block")
    d.add("track:gw", "penalty", -50)
    v = d.verdict(0.0)
    assert "track:witness" in v.blocked
    assert v.penalty == -50
    d.report("track:witness", True, 1.0)
    d.report("track:gw", True, 1.0)
    v = d.verdict(1.0)
    assert not v.blocked  # a first pass holds nothing
    assert v.penalty == 0


def test_a_failed_cause_is_held_for_the_hold_time_after_it_heals() -> None:
    d = Damping(HOLD)
    d.add("track:gw", "penalty", -50)
    d.report("track:gw", True, 0.0)
    d.report("track:gw", False, 5.0)
    d.report("track:gw", True, 6.0)
    assert d.verdict(6.0 + HOLD - 0.1).penalty == -50
    assert d.verdict(6.0).next_change == 6.0 + HOLD
    assert d.verdict(6.0 + HOLD).penalty == 0


def test_a_role_that_trips_again_soon_after_its_release_is_held_twice_as_long() -> None:
    d = Damping(HOLD)
    t = 0.0
    holds = []
    for _ in range(7):
        d.pulse("role:fusion", "demote", t, "critical role fusion keeps failing")
        assert "role:fusion" in d.verdict(t).demoted
        end = d.verdict(t).next_change
        assert end is not None
        holds.append(end - t)
        t = end + 2.0  # released, took the VIP back, failed again 2 s later
    assert holds == [HOLD * min(2**i, MAX_HOLD_FACTOR) for i in range(7)]
    d.pulse("role:fusion", "demote", t + 10 * HOLD * MAX_HOLD_FACTOR, "again, much later")
    assert d.verdict(t + 10 * HOLD * MAX_HOLD_FACTOR).held["role:fusion"] == HOLD


def test_takeovers_of_a_node_whose_role_stays_broken_are_at_most_one_per_hold_time() -> None:
    d = Damping(HOLD)
    t, takeovers, span = 0.0, 1, 20 * HOLD  # the first: the peer took over at t = 0
    d.pulse("role:fusion", "demote", t, "broken")
    while True:
        end = d.verdict(t).next_change
        assert end is not None
        if end > span:
            break
        takeovers += 2  # it takes the VIP back and loses it again 3 s later
        t = end + 3.0
        d.pulse("role:fusion", "demote", t, "broken")
    assert takeovers <= 1 + span / HOLD


def test_election_inputs_demote_to_backup_or_fault() -> None:
    d = Damping(HOLD)
    d.pulse("role:fusion", "demote", 0.0, "broken")
    d.add("track:gw", "penalty", -30)
    v = d.verdict(1.0)
    assert election_inputs(v, 150, "backup") == (DEMOTED_PRIORITY, {})
    assert election_inputs(v, 150, "fault") == (120, {"role:fusion": "broken"})
    d.add("track:witness", "block")
    priority, faults = election_inputs(d.verdict(1.0), 150, "backup")
    assert priority == DEMOTED_PRIORITY
    assert set(faults) == {"track:witness"}


def test_a_penalty_never_reaches_the_demoted_priority_and_the_owner_takes_none() -> None:
    d = Damping(HOLD)
    d.add("track:gw", "penalty", -250)
    v = d.verdict(0.0)
    assert election_inputs(v, 150, "backup")[0] == DEMOTED_PRIORITY + 1
    assert election_inputs(v, 255, "backup")[0] == 255
    assert election_inputs(v, 1, "backup")[0] == 1
