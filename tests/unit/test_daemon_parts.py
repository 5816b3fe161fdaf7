"""The daemon's small parts: event bus, rate-limited warnings, health rise/fall, the epoll loop."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

from vipcast.config import TrackConfig
from vipcast.daemon.dataplane.loop import Loop
from vipcast.daemon.events import EventBus
from vipcast.daemon.health import TrackState
from vipcast.daemon.quietlog import QuietLogger


def test_event_bus_keeps_an_ordered_bounded_history() -> None:
    bus = EventBus(history=3)
    for i in range(5):
        bus.publish("transition", f"event {i}")
    assert [e.message for e in bus.history] == ["event 2", "event 3", "event 4"]
    assert [e.seq for e in bus.history] == [3, 4, 5]


def test_a_subscriber_that_falls_behind_is_cut_off_not_waited_for() -> None:
    async def scenario() -> list[object]:
        bus = EventBus(queue_size=2)
        queue = bus.subscribe()
        for i in range(5):
            bus.publish("x", str(i))  # never blocks
        return [await queue.get()]

    assert asyncio.run(scenario()) == [None]  # told to stop


def test_quiet_logger_reports_once_then_summarises(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.quiet")
    quiet = QuietLogger(logger, interval=3600)
    with caplog.at_level(logging.WARNING, "test.quiet"):
        for _ in range(100):
            quiet.warning("ttl", "advert from %s rejected", "198.18.0.13")
    assert [r.getMessage() for r in caplog.records] == ["advert from 198.18.0.13 rejected"]


def test_quiet_logger_memory_is_bounded() -> None:
    quiet = QuietLogger(logging.getLogger("test.quiet2"), max_keys=10)
    for i in range(1000):
        quiet.warning(f"key{i}", "x")
    assert len(quiet._last) == 10


def track(rise: int = 2, fall: int = 3) -> TrackState:
    t = TrackState(TrackConfig("t", "script", "true", rise=rise, fall=fall))
    assert [t.record(True) for _ in range(rise)][-1]  # unknown until it first passes
    return t


def test_a_track_falls_after_fall_failures_and_rises_after_rise_successes() -> None:
    t = track()
    assert [t.record(False) for _ in range(3)] == [False, False, True]
    assert t.up is False
    assert t.effect == "demote"  # weight 0 demotes the node
    assert [t.record(True) for _ in range(2)] == [False, True]
    assert t.up


def test_a_flapping_track_never_flips() -> None:
    t = track(rise=2, fall=2)
    for ok in [False, True] * 10:
        assert not t.record(ok)
    assert t.up


def test_an_unknown_track_becomes_known_after_a_run_of_one_result() -> None:
    t = TrackState(TrackConfig("t", "script", "true", rise=2, fall=3))
    assert t.up is None
    assert [t.record(ok) for ok in (True, False, False, True, True)] == [False] * 4 + [True]
    assert t.up is True


def test_loop_runs_timers_in_order_and_cancelled_ones_never() -> None:
    loop = Loop()
    fired: list[str] = []
    now = time.monotonic()
    loop.call_at(now + 0.02, lambda: fired.append("second"))
    loop.call_at(now + 0.01, lambda: fired.append("first"))
    loop.call_at(now + 0.015, lambda: fired.append("cancelled")).cancel()
    loop.call_at(now + 0.03, loop.stop)
    loop.run()
    loop.close()
    assert fired == ["first", "second"]


def test_loop_calls_readers_when_data_arrives() -> None:
    loop = Loop()
    r, w = os.pipe()
    got: list[bytes] = []

    def on_read() -> None:
        got.append(os.read(r, 100))
        loop.stop()

    loop.add_reader(r, on_read)
    loop.call_later(0.01, lambda: os.write(w, b"x") and None)
    loop.call_later(2.0, loop.stop)  # bounded
    loop.run()
    loop.remove_reader(r)
    loop.close()
    os.close(r)
    os.close(w)
    assert got == [b"x"]


def test_a_callback_that_raises_is_counted_and_the_loop_goes_on() -> None:
    loop = Loop()
    fired: list[str] = []

    def broken() -> None:
        raise RuntimeError("a bug")

    now = time.monotonic()
    loop.call_at(now + 0.01, broken)
    loop.call_at(now + 0.02, lambda: fired.append("after"))
    loop.call_at(now + 0.03, loop.stop)
    loop.run()
    loop.close()
    assert fired == ["after"]
    assert loop.errors == 1
