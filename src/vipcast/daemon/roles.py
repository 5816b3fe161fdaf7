"""Roles started and stopped on transitions, and notify hooks.

A role runs on the master, on backups, or always (the only roles that run in FAULT);
as a supervised command (restarted with exponential backoff) or as a systemd unit
(``systemctl start``, then the unit's state watched every ``UNIT_POLL`` seconds: a
unit that fails, stops or is restarted by systemd counts as a failure and is started
again with the same backoff). A critical role that fails ``CRITICAL_FAILURES`` times
within ``CRITICAL_WINDOW`` seconds demotes the node (see :mod:`vipcast.core.damping`).

Each role changes on its own: a transition starts the new state's roles at once,
while the old state's roles stop (each within its ``stop_timeout``) beside them.

Every child leads its own process group and gets SIGTERM if the daemon dies
(``PR_SET_PDEATHSIG``); a role's group is recorded in a pidfile, so the guard, or the
next daemon, ends a copy that a killed daemon left. Notify hooks get the new state,
never block the election, and are killed with their whole group at their timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable

from vipcast.config import RoleConfig
from vipcast.daemon import scheduling
from vipcast.linux import procs
from vipcast.linux.procs import PidFiles

log = logging.getLogger("vipcast.roles")

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
CRITICAL_FAILURES, CRITICAL_WINDOW = 3, 60.0
SYSTEMCTL_TIMEOUT = 30.0
UNIT_POLL = 1.0  # seconds between checks of a unit role's state
PREVIOUS_GRACE = 2.0  # seconds a copy left by a killed daemon gets between SIGTERM and SIGKILL
RUN_STATE = {"MASTER": "master", "BACKUP": "backup"}
UNIT_TRANSIENT = ("active", "activating", "reloading", "deactivating", "refreshing")


SETPRIV = shutil.which("setpriv")  # util-linux: sets the parent-death signal, then execs


def child_setup() -> None:
    """In a child, when the kernel cannot do it: normal scheduling, SIGTERM at our death."""
    scheduling.normal()
    procs.die_with_parent(signal.SIGTERM)


async def spawn(argv: tuple[str, ...] | list[str], **kwargs: object) -> asyncio.subprocess.Process:
    """A child in its own process group (session) that gets SIGTERM when the daemon dies.

    Without a ``preexec_fn`` when possible (``setpriv --pdeathsig`` and the kernel's
    scheduler reset): a child then starts in about a millisecond instead of five."""
    wrap = [SETPRIV, "--pdeathsig", "TERM", "--"] if SETPRIV else []
    setup = child_setup if not SETPRIV or scheduling.children_inherit_real_time() else None
    return await asyncio.create_subprocess_exec(
        *wrap,
        *argv,
        start_new_session=True,
        preexec_fn=setup,
        **kwargs,  # type: ignore[arg-type]
    )


class Role:
    """One role: desired or not, supervised while desired."""

    def __init__(
        self,
        cfg: RoleConfig,
        critical_failed: Callable[[str], None],
        pidfiles: PidFiles | None = None,
    ) -> None:
        self.cfg = cfg
        self.critical_failed = critical_failed
        self.pidfiles = pidfiles
        self.desired = False
        self.running = False
        self.restarts = 0
        self.started_at: float | None = None  # wall clock of the current run's start
        self.last_failure = ""
        self.failures: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._group: procs.Group | None = None  # the current child's process group
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # this role's changes apply in order

    def wanted_in(self, state: str) -> bool:
        return self.cfg.when == "always" or self.cfg.when == RUN_STATE.get(state)

    async def set_desired(self, desired: bool, env: dict[str, str]) -> None:
        async with self._lock:
            if desired == self.desired:
                return
            self.desired = desired
            if desired:
                self._wake = asyncio.Event()
                self._task = asyncio.get_running_loop().create_task(self._supervise(env))
            else:
                await self._stop()

    async def _supervise(self, env: dict[str, str]) -> None:
        backoff = BACKOFF_FIRST
        while self.desired:
            started = time.monotonic()
            why = await (self._run_unit() if self.cfg.unit else self._run_command(env))
            self.running = False
            if not self.desired:
                return
            self._failed(why)
            if time.monotonic() - started > 10 * backoff:
                backoff = BACKOFF_FIRST  # it ran a good while: start again quickly
            if await self._pause(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.restarts += 1

    async def _pause(self, seconds: float) -> bool:
        """Sleep, woken early by a stop; True if woken."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        return self._wake.is_set()

    async def _run_command(self, env: dict[str, str]) -> str:
        if self.pidfiles is not None and self.pidfiles.path(self.cfg.name).exists():
            await asyncio.to_thread(self._end_previous)  # rare: the daemon's start ends them
        try:
            proc = await spawn(self.cfg.command, env={**os.environ, **env})
        except OSError as e:
            return f"could not start: {e.strerror or e}"
        self._proc, self._group = proc, procs.Group(proc.pid)
        if self.pidfiles is not None:
            self.pidfiles.record(self.cfg.name, proc.pid)
        self._began(f"pid {proc.pid}")
        if not self.desired:  # stopped while it was being started
            self._group.signal(signal.SIGTERM)
        code = await proc.wait()
        self._group.signal(signal.SIGKILL)  # what it forked goes with it: one copy, always
        if self.pidfiles is not None:
            self.pidfiles.clear(self.cfg.name)
        return f"exited with {code}"

    def _end_previous(self) -> None:
        assert self.pidfiles is not None
        pid = self.pidfiles.end_previous(self.cfg.name, PREVIOUS_GRACE)
        if pid is not None:
            log.warning(
                "role %s: ended the copy a previous daemon left (pid %d)", self.cfg.name, pid
            )

    def _began(self, what: str) -> None:
        self.running = True
        self.started_at = time.time()
        log.info("role %s started (%s)", self.cfg.name, what)

    async def _run_unit(self) -> str:
        code, why = await self._systemctl("start")
        if code != 0:
            return why
        restarts = await self._unit_restarts()
        self._began(f"unit {self.cfg.unit}")
        while not await self._pause(UNIT_POLL):
            state, now = await self._unit_state()
            if state is not None and state not in UNIT_TRANSIENT:
                return f"unit {self.cfg.unit} is {state}"
            if now is not None and restarts is not None and now > restarts:
                return f"unit {self.cfg.unit} was restarted by systemd ({now - restarts}x)"
        return "stopped"

    async def _unit_restarts(self) -> int | None:
        return (await self._unit_state())[1]

    async def _unit_state(self) -> tuple[str | None, int | None]:
        """The unit's ActiveState and NRestarts from ``systemctl show``; None: unknown."""
        assert self.cfg.unit is not None
        argv = ("systemctl", "show", "-p", "ActiveState", "-p", "NRestarts", self.cfg.unit)
        try:
            proc = await spawn(argv, stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), SYSTEMCTL_TIMEOUT)
        except (OSError, TimeoutError) as e:
            log.warning("role %s: systemctl show: %s", self.cfg.name, e or "timed out")
            return None, None
        values = dict(line.partition("=")[::2] for line in out.decode().splitlines())
        restarts = values.get("NRestarts", "")
        return values.get("ActiveState") or None, int(restarts) if restarts.isdigit() else None

    def _failed(self, why: str) -> None:
        log.warning("role %s %s; restarting", self.cfg.name, why)
        self.last_failure = why
        now = time.monotonic()
        self.failures = [t for t in self.failures if now - t < CRITICAL_WINDOW] + [now]
        if self.cfg.critical and len(self.failures) >= CRITICAL_FAILURES:
            self.failures.clear()
            self.critical_failed(f"critical role {self.cfg.name} keeps failing ({why})")

    async def _stop(self) -> None:
        """SIGTERM to the role's group, SIGKILL after ``stop_timeout``; a unit is stopped."""
        self._wake.set()
        task, proc = self._task, self._proc
        if self._group is not None and proc is not None and proc.returncode is None:
            self._group.signal(signal.SIGTERM)
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self.cfg.stop_timeout)
            if not done:
                if self._group is not None:
                    self._group.signal(signal.SIGKILL)
                await task
        if self.cfg.unit:
            await self._systemctl("stop")
        elif proc is not None:
            log.info("role %s stopped", self.cfg.name)
        self._task, self._proc, self._group = None, None, None
        self.running = False

    async def _systemctl(self, verb: str) -> tuple[int, str]:
        assert self.cfg.unit is not None
        try:
            proc = await spawn(("systemctl", verb, self.cfg.unit))
            self._proc, self._group = proc, procs.Group(proc.pid)
            try:
                code = await asyncio.wait_for(proc.wait(), SYSTEMCTL_TIMEOUT)
            except TimeoutError:
                self._group.signal(signal.SIGKILL)
                await proc.wait()
                raise
        except (OSError, TimeoutError) as e:
            code, why = -1, f"systemctl {verb}: {e or 'timed out'}"
        else:
            why = f"systemctl {verb} exited with {code}"
        if code != 0:
            log.error("role %s: %s", self.cfg.name, why)
        else:
            log.info("role %s: unit %s %s done", self.cfg.name, self.cfg.unit, verb)
        return code, why

    def status(self) -> dict[str, object]:
        return {
            "when": self.cfg.when,
            "running": self.running,
            "restarts": self.restarts,
            "critical": self.cfg.critical,
            "started_at": self.started_at if self.running else None,
            "last_failure": self.last_failure or None,
        }


class Roles:
    """All roles of the node; ``transition(state)`` starts and stops them, each on its own."""

    def __init__(
        self,
        roles: tuple[RoleConfig, ...],
        critical_failed: Callable[[str, str], None],
        pidfiles: PidFiles | None = None,
    ) -> None:
        """``critical_failed(role, reason)``: a critical role keeps failing."""
        self.roles = [Role(r, functools.partial(critical_failed, r.name), pidfiles) for r in roles]
        self.pidfiles = pidfiles

    async def end_previous(self) -> list[tuple[str, int]]:
        """At start: end every role a killed daemon left running (any state's)."""
        if self.pidfiles is None:
            return []
        ended = await asyncio.to_thread(self.pidfiles.end_all, PREVIOUS_GRACE)
        for name, pid in ended:
            log.warning("role %s: ended the copy a previous daemon left (pid %d)", name, pid)
        return ended

    async def transition(self, state: str, env: dict[str, str]) -> None:
        """Start the roles of ``state`` and stop the others, all at once."""
        await asyncio.gather(*(r.set_desired(r.wanted_in(state), env) for r in self.roles))

    async def stop(self) -> None:
        await asyncio.gather(*(r.set_desired(False, {}) for r in self.roles))

    def status(self) -> dict[str, dict[str, object]]:
        return {r.cfg.name: r.status() for r in self.roles}


async def run_notify(
    argv: tuple[str, ...],
    state: str,
    reason: str,
    timeout: float,
    running: set[procs.Group] | None = None,
) -> None:
    """A notify hook: ``argv STATE REASON``; its group killed after ``timeout``; never raises.

    ``running`` holds the hooks under way, for the daemon's stop to end them."""
    try:
        proc = await spawn((*argv, state, reason), env={**os.environ, "VIPCAST_STATE": state})
    except OSError as e:
        log.warning("notify %s failed: %s", argv[0], e)
        return
    group = procs.Group(proc.pid)
    if running is not None:
        running.add(group)
    try:
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("notify %s timed out after %.1fs: killed", argv[0], timeout)
            return
        if code:
            log.warning("notify %s exited with %d", argv[0], code)
    finally:
        group.signal(signal.SIGKILL)  # the hook, and all it forked
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        if running is not None:
            running.discard(group)
