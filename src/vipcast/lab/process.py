"""Programs running inside a namespace, with their output kept in a log file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from vipcast.lab.netns import NETNS_DIR


class NsProcess:
    """One program in one namespace; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        ns: str,
        args: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.ns = ns
        self.args = list(args)
        self.log = log
        self._logfile = log.open("ab")
        self.popen = subprocess.Popen(
            ["nsenter", f"--net={NETNS_DIR / ns}", "--", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=self._logfile,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, sig)

    def kill_group(self, sig: int | None = None) -> None:
        """Signal (default SIGKILL) the program and every child it started, at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL if sig is None else sig)

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM (after SIGCONT, in case it was stopped), then SIGKILL after ``timeout``."""
        if self.popen.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait()
        self._logfile.close()
        return self.popen.returncode

    def output(self) -> str:
        self._logfile.flush()
        return self.log.read_text(errors="replace")

    def __repr__(self) -> str:
        return f"<NsProcess {self.ns} pid={self.pid} {' '.join(self.args)!r}>"
