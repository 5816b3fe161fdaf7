"""The VIP never outlives the daemon, and one daemon runs per configuration.

- :func:`daemon_lock`: the node's ``flock`` locks (:mod:`vipcast.linux.lock`), taken
  before anything is touched, so a second ``vipcast run`` changes nothing.
- The guard: ``python -m vipcast.daemon.guard``, a tiny child of every ``vipcast run``
  that holds a netlink socket and one end of a socket pair, and waits. However the
  main process dies (SIGKILL, the OOM killer, a crash), the guard reads end-of-file,
  removes this node's VIPs from the interface (in route mode: withdraws their host
  routes, then removes the local addresses) and exits; ``PR_SET_PDEATHSIG`` sends
  it SIGTERM too (:func:`on_parent_death`). The data plane, when there is one, does
  the same on its own control socket: two independent lines, either one suffices.
- Roles: the guard also ends every role group the main process recorded
  (:class:`vipcast.linux.procs.PidFiles`, ``--roles-dir``): SIGTERM, SIGKILL after
  ``ROLES_GRACE``; roles never outlive the daemon.
- ``vipcast release`` (the unit's ``ExecStopPost=``) removes them from outside, for a
  guard that was itself killed (systemd SIGKILLs a dead daemon's children at once).

All run with the daemon's credentials: the ambient CAP_NET_ADMIN of the unit is kept
across ``execve``, so the guard and the data plane may remove addresses as the
unit's user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from vipcast.config import Config, IPInterface
from vipcast.daemon import scheduling
from vipcast.daemon.events import EventBus
from vipcast.daemon.quietlog import setup_logging
from vipcast.daemon.vips import Vips, open_vips
from vipcast.linux.lock import DaemonLock, lock_paths
from vipcast.linux.procs import PidFiles
from vipcast.linux.route import RouteSpec, RouteVips

log = logging.getLogger("vipcast.guard")

PARENT_DEATH_SIGNAL = signal.SIGTERM
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
READY = b"ready\n"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 2.0
RESTART_DELAY = 1.0
ROLES_GRACE = 1.0  # seconds an orphaned role gets between SIGTERM and SIGKILL
CANNOT_REMOVE = "the main process is gone, and the VIPs cannot be removed: %s"


def daemon_lock(cfg: Config) -> DaemonLock:
    """The locks of this config's node (control socket; interface, family and VRID)."""
    return DaemonLock(
        lock_paths(
            cfg.node.control_socket,
            cfg.node.interface,
            cfg.election.vrid,
            cfg.vip.addresses[0].version,
        )
    )


# --- in the child processes ------------------------------------------------------


def release_vips(
    ifname: str, addresses: Sequence[IPInterface], route: RouteSpec | None = None
) -> list[IPInterface]:
    """Remove the VIPs (and their routes) because the main process is gone; never raises."""
    try:
        with open_vips(ifname, addresses, route) as vips:
            return _remove(vips)
    except (OSError, LookupError) as e:  # no netlink socket, no such interface
        log.error(CANNOT_REMOVE, e)
        return []


def _remove(vips: Vips) -> list[IPInterface]:
    try:
        removed = vips.remove()
    except (OSError, LookupError) as e:
        log.error(CANNOT_REMOVE, e)
        return []
    if removed:
        names = ", ".join(str(v) for v in removed)
        where = (
            f"{vips.ifname} and table {vips.spec.table}"
            if isinstance(vips, RouteVips)
            else vips.ifname
        )
        log.warning("the main process is gone: removed %s from %s", names, where)
    return removed


def end_roles(directory: str | None) -> None:
    """End the roles the main process left (none after a clean stop); never raises."""
    if directory is None:
        return
    try:
        ended = PidFiles(Path(directory)).end_all(ROLES_GRACE)
    except OSError as e:
        log.error("the main process is gone, and its roles cannot be ended: %s", e)
        return
    for name, pid in ended:
        log.warning("the main process is gone: ended role %s (process group %d)", name, pid)


def on_parent_death(action: Callable[[], object]) -> None:
    """Run ``action`` and exit when the parent dies: ``PR_SET_PDEATHSIG`` with SIGTERM.

    A SIGTERM while the parent lives is ignored: the main process decides when its
    children stop (systemd's ``KillMode=mixed`` signals only the main process).
    """
    parent = os.getppid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != parent:
            action()
            os._exit(0)

    signal.signal(PARENT_DEATH_SIGNAL, handler)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before prctl: no signal is coming
        handler(int(PARENT_DEATH_SIGNAL), None)


def release_on_parent_death(
    ifname: str, addresses: Sequence[IPInterface], route: RouteSpec | None = None
) -> None:
    """For the data plane: remove the VIPs and exit when the main process dies."""
    on_parent_death(lambda: release_vips(ifname, addresses, route))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vipcast-guard")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--interface", required=True)
    parser.add_argument("--vip", action="append", required=True, type=ipaddress.ip_interface)
    parser.add_argument("--roles-dir")
    parser.add_argument("--route", type=_route_arg, help="TABLE:PROTOCOL:LOCAL_INTERFACE")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    scheduling.normal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process
    control = socket.socket(fileno=args.control_fd)
    with open_vips(args.interface, args.vip, args.route) as vips:  # netlink open from now

        def remove_all() -> None:
            _remove(vips)
            end_roles(args.roles_dir)

        on_parent_death(remove_all)
        with contextlib.suppress(OSError):  # if it fails, the main process is gone already
            control.sendall(READY)
            _wait_for_end(control)
        _remove(vips)  # after a clean stop there is nothing left to remove
        end_roles(args.roles_dir)
    return 0


def _route_arg(text: str) -> RouteSpec:
    table, protocol, local = text.split(":", 2)
    return RouteSpec(int(table), int(protocol), local)


def route_arg(route: RouteSpec) -> str:
    return f"{route.table}:{route.protocol}:{route.local_interface}"


def _wait_for_end(control: socket.socket) -> None:
    """Until the main process closes its end: at its stop, or by dying."""
    while control.recv(64):
        pass


# --- in the main process ---------------------------------------------------------


class Guard:
    """The main process's side: start the guard, start it again if it dies, stop it."""

    def __init__(
        self,
        ifname: str,
        addresses: Sequence[IPInterface],
        bus: EventBus,
        verbose: bool = False,
        roles_dir: Path | None = None,
        route: RouteSpec | None = None,
    ) -> None:
        self.ifname, self.addresses, self.bus, self.verbose = ifname, addresses, bus, verbose
        self.roles_dir = roles_dir
        self.route = route  # route mode: the guard withdraws the host routes too
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._stopping = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.proc = subprocess.Popen(self._argv(theirs.fileno()), pass_fds=(theirs.fileno(),))
        theirs.close()
        try:
            answer = await asyncio.wait_for(loop.sock_recv(ours, len(READY)), START_TIMEOUT)
        except (TimeoutError, OSError):
            answer = b""
        if answer != READY:
            ours.close()
            code = self._end(timeout=STOP_TIMEOUT)
            raise RuntimeError(f"the VIP guard process did not start (exit {code})")
        self.sock = ours
        loop.add_reader(ours.fileno(), self._on_readable)

    def _argv(self, fd: int) -> list[str]:
        vips = [arg for vip in self.addresses for arg in ("--vip", str(vip))]
        verbose = ["-v"] if self.verbose else []
        roles = ["--roles-dir", str(self.roles_dir)] if self.roles_dir else []
        route = ["--route", route_arg(self.route)] if self.route else []
        return [
            sys.executable, "-m", "vipcast.daemon.guard", "--control-fd", str(fd),
            "--interface", self.ifname, *vips, *roles, *route, *verbose,
        ]  # fmt: skip

    def _on_readable(self) -> None:
        assert self.sock is not None
        try:
            if self.sock.recv(64):
                return  # the guard sends nothing after READY; ignore
        except BlockingIOError:
            return
        except ConnectionError:
            pass
        self._close_socket()
        if self._stopping:
            return
        code = self._end(timeout=STOP_TIMEOUT)
        log.error("the VIP guard process exited (%s); starting it again", code)
        self.bus.publish("guard", f"VIP guard exited ({code}); restarting")
        loop = asyncio.get_running_loop()
        loop.call_later(RESTART_DELAY, lambda: loop.create_task(self._restart()))

    async def _restart(self) -> None:
        if self._stopping:
            return
        try:
            await self.start()
        except (RuntimeError, OSError) as e:
            log.error("VIP guard restart failed: %s", e)

    async def stop(self) -> None:
        """Close our end: the guard removes what is left (nothing, after a clean stop)."""
        self._stopping = True
        self._close_socket()
        if self.proc is not None:
            await asyncio.to_thread(self._end, STOP_TIMEOUT)

    def _close_socket(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _end(self, timeout: float) -> int | None:
        """Wait for the guard to exit (it does once our end is closed), else kill it."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


if __name__ == "__main__":
    sys.exit(main())
