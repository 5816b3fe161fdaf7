"""Rate-limited warnings for hostile or broken input, and for errors that repeat.

The first occurrence of a kind is logged at WARNING; repeats within ``interval``
seconds are counted and summarised in the next warning ("(41 more since)").
Memory is bounded: at most ``max_keys`` kinds are remembered.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict


class QuietLogger:
    def __init__(self, logger: logging.Logger, interval: float = 10.0, max_keys: int = 256) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def warning(self, key: str, msg: str, *args: object) -> None:
        self._log(logging.WARNING, key, msg, args)

    def exception(self, key: str, msg: str, *args: object) -> None:
        """At ERROR with the traceback being handled; repeats as for :meth:`warning`."""
        self._log(logging.ERROR, key, msg, args, exc_info=True)

    def _log(
        self, level: int, key: str, msg: str, args: tuple[object, ...], *, exc_info: bool = False
    ) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-1e18, 0))
        if now - last < self.interval:
            self._remember(key, last, suppressed + 1)
            self.logger.debug(msg, *args)
            return
        if suppressed:
            msg += " (%d more since the last report)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        self._remember(key, now, 0)

    def _remember(self, key: str, when: float, suppressed: int) -> None:
        self._last[key] = (when, suppressed)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)


def setup_logging(verbose: bool) -> None:
    """One event per line on stderr, for journald: the daemon and its children alike."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
