"""Anti-replay for authenticated envelopes: each sender's counters, time passed in.

Every authenticated envelope carries its sender's 64-bit counter (``Signer``, in
``core/envelope.py``): the sender's Unix time in ns, or one more than the last
counter when the clock has not moved on. A receiver keeps, per sender (the node
id, which the tag authenticates), the highest counter it accepted and the counters
accepted shortly below it, and takes a counter only once:

* above the highest: new (the common case, in order);
* at most ``REORDER_NS`` below it and not seen: new (a little reordering between
  a relay's multicast and unicast sends);
* anything else: a replay.

In ``time`` mode (``window_ns`` > 0) a counter must also be within ``window_ns`` of
this node's clock (``fresh``, checked before the HMAC: it only ever rejects), so a
capture replayed later than that is refused even by a receiver that has just
started and knows no sender yet; and a sender's state whose highest counter has
fallen out of the window is forgotten, which recovers a sender whose clock was
stepped back. In ``monotonic`` mode (``window_ns`` 0) only the growth is checked.

State is bounded: ``REMEMBERED`` counters per sender, ``SENDERS`` senders (only
authentic messages add one; when full, the one with the lowest counter, the sender
heard from least recently, goes).
"""

from __future__ import annotations

from collections import deque
from typing import Final

REORDER_NS: Final = 50_000_000  # a counter may arrive this far behind a higher one
REMEMBERED: Final = 4096  # counters remembered per sender, within REORDER_NS
SENDERS: Final = 256  # senders remembered


class _Window:
    __slots__ = ("floor", "highest", "order", "seen")

    def __init__(self, counter: int) -> None:
        self.highest = counter
        self.floor = -1  # nothing at or below this is taken (besides highest - REORDER_NS)
        self.seen: set[int] = set()
        self.order: deque[int] = deque()


class ReplayGuard:
    """Which (sender, counter) pairs were already accepted; see the module docstring."""

    __slots__ = ("_windows", "senders", "window_ns")

    def __init__(self, window_ns: int = 0, *, senders: int = SENDERS) -> None:
        self.window_ns = window_ns
        self.senders = senders
        self._windows: dict[int, _Window] = {}

    def fresh(self, counter: int, now: int) -> bool:
        """Whether ``counter`` is within the time window of ``now`` (always, in monotonic mode)."""
        window = self.window_ns
        return not window or -window <= counter - now <= window

    def new(self, sender: int, counter: int, now: int) -> bool:
        """Whether ``sender`` has not had ``counter`` accepted yet (changes nothing)."""
        w = self._windows.get(sender)
        if w is None or counter > w.highest or self._expired(w, now):
            return True
        if counter <= w.floor or counter <= w.highest - REORDER_NS:
            return False
        return counter not in w.seen

    def record(self, sender: int, counter: int, now: int) -> None:
        """``sender``'s ``counter`` was accepted: never again."""
        w = self._windows.get(sender)
        if w is None or self._expired(w, now):
            w = self._add(sender, counter)
        w.seen.add(counter)
        w.order.append(counter)
        w.highest = max(w.highest, counter)
        limit, order, seen = w.highest - REORDER_NS, w.order, w.seen
        while order and (order[0] <= limit or len(order) > REMEMBERED):
            old = order.popleft()
            seen.discard(old)
            w.floor = max(w.floor, old)

    def _expired(self, w: _Window, now: int) -> bool:
        return bool(self.window_ns) and w.highest < now - self.window_ns

    def _add(self, sender: int, counter: int) -> _Window:
        windows = self._windows
        windows.pop(sender, None)
        if len(windows) >= self.senders:
            del windows[min(windows, key=lambda s: windows[s].highest)]
        w = windows[sender] = _Window(counter)
        return w

    def highest(self, sender: int) -> int | None:
        """The highest counter accepted from ``sender`` (None: none remembered)."""
        w = self._windows.get(sender)
        return None if w is None else w.highest

    def __len__(self) -> int:
        return len(self._windows)
