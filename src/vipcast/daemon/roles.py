"""Roles started and stopped on transitions, and notify hooks.

A role runs on the master, on backups, or always; as a supervised command
(restarted with exponential backoff) or as a systemd unit (systemctl start and
stop). A critical role that fails ``CRITICAL_FAILURES`` times within
``CRITICAL_WINDOW`` seconds puts the node in FAULT for ``CRITICAL_COOLDOWN``
seconds, so the peer takes over. Notify hooks get the new state and never block
the election.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from vipcast.config import RoleConfig
from vipcast.daemon import scheduling

log = logging.getLogger("vipcast.roles")

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
CRITICAL_FAILURES, CRITICAL_WINDOW, CRITICAL_COOLDOWN = 3, 60.0, 30.0
SYSTEMCTL_TIMEOUT = 30.0
RUN_STATE = {"MASTER": "master", "BACKUP": "backup"}


class Role:
    """One role: desired or not, supervised while desired."""

    def __init__(self, cfg: RoleConfig, critical_failed: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.critical_failed = critical_failed
        self.desired = False
        self.running = False
        self.restarts = 0
        self.failures: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def wanted_in(self, state: str) -> bool:
        return self.cfg.when == "always" or self.cfg.when == RUN_STATE.get(state)

    async def set_desired(self, desired: bool, env: dict[str, str]) -> None:
        if desired == self.desired:
            return
        self.desired = desired
        if desired:
            self._task = asyncio.get_running_loop().create_task(self._supervise(env))
        else:
            await self._stop()

    async def _supervise(self, env: dict[str, str]) -> None:
        if self.cfg.unit:
            await self._systemctl("start")
            return
        backoff = BACKOFF_FIRST
        while self.desired:
            started = time.monotonic()
            code = await self._run_once(env)
            if not self.desired:
                return
            self._failed(f"exited with {code}")
            if time.monotonic() - started > 10 * backoff:
                backoff = BACKOFF_FIRST  # it ran a good while: start again quickly
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.restarts += 1

    async def _run_once(self, env: dict[str, str]) -> int:
        self._proc = await asyncio.create_subprocess_exec(
            *self.cfg.command,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=scheduling.normal,
        )
        self.running = True
        log.info("role %s started (pid %d)", self.cfg.name, self._proc.pid)
        code = await self._proc.wait()
        self.running = False
        return code

    def _failed(self, why: str) -> None:
        log.warning("role %s %s; restarting", self.cfg.name, why)
        now = time.monotonic()
        self.failures = [t for t in self.failures if now - t < CRITICAL_WINDOW] + [now]
        if self.cfg.critical and len(self.failures) >= CRITICAL_FAILURES:
            self.failures.clear()
            self.critical_failed(f"critical role {self.cfg.name} keeps failing ({why})")

    async def _stop(self) -> None:
        if self.cfg.unit:
            await self._systemctl("stop")
            return
        proc, task = self._proc, self._task
        if task is not None:
            task.cancel()
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.cfg.stop_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            log.info("role %s stopped", self.cfg.name)
        self.running = False

    async def _systemctl(self, verb: str) -> None:
        assert self.cfg.unit is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                "systemctl", verb, self.cfg.unit, preexec_fn=scheduling.normal
            )
            code = await asyncio.wait_for(proc.wait(), SYSTEMCTL_TIMEOUT)
        except (OSError, TimeoutError) as e:
            code, why = -1, str(e) or "timed out"
        else:
            why = f"systemctl {verb} exited with {code}"
        self.running = verb == "start" and code == 0
        if code != 0:
            log.error("role %s: %s", self.cfg.name, why)
            if verb == "start":
                self._failed(why)
        else:
            log.info("role %s: unit %s %sed", self.cfg.name, self.cfg.unit, verb)

    def status(self) -> dict[str, object]:
        return {
            "when": self.cfg.when,
            "running": self.running,
            "restarts": self.restarts,
            "critical": self.cfg.critical,
        }


class Roles:
    """All roles of the node; ``transition(state)`` starts and stops them."""

    def __init__(self, roles: tuple[RoleConfig, ...], critical_failed: Callable[[str], None]):
        self.roles = [Role(r, critical_failed) for r in roles]
        self._lock = asyncio.Lock()

    async def transition(self, state: str, env: dict[str, str]) -> None:
        async with self._lock:  # transitions apply in order
            for role in self.roles:
                await role.set_desired(role.wanted_in(state), env)

    async def stop(self) -> None:
        async with self._lock:
            for role in self.roles:
                await role.set_desired(False, {})

    def status(self) -> dict[str, dict[str, object]]:
        return {r.cfg.name: r.status() for r in self.roles}


async def run_notify(argv: tuple[str, ...], state: str, reason: str, timeout: float) -> None:
    """A notify hook: ``argv STATE REASON``; killed after ``timeout``; never raises."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            state,
            reason,
            env={**os.environ, "VIPCAST_STATE": state},
            preexec_fn=scheduling.normal,
        )
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("notify %s timed out after %.1fs", argv[0], timeout)
            return
        if code:
            log.warning("notify %s exited with %d", argv[0], code)
    except OSError as e:
        log.warning("notify %s failed: %s", argv[0], e)
