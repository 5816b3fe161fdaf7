"""Health tracking: interface link, reachability of a gateway or witness, script checks.

Each track is probed every ``interval`` (a probe gets ``timeout`` seconds, then its
process group is killed); its state flips after ``rise`` consecutive successes or
``fall`` consecutive failures. A track starts unknown and counts as failing until it
first passes. A failing track lowers the node's priority by ``weight``, or with
weight 0 demotes the node, or with ``block_promotion`` (the split-brain guard of
two-node sites: a node that cannot reach the witness must not be master) puts it in
FAULT; after it passes again its effect is held for ``health.hold_time``
(:mod:`vipcast.core.damping`, which also holds the demotions by critical roles).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from vipcast.config import TrackConfig
from vipcast.core.damping import Damping, Effect, Verdict
from vipcast.daemon.roles import spawn
from vipcast.linux import interfaces, procs

log = logging.getLogger("vipcast.health")


@dataclass
class TrackState:
    cfg: TrackConfig
    up: bool | None = None  # None: not yet known
    streak: int = 0  # consecutive results that disagree with ``up``
    pending: bool | None = None  # what the streak counts, while ``up`` is unknown
    last_error: str = ""

    def record(self, ok: bool) -> bool:
        """Count one probe result; True when the state flipped (or became known)."""
        if ok == self.up:
            self.streak = 0
            return False
        if ok != self.pending:
            self.pending, self.streak = ok, 0
        self.streak += 1
        if self.streak >= (self.cfg.rise if ok else self.cfg.fall):
            self.up, self.streak, self.pending = ok, 0, None
            return True
        return False

    @property
    def name(self) -> str:
        return f"track:{self.cfg.name}"

    @property
    def effect(self) -> Effect:
        if self.cfg.block_promotion:
            return "block"
        return "demote" if self.cfg.weight == 0 else "penalty"


class Health:
    """Runs the probes and holds the damping; calls ``changed()`` whenever a track flips."""

    def __init__(
        self, tracks: tuple[TrackConfig, ...], changed: Callable[[], None], hold_time: float = 0.0
    ) -> None:
        self.tracks = [TrackState(t) for t in tracks]
        self.changed = changed
        self.damping = Damping(hold_time)
        for t in self.tracks:
            self.damping.add(t.name, t.effect, t.cfg.weight)
            self.damping.causes[t.name].reason = f"{self.describe(t)}: not yet passed"
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._probes: set[procs.Group] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(t)) for t in self.tracks]

    async def stop(self) -> None:
        """Stop probing: wakes the sleeps, ends running probes (never cancels a spawn)."""
        self._stopping.set()
        for group in list(self._probes):
            group.signal(signal.SIGKILL)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def verdict(self, now: float | None = None) -> Verdict:
        return self.damping.verdict(time.monotonic() if now is None else now)

    def blocking(self) -> dict[str, str]:
        """The block_promotion tracks that keep the node from promotion now."""
        return self.verdict().blocked

    def role_tripped(self, role: str, reason: str) -> float:
        """A critical role keeps failing: demote the node, held as a failing track is.

        Returns the hold (seconds)."""
        self.damping.pulse(f"role:{role}", "demote", time.monotonic(), reason)
        return self.damping.causes[f"role:{role}"].hold

    @staticmethod
    def describe(t: TrackState) -> str:
        what = "witness" if t.cfg.block_promotion else t.cfg.kind
        return f"{what} {t.cfg.name} ({t.cfg.target})"

    def status(self) -> dict[str, dict[str, object]]:
        held = self.verdict().held
        return {
            t.cfg.name: {
                "kind": t.cfg.kind,
                "target": t.cfg.target,
                "up": t.up,
                "error": t.last_error or None,
                "held": held.get(t.name),
            }
            for t in self.tracks
        }

    async def _watch(self, track: TrackState) -> None:
        while not self._stopping.is_set():
            ok = await self._probe(track)
            if self._stopping.is_set():
                return
            if track.record(ok):
                log.warning("track %s: %s", track.cfg.name, "up" if track.up else "DOWN")
                state = "passing" if track.up else "failing"
                self.damping.report(
                    track.name, bool(track.up), time.monotonic(), f"{self.describe(track)} {state}"
                )
                self.changed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), track.cfg.interval)

    async def _probe(self, track: TrackState) -> bool:
        cfg = track.cfg
        try:
            if cfg.kind == "interface":
                return interfaces.link_is_up(cfg.target)
            if cfg.kind == "ping":
                argv = [
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    "1",
                    "-W",
                    str(max(1, round(cfg.timeout))),
                    cfg.target,
                ]
            else:
                argv = ["/bin/sh", "-c", cfg.target]
            return await self._succeeds(argv, cfg.timeout + 1.0)
        except (OSError, LookupError) as e:
            track.last_error = str(e)
            return False

    async def _succeeds(self, argv: list[str], timeout: float) -> bool:
        """Run a probe; success is exit status 0 within ``timeout`` seconds."""
        proc = await spawn(
            argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        group = procs.Group(proc.pid)
        self._probes.add(group)
        try:
            return await asyncio.wait_for(proc.wait(), timeout) == 0
        except TimeoutError:
            return False
        finally:
            group.signal(signal.SIGKILL)  # the probe and whatever it forked
            await proc.wait()
            self._probes.discard(group)
