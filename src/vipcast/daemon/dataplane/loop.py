"""A small epoll loop with timers: the data plane's hot path stays off asyncio.

A callback that raises is logged (rate-limited, with its traceback) and counted
in ``errors``; the loop goes on, and a periodic timer re-arms itself before it
runs (see ``Dataplane._every``), so no bug leaves a tick or a reader dead.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vipcast.daemon.quietlog import QuietLogger

quiet = QuietLogger(logging.getLogger("vipcast.dataplane"))

Callback = Callable[[], None]


@dataclass(order=True)
class Timer:
    when: float
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """Readers by file descriptor, timers on the monotonic clock, until ``stop()``."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self.running = False
        self.errors = 0  # callbacks that raised

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def stop(self) -> None:
        self.running = False

    def run(self) -> None:
        self.running = True
        while self.running:
            timeout = self._run_due_timers()
            if not self.running:  # a timer stopped the loop: do not wait for more
                break
            for fd, _ in self._epoll.poll(timeout):
                callback = self._readers.get(fd)
                if callback is not None:
                    self._guarded(callback)

    def _run_due_timers(self) -> float:
        """Run every due timer; return seconds until the next one (-1: none)."""
        while self._timers:
            first = self._timers[0]
            if first.cancelled:
                heapq.heappop(self._timers)
                continue
            delay = first.when - time.monotonic()
            if delay > 0:
                return delay
            heapq.heappop(self._timers)
            self._guarded(first.callback)
        return -1

    def _guarded(self, callback: Callback) -> None:
        try:
            callback()
        except Exception:
            self.errors += 1
            quiet.exception(
                f"callback:{getattr(callback, '__name__', 'callback')}", "%s failed", callback
            )

    def close(self) -> None:
        self._epoll.close()
