"""Health tracking: interface link, reachability of a gateway or witness, script checks.

Each track is probed every ``interval``; its state flips after ``rise``
consecutive successes or ``fall`` consecutive failures. A failing track either
lowers the node's priority by ``weight`` or, with weight 0 or
``block_promotion`` (the split-brain guard of two-node sites: a node that cannot
reach the witness must not be master), puts the node in FAULT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from vipcast.config import TrackConfig
from vipcast.daemon import scheduling
from vipcast.linux import interfaces

log = logging.getLogger("vipcast.health")


@dataclass
class TrackState:
    cfg: TrackConfig
    up: bool = True
    streak: int = 0  # consecutive results that disagree with ``up``
    last_error: str = ""

    def record(self, ok: bool) -> bool:
        """Count one probe result; True when the state flipped."""
        if ok == self.up:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.cfg.rise if ok else self.cfg.fall):
            self.up, self.streak = ok, 0
            return True
        return False

    @property
    def faults(self) -> bool:
        return not self.up and (self.cfg.weight == 0 or self.cfg.block_promotion)


class Health:
    """Runs the probes; calls ``changed()`` whenever a track flips."""

    def __init__(self, tracks: tuple[TrackConfig, ...], changed: Callable[[], None]) -> None:
        self.tracks = [TrackState(t) for t in tracks]
        self.changed = changed
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(t)) for t in self.tracks]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def priority_delta(self) -> int:
        return sum(t.cfg.weight for t in self.tracks if not t.up and not t.faults)

    @staticmethod
    def describe(t: TrackState) -> str:
        what = "witness" if t.cfg.block_promotion else t.cfg.kind
        return f"{what} {t.cfg.name} ({t.cfg.target}) failing"

    def status(self) -> dict[str, dict[str, object]]:
        return {
            t.cfg.name: {
                "kind": t.cfg.kind,
                "target": t.cfg.target,
                "up": t.up,
                "error": t.last_error or None,
            }
            for t in self.tracks
        }

    async def _watch(self, track: TrackState) -> None:
        while True:
            ok = await self._probe(track)
            if track.record(ok):
                log.warning("track %s: %s", track.cfg.name, "up" if track.up else "DOWN")
                self.changed()
            await asyncio.sleep(track.cfg.interval)

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
            return await _succeeds(argv, cfg.timeout + 1.0)
        except (OSError, LookupError) as e:
            track.last_error = str(e)
            return False


async def _succeeds(argv: list[str], timeout: float) -> bool:
    """Run a probe command; success is exit status 0 within ``timeout`` seconds."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=scheduling.normal,
    )
    try:
        return await asyncio.wait_for(proc.wait(), timeout) == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False
