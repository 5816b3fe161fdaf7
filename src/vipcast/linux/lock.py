"""One daemon per configuration: ``flock(2)`` locks taken before anything is touched.

A node holds two locks, both files in its control socket's directory: one named after
the socket (``control.sock.lock``), one after its virtual router, that is the network
namespace, the interface, the address family and the VRID
(``vrrp-4026531840-eth0-ipv4-51.lock``). So a second ``vipcast run`` with the same
config, or with another config for the same router on the same interface (and its
control socket in the same directory), is refused before it removes a VIP or
unlinks a socket. The kernel releases a lock when its holder dies, SIGKILL included.
The files are never removed: removing a lock file lets two processes each lock
"the" file, one of them a new one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

__all__ = ["AlreadyRunningError", "DaemonLock", "lock_paths"]

NETNS = Path("/proc/self/ns/net")
LOCK_MODE = 0o640


class AlreadyRunningError(RuntimeError):
    """Another live process holds one of this configuration's locks."""


def lock_paths(control_socket: str, ifname: str, vrid: int, version: int) -> dict[Path, str]:
    """A node's lock files, each with what it protects (for the refusal message)."""
    socket = Path(control_socket)
    family = f"ipv{version}"
    router = socket.parent / f"vrrp-{_netns_id()}-{ifname}-{family}-{vrid}.lock"
    return {
        socket.with_name(socket.name + ".lock"): f"the control socket {socket}",
        router: f"VRID {vrid} ({family}) on {ifname}",
    }


class DaemonLock:
    """Holds every lock of one config, or none: ``acquire`` raises :class:`AlreadyRunningError`."""

    def __init__(self, paths: dict[Path, str]) -> None:
        self.paths = paths
        self._fds: list[int] = []

    def acquire(self, *, create: bool = True) -> None:
        """Take every lock, without waiting.

        ``create=False`` (``vipcast release``): a missing lock file is held by nobody,
        and none is made (it would belong to the wrong user).
        """
        try:
            for path, what in self.paths.items():
                if create:
                    path.parent.mkdir(parents=True, exist_ok=True)
                elif not path.exists():
                    continue
                self._fds.append(_lock(path, what, create=create))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing the only descriptor drops the lock
        self._fds.clear()


def _lock(path: Path, what: str, *, create: bool) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, LOCK_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        raise AlreadyRunningError(
            f"another vipcast daemon{holder} already runs {what} (lock {path})"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    return ""


def _netns_id() -> int:
    """The network namespace's inode: routers in different namespaces are different."""
    try:
        return NETNS.stat().st_ino
    except OSError:
        return 0
