"""The demo's measurements: outage and loss per window, from status-file data."""

from __future__ import annotations

import pytest

from vipcast.demo import measure
from vipcast.demo.cat048 import tod_raw

T0 = 1_700_000_000.0


def test_windows_start_a_little_before_each_event() -> None:
    wins = measure.windows(["a", "b", "c"], [T0, T0 + 5, T0 + 10], T0 + 20)
    assert [(w.name, w.start - T0, w.end - T0) for w in wins] == [
        ("a", 0.0, 5 - measure.LEAD),
        ("b", 5 - measure.LEAD, 10 - measure.LEAD),
        ("c", 10 - measure.LEAD, 20.0),
    ]
    # an outage must begin soon after the event; the first window is the baseline
    assert [w.outage_end - T0 for w in wins] == [
        5 - measure.LEAD,
        5 + measure.OUTAGE_SPAN,
        10 + measure.OUTAGE_SPAN,
    ]


def test_a_stall_long_after_the_event_is_not_its_outage() -> None:
    arrivals = [T0 + i * 0.01 for i in range(1000)]  # 10 s at 100/s ...
    arrivals = [t for t in arrivals if not T0 + 1.0 < t < T0 + 1.2]  # event: 0.2 s gap
    arrivals = [t for t in arrivals if not T0 + 6.0 < t < T0 + 6.5]  # later, unrelated
    (_, event) = measure.windows(["steady", "event"], [T0, T0 + 1.0], T0 + 10)
    gap, _ = measure.longest_gap(arrivals, event)
    assert gap == pytest.approx(0.2, abs=0.02)


def test_longest_gap_belongs_to_the_window_it_began_in() -> None:
    arrivals = [T0 + i * 0.01 for i in range(100)]  # 0.00 .. 0.99
    arrivals += [T0 + 1.5 + i * 0.01 for i in range(100)]  # a 0.51 s silence from 0.99
    first = measure.Window("first", T0, T0 + 1.2)
    second = measure.Window("second", T0 + 1.2, T0 + 2.5)
    gap, past_end = measure.longest_gap(arrivals, first)
    assert gap == pytest.approx(0.51, abs=1e-4)
    assert past_end  # it lasted beyond the window
    gap, past_end = measure.longest_gap(arrivals, second)
    assert gap == pytest.approx(0.01, abs=1e-4)
    assert measure.longest_gap([], first) == (None, False)
    silent_to_the_end = measure.Window("third", T0 + 1.2, T0 + 4)
    assert measure.longest_gap(arrivals, silent_to_the_end) == (pytest.approx(1.51, abs=1e-4), True)


def test_loss_counts_reports_by_their_time_of_day() -> None:
    sent = {tod_raw(T0 + i / 100): 1 for i in range(300)}  # 3 s at 100/s
    received = dict(sent)
    for i in range(150, 160):  # ten lost in the second window
        del received[tod_raw(T0 + i / 100)]
    wins = measure.windows(["steady", "event"], [T0, T0 + 1.25], T0 + 3)
    arrivals = sorted(T0 + (raw - tod_raw(T0)) / 128 for raw in received)
    steady, event = measure.measure(wins, sent, {"node1": (arrivals, received)})
    assert steady.sent + event.sent == 300
    assert steady.nodes["node1"].loss == 0
    assert event.nodes["node1"].loss == 10
    assert event.nodes["node1"].outage == pytest.approx(0.11, abs=0.01)


def test_time_of_day_near_midnight_maps_to_the_right_day() -> None:
    midnight = 1_700_006_400.0
    assert measure.tod_to_wall(tod_raw(midnight - 1), midnight + 1) == pytest.approx(midnight - 1)
    assert measure.tod_to_wall(tod_raw(midnight + 1), midnight - 1) == pytest.approx(midnight + 1)
