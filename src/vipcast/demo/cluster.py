"""The demo's site: two vipcast nodes, their apps and the radar, as real processes.

The configuration is the one a real pair would run (see examples/node.toml), only
with a fast election so the demo's failover is quick to watch.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipcast import keys
from vipcast.config import render_toml
from vipcast.daemon import control
from vipcast.demo import statusfile
from vipcast.lab.process import NsProcess
from vipcast.lab.site import VIP, Host, Site, node_address

VRID = 51
ADVERT_INTERVAL = 0.1
PRIORITIES = (150, 100)
GROUP = "239.255.86.1:8601"
FEED_NAME, FEED_PORT = "asterix", 8600
APP_PORT = 9600
RADAR_PORT = 8600  # the radar sends from this port too, as ASTERIX senders often do


ADVERT_KEY, CLUSTER_KEY = "vrrp.key", "cluster.key"  # file names in the demo's workdir


def key_file(workdir: Path, name: str) -> Path:
    """One of the demo's key files, made once (``vipcast keygen``'s format, mode 0600)."""
    path = workdir / name
    if not path.exists():
        keys.write_key_file(path, keys.new_key())
    return path


def _auth(workdir: Path, name: str) -> dict[str, Any]:
    return {"keys": {1: f"file:{key_file(workdir, name)}"}, "active_key": 1}


def node_config(i: int, workdir: Path) -> str:
    """Node ``i``'s (1-based) configuration file text; adverts and envelopes keyed.

    Both nodes share two new keys, written once in ``workdir``: one signs the adverts
    (``[election.auth]``, keepalived 2.4's ``auth_hmac``), the other the envelopes and
    NACKs (``[cluster.auth]``).
    """
    sections: dict[str, dict[str, Any]] = {
        "node": {
            "name": f"node{i}",
            "interface": "eth0",
            "control_socket": str(workdir / f"node{i}.sock"),
        },
        "election": {
            "vrid": VRID,
            "priority": PRIORITIES[i - 1],
            "advert_interval": ADVERT_INTERVAL,
            "preempt": True,
        },
        "election.auth": _auth(workdir, ADVERT_KEY),
        "vip": {"addresses": [f"{VIP}/24"]},
        "cluster": {"group": GROUP},
        "cluster.auth": _auth(workdir, CLUSTER_KEY),
    }
    feed = {
        "name": FEED_NAME,
        "port": FEED_PORT,
        "deliver": [f"127.0.0.1:{APP_PORT}"],
        "mode": "envelope",
    }
    return render_toml(sections, [feed])


@dataclass
class DaemonEvent:
    time: float  # wall clock
    node: str
    kind: str
    message: str
    data: dict[str, Any]


@dataclass
class DemoNode:
    """One node: its vipcast daemon, its control socket and its radar application."""

    name: str
    host: Host
    socket: str
    daemon: NsProcess
    app_status: Path
    app: NsProcess | None = None
    last_status: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return node_address(int(self.name.removeprefix("node")))

    def status(self) -> dict[str, Any] | None:
        """The daemon's ``status`` (kept in ``last_status``), or None if unreachable."""
        try:
            answer = control.request(self.socket, "status", timeout=1.0)
        except (OSError, ValueError):
            return None
        if not answer.get("ok"):
            return None
        self.last_status = dict(answer["status"])
        return self.last_status

    def state(self) -> str | None:
        status = self.status()
        return None if status is None else str(status.get("state"))

    def app_picture(self) -> dict[str, Any] | None:
        return statusfile.read(self.app_status)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"demo: timed out after {timeout:.0f} s waiting for {what}")


def start_node(site: Site, i: int) -> DemoNode:
    workdir = site.lab.workdir
    path = workdir / f"node{i}.toml"
    path.write_text(node_config(i, workdir))
    daemon = site.nodes[i - 1].spawn(
        [sys.executable, "-m", "vipcast", "run", "--config", str(path)], name="vipcast"
    )
    node = DemoNode(
        f"node{i}",
        site.nodes[i - 1],
        str(workdir / f"node{i}.sock"),
        daemon,
        workdir / f"app-node{i}.json",
    )
    wait_for(
        lambda: node.status() is not None or daemon.returncode is not None,
        20,
        f"node{i}'s control socket",
    )
    if daemon.returncode is not None:
        raise RuntimeError(f"node{i}'s vipcast exited ({daemon.returncode}):\n{tail(daemon)}")
    return node


def start_app(node: DemoNode, max_seconds: float) -> None:
    node.app = node.host.spawn(
        [
            sys.executable,
            "-m",
            "vipcast.demo.app",
            "--node",
            node.name,
            "--port",
            str(APP_PORT),
            "--status",
            str(node.app_status),
            "--max-seconds",
            f"{max_seconds:.0f}",
        ],
        name="app",
    )


def start_radar(site: Site, status: Path, rate: float, duration: float, aircraft: int) -> NsProcess:
    return site.remote.spawn(
        [
            sys.executable,
            "-m",
            "vipcast.demo.radar",
            "--to",
            f"{VIP}:{FEED_PORT}",
            "--rate",
            f"{rate:g}",
            "--duration",
            f"{duration:g}",
            "--aircraft",
            str(aircraft),
            "--source-port",
            str(RADAR_PORT),
            "--status",
            str(status),
        ],
        name="radar",
    )


def tail(proc: NsProcess, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(proc.output().splitlines()[-lines:])
    return ""


class EventFollower:
    """Follows every node's ``events`` stream, each in a background thread."""

    KINDS = frozenset({"transition", "handover", "session", "gap", "relay", "vip_restored"})

    def __init__(self) -> None:
        self.events: list[DaemonEvent] = []
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []

    def follow(self, node: DemoNode) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(node.socket)
        sock.sendall(json.dumps({"command": "events"}).encode() + b"\n")
        sock.settimeout(None)
        self._socks.append(sock)
        threading.Thread(target=self._run, args=(node.name, sock), daemon=True).start()

    def _run(self, name: str, sock: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError), sock.makefile("rb") as lines:
            for line in lines:
                event = json.loads(line)
                if event.get("kind") in self.KINDS:
                    self._add(name, event)

    def _add(self, name: str, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(
                DaemonEvent(
                    float(event.get("time", 0.0)),
                    name,
                    str(event["kind"]),
                    str(event.get("message", "")),
                    dict(event.get("data") or {}),
                )
            )

    def snapshot(self) -> list[DaemonEvent]:
        with self._lock:
            return sorted(self.events, key=lambda e: e.time)

    def close(self) -> None:
        """Hang up, so the daemons stop with no stream open."""
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._socks.clear()
