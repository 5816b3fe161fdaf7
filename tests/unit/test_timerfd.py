"""The election's one-shot timer: a timerfd in the event loop, or ``call_at`` as a fallback.

Both kinds must never fire before the time they were armed for, fire once, and obey
cancel and re-arm. How late they fire is measured by bench/failover.py, not here.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable

import pytest

from vipcast.linux.timerfd import LoopTimer, OneShot, TimerFd, make_timer

Factory = Callable[[asyncio.AbstractEventLoop, Callable[[], None]], OneShot]
KINDS = [pytest.param(TimerFd, id="timerfd"), pytest.param(LoopTimer, id="call_at")]


async def _fired_at(
    make: Factory, arm: Callable[[OneShot, float], None], wait: float
) -> list[float]:
    """Arm through ``arm`` (given the timer and now), run the loop ``wait`` s: firing times."""
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = make(loop, lambda: fired.append(loop.time()))
    try:
        arm(timer, loop.time())
        await asyncio.sleep(wait)
    finally:
        timer.close()
    return fired


@pytest.mark.parametrize("make", KINDS)
@pytest.mark.parametrize("offsets", [(0.02,), (0.01, 0.1)], ids=["armed", "re-armed"])
def test_fires_once_and_never_before_the_last_time_armed(
    make: Factory, offsets: tuple[float, ...]
) -> None:
    armed: list[float] = []

    def arm(timer: OneShot, now: float) -> None:
        for offset in offsets:  # each arm replaces the one before
            armed.append(now + offset)
            timer.arm(armed[-1])

    fired = asyncio.run(_fired_at(make, arm, 0.4))
    assert len(fired) == 1
    assert fired[0] >= armed[-1]


@pytest.mark.parametrize("make", KINDS)
def test_a_cancelled_timer_does_not_fire(make: Factory) -> None:
    def arm(timer: OneShot, now: float) -> None:
        timer.arm(now + 0.02)
        timer.cancel()

    assert asyncio.run(_fired_at(make, arm, 0.2)) == []


@pytest.mark.parametrize("make", KINDS)
def test_a_time_already_past_fires_at_once(make: Factory) -> None:
    fired = asyncio.run(_fired_at(make, lambda timer, now: timer.arm(now - 1.0), 0.1))
    assert len(fired) == 1


def test_a_timer_fired_but_not_yet_read_and_then_re_armed_fires_only_at_the_new_time() -> None:
    async def scenario() -> tuple[list[float], float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timer = TimerFd(loop, lambda: fired.append(loop.time()))
        try:
            timer.arm(loop.time())  # expires at once, read only at the next loop turn
            readable, _, _ = select.select([timer.fd], [], [], 1.0)  # the loop must not read it
            assert readable == [timer.fd]
            new = loop.time() + 0.05
            timer.arm(new)  # the kernel resets the expiry count
            await asyncio.sleep(0.2)
        finally:
            timer.close()
        return fired, new

    fired, new = asyncio.run(scenario())
    assert len(fired) == 1
    assert fired[0] >= new


def test_the_loop_clock_gets_a_timerfd_and_a_closed_one_ignores_arming() -> None:
    async def scenario() -> None:
        timer = make_timer(asyncio.get_running_loop(), lambda: None)
        assert isinstance(timer, TimerFd)
        timer.close()
        timer.arm(0.0)  # the daemon's last re-arm may come after its close
        timer.cancel()

    asyncio.run(scenario())
