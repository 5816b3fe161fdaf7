"""vipcast daemons as real processes in the lab's nodes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab.wait import wait_until
from vipcast.config import render_toml
from vipcast.daemon import control
from vipcast.lab.process import NsProcess
from vipcast.lab.site import VIP, Site

START_TIMEOUT = 30.0  # s for a daemon's control socket (generous: a loaded CI machine)


def render_config(sections: dict[str, dict[str, Any]], feeds: Sequence[dict[str, Any]] = ()) -> str:
    return render_toml(sections, feeds)


@dataclass
class VipcastNode:
    index: int
    config: Path
    socket: str
    proc: NsProcess

    def status(self) -> dict[str, Any]:
        answer = control.request(self.socket, "status", timeout=2)
        return dict(answer["status"])

    def state(self) -> str | None:
        try:
            return str(self.status()["state"])
        except (OSError, KeyError, ValueError):
            return None

    def wait_state(self, state: str, timeout: float = 10) -> None:
        wait_until(lambda: self.state() == state, timeout, what=f"node{self.index} {state}")


def node_sections(site: Site, i: int, **overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    workdir = site.lab.workdir
    sections: dict[str, dict[str, Any]] = {
        "node": {
            "name": f"node{i}",
            "interface": "eth0",
            "control_socket": str(workdir / f"node{i}.sock"),
        },
        "election": {"vrid": 51, "priority": 100, "advert_interval": 0.1},
        "vip": {"addresses": [f"{VIP}/24"], "garp_count": 3, "garp_interval": 0.02},
    }
    for name, table in overrides.items():
        sections.setdefault(name, {}).update(table)
    return sections


def start_node(
    site: Site,
    i: int,
    *,
    feeds: Sequence[dict[str, Any]] = (),
    extra: str = "",
    **overrides: dict[str, Any],
) -> VipcastNode:
    """Write node ``i``'s config (plus ``extra`` TOML) and run ``vipcast run`` in its namespace."""
    sections = node_sections(site, i, **overrides)
    path = site.lab.workdir / f"node{i}-{len(site.lab.processes)}.toml"
    path.write_text(extra + render_config(sections, list(feeds)))
    proc = site.nodes[i - 1].spawn(
        [sys.executable, "-m", "vipcast", "run", "--config", str(path)], name="vipcast"
    )
    node = VipcastNode(i, path, sections["node"]["control_socket"], proc)
    wait_until(
        lambda: node.state() is not None or proc.returncode is not None,
        START_TIMEOUT,
        what=f"node{i} control socket",
    )
    assert proc.returncode is None, proc.output()
    return node


@dataclass
class SinkProcess:
    """A counting app in its own process; ``result()`` stops it and reads what it got."""

    proc: NsProcess
    out: Path

    def result(self) -> list[Any]:
        self.proc.stop()
        return list(json.loads(self.out.read_text()))


def start_sink(site: Site, i: int, port: int = 9600, *, envelope: bool = False) -> SinkProcess:
    out = site.lab.workdir / f"sink-node{i}-{port}-{len(site.lab.processes)}.json"
    proc = site.nodes[i - 1].spawn(
        [
            sys.executable,
            "-m",
            "tests.lab.traffic",
            "sink",
            "127.0.0.1",
            str(port),
            "--out",
            str(out),
            *(["--envelope"] if envelope else []),
        ],
        name="sink",
    )
    wait_until(lambda: out.with_suffix(".ready").exists(), 10, what="sink ready")
    return SinkProcess(proc, out)


def start_sender(site: Site, dst: tuple[str, int], count: int, rate: float) -> NsProcess:
    return site.remote.spawn(
        [
            sys.executable,
            "-m",
            "tests.lab.traffic",
            "send",
            dst[0],
            str(dst[1]),
            "--count",
            str(count),
            "--rate",
            str(rate),
        ],
        name="sender",
    )
