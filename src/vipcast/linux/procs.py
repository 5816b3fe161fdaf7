"""Process groups of the daemon's children: a parent-death signal, finding and ending them.

Every program the daemon starts (a role, a notify hook, a probe) leads its own process
group, so it and everything it forks are signalled together. A role's group is
recorded in a pidfile (``pid start-time``): a daemon that was killed left its roles
running, and whoever finds the file (the guard at once, the next daemon at its start)
ends that group. The start time tells a recycled pid from the recorded process; a
group whose leader has exited is still ours while it has members (Linux reuses no
pid that names a live process group).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
GROUP_POLL = 0.02
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child before exec: ``sig`` when the parent exits (``PR_SET_PDEATHSIG``)."""
    _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command (state first); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot); None if it is gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of stat(5)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Group:
    """A child's process group, told from a recycled pid by the leader's start time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = start_time(pid)

    def signal(self, sig: int) -> None:
        now = start_time(self.pid)
        if now is None or now == self.started:  # ours, or a group whose leader has exited
            signal_group(self.pid, sig)


def end_group(pgid: int, grace: float) -> bool:
    """SIGTERM to the group, SIGKILL to what is left after ``grace`` seconds (blocking).

    True if the group had live members."""
    if not group_members(pgid):
        return False
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(GROUP_POLL)
    if group_members(pgid):
        signal_group(pgid, signal.SIGKILL)
    return True


class PidFiles:
    """One pidfile per role in ``directory`` (next to the control socket)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pid"

    def record(self, name: str, pid: int) -> None:
        """Write ``pid start-time``; best effort (the group is still ended at our stop)."""
        with contextlib.suppress(OSError):
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            tmp = self.path(name).with_suffix(".tmp")
            tmp.write_text(f"{pid} {start_time(pid) or 0}\n")
            tmp.replace(self.path(name))

    def clear(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self.path(name).unlink()

    def previous(self, path: Path) -> int | None:
        """The recorded group if it is still ours and has members, else None."""
        try:
            pid, started = (int(x) for x in path.read_text().split())
        except (OSError, ValueError):
            return None
        now = start_time(pid)
        if now is not None and now != started:
            return None  # the pid names another process now: the group is long gone
        return pid if group_members(pid) else None

    def end_previous(self, name: str, grace: float) -> int | None:
        """End the copy a killed daemon left of role ``name``; its pid, or None."""
        pid = self.previous(self.path(name))
        if pid is not None:
            end_group(pid, grace)
        self.clear(name)
        return pid

    def end_all(self, grace: float) -> list[tuple[str, int]]:
        """End every recorded role (the guard, when the main process is gone)."""
        ended = []
        with contextlib.suppress(OSError):
            for path in sorted(self.directory.glob("*.pid")):
                pid = self.previous(path)
                if pid is not None:
                    end_group(pid, grace)
                    ended.append((path.stem, pid))
                with contextlib.suppress(OSError):
                    path.unlink()
        return ended


def pidfile_dir(control_socket: str) -> Path:
    """Where a node's role pidfiles live: beside its control socket."""
    return Path(f"{control_socket}.roles")
