"""keepalived 2.4.3 (``auth_hmac``) as a test peer: finding the build, keys, and oracles.

The binary is built from ``../shared/anchors`` (``build.sh keepalived``, cached; CI has
``shared/`` beside its clone; ``VIPCAST_SHARED`` points elsewhere). Where it is absent
the tests skip saying so, except with ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.lab import oracles
from tests.lab.keepalived import keepalived_config
from tests.lab.keepalived_peer import KeepalivedPeer, start_peer
from tests.lab.nodes import VipcastNode, node_sections, render_config, start_node
from tests.lab.wait import wait_until
from vipcast import keys
from vipcast.lab.site import VIP, Site

SHARED = Path(os.environ.get("VIPCAST_SHARED", Path(__file__).parents[3] / "shared"))
INTERVAL = 0.1  # seconds between adverts, both sides
VIPCAST, KEEPALIVED = 1, 2  # the nodes each runs on
AUTH_ERRORS = "Authentication Extension Errors"
BAD_HMAC = f"{AUTH_ERRORS}/Invalid HMAC"


def keepalived24_binary() -> str:
    """The path of keepalived 2.4.3, built (once, cached) by ../shared/anchors/build.sh."""
    script = SHARED / "anchors" / "build.sh"
    if not script.exists():
        why = f"needs keepalived 2.4.3 from {script} (shared/ beside the clone, as in CI)"
        if IN_CI:
            pytest.fail(f"CI=true and this test {why}", pytrace=False)
        pytest.skip(why)
    done = subprocess.run(
        [str(script), "keepalived"], capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, f"build.sh keepalived failed: {done.stderr}"
    binary = done.stdout.strip().splitlines()[-1]
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    assert "v2.4.3" in version.stdout + version.stderr, version
    return binary


def hex_key(secret: bytes) -> str:
    return "hex:" + secret.hex()


def ka_auth(keys_: dict[int, bytes], active: int, mode: str = "enforce") -> dict[str, Any]:
    """keepalived's ``auth_hmac`` block (``keepalived_config(auth_hmac=...)``)."""
    return {
        "keys": {i: hex_key(k) for i, k in keys_.items()},
        "active_key": active,
        "mode": mode,
    }


def auth_errors(ka: KeepalivedPeer) -> dict[str, int]:
    """keepalived's non-zero ``Authentication Extension Errors`` counters."""
    return {k: v for k, v in ka.stats().items() if k.startswith(AUTH_ERRORS) and v}


def holders(site: Site, vip: str = VIP) -> set[int]:
    """The nodes (1-based) holding ``vip``, by ``ip -json addr``."""
    return {i for i, node in enumerate(site.nodes, 1) if vip in oracles.addresses(node)}


def wait_holders(site: Site, want: set[int], timeout: float = 3, vip: str = VIP) -> None:
    wait_until(lambda: holders(site, vip) == want, timeout, what=f"{vip} held by nodes {want}")


class HolderSampler:
    """Who holds ``vip``, sampled by ``ip -json addr`` until stopped (bounded to 120 s)."""

    def __init__(self, site: Site, vip: str = VIP) -> None:
        self.site, self.vip = site, vip
        self.samples: list[tuple[float, frozenset[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                held = frozenset(holders(self.site, self.vip))
            except (OSError, subprocess.SubprocessError, ValueError):
                return  # the lab is being taken down
            self.samples.append((time.monotonic(), held))
            self._stop.wait(0.02)

    def stop(self) -> set[frozenset[int]]:
        """Stop; every distinct holder set seen."""
        self._stop.set()
        self._thread.join(5)
        return {held for _, held in self.samples}


class Pair:
    """The vipcast node (node1) and the keepalived peer (node2) of one test, and their keys.

    ``vips``: the VIP of both sides' configuration (IPv4 or IPv6, with its prefix length).
    An ``auth`` of None: no ``[election.auth]`` / no ``auth_hmac`` block.
    """

    def __init__(self, site: Site, binary: str, vips: tuple[str, ...] = (f"{VIP}/24",)) -> None:
        self.site = site
        self.binary = binary
        self.vips = vips
        self.n1: VipcastNode | None = None
        self.ka: KeepalivedPeer | None = None

    def key_file(self, secret: bytes) -> str:
        """``file:PATH`` of a 0600 key file holding ``secret`` (written once)."""
        path = self.site.lab.workdir / f"vrrp-{secret[:4].hex()}.key"
        if not path.exists():
            keys.write_key_file(path, secret)
        return f"file:{path}"

    def vipcast_auth(
        self, keys_: dict[int, bytes], active: int, mode: str = "enforce"
    ) -> dict[str, Any]:
        table = {str(i): self.key_file(k) for i, k in keys_.items()}
        return {"keys": table, "active_key": active, "mode": mode}

    def vipcast_sections(
        self, priority: int, auth: dict[str, Any] | None, **election: Any
    ) -> dict[str, dict[str, Any]]:
        tables: dict[str, dict[str, Any]] = {
            "election": {"priority": priority, "advert_interval": INTERVAL, **election},
            "vip": {"addresses": list(self.vips)},
        }
        if auth is not None:
            tables["election.auth"] = auth
        return tables

    def vipcast(self, priority: int, auth: dict[str, Any] | None, **election: Any) -> VipcastNode:
        tables = self.vipcast_sections(priority, auth, **election)
        self.n1 = start_node(self.site, VIPCAST, **tables)
        return self.n1

    def reload_vipcast(self, priority: int, auth: dict[str, Any] | None) -> None:
        """Rewrite node1's file with ``auth`` and SIGHUP it; wait until it shows it."""
        n1 = self.n1
        assert n1 is not None
        tables = self.vipcast_sections(priority, auth)
        n1.config.write_text(render_config(node_sections(self.site, VIPCAST, **tables)))
        n1.proc.signal(signal.SIGHUP)
        want = None
        if auth is not None:
            want = {"mode": auth["mode"], "active_key": auth["active_key"]}
            want["keys"] = sorted(int(i) for i in auth["keys"])
        wait_until(lambda: n1.status()["auth"] == want, 3, what=f"vipcast reloaded {want}")

    def ka_config(self, priority: int, auth: dict[str, Any] | None, **options: Any) -> str:
        return keepalived_config(
            priority=priority, advert_int=INTERVAL, auth_hmac=auth, vips=self.vips, **options
        )

    def keepalived(
        self, priority: int, auth: dict[str, Any] | None, **options: Any
    ) -> KeepalivedPeer:
        options = {"advert_int": INTERVAL, "vips": self.vips, **options}
        self.ka = start_peer(
            self.site, KEEPALIVED, binary=self.binary, priority=priority, auth_hmac=auth, **options
        )
        return self.ka

    def reload_keepalived(self, priority: int, auth: dict[str, Any] | None) -> None:
        """Write keepalived's new file, SIGHUP it; wait until it says it is reloading."""
        ka = self.ka
        assert ka is not None
        reloads = ka.count("Reloading")
        ka.reload(self.ka_config(priority, auth))
        wait_until(lambda: ka.count("Reloading") > reloads, 3, what="keepalived reloading")


def adverts_go_by(node: VipcastNode, key: str, count: int) -> None:
    """Wait for ``count`` more adverts sent or received (``key``) by vipcast ``node``."""
    start = node.status()[key]
    wait_until(
        lambda: node.status()[key] >= start + count,
        count * INTERVAL + 3,
        what=f"{count} more {key} on node{node.index}",
    )
