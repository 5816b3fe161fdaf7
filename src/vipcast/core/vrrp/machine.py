"""The VRRPv3 virtual router (RFC 9568 section 6.4) as a state machine without I/O.

Inputs are method calls carrying ``now`` (monotonic seconds); each returns the
actions the caller must carry out, in order. ``next_timer()`` is when the
machine wants ``handle_timer(now)`` called. Every input is first classified into
an ``Event``; what an event does in each state is written in one place,
``TRANSITIONS``, which is total: pairs it does not spell out stay put and do
nothing.

Definitions beyond the RFC:

* FAULT: something the router depends on failed (link down, health check). No
  adverts, no VIPs. A master entering FAULT resigns first (priority-0 advert)
  so a backup takes over after Skew_Time rather than Master_Down_Interval.
  ``clear_fault`` enters BACKUP (the address owner: MASTER), like ``start``.
  ``set_fault`` before ``start`` parks the router in FAULT; ``clear_fault`` then
  starts it.
* Preemption: as in the RFC, a backup with ``preempt`` discards adverts whose
  priority is below its own and takes over when its down timer fires.
* ``preempt_delay`` (keepalived's "after startup or seeing a lower priority
  master"): while the delay runs, a backup with ``preempt`` follows a
  lower-priority master as if ``preempt`` were off; once it has run out, it
  discards that master's adverts and takes over within one
  Master_Down_Interval. The delay starts on entering BACKUP (start, fault
  cleared); an advert with a priority at least ours cancels it, and the next
  lower-priority advert starts it afresh. Worst case: the delay plus one
  Master_Down_Interval.
* Adverts from our own primary address or for another VRID are ignored. The
  advert's version is not looked at: callers decide whether to feed VRRPv2.
* STOPPED is final: after ``shutdown`` every input is ignored.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from vipcast.core.vrrp.codec import Address, Advert
from vipcast.core.vrrp.timers import master_down_interval, skew_time

__all__ = [
    "OWNER_PRIORITY",
    "State",
    "Event",
    "SendAdvert",
    "AddVips",
    "RemoveVips",
    "Announce",
    "Transition",
    "Action",
    "RouterParams",
    "Stats",
    "VirtualRouter",
    "Rule",
    "TRANSITIONS",
    "describe_transitions",
]

OWNER_PRIORITY: Final = 255


class State(enum.Enum):
    """Where a virtual router stands."""

    INITIALIZE = "INITIALIZE"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"
    STOPPED = "STOPPED"


class Event(enum.Enum):
    """An input, as the machine classifies it.

    HIGHER_ADVERT and LOWER_ADVERT are relative to our state. A master ranks by
    priority, then by primary address. A backup calls an advert lower only when
    it would preempt the sender (preempt on, priority below ours, no preempt
    delay running); it follows every other advert.
    """

    STARTED = "started"
    STARTED_AS_OWNER = "started as address owner"
    MASTER_DOWN = "master down timer expired"
    ADVERT_TIMER = "advert timer expired"
    HIGHER_ADVERT = "advert that outranks us"
    LOWER_ADVERT = "advert that we outrank"
    ZERO_ADVERT = "priority 0 advert"
    PRIORITY_CHANGED = "priority changed"
    FAULT_SET = "fault set"
    FAULT_CLEARED = "fault cleared"
    FAULT_CLEARED_AS_OWNER = "fault cleared, address owner"
    SHUTDOWN = "shutdown"
    HANDOVER = "planned handover"


# -- actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send an advertisement with this priority and interval (centiseconds)."""

    priority: int
    interval_cs: int


@dataclass(frozen=True, slots=True)
class AddVips:
    """Add the virtual addresses to the interface."""


@dataclass(frozen=True, slots=True)
class RemoveVips:
    """Remove the virtual addresses from the interface.

    ``drain``: a planned handover; keep them (and keep relaying what still
    arrives) until the new master is heard and traffic has moved to it.
    """

    drain: bool = False


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce the virtual addresses (gratuitous ARP, unsolicited NA)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """The state changed; ``reason`` is for people."""

    old: State
    new: State
    reason: str
    now: float


Action = SendAdvert | AddVips | RemoveVips | Announce | Transition


# -- configuration and status -------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterParams:
    """One virtual router's settings; ``advert_interval`` and ``preempt_delay`` in seconds."""

    vrid: int
    priority: int
    primary_address: Address
    advert_interval: float = 1.0
    preempt: bool = True
    preempt_delay: float = 0.0

    def __post_init__(self) -> None:
        _check_range("vrid", self.vrid, 1, 255)
        _check_range("priority", self.priority, 1, OWNER_PRIORITY)
        _check_interval(self.advert_interval)
        if not (math.isfinite(self.preempt_delay) and self.preempt_delay >= 0):
            raise ValueError(f"preempt_delay: seconds >= 0, got {self.preempt_delay}")

    @property
    def advert_interval_cs(self) -> int:
        """The advert interval in centiseconds, as on the wire."""
        return round(self.advert_interval * 100)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}: {low}..{high}, got {value}")


def _check_interval(seconds: float) -> None:
    centis = seconds * 100
    if not (math.isfinite(centis) and 1 <= round(centis) <= 4095):
        raise ValueError(f"advert_interval: 0.01..40.95 s, got {seconds}")
    if abs(centis - round(centis)) > 1e-6:
        raise ValueError(f"advert_interval: whole centiseconds, got {seconds}")


@dataclass(slots=True)
class Stats:
    """Counters for status and metrics."""

    adverts_sent: int = 0
    adverts_received: int = 0
    adverts_ignored: int = 0  # our own, another VRID's
    priority_zero_sent: int = 0
    priority_zero_received: int = 0
    became_master: int = 0


@dataclass(frozen=True, slots=True)
class _Input:
    event: Event
    now: float
    reason: str
    src: Address | None = None
    priority: int = 0
    interval_cs: int = 0


@dataclass(frozen=True, slots=True)
class _Timer:
    at: float
    event: Event
    reason: str


# -- the machine --------------------------------------------------------------


class VirtualRouter:
    """One VRRP virtual router: feed it inputs, carry out the actions it returns."""

    def __init__(self, params: RouterParams) -> None:
        self.params: Final = params
        self.stats: Final = Stats()
        self._state = State.INITIALIZE
        self._priority = params.priority
        self._master: Address | None = None
        self._master_priority: int | None = None
        self._master_interval_cs = params.advert_interval_cs
        self._timer: _Timer | None = None
        self._preempt_deadline: float | None = None
        self._last_transition: Transition | None = None

    # -- status

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def priority(self) -> int:
        """Our effective priority."""
        return self._priority

    @property
    def current_master(self) -> Address | None:
        """Who we believe is master: ourselves, the last master heard, or None."""
        return self._master

    @property
    def master_priority(self) -> int | None:
        """The priority the current master advertises."""
        return self._master_priority

    @property
    def master_advert_interval_cs(self) -> int:
        """Master_Adver_Interval: the interval a backup adopted, in centiseconds."""
        return self._master_interval_cs

    @property
    def last_transition(self) -> Transition | None:
        """The most recent state change."""
        return self._last_transition

    def next_timer(self) -> float | None:
        """When ``handle_timer`` should next be called, or None."""
        return None if self._timer is None else self._timer.at

    # -- inputs

    def start(self, now: float) -> list[Action]:
        """Leave INITIALIZE: BACKUP, or MASTER at once for the address owner."""
        if self._priority == OWNER_PRIORITY:
            return self._apply(_Input(Event.STARTED_AS_OWNER, now, "started as address owner"))
        return self._apply(_Input(Event.STARTED, now, "started"))

    def receive_advert(self, advert: Advert, src: Address, now: float) -> list[Action]:
        """An advert that passed the codec's and the caller's checks arrived from ``src``."""
        self.stats.adverts_received += 1
        if advert.vrid != self.params.vrid or src == self.params.primary_address:
            self.stats.adverts_ignored += 1
            return []
        if advert.priority == 0:
            self.stats.priority_zero_received += 1
        event, reason = self._classify(advert.priority, src, now)
        return self._apply(
            _Input(event, now, reason, src, advert.priority, advert.max_advert_int_cs)
        )

    def handle_timer(self, now: float) -> list[Action]:
        """Run the timer if it is due; calling early or without a timer does nothing."""
        timer = self._timer
        if timer is None or now < timer.at:
            return []
        self._timer = None
        return self._apply(_Input(timer.event, now, timer.reason))

    def set_priority(self, priority: int, now: float) -> list[Action]:
        """Change the effective priority (health tracking); a master re-advertises at once."""
        _check_range("priority", priority, 1, OWNER_PRIORITY)
        old, self._priority = self._priority, priority
        if old == priority:
            return []
        return self._apply(_Input(Event.PRIORITY_CHANGED, now, f"priority {old} -> {priority}"))

    def set_fault(self, reason: str, now: float) -> list[Action]:
        """Something we depend on failed (``reason``, e.g. "link down"): enter FAULT."""
        return self._apply(_Input(Event.FAULT_SET, now, reason))

    def clear_fault(self, now: float) -> list[Action]:
        """The fault is gone: BACKUP, or MASTER for the address owner."""
        if self._priority == OWNER_PRIORITY:
            return self._apply(_Input(Event.FAULT_CLEARED_AS_OWNER, now, "fault cleared"))
        return self._apply(_Input(Event.FAULT_CLEARED, now, "fault cleared"))

    def handover(self, priority: int, now: float) -> list[Action]:
        """Planned handover: a master resigns and stays backup at ``priority`` (below its peers).

        Like shutdown it sends a priority-0 advert so a backup takes over after
        Skew_Time, but it stays BACKUP, and its VIPs are released after a drain
        (make-before-break). If nobody takes over, its down timer makes it master again.
        """
        _check_range("priority", priority, 1, OWNER_PRIORITY - 1)
        if self._state is not State.MASTER:
            return []
        self._priority = priority
        return self._apply(_Input(Event.HANDOVER, now, "planned handover"))

    def shutdown(self, now: float) -> list[Action]:
        """Stop for good; a master resigns (priority-0 advert) and removes the VIPs."""
        return self._apply(_Input(Event.SHUTDOWN, now, "shutdown"))

    # -- classification

    def _classify(self, priority: int, src: Address, now: float) -> tuple[Event, str]:
        if priority == 0:
            return Event.ZERO_ADVERT, f"priority 0 from {src}"
        if self._state is State.MASTER:
            return self._rank_against_master(priority, src)
        if self._state is State.BACKUP and not self._follows(priority, now):
            return Event.LOWER_ADVERT, f"lower priority {priority} from {src}"
        return Event.HIGHER_ADVERT, f"priority {priority} from {src}"

    def _rank_against_master(self, priority: int, src: Address) -> tuple[Event, str]:
        if priority > self._priority:
            return Event.HIGHER_ADVERT, f"higher priority {priority} from {src}"
        if priority == self._priority and int(src) > int(self.params.primary_address):
            return Event.HIGHER_ADVERT, f"equal priority {priority} from higher address {src}"
        return Event.LOWER_ADVERT, f"lower priority {priority} from {src}"

    def _follows(self, priority: int, now: float) -> bool:
        """Whether a backup accepts a non-zero advert rather than preempting its sender."""
        if not self.params.preempt or priority >= self._priority:
            return True
        if self.params.preempt_delay <= 0:
            return False
        return self._preempt_deadline is None or now < self._preempt_deadline

    # -- applying the table

    def _apply(self, inp: _Input) -> list[Action]:
        rule = TRANSITIONS[self._state][inp.event]
        actions: list[Action] = []
        if rule.target is not self._state:
            actions.append(self._enter(rule.target, inp))
        actions.extend(rule.effect(self, inp))
        return actions

    def _enter(self, new: State, inp: _Input) -> Transition:
        change = Transition(self._state, new, inp.reason, inp.now)
        self._state = new
        self._timer = None
        self._master = self._master_priority = None
        self._last_transition = change
        if new is State.MASTER:
            self.stats.became_master += 1
        return change

    def _arm(self, at: float, event: Event, reason: str) -> None:
        self._timer = _Timer(at, event, reason)

    def _send(self, priority: int) -> SendAdvert:
        self.stats.adverts_sent += 1
        if priority == 0:
            self.stats.priority_zero_sent += 1
        return SendAdvert(priority, self.params.advert_interval_cs)

    def _note_master(self, inp: _Input) -> None:
        self._master = inp.src if inp.priority else None
        self._master_priority = inp.priority if inp.priority else None

    # -- effects (what a rule does besides changing state)

    def _nothing(self, inp: _Input) -> list[Action]:
        """Nothing."""
        return []

    def _wait_for_master(self, inp: _Input) -> list[Action]:
        """Arm the master down timer from our own interval; start the preempt delay."""
        self._master_interval_cs = self.params.advert_interval_cs
        self._arm_down_timer(inp.now)
        delay = self.params.preempt_delay
        self._preempt_deadline = inp.now + delay if delay > 0 else None
        return []

    def _arm_down_timer(self, now: float) -> None:
        down = master_down_interval(self._priority, self._master_interval_cs)
        self._arm(now + down, Event.MASTER_DOWN, "master down timer expired")

    def _take_over(self, inp: _Input) -> list[Action]:
        """Add the VIPs, advertise, announce them.

        The VIPs before the advert (make-before-break): a master that hears this advert
        releases its VIPs at once, and the address must never be on no node meanwhile.
        """
        self._master, self._master_priority = self.params.primary_address, self._priority
        self._preempt_deadline = None
        return [AddVips(), self._advertise_now(inp.now), Announce()]

    def _advertise_now(self, now: float) -> SendAdvert:
        self._arm(now + self.params.advert_interval, Event.ADVERT_TIMER, "advert timer expired")
        return self._send(self._priority)

    def _advertise(self, inp: _Input) -> list[Action]:
        """Advertise now and restart the advert timer."""
        self._master_priority = self._priority
        return [self._advertise_now(inp.now)]

    def _reassert(self, inp: _Input) -> list[Action]:
        """Advertise now and re-announce the VIPs (heals switch tables after a split)."""
        return [self._advertise_now(inp.now), Announce()]

    def _follow(self, inp: _Input) -> list[Action]:
        """Follow the sender: adopt its interval, re-arm the master down timer."""
        self._note_master(inp)
        self._master_interval_cs = inp.interval_cs
        if inp.priority >= self._priority:
            self._preempt_deadline = None
        elif self._preempt_deadline is None and self.params.preempt_delay > 0:
            self._preempt_deadline = inp.now + self.params.preempt_delay
        self._arm_down_timer(inp.now)
        return []

    def _yield(self, inp: _Input) -> list[Action]:
        """Remove the VIPs and follow the sender."""
        return [RemoveVips(), *self._follow(inp)]

    def _discard(self, inp: _Input) -> list[Action]:
        """Note the sender as master but let the down timer run out (preemption)."""
        self._note_master(inp)
        return []

    def _expect_takeover(self, inp: _Input) -> list[Action]:
        """The master resigned: the down timer fires after Skew_Time."""
        self._note_master(inp)
        skew = skew_time(self._priority, self._master_interval_cs)
        self._arm(inp.now + skew, Event.MASTER_DOWN, f"{inp.reason}, skew time expired")
        return []

    def _resign(self, inp: _Input) -> list[Action]:
        """Send a priority-0 advert, then remove the VIPs."""
        return [self._send(0), RemoveVips()]

    def _hand_over(self, inp: _Input) -> list[Action]:
        """Send a priority-0 advert, wait for the new master, release the VIPs after a drain."""
        self._master_interval_cs = self.params.advert_interval_cs
        self._arm_down_timer(inp.now)
        return [self._send(0), RemoveVips(drain=True)]

    def _observe(self, inp: _Input) -> list[Action]:
        """Note who is master; nothing else."""
        self._note_master(inp)
        return []


# -- the rules ----------------------------------------------------------------


class Rule(NamedTuple):
    """Where an event leads from a state, and what the router does on the way."""

    target: State
    effect: Callable[[VirtualRouter, _Input], list[Action]]


_R = VirtualRouter
_RULES: Final[Mapping[State, Mapping[Event, Rule]]] = {
    State.INITIALIZE: {
        Event.STARTED: Rule(State.BACKUP, _R._wait_for_master),
        Event.STARTED_AS_OWNER: Rule(State.MASTER, _R._take_over),
        Event.FAULT_SET: Rule(State.FAULT, _R._nothing),
        Event.SHUTDOWN: Rule(State.STOPPED, _R._nothing),
    },
    State.BACKUP: {
        Event.MASTER_DOWN: Rule(State.MASTER, _R._take_over),
        Event.HIGHER_ADVERT: Rule(State.BACKUP, _R._follow),
        Event.LOWER_ADVERT: Rule(State.BACKUP, _R._discard),
        Event.ZERO_ADVERT: Rule(State.BACKUP, _R._expect_takeover),
        Event.FAULT_SET: Rule(State.FAULT, _R._nothing),
        Event.SHUTDOWN: Rule(State.STOPPED, _R._nothing),
    },
    State.MASTER: {
        Event.ADVERT_TIMER: Rule(State.MASTER, _R._advertise),
        Event.HIGHER_ADVERT: Rule(State.BACKUP, _R._yield),
        Event.LOWER_ADVERT: Rule(State.MASTER, _R._reassert),
        Event.ZERO_ADVERT: Rule(State.MASTER, _R._advertise),
        Event.PRIORITY_CHANGED: Rule(State.MASTER, _R._advertise),
        Event.FAULT_SET: Rule(State.FAULT, _R._resign),
        Event.SHUTDOWN: Rule(State.STOPPED, _R._resign),
        Event.HANDOVER: Rule(State.BACKUP, _R._hand_over),
    },
    State.FAULT: {
        Event.FAULT_CLEARED: Rule(State.BACKUP, _R._wait_for_master),
        Event.FAULT_CLEARED_AS_OWNER: Rule(State.MASTER, _R._take_over),
        Event.HIGHER_ADVERT: Rule(State.FAULT, _R._observe),
        Event.ZERO_ADVERT: Rule(State.FAULT, _R._observe),
        Event.SHUTDOWN: Rule(State.STOPPED, _R._nothing),
    },
    State.STOPPED: {},
}

TRANSITIONS: Final[Mapping[State, Mapping[Event, Rule]]] = {
    state: {event: _RULES[state].get(event, Rule(state, _R._nothing)) for event in Event}
    for state in State
}


def describe_transitions() -> list[tuple[State, Event, State, str]]:
    """The rules spelled out in the table, for docs: (state, event, target, effect)."""
    return [
        (state, event, rule.target, _summary(rule.effect))
        for state, rules in _RULES.items()
        for event, rule in rules.items()
    ]


def _summary(effect: Callable[..., object]) -> str:
    return (effect.__doc__ or "").strip().splitlines()[0]
