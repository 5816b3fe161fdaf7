"""An ordered, bounded history of what the daemon did, with live subscribers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """One thing that happened: a transition, a role start, a gap, a rejected advert..."""

    kind: str
    message: str
    seq: int = 0
    time: float = field(default_factory=time.time)  # wall clock, for people
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class EventBus:
    """Keeps the last ``history`` events; each subscriber gets a bounded queue.

    A subscriber that falls ``queue_size`` events behind is dropped rather than
    slowing the daemon: events are for people, the election never waits on them.
    """

    def __init__(self, history: int = 200, queue_size: int = 1000) -> None:
        self.history: deque[Event] = deque(maxlen=history)
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._seq = itertools.count(1)

    def publish(self, kind: str, message: str, **data: Any) -> Event:
        event = Event(kind, message, next(self._seq), data=data)
        self.history.append(event)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(queue)
        return event

    def _drop(self, queue: asyncio.Queue[Event | None]) -> None:
        """Cut a subscriber that fell behind: empty its queue and tell it to stop."""
        self._subscribers.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def close_subscribers(self) -> None:
        for queue in list(self._subscribers):
            self._drop(queue)

    def subscribe(self) -> asyncio.Queue[Event | None]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        self._subscribers.discard(queue)
