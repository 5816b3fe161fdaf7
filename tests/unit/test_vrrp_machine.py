"""The virtual-router state machine, one behaviour per test, then random input sequences."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from vipcast.core.vrrp.codec import Advert
from vipcast.core.vrrp.machine import (
    TRANSITIONS,
    Action,
    AddVips,
    Announce,
    Event,
    RemoveVips,
    RouterParams,
    SendAdvert,
    State,
    Transition,
    VirtualRouter,
    describe_transitions,
)
from vipcast.core.vrrp.timers import master_down_interval, skew_time

LOW = IPv4Address("198.18.0.10")
US = IPv4Address("198.18.0.11")
HIGH = IPv4Address("198.18.0.12")
VIP = IPv4Address("198.18.0.100")
VRID = 51

TAKE_OVER = [AddVips(), SendAdvert(100, 100), Announce()]  # make-before-break


def make(**fields: object) -> VirtualRouter:
    values: dict[str, object] = {"vrid": VRID, "priority": 100, "primary_address": US}
    values.update(fields)
    return VirtualRouter(RouterParams(**values))  # type: ignore[arg-type]


def advert(priority: int, interval_cs: int = 100, vrid: int = VRID) -> Advert:
    return Advert(vrid=vrid, priority=priority, max_advert_int_cs=interval_cs, addresses=(VIP,))


def backup(**fields: object) -> VirtualRouter:
    router = make(**fields)
    router.start(0.0)
    return router


def master(**fields: object) -> VirtualRouter:
    router = backup(**fields)
    deadline = router.next_timer()
    assert deadline is not None
    router.handle_timer(deadline)
    assert router.state is State.MASTER
    return router


def transition(actions: list[Action]) -> Transition:
    [change] = [a for a in actions if isinstance(a, Transition)]
    return change


def without_transitions(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Transition)]


# -- timers -------------------------------------------------------------------------


def test_timer_formulas_match_the_rfc() -> None:
    assert skew_time(100, 100) == 0.609375
    assert master_down_interval(100, 100) == 3.609375
    assert master_down_interval(255, 1) == pytest.approx(0.03 + 1 / 25600)
    assert skew_time(1, 4095) == pytest.approx(255 * 40.95 / 256)


# -- starting ---------------------------------------------------------------------


def test_starts_in_backup_and_waits_master_down_interval() -> None:
    router = make()
    assert router.state is State.INITIALIZE
    assert router.next_timer() is None
    assert router.start(10.0) == [Transition(State.INITIALIZE, State.BACKUP, "started", 10.0)]
    assert router.next_timer() == 10.0 + master_down_interval(100, 100)
    assert router.current_master is None


def test_owner_starts_master() -> None:
    router = make(priority=255)
    actions = router.start(5.0)
    assert actions == [
        Transition(State.INITIALIZE, State.MASTER, "started as address owner", 5.0),
        AddVips(),
        SendAdvert(255, 100),
        Announce(),
    ]
    assert router.next_timer() == 6.0
    assert router.current_master == US


def test_backup_takes_over_after_master_down_interval() -> None:
    router = backup()
    down = master_down_interval(100, 100)
    assert router.handle_timer(down - 0.001) == []
    actions = router.handle_timer(down)
    assert actions == [
        Transition(State.BACKUP, State.MASTER, "master down timer expired", down),
        *TAKE_OVER,
    ]
    assert router.current_master == US
    assert router.last_transition == actions[0]


def test_master_advertises_every_interval() -> None:
    router = master(advert_interval=0.5)
    start = router.next_timer()
    assert start is not None
    assert router.handle_timer(start) == [SendAdvert(100, 50)]
    assert router.next_timer() == start + 0.5


def test_backup_adopts_the_masters_interval() -> None:
    router = backup(advert_interval=1.0)
    assert router.receive_advert(advert(150, interval_cs=20), HIGH, 1.0) == []
    assert router.master_advert_interval_cs == 20
    assert router.next_timer() == 1.0 + master_down_interval(100, 20)
    assert (router.current_master, router.master_priority) == (HIGH, 150)


def test_adverts_keep_a_backup_down() -> None:
    router = backup()
    for second in range(1, 20):
        router.receive_advert(advert(150), HIGH, float(second))
        assert router.handle_timer(second + 0.999) == []
    assert router.state is State.BACKUP


# -- priority zero ------------------------------------------------------------------


def test_priority_zero_shortens_to_skew_time() -> None:
    router = backup()
    router.receive_advert(advert(150, interval_cs=50), HIGH, 1.0)
    assert router.receive_advert(advert(0, interval_cs=50), HIGH, 1.2) == []
    assert router.next_timer() == 1.2 + skew_time(100, 50)
    assert router.current_master is None
    change = transition(router.handle_timer(1.2 + skew_time(100, 50)))
    assert (change.new, change.reason) == (
        State.MASTER,
        f"priority 0 from {HIGH}, skew time expired",
    )


def test_master_hearing_priority_zero_advertises_at_once() -> None:
    router = master()
    assert router.receive_advert(advert(0), LOW, 7.0) == [SendAdvert(100, 100)]
    assert router.state is State.MASTER
    assert router.next_timer() == 8.0


# -- masters meeting ---------------------------------------------------------------


def test_master_yields_to_higher_priority() -> None:
    router = master()
    actions = router.receive_advert(advert(150, interval_cs=200), LOW, 9.0)
    assert actions == [
        Transition(State.MASTER, State.BACKUP, f"higher priority 150 from {LOW}", 9.0),
        RemoveVips(),
    ]
    assert router.next_timer() == 9.0 + master_down_interval(100, 200)
    assert router.current_master == LOW


def test_equal_priority_higher_address_wins() -> None:
    router = master()
    change = transition(router.receive_advert(advert(100), HIGH, 9.0))
    assert (change.new, change.reason) == (
        State.BACKUP,
        f"equal priority 100 from higher address {HIGH}",
    )


def test_equal_priority_lower_address_loses() -> None:
    router = master()
    assert router.receive_advert(advert(100), LOW, 9.0) == [SendAdvert(100, 100), Announce()]
    assert router.state is State.MASTER


def test_master_hearing_lower_priority_readvertises_and_reannounces() -> None:
    router = master()
    assert router.receive_advert(advert(50), HIGH, 9.5) == [SendAdvert(100, 100), Announce()]
    assert router.next_timer() == 10.5
    assert router.current_master == US


def test_backup_at_equal_priority_follows_a_lower_address() -> None:
    router = backup()
    router.receive_advert(advert(100), LOW, 1.0)
    assert router.next_timer() == 1.0 + master_down_interval(100, 100)


# -- preemption --------------------------------------------------------------------


def test_preempting_backup_ignores_lower_priority_and_takes_over() -> None:
    router = backup(priority=150)
    down = master_down_interval(150, 100)
    for tick in (0.5, 1.5, 2.5):
        assert router.receive_advert(advert(100, interval_cs=20), LOW, tick) == []
    assert router.next_timer() == down  # unchanged since start
    assert router.master_advert_interval_cs == 100  # not adopted from a discarded advert
    assert router.current_master == LOW
    assert transition(router.handle_timer(down)).new is State.MASTER


def test_nopreempt_backup_follows_lower_priority_master() -> None:
    router = backup(priority=150, preempt=False)
    for second in range(1, 30):
        router.receive_advert(advert(100, interval_cs=50), LOW, float(second))
        router.handle_timer(second + 0.999)
    assert router.state is State.BACKUP
    assert router.master_advert_interval_cs == 50
    assert router.next_timer() == 29.0 + master_down_interval(150, 50)


def test_nopreempt_backup_takes_over_when_the_master_goes_quiet() -> None:
    router = backup(priority=150, preempt=False)
    router.receive_advert(advert(100), LOW, 1.0)
    down = 1.0 + master_down_interval(150, 100)
    assert transition(router.handle_timer(down)).reason == "master down timer expired"


def feed_lower_adverts(router: VirtualRouter, start: float, stop: float) -> float | None:
    """Lower-priority adverts every second; the time of the takeover, if any."""
    now = start
    while now < stop:
        router.receive_advert(advert(100), LOW, now)
        deadline = router.next_timer()
        if deadline is not None and deadline <= now + 1.0:
            router.handle_timer(deadline)
            return deadline
        now += 1.0
    return None


def test_preempt_delay_follows_a_lower_master_until_it_passes() -> None:
    router = backup(priority=150, preempt_delay=5.0)
    taken = feed_lower_adverts(router, 0.5, 30.0)
    # adverts at 0.5 .. 4.5 are followed, 5.5 and later discarded
    assert taken == 4.5 + master_down_interval(150, 100)
    assert router.state is State.MASTER


def test_preempt_delay_counts_from_start() -> None:
    router = backup(priority=150, preempt_delay=2.0)
    assert feed_lower_adverts(router, 1.5, 30.0) == 1.5 + master_down_interval(150, 100)


def test_preempt_delay_restarts_after_a_higher_priority_master() -> None:
    router = backup(priority=150, preempt_delay=5.0)
    for second in range(1, 11):
        router.receive_advert(advert(200), HIGH, float(second))
    assert feed_lower_adverts(router, 11.0, 40.0) == 15.0 + master_down_interval(150, 100)


def test_without_preempt_delay_preemption_starts_at_once() -> None:
    router = backup(priority=150)
    assert feed_lower_adverts(router, 0.5, 30.0) == master_down_interval(150, 100)


# -- priority changes -----------------------------------------------------------


def test_master_advertises_a_new_priority_at_once() -> None:
    router = master()
    assert router.set_priority(80, 20.0) == [SendAdvert(80, 100)]
    assert (router.priority, router.master_priority) == (80, 80)
    assert router.next_timer() == 21.0
    assert router.set_priority(80, 20.5) == []


def test_backup_whose_priority_rises_above_the_master_preempts() -> None:
    router = backup(priority=100)
    router.receive_advert(advert(150), HIGH, 1.0)
    assert router.set_priority(200, 1.5) == []
    for tick in (2.0, 3.0, 4.0):
        assert router.receive_advert(advert(150), HIGH, tick) == []
    down = 1.0 + master_down_interval(100, 100)  # armed by the last advert followed
    assert transition(router.handle_timer(down)).new is State.MASTER


def test_backup_whose_priority_rises_without_preempt_keeps_following() -> None:
    router = backup(priority=100, preempt=False)
    router.set_priority(200, 0.5)
    router.receive_advert(advert(150), HIGH, 1.0)
    assert router.next_timer() == 1.0 + master_down_interval(200, 100)


def test_priority_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="priority"):
        backup().set_priority(0, 1.0)


# -- faults -------------------------------------------------------------------------


def test_fault_on_master_resigns_then_removes_vips() -> None:
    router = master()
    assert router.set_fault("link down", 30.0) == [
        Transition(State.MASTER, State.FAULT, "link down", 30.0),
        SendAdvert(0, 100),
        RemoveVips(),
    ]
    assert router.next_timer() is None
    assert router.stats.priority_zero_sent == 1


def test_fault_on_backup_stops_the_down_timer() -> None:
    router = backup()
    assert router.set_fault("health check failed", 1.0) == [
        Transition(State.BACKUP, State.FAULT, "health check failed", 1.0)
    ]
    assert router.next_timer() is None
    assert router.set_fault("link down", 2.0) == []


def test_fault_ignores_adverts_but_tracks_the_master() -> None:
    router = backup()
    router.set_fault("link down", 1.0)
    for priority in (50, 150, 0, 200):
        assert router.receive_advert(advert(priority), HIGH, 2.0) == []
        assert router.state is State.FAULT
    assert router.current_master == HIGH
    assert router.handle_timer(100.0) == []


def test_clear_fault_enters_backup() -> None:
    router = backup()
    router.set_fault("link down", 1.0)
    assert router.clear_fault(4.0) == [Transition(State.FAULT, State.BACKUP, "fault cleared", 4.0)]
    assert router.next_timer() == 4.0 + master_down_interval(100, 100)


def test_clear_fault_makes_the_owner_master() -> None:
    router = make(priority=255)
    router.start(0.0)
    router.set_fault("link down", 1.0)
    actions = router.clear_fault(2.0)
    assert transition(actions).new is State.MASTER
    assert without_transitions(actions) == [AddVips(), SendAdvert(255, 100), Announce()]


def test_fault_before_start_parks_the_router_until_cleared() -> None:
    router = make()
    router.set_fault("link down", 0.0)
    assert router.start(1.0) == []
    assert router.state is State.FAULT
    assert transition(router.clear_fault(2.0)).new is State.BACKUP


def test_clear_fault_without_fault_does_nothing() -> None:
    router = master()
    assert router.clear_fault(10.0) == []


# -- shutdown -----------------------------------------------------------------------


def test_shutdown_sends_priority_zero_then_removes_vips() -> None:
    router = master()
    assert router.shutdown(40.0) == [
        Transition(State.MASTER, State.STOPPED, "shutdown", 40.0),
        SendAdvert(0, 100),
        RemoveVips(),
    ]
    assert router.next_timer() is None


def test_shutdown_backup_just_stops() -> None:
    router = backup()
    assert router.shutdown(1.0) == [Transition(State.BACKUP, State.STOPPED, "shutdown", 1.0)]


# -- planned handover ---------------------------------------------------------------


def test_handover_resigns_and_drains_instead_of_dropping_the_vips_at_once() -> None:
    router = master()
    assert router.handover(1, 40.0) == [
        Transition(State.MASTER, State.BACKUP, "planned handover", 40.0),
        SendAdvert(0, 100),
        RemoveVips(drain=True),
    ]
    assert router.priority == 1


def test_after_handover_the_old_master_follows_the_new_one() -> None:
    router = master(priority=150)
    router.handover(1, 40.0)
    router.receive_advert(advert(100), HIGH, 40.1)
    assert router.state is State.BACKUP
    assert router.current_master == HIGH
    deadline = router.next_timer()
    assert deadline is not None
    assert router.handle_timer(deadline - 0.001) == []  # still following


def test_handover_to_nobody_returns_mastership_after_the_down_interval() -> None:
    router = master(priority=150)
    router.handover(1, 40.0)
    deadline = router.next_timer()
    assert deadline == pytest.approx(40.0 + master_down_interval(1, 100))
    actions = router.handle_timer(deadline)
    assert router.state is State.MASTER
    assert AddVips() in actions


def test_handover_is_only_for_a_master() -> None:
    router = backup()
    assert router.handover(1, 1.0) == []
    assert router.state is State.BACKUP
    assert router.priority == 100


def test_stopped_is_final() -> None:
    router = master()
    router.shutdown(40.0)
    assert router.start(41.0) == []
    assert router.clear_fault(41.0) == []
    assert router.receive_advert(advert(0), HIGH, 42.0) == []
    assert router.set_priority(200, 43.0) == []
    assert router.state is State.STOPPED


# -- what is ignored -------------------------------------------------------------


def test_own_adverts_are_ignored() -> None:
    router = master()
    assert router.receive_advert(advert(200), US, 9.0) == []
    assert router.state is State.MASTER
    assert router.stats.adverts_ignored == 1


def test_another_vrids_adverts_are_ignored() -> None:
    router = master()
    assert router.receive_advert(advert(200, vrid=VRID + 1), HIGH, 9.0) == []
    assert router.state is State.MASTER


def test_adverts_before_start_are_ignored() -> None:
    router = make()
    assert router.receive_advert(advert(200), HIGH, 0.0) == []
    assert router.state is State.INITIALIZE


def test_counters() -> None:
    router = master()
    router.handle_timer(100.0)
    router.receive_advert(advert(0), HIGH, 100.5)
    router.receive_advert(advert(50), HIGH, 100.6)
    stats = router.stats
    assert (stats.adverts_sent, stats.adverts_received) == (4, 2)
    assert (stats.priority_zero_received, stats.became_master) == (1, 1)


# -- parameters and the table --------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"vrid": 0},
        {"priority": 0},
        {"priority": 256},
        {"advert_interval": 0.0},
        {"advert_interval": 40.96},
        {"advert_interval": 0.015},
        {"advert_interval": float("nan")},
        {"preempt_delay": -1.0},
        {"preempt_delay": float("inf")},
    ],
)
def test_bad_params_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each field has its own message
        make(**fields)


def test_interval_in_centiseconds() -> None:
    assert RouterParams(vrid=1, priority=1, primary_address=US, advert_interval=0.07) is not None
    assert make(advert_interval=40.95).params.advert_interval_cs == 4095
    assert make(advert_interval=0.01).params.advert_interval_cs == 1


def test_every_state_and_event_has_a_rule() -> None:
    assert set(TRANSITIONS) == set(State)
    for rules in TRANSITIONS.values():
        assert set(rules) == set(Event)
    assert all(rule.target is State.STOPPED for rule in TRANSITIONS[State.STOPPED].values())


def test_the_described_rules_enter_and_leave_master_only_where_the_rfc_does() -> None:
    rules = describe_transitions()
    entering = {(s, e) for s, e, t, _ in rules if t is State.MASTER and s is not State.MASTER}
    assert entering == {
        (State.INITIALIZE, Event.STARTED_AS_OWNER),
        (State.BACKUP, Event.MASTER_DOWN),
        (State.FAULT, Event.FAULT_CLEARED_AS_OWNER),
    }
    leaving = {(e, t) for s, e, t, _ in rules if s is State.MASTER and t is not State.MASTER}
    assert leaving == {
        (Event.HIGHER_ADVERT, State.BACKUP),
        (Event.FAULT_SET, State.FAULT),
        (Event.SHUTDOWN, State.STOPPED),
        (Event.HANDOVER, State.BACKUP),
    }
    assert (
        State.MASTER,
        Event.HIGHER_ADVERT,
        State.BACKUP,
        "Remove the VIPs and follow the sender.",
    ) in rules


# -- random sequences ------------------------------------------------------------------

SOURCES = st.sampled_from([LOW, US, HIGH])


class RandomInputs(RuleBasedStateMachine):
    """Any input in any order: the machine stays defined and the VIPs follow MASTER."""

    def __init__(self) -> None:
        super().__init__()
        self.router = make()
        self.now = 0.0
        self.holding = False
        self.before = State.INITIALIZE

    @initialize(
        priority=st.integers(1, 255),
        preempt=st.booleans(),
        delay=st.sampled_from([0.0, 0.5, 3.0]),
        interval_cs=st.integers(1, 300),
    )
    def create(self, priority: int, preempt: bool, delay: float, interval_cs: int) -> None:
        self.router = make(
            priority=priority,
            preempt=preempt,
            preempt_delay=delay,
            advert_interval=interval_cs / 100,
        )

    def carry_out(self, actions: list[Action]) -> None:
        state = self.before
        for action in actions:
            if isinstance(action, Transition):
                assert action.old is state
                assert action.now == self.now
                state = action.new
            elif isinstance(action, AddVips):
                assert not self.holding
                self.holding = True
            elif isinstance(action, RemoveVips):
                assert self.holding
                self.holding = False
        assert state is self.router.state

    def feed(self, actions: list[Action]) -> None:
        self.carry_out(actions)
        self.before = self.router.state

    @rule(seconds=st.floats(0, 5))
    def time_passes(self, seconds: float) -> None:
        target = self.now + seconds
        while (deadline := self.router.next_timer()) is not None and deadline <= target:
            self.now = deadline
            self.feed(self.router.handle_timer(self.now))
        self.now = target

    @rule()
    def start(self) -> None:
        self.feed(self.router.start(self.now))

    @rule(
        priority=st.integers(0, 255),
        src=SOURCES,
        interval_cs=st.integers(1, 4095),
        vrid=st.sampled_from([VRID, VRID + 1]),
    )
    def advert_arrives(self, priority: int, src: IPv4Address, interval_cs: int, vrid: int) -> None:
        received = advert(priority, interval_cs, vrid)
        self.feed(self.router.receive_advert(received, src, self.now))

    @rule()
    def timer_polled(self) -> None:
        self.feed(self.router.handle_timer(self.now))

    @rule(priority=st.integers(1, 255))
    def priority_changes(self, priority: int) -> None:
        self.feed(self.router.set_priority(priority, self.now))

    @rule(reason=st.sampled_from(["link down", "health check failed"]))
    def fault(self, reason: str) -> None:
        self.feed(self.router.set_fault(reason, self.now))

    @rule()
    def fault_clears(self) -> None:
        self.feed(self.router.clear_fault(self.now))

    @rule()
    def shutdown(self) -> None:
        self.feed(self.router.shutdown(self.now))

    @rule()
    def handover(self) -> None:
        self.feed(self.router.handover(1, self.now))

    @invariant()
    def vips_held_only_by_master(self) -> None:
        assert self.holding == (self.router.state is State.MASTER)

    @invariant()
    def timer_is_in_the_future(self) -> None:
        deadline = self.router.next_timer()
        assert deadline is None or deadline > self.now
        wants_timer = self.router.state in {State.BACKUP, State.MASTER}
        assert (deadline is not None) == wants_timer

    @invariant()
    def master_knows_itself(self) -> None:
        if self.router.state is State.MASTER:
            assert self.router.current_master == US
            assert self.router.master_priority == self.router.priority


RandomInputs.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_random_inputs = RandomInputs.TestCase
