"""Operating a node: roles, health tracks, notify hooks, status, events, metrics, systemd."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.lab.nodes import VipcastNode, start_node
from tests.lab.wait import wait_until
from vipcast.daemon import control
from vipcast.lab.site import ROUTER_LAN, Site

pytestmark = pytest.mark.root

REPO = Path(__file__).parents[2]


def role(name: str, when: str, marker: Path, **extra: Any) -> dict[str, Any]:
    """A role whose process writes its pid to ``marker`` and then waits."""
    script = f"echo $$ > {marker}; exec sleep 60"
    return {"name": name, "when": when, "command": ["sh", "-c", script], **extra}


def alive(marker: Path) -> bool:
    try:
        os.kill(int(marker.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def start_with_arrays(site: Site, i: int, priority: int, extra: str) -> VipcastNode:
    """Start node ``i`` with extra TOML (top-level keys, then arrays of tables) first."""
    return start_node(site, i, election={"priority": priority}, extra=extra)


def toml_roles(*roles: dict[str, Any]) -> str:
    out = []
    for r in roles:
        out.append("[[role]]")
        out += [f"{k} = {json.dumps(v)}" for k, v in r.items()]
    return "\n".join(out) + "\n"


def toml_tracks(*tracks: dict[str, Any]) -> str:
    return toml_roles(*tracks).replace("[[role]]", "[[track]]")


def test_roles_start_and_stop_on_transitions(site: Site, tmp_path: Path) -> None:
    marks = {n: tmp_path / f"{n}.pid" for n in ("m1", "b1", "m2", "b2")}
    n1 = start_with_arrays(
        site,
        1,
        150,
        toml_roles(
            role("processing", "master", marks["m1"]), role("recording", "backup", marks["b1"])
        ),
    )
    n1.wait_state("MASTER")
    n2 = start_with_arrays(
        site,
        2,
        100,
        toml_roles(
            role("processing", "master", marks["m2"]), role("recording", "backup", marks["b2"])
        ),
    )
    n2.wait_state("BACKUP")
    wait_until(lambda: alive(marks["m1"]) and alive(marks["b2"]), 5, what="roles per state")
    wait_until(lambda: not alive(marks["b1"]), 5, what="recording stopped on the master")
    assert not marks["m2"].exists()
    n1.proc.signal(signal.SIGTERM)  # the master goes away: the survivor takes processing
    wait_until(lambda: alive(marks["m2"]), 10, what="processing moves to node2")
    wait_until(lambda: not alive(marks["b2"]), 10, what="recording stops on the new master")
    assert not alive(marks["m1"])
    assert n2.status()["roles"]["processing"]["running"] is True


def test_a_failing_critical_role_moves_mastership(site: Site) -> None:
    n1 = start_with_arrays(
        site,
        1,
        150,
        toml_roles({"name": "fusion", "when": "master", "command": ["false"], "critical": True}),
    )
    n2 = start_node(site, 2, election={"priority": 100})
    wait_until(lambda: n1.status()["demoted"], 15, what="node1 demoted after repeated failures")
    n2.wait_state("MASTER", 5)
    n1.wait_state("BACKUP", 5)
    assert "fusion" in n1.status()["demoted"]["role:fusion"]
    assert n1.status()["priority"] == 1


def test_a_failing_critical_role_with_demote_to_fault_puts_the_node_in_fault(site: Site) -> None:
    broken = {"name": "fusion", "when": "master", "command": ["false"], "critical": True}
    n1 = start_node(
        site,
        1,
        election={"priority": 150},
        health={"demote_to": "fault"},
        extra=toml_roles(broken),
    )
    n2 = start_node(site, 2, election={"priority": 100})
    wait_until(lambda: n1.state() == "FAULT", 15, what="node1 in FAULT after repeated failures")
    n2.wait_state("MASTER", 5)
    assert "fusion" in n1.status()["faults"]["role:fusion"]


def test_an_unreachable_witness_blocks_promotion(site: Site) -> None:
    witness = {
        "name": "witness",
        "kind": "ping",
        "target": "198.18.0.99",
        "interval": 0.2,
        "timeout": 1,
        "fall": 1,
        "rise": 1,
        "block_promotion": True,
    }
    n2 = start_with_arrays(site, 2, 100, toml_tracks(witness))
    wait_until(lambda: n2.state() == "FAULT", 10, what="node2 FAULT: witness unreachable")
    wait_until(lambda: n2.status()["tracks"]["witness"]["up"] is False, 5, what="witness down")
    reachable = {**witness, "name": "gateway", "target": ROUTER_LAN}
    n1 = start_with_arrays(site, 1, 150, toml_tracks(reachable))
    n1.wait_state("MASTER", 10)
    n1.proc.signal(signal.SIGKILL)
    n1.proc.wait(5)
    # node1 is gone, but node2 cannot see the witness: it must not take over
    wait_until(lambda: n2.status()["adverts_received"] > 0, 5)
    for _ in range(20):
        assert n2.state() == "FAULT"
        assert not n2.status()["vips_held"]


def test_a_track_weight_lowers_the_priority_and_the_peer_preempts(site: Site) -> None:
    failing = {
        "name": "feed-source",
        "kind": "script",
        "target": "false",
        "interval": 0.2,
        "fall": 1,
        "weight": -100,
    }
    n1 = start_with_arrays(site, 1, 150, toml_tracks(failing))
    n2 = start_node(site, 2, election={"priority": 100})
    wait_until(lambda: n1.status()["priority"] == 50, 10, what="priority 150 - 100")
    n2.wait_state("MASTER", 5)
    n1.wait_state("BACKUP", 5)


def test_notify_hook_gets_each_new_state(site: Site, tmp_path: Path) -> None:
    log = tmp_path / "notify.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $VIPCAST_STATE" >> {log}\n')
    hook.chmod(0o755)
    start_with_arrays(site, 1, 150, f'notify = ["{hook}"]\n')
    wait_until(
        lambda: log.exists() and "MASTER MASTER" in log.read_text(), 10, what="notify MASTER"
    )
    assert log.read_text().splitlines()[0] == "BACKUP BACKUP"


def test_status_events_and_metrics_reflect_a_failover(site: Site) -> None:
    n1 = start_node(site, 1, election={"priority": 150}, metrics={"listen": "127.0.0.1:9586"})
    n2 = start_node(site, 2, metrics={"listen": "127.0.0.1:9586"})
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    events: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: events.extend(_events(n2.socket, 4)), daemon=True)
    reader.start()
    n1.proc.signal(signal.SIGTERM)
    n2.wait_state("MASTER", 5)
    reader.join(10)
    transitions = [e["message"] for e in events if e["kind"] == "transition"]
    assert transitions[-1].startswith("BACKUP -> MASTER (priority 0 from")
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    status = subprocess.run(
        [sys.executable, "-m", "vipcast", "status", "--socket", n2.socket],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "MASTER" in status
    metrics = _metrics(site, 2)
    assert 'vipcast_state{state="MASTER"} 1.0' in metrics
    assert 'vipcast_transitions_total{new="MASTER",old="BACKUP"} 1.0' in metrics
    assert "vipcast_timer_lateness_seconds_bucket" in metrics
    assert "vipcast_adverts_received_total" in metrics
    if shutil.which("promtool") is not None:  # Debian package prometheus (make deps)
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
        assert lint.returncode == 0, lint.stdout + lint.stderr


def _events(path: str, count: int) -> list[dict[str, Any]]:
    out = []
    for event in control.stream(path, "events"):
        out.append(event)
        if event["kind"] == "transition" and "-> MASTER" in event["message"]:
            break
        if len(out) > 50 + count:
            break
    return out


def _metrics(site: Site, i: int) -> str:
    url = "http://127.0.0.1:9586/metrics"
    with site.nodes[i - 1].entered(), urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (REPO / "packaging" / "vipcast.service").read_text()
    vipcast = shutil.which("vipcast") or str(REPO / ".venv" / "bin" / "vipcast")
    unit = unit.replace("/usr/local/bin/vipcast", vipcast).replace(
        "/etc/vipcast/node.toml", str(REPO / "examples" / "node.toml")
    )
    (tmp_path / "vipcast.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "vipcast.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in unit
    assert "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW" in unit
    assert f"ExecStopPost={vipcast} release --config {REPO / 'examples' / 'node.toml'}" in unit


def test_the_election_runs_real_time_and_nothing_else_does(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "role.pid"
    feeds = [{"name": "f", "port": 8600, "deliver": ["127.0.0.1:9600"]}]
    node = start_node(
        site,
        1,
        election={"priority": 150},
        extra=toml_roles(role("worker", "always", marker)),
        cluster={"group": "239.255.86.1:8601"},
        feeds=feeds,
    )
    node.wait_state("MASTER")
    wait_until(lambda: alive(marker), 5, what="role running")
    with open(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children") as f:
        children = [int(pid) for pid in f.read().split()]  # the data plane, the guard, roles
    assert len(children) >= 3
    assert os.sched_getscheduler(node.proc.pid) & ~os.SCHED_RESET_ON_FORK == os.SCHED_RR
    for pid in children:
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER, pid
    assert os.sched_getscheduler(int(marker.read_text())) == os.SCHED_OTHER
