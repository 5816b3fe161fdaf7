"""Roles, notify hooks and health tracks under faults (issue 13): one test per finding.

Real daemons in the namespace lab. Each test failed on the main branch before the fix.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.test_operations import toml_roles, toml_tracks
from tests.lab.nodes import VipcastNode, start_node
from tests.lab.wait import wait_until
from vipcast.lab.site import Site

pytestmark = pytest.mark.root

BROKEN = {"name": "fusion", "when": "master", "command": ["false"], "critical": True}


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for PID 1, which may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def hook(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def tripped(node: VipcastNode) -> bool:
    """The node's critical role tripped (a fault on main, a demotion now)."""
    status = node.status()
    causes = [*status.get("faults", {}), *status.get("demoted", {})]
    return any(c.startswith("role") for c in causes)


def sample(nodes: list[VipcastNode], seconds: float) -> list[list[str | None]]:
    """The nodes' states every 20 ms for ``seconds`` (a fault's duration, not a sync wait)."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append([n.state() for n in nodes])
        time.sleep(0.02)
    return out


def test_sigterm_with_a_notify_hook_exits_promptly_and_runs_the_stopped_hook(
    site: Site, tmp_path: Path
) -> None:
    log = tmp_path / "notify.log"
    script = hook(tmp_path, f'sleep 0.5; echo "$1" >> {log}\n')  # a hook that takes a while
    node = start_node(site, 1, election={"priority": 150}, extra=f'notify = ["{script}"]\n')
    start_node(site, 2, extra=f'notify = ["{script}"]\n')  # a peer: the master hands over
    wait_until(lambda: log.exists() and "MASTER" in log.read_text(), 10, what="notify MASTER")
    began = time.monotonic()
    node.proc.signal(signal.SIGTERM)
    assert node.proc.wait(10) == 0
    assert time.monotonic() - began < 3
    assert "STOPPED" in log.read_text().split()


def test_a_hook_that_hangs_and_forks_at_shutdown_is_killed_with_its_children(
    site: Site, tmp_path: Path
) -> None:
    children = tmp_path / "children"
    script = hook(
        tmp_path,
        f'[ "$1" = STOPPED ] || exit 0\nsleep 60 & echo $! >> {children}\n'
        f"sleep 60 & echo $! >> {children}\nsleep 60\n",
    )
    node = start_node(
        site, 1, election={"priority": 150}, extra=f'notify = ["{script}"]\nnotify_timeout = 60\n'
    )
    node.wait_state("MASTER")
    began = time.monotonic()
    node.proc.signal(signal.SIGTERM)
    assert node.proc.wait(15) == 0
    assert time.monotonic() - began < 8  # the STOPPED hook is bounded at shutdown
    assert len(pids(children)) == 2
    wait_until(lambda: not any(running(p) for p in pids(children)), 3, what="hook children gone")


def test_sighup_keeps_a_failing_weighted_tracks_penalty(site: Site) -> None:
    failing = {"name": "feed-source", "kind": "script", "target": "false", "interval": 0.2}
    failing |= {"fall": 1, "weight": -100}
    n1 = start_node(site, 1, election={"priority": 150}, extra=toml_tracks(failing))
    n2 = start_node(site, 2, election={"priority": 100})
    wait_until(lambda: n1.status()["priority"] == 50, 10, what="priority 150 - 100")
    n2.wait_state("MASTER", 5)
    n1.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in n1.proc.output(), 5, what="reload")
    for states in sample([n1, n2], 2.0):
        assert states == ["BACKUP", "MASTER"]
    assert n1.status()["priority"] == 50


def test_a_reload_names_what_needs_a_restart_and_keeps_track_state(site: Site) -> None:
    failing = {"name": "feed-source", "kind": "script", "target": "false", "interval": 0.2}
    failing |= {"fall": 1, "weight": -100}
    n1 = start_node(site, 1, election={"priority": 150}, extra=toml_tracks(failing))
    wait_until(lambda: n1.status()["tracks"]["feed-source"]["up"] is False, 10, what="down")
    text = n1.config.read_text()
    n1.config.write_text(text.replace('"false"', '"true"'))  # a changed track: restart
    n1.proc.signal(signal.SIGHUP)
    wait_until(lambda: n1.status().get("pending_restart"), 5, what="pending_restart")
    assert n1.status()["pending_restart"] == ["tracks"]
    assert n1.status()["tracks"]["feed-source"]["up"] is False
    assert n1.status()["priority"] == 50


def test_a_critical_role_broken_on_both_nodes_leaves_a_master(site: Site) -> None:
    n1 = start_node(site, 1, election={"priority": 150}, extra=toml_roles(BROKEN))
    n2 = start_node(site, 2, election={"priority": 100}, extra=toml_roles(BROKEN))
    wait_until(lambda: tripped(n1) and tripped(n2), 20, what="the role trips on both nodes")
    states = sample([n1, n2], 8.0)
    with_master = [s for s in states if s.count("MASTER") == 1]
    assert len(with_master) >= 0.95 * len(states), states[-5:]
    status = n2.status() if states[-1][1] == "MASTER" else n1.status()
    assert status["demoted"]
    assert status["all_demoted"] is True


def test_a_critical_role_that_stays_broken_does_not_flap(site: Site) -> None:
    hold = 4.0  # long against the ~2 s a retry takes to fail: without doubling, 2 per cycle
    health = {"hold_time": hold}
    n1 = start_node(site, 1, election={"priority": 150}, health=health, extra=toml_roles(BROKEN))
    n2 = start_node(site, 2, election={"priority": 100}, health=health)
    n2.wait_state("MASTER", 15)
    first = n2.status()["transitions"]
    observed = 6 * hold
    states = sample([n1, n2], observed)
    # a takeover is a transition of node2 (to MASTER, or away from it when node1 retries)
    takeovers = n2.status()["transitions"] - first
    assert takeovers <= observed / hold, takeovers
    on_node2 = sum(1 for s in states if s[1] == "MASTER")
    assert on_node2 >= 0.7 * len(states)


def test_an_unreachable_witness_at_start_never_lets_the_node_be_master(site: Site) -> None:
    witness = {"name": "witness", "kind": "ping", "target": "198.18.0.99", "timeout": 1}
    witness |= {"block_promotion": True}
    node = start_node(site, 2, extra=toml_tracks(witness))
    for states in sample([node], 4.0):
        assert states[0] in (None, "INIT", "BACKUP", "FAULT"), states
    assert node.state() == "FAULT"
    assert not node.status()["vips_held"]


def _guard_pid(node: VipcastNode) -> int:
    with open(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children") as f:
        for pid in f.read().split():
            with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                if b"vipcast.daemon.guard" in cmd.read():
                    return int(pid)
    raise AssertionError("no guard child")


def test_sigkill_of_the_daemon_ends_its_roles_and_their_children(
    site: Site, tmp_path: Path
) -> None:
    leader, child = tmp_path / "leader", tmp_path / "child"
    script = f"echo $$ > {leader}; sleep 60 & echo $! > {child}; wait"
    worker = {"name": "worker", "when": "always", "command": ["sh", "-c", script]}
    node = start_node(site, 1, extra=toml_roles(worker))
    wait_until(lambda: pids(leader) and pids(child), 5, what="role and its child running")
    node.proc.signal(signal.SIGKILL)
    wait_until(
        lambda: not running(pids(leader)[0]) and not running(pids(child)[0]),
        5,
        what="role and its child gone with the daemon",
    )


def test_a_restart_ends_the_copy_a_killed_daemon_left(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "leader"
    stubborn = f"trap '' TERM; echo $$ >> {marker}; while :; do sleep 0.2; done"
    worker = {"name": "worker", "when": "always", "command": ["sh", "-c", stubborn]}
    node = start_node(site, 1, extra=toml_roles(worker))
    wait_until(lambda: pids(marker), 5, what="role running")
    os.kill(_guard_pid(node), signal.SIGKILL)  # the guard and the daemon die together
    node.proc.signal(signal.SIGKILL)
    node.proc.wait(5)
    again = start_node(site, 1, extra=toml_roles(worker))
    wait_until(lambda: len(pids(marker)) == 2, 5, what="role restarted")
    old, new = pids(marker)
    wait_until(lambda: not running(old), 5, what="the old copy ended")
    assert running(new)
    assert again.status()["roles"]["worker"]["running"] is True


def test_a_master_role_is_up_within_milliseconds_of_the_vip(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    quick = {
        "name": "processing",
        "when": "master",
        "command": ["sh", "-c", f"echo $$ > {marker}; exec sleep 60"],
    }
    slow = {
        "name": "recording",
        "when": "backup",
        "command": ["sh", "-c", "trap '' TERM; sleep 60"],
    }
    slow["stop_timeout"] = 2
    node = start_node(site, 1, extra=toml_roles(slow, quick))
    node.wait_state("MASTER")
    wait_until(lambda: node.status()["roles"]["processing"]["running"], 5, what="role up")
    status = node.status()
    lag = status["roles"]["processing"]["started_at"] - status["last_transition"]["time"]
    print(f"master role started {lag * 1000:.1f} ms after the transition")
    assert 0 <= lag < 0.05
