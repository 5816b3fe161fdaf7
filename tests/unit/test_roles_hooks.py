"""Roles, notify hooks and tracks as processes: groups, timeouts, unit monitoring, order.

Real processes throughout. ``systemctl`` is a fake on PATH that the test controls: CI
containers have no systemd as PID 1 (tests/integration/test_operations.py verifies the
unit file with systemd-analyze; a real unit role is exercised where systemd runs).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.lab.wait import wait_until
from vipcast.config import RoleConfig, TrackConfig
from vipcast.daemon import roles
from vipcast.daemon.health import Health
from vipcast.daemon.roles import Role, Roles, run_notify


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for PID 1, which may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_hook_killed_at_its_timeout_takes_its_children_with_it(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"for i in 1 2 3; do sleep 60 & echo $! >> {pids}; done; sleep 60"
    started = time.monotonic()
    asyncio.run(run_notify(("sh", "-c", script), "MASTER", "test", 0.5))
    assert time.monotonic() - started < 3
    assert len(pids_in(pids)) == 3
    wait_until(lambda: not any(running(p) for p in pids_in(pids)), 2, what="hook children gone")


def _fake_systemctl(tmp_path: Path) -> Path:
    """``systemctl start|stop|show`` over a state file; ``broken``: the unit dies at once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state, log = tmp_path / "state", tmp_path / "systemctl.log"
    state.write_text("inactive\n")
    fake = bin_dir / "systemctl"
    fake.write_text(
        f"""#!/bin/sh
echo "$@" >> {log}
case "$1" in
start) if [ -e {tmp_path}/broken ]; then echo failed > {state}; else echo active > {state}; fi ;;
stop) echo inactive > {state} ;;
show) echo "ActiveState=$(cat {state})"; echo "NRestarts=0" ;;
is-active) s=$(cat {state}); echo $s; [ "$s" = active ] ;;
esac
"""
    )
    fake.chmod(0o755)
    return bin_dir


def test_a_critical_unit_role_whose_unit_fails_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{_fake_systemctl(tmp_path)}:{os.environ['PATH']}")
    monkeypatch.setattr(roles, "UNIT_POLL", 0.1, raising=False)
    tripped: list[str] = []

    async def scenario() -> None:
        role = Role(
            RoleConfig(name="fusion", when="master", unit="fusion.service", critical=True),
            tripped.append,
        )
        await role.set_desired(True, {})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2
        while not role.running and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert role.running
        (tmp_path / "broken").touch()
        (tmp_path / "state").write_text("failed\n")  # the unit's main process died
        deadline = loop.time() + 15
        while not tripped and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await role.set_desired(False, {})

    asyncio.run(scenario())
    assert tripped
    assert "fusion" in tripped[0]
    assert "stop fusion.service" in (tmp_path / "systemctl.log").read_text()


def test_a_master_role_starts_without_waiting_for_a_slow_backup_role(tmp_path: Path) -> None:
    marker = tmp_path / "master.started"
    slow = RoleConfig(  # ignores SIGTERM, exits 2 s later
        name="recording",
        when="backup",
        command=("sh", "-c", "trap '' TERM; sleep 2"),
        stop_timeout=5,
    )
    fast = RoleConfig(
        name="processing", when="master", command=("sh", "-c", f"touch {marker}; exec sleep 60")
    )

    async def scenario() -> float:
        node_roles = Roles((slow, fast), lambda role, reason: None)
        await node_roles.transition("BACKUP", {})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2
        while not node_roles.roles[0].running and loop.time() < deadline:
            await asyncio.sleep(0.01)
        begin = loop.time()
        task = loop.create_task(node_roles.transition("MASTER", {}))
        while not marker.exists() and loop.time() < begin + 5:
            await asyncio.sleep(0.002)
        took = loop.time() - begin
        await task
        await node_roles.stop()
        return took

    assert asyncio.run(scenario()) < 0.3


def test_tracks_start_unknown_and_a_block_promotion_track_blocks_until_it_passes() -> None:
    witness = TrackConfig(
        name="witness", kind="script", target="true", block_promotion=True, rise=1
    )
    health = Health((witness,), lambda: None)
    assert health.status()["witness"]["up"] is None
    assert health.blocking()  # no promotion before the first pass
