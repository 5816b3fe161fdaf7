"""Outage and loss, measured from what the radar sent and what each application got.

Pure functions over the final status files:

- the radar counts the reports it sent per I048/140 time of day (``sent_by_tod``);
- each application counts the reports it decoded per time of day
  (``received_by_tod``) and keeps the receive time of every datagram (``arrivals``).

The run is cut into windows, one per phase of the script, each starting a little
before its event (:data:`LEAD`) so the last report before the event belongs to it.
In a window, per node: *loss* = reports sent in it minus reports of it decoded
(whenever they arrived), *outage* = the longest silence (from one datagram's
arrival to the next one's, whenever that came) that began within
:data:`OUTAGE_SPAN` of the window's event, so that an unrelated stall later in the
window is not blamed on the event. The first window (steady traffic) looks at its
whole length: that is the baseline.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vipcast.demo.cat048 import DAY, TOD_UNITS

LEAD = 0.25  # seconds: a window starts this long before its event
OUTAGE_SPAN = 1.0  # seconds after the event in which an outage must begin


@dataclass(frozen=True)
class Window:
    name: str
    start: float  # wall clock, inclusive
    end: float  # wall clock, exclusive
    outage_end: float = 0.0  # silences that begin before this count (0: until ``end``)


@dataclass(frozen=True)
class NodeResult:
    received: int
    loss: int  # sent - received; negative would mean duplicates
    outage: float | None  # seconds; None: nothing arrived in the window
    cut_off: bool = False  # the longest silence lasted past the window's end


@dataclass(frozen=True)
class WindowResult:
    window: Window
    sent: int
    nodes: dict[str, NodeResult]


def windows(names: Sequence[str], events: Sequence[float], end: float) -> list[Window]:
    """Windows from each event (less :data:`LEAD`, but the first) to the next one."""
    starts = [events[0], *(t - LEAD for t in events[1:])]
    ends = [*starts[1:], end]
    spans = [ends[0], *(min(e, t + OUTAGE_SPAN) for t, e in zip(events[1:], ends[1:], strict=True))]
    return [Window(n, s, e, o) for n, s, e, o in zip(names, starts, ends, spans, strict=True)]


def tod_to_wall(raw: int, reference: float) -> float:
    """The wall-clock time of an I048/140 value, on the day nearest to ``reference``."""
    midnight = reference - reference % DAY
    wall = midnight + raw / TOD_UNITS
    if wall - reference > DAY / 2:
        wall -= DAY
    elif reference - wall > DAY / 2:
        wall += DAY
    return wall


def count_in(by_tod: Mapping[int, int], window: Window, reference: float) -> int:
    return sum(
        n for raw, n in by_tod.items() if window.start <= tod_to_wall(raw, reference) < window.end
    )


def longest_gap(arrivals: Sequence[float], window: Window) -> tuple[float | None, bool]:
    """The longest silence that began in ``window``, and whether it lasted past its end.

    ``arrivals`` must be sorted. A silence begins at an arrival (before the window's
    ``outage_end``) and ends at the next one (or at the window's end, if nothing came
    after). None: nothing arrived in it.
    """
    first = bisect.bisect_left(arrivals, window.start)
    last = bisect.bisect_left(arrivals, window.outage_end or window.end)
    longest, past_end = None, False
    for i in range(first, last):
        nxt = arrivals[i + 1] if i + 1 < len(arrivals) else max(window.end, arrivals[i])
        if longest is None or nxt - arrivals[i] > longest:
            longest, past_end = nxt - arrivals[i], nxt >= window.end
    return longest, past_end


def measure(
    wins: Sequence[Window],
    sent_by_tod: Mapping[int, int],
    apps: Mapping[str, tuple[Sequence[float], Mapping[int, int]]],
) -> list[WindowResult]:
    """Per window: reports sent, and per node what it received, lost and the outage."""
    reference = wins[0].start
    results = []
    for w in wins:
        sent = count_in(sent_by_tod, w, reference)
        nodes = {}
        for name, (arrivals, received_by_tod) in apps.items():
            received = count_in(received_by_tod, w, reference)
            outage, cut_off = longest_gap(arrivals, w)
            nodes[name] = NodeResult(received, sent - received, outage, cut_off)
        results.append(WindowResult(w, sent, nodes))
    return results
