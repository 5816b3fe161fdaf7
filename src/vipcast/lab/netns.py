"""Network namespaces: create, enter (one thread at a time), list their processes, remove."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyroute2 import NetNS
from pyroute2 import netns as _netns

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def create(name: str) -> None:
    """Create a named namespace (``/run/netns/NAME``) with its loopback up."""
    _netns.create(name)
    with contextlib.closing(_ns_ipr(name)) as ipr:
        ipr.link("set", index=1, state="up")


def remove(name: str) -> None:
    """Kill every process left in the namespace, then remove it. Idempotent."""
    kill_processes(name)
    with contextlib.suppress(FileNotFoundError, OSError):
        _netns.remove(name)


def names(prefix: str = "") -> list[str]:
    """Named namespaces whose names start with ``prefix``."""
    return sorted(n for n in _netns.listnetns() if n.startswith(prefix))


def pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name``."""
    try:
        target = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            found.append(int(entry))
    return found


def kill_processes(name: str) -> None:
    for pid in pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Move the calling thread into namespace ``name`` for the block.

    Sockets opened inside keep the namespace after the block ends, so a test can
    open a capture or a sender socket "in" any host of a site.
    """
    with open("/proc/thread-self/ns/net", "rb") as home, open(NETNS_DIR / name, "rb") as there:
        _setns(there.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)} (needs CAP_SYS_ADMIN)")


def _ns_ipr(name: str) -> Any:
    return NetNS(name)
