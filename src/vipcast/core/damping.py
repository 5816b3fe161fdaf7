"""Flap damping: what tracks and critical roles make of the node's part in the election.

A *cause* is a track or a critical role. Each has an effect while it fails:

- ``penalty``: a weighted track lowers the priority by its weight;
- ``demote``: a weight-0 track or a critical role demotes the node: it advertises
  ``DEMOTED_PRIORITY`` (below every healthy node, so a healthy peer takes over, but
  when every node is demoted the one that is master keeps the VIP and says so), or,
  with ``demote_to = "fault"``, enters FAULT (then no node is master when all are
  demoted: the operator chose it);
- ``block``: a ``block_promotion`` track puts the node in FAULT, always.

A cause starts *unknown* and has its effect until it first passes. After a failure
its effect is *held* until the cause has been healthy for the hold time; a cause
that fails again within one hold of its release holds twice as long the next time
(up to ``MAX_HOLD_FACTOR`` times), so a node whose role stays broken retries less
and less often instead of taking the VIP back and losing it again every cycle. A
critical role's trip is a failure that is over at once (:meth:`Damping.pulse`): the
role cannot be seen healthy while the node is not master, so the hold is the time
before the node may try again.

Pure logic over a clock passed in; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

DEMOTED_PRIORITY = 1
MAX_HOLD_FACTOR = 16
OWNER_PRIORITY = 255
Effect = Literal["penalty", "demote", "block"]
DemoteTo = Literal["backup", "fault"]


@dataclass
class Cause:
    effect: Effect
    weight: int = 0
    ok: bool | None = None  # None: not yet known
    reason: str = "not yet checked"
    healthy_since: float = -math.inf  # -inf: nothing to hold
    hold: float = 0.0

    def held_until(self) -> float:
        return self.healthy_since + self.hold


@dataclass(frozen=True)
class Verdict:
    penalty: int = 0  # sum of the held weighted tracks' weights
    demoted: dict[str, str] = field(default_factory=dict)  # cause: reason
    blocked: dict[str, str] = field(default_factory=dict)  # cause: reason (FAULT)
    held: dict[str, float] = field(default_factory=dict)  # healthy but held: seconds left
    next_change: float | None = None  # when the next hold ends


class Damping:
    def __init__(self, hold_time: float) -> None:
        self.hold_time = hold_time
        self.causes: dict[str, Cause] = {}

    def add(self, name: str, effect: Effect, weight: int = 0) -> None:
        self.causes[name] = Cause(effect, weight, hold=self.hold_time)

    def report(self, name: str, ok: bool, now: float, reason: str = "") -> None:
        """The cause's state now (a track that flipped)."""
        c = self.causes[name]
        if ok and c.ok is not True:
            c.healthy_since = now if c.ok is False else -math.inf
        elif not ok and c.ok is not False:
            self._fail(c, now)
        c.ok = ok
        if reason:
            c.reason = reason

    def pulse(self, name: str, effect: Effect, now: float, reason: str) -> None:
        """A failure over at once (a critical role tripped): held from ``now``."""
        if name not in self.causes:
            self.add(name, effect)
            self.causes[name].ok = True
        self.report(name, False, now, reason)
        self.report(name, True, now)

    def _fail(self, c: Cause, now: float) -> None:
        released = c.held_until()
        if math.isfinite(c.healthy_since) and released <= now:
            if now - released < c.hold:  # failed again soon after its release
                c.hold = min(c.hold * 2, self.hold_time * MAX_HOLD_FACTOR)
            else:
                c.hold = self.hold_time

    def set_hold_time(self, hold_time: float) -> None:
        """A reload: new holds from now on; the causes and their state stay."""
        self.hold_time = hold_time
        for c in self.causes.values():
            c.hold = min(max(c.hold, hold_time), hold_time * MAX_HOLD_FACTOR)

    def verdict(self, now: float) -> Verdict:
        penalty, demoted, blocked, held = 0, {}, {}, {}
        ends = []
        for name, c in self.causes.items():
            if c.ok is True and now >= c.held_until():
                continue
            if c.ok is True:  # healthy again, but held: status shows for how long
                held[name] = round(c.held_until() - now, 3)
                ends.append(c.held_until())
            if c.effect == "penalty":
                penalty += c.weight
            elif c.effect == "demote":
                demoted[name] = c.reason
            else:
                blocked[name] = c.reason
        return Verdict(penalty, demoted, blocked, held, min(ends, default=None))


def election_inputs(v: Verdict, base: int, demote_to: DemoteTo) -> tuple[int, dict[str, str]]:
    """The priority to advertise and the faults to hold, from a verdict.

    The address owner (255) takes no penalties (as keepalived), but is demoted."""
    faults = dict(v.blocked)
    if demote_to == "fault":
        faults.update(v.demoted)
    if v.demoted and demote_to == "backup":
        return DEMOTED_PRIORITY, faults
    if base >= OWNER_PRIORITY:
        return base, faults
    floor = min(base, DEMOTED_PRIORITY + 1)  # a penalty never reaches the demoted priority
    return max(floor, min(OWNER_PRIORITY - 1, base + v.penalty)), faults
