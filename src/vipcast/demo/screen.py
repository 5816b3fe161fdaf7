"""The live view: a block of lines redrawn in place on a terminal, a line a second otherwise."""

from __future__ import annotations

import shutil
import time
from typing import TextIO

CLEAR_LINE = "\x1b[2K"
UP = "\x1b[{}A"


class Screen:
    def __init__(self, out: TextIO, *, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._drawn = 0  # lines of the block currently on the terminal
        self._last_line = 0.0

    def draw(self, block: list[str], line: str) -> None:
        """Show ``block`` (terminal) or, at most once a second, ``line`` (pipe, file)."""
        if self.tty:
            width = max(20, shutil.get_terminal_size().columns - 1)  # no wrapping
            parts = [UP.format(self._drawn)] if self._drawn else []
            parts += [f"\r{CLEAR_LINE}{text[:width]}\n" for text in block]
            parts += [f"{CLEAR_LINE}\n"] * max(0, self._drawn - len(block))  # leftovers
            self.out.write("".join(parts))
            self._drawn = max(len(block), self._drawn)
        elif time.monotonic() - self._last_line >= 1.0:
            self._last_line = time.monotonic()
            self.out.write(line + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        """A line that stays: printed below the live block, which is then redrawn below it."""
        self.out.write(text + "\n")
        self.out.flush()
        self._drawn = 0
