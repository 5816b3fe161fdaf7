"""A one-shot timer with microsecond wake-ups: a ``timerfd`` watched by the event loop.

asyncio's own timers wait in ``epoll_wait``, whose timeout is whole milliseconds,
rounded up: a handle is run 0-1 ms late, plus a loop turn. At 10 ms adverts
Master_Down_Interval is 36.1 ms, so that millisecond is a few percent of every
takeover (docs/benchmarks.md). A timerfd armed with an absolute ``CLOCK_MONOTONIC``
time (the clock of ``loop.time()`` on Linux) becomes readable when the kernel's
high-resolution timer fires, and wakes the same ``epoll_wait`` at once.

``os.timerfd_create`` arrives in Python 3.13; until then, libc through ctypes.
Where neither is there, :func:`make_timer` falls back on ``loop.call_at``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import functools
import math
import os
import time
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["LoopTimer", "OneShot", "TimerFd", "make_timer"]

CLOCK_MONOTONIC: Final = time.CLOCK_MONOTONIC
TFD_NONBLOCK: Final = os.O_NONBLOCK
TFD_CLOEXEC: Final = os.O_CLOEXEC
TFD_TIMER_ABSTIME: Final = 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class OneShot(Protocol):
    """Runs a callback once at an absolute ``loop.time()``; re-arming replaces it."""

    def arm(self, at: float) -> None: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...


class TimerFd:
    """One timerfd registered with the loop; ``callback`` runs in the loop when it fires."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        calls = _libc_calls()
        if calls is None:
            raise OSError(errno.ENOSYS, "timerfd_create is not available")
        self._create, self._settime = calls
        fd = self._create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd: int = fd
        self._loop, self._callback = loop, callback
        loop.add_reader(fd, self._fired)

    def arm(self, at: float) -> None:
        """Fire at ``at`` (seconds of CLOCK_MONOTONIC), never before it."""
        ns = max(1, math.ceil(at * 1e9))  # 0 would disarm the timer
        self._set(ns // 1_000_000_000, ns % 1_000_000_000)

    def cancel(self) -> None:
        self._set(0, 0)
        self._drain()

    def close(self) -> None:
        if self.fd >= 0:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1

    def _set(self, sec: int, nsec: int) -> None:
        if self.fd < 0:
            return  # closed: the daemon is stopping
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec))
        if self._settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def _drain(self) -> bool:
        """Read the expiry count; False when the timer had not fired (or was re-armed)."""
        if self.fd < 0:
            return False
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return False
        return True

    def _fired(self) -> None:
        if self._drain():
            self._callback()


class LoopTimer:
    """The same interface on ``loop.call_at``: millisecond wake-ups, any platform."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop, self._callback = loop, callback
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, at: float) -> None:
        self.cancel()
        self._handle = self._loop.call_at(at, self._callback)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        self.cancel()


def make_timer(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> OneShot:
    """A timerfd when the loop's clock is CLOCK_MONOTONIC and libc has one, else call_at."""
    if abs(loop.time() - time.clock_gettime(CLOCK_MONOTONIC)) < 0.01:
        try:
            return TimerFd(loop, callback)
        except OSError:
            pass
    return LoopTimer(loop, callback)


@functools.cache
def _libc_calls() -> tuple[Callable[..., int], Callable[..., int]] | None:
    """timerfd_create and timerfd_settime from libc (looked up once), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes, create.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settime.argtypes = (
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_Itimerspec),
        ctypes.POINTER(_Itimerspec),
    )
    settime.restype = ctypes.c_int
    return create, settime
