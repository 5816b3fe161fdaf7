"""vipcast and a real keepalived 2.4.3 in one virtual router with ``auth_hmac``.

keepalived 2.4.3 is built from ``../shared/anchors`` (``build.sh keepalived``, cached; CI
has ``shared/`` beside its clone; ``VIPCAST_SHARED`` points elsewhere). Where it is
absent these tests skip saying so, except with ``CI=true``, where they fail.

node1 runs vipcast, node2 keepalived; VRID 51, VRRPv3, 0.1 s adverts, ``mode enforce``
on both unless a test says otherwise. Oracles: ``ip -json addr`` (who holds the VIP),
keepalived's own log and its stats file (SIGUSR2), vipcast's status, frames on the wire.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.lab import oracles
from tests.lab.capture import Capture, Frame
from tests.lab.keepalived import keepalived_config
from tests.lab.keepalived_peer import KeepalivedPeer, start_peer
from tests.lab.nodes import VipcastNode, node_sections, render_config, start_node
from tests.lab.wait import wait_until
from vipcast import keys
from vipcast.core.vrrp.auth import parse_trailer
from vipcast.core.vrrp.codec import AUTH_TRAILER_LEN
from vipcast.lab.site import VIP, Site, node_address

pytestmark = [pytest.mark.root]

INTERVAL = 0.1
VIPCAST, KEEPALIVED = 1, 2
SHARED = Path(os.environ.get("VIPCAST_SHARED", Path(__file__).parents[3] / "shared"))
KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))
AUTH_ERRORS = "Authentication Extension Errors"
BAD_HMAC = f"{AUTH_ERRORS}/Invalid HMAC"


@pytest.fixture(scope="module")
def keepalived24() -> str:
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
    return {
        "keys": {i: hex_key(k) for i, k in keys_.items()},
        "active_key": active,
        "mode": mode,
    }


class Pair:
    """The vipcast node and the keepalived peer of one test, and their keys."""

    def __init__(self, site: Site, binary: str) -> None:
        self.site = site
        self.binary = binary
        self.n1: VipcastNode | None = None
        self.ka: KeepalivedPeer | None = None

    def key_file(self, secret: bytes) -> str:
        """``file:PATH`` of a 0600 key file holding ``secret`` (written once)."""
        path = self.site.lab.workdir / f"vrrp-{secret[:4].hex()}.key"
        if not path.exists():
            keys.write_key_file(path, secret)
        return f"file:{path}"

    def vipcast_auth(self, keys_: dict[int, bytes], active: int) -> dict[str, Any]:
        table = {str(i): self.key_file(k) for i, k in keys_.items()}
        return {"keys": table, "active_key": active, "mode": "enforce"}

    def vipcast(self, priority: int, auth: dict[str, Any], **election: Any) -> VipcastNode:
        self.n1 = start_node(
            self.site,
            VIPCAST,
            election={"priority": priority, "advert_interval": INTERVAL, **election},
            **{"election.auth": auth},
        )
        return self.n1

    def ka_config(self, priority: int, auth: dict[str, Any], **options: Any) -> str:
        return keepalived_config(priority=priority, advert_int=INTERVAL, auth_hmac=auth, **options)

    def keepalived(self, priority: int, auth: dict[str, Any], **options: Any) -> KeepalivedPeer:
        self.ka = start_peer(
            self.site,
            KEEPALIVED,
            binary=self.binary,
            priority=priority,
            advert_int=INTERVAL,
            auth_hmac=auth,
            **options,
        )
        return self.ka


@pytest.fixture
def pair(site: Site, keepalived24: str) -> Pair:
    return Pair(site, keepalived24)


def holders(site: Site) -> set[int]:
    return {i for i, node in enumerate(site.nodes, 1) if VIP in oracles.addresses(node)}


def wait_holders(site: Site, want: set[int], timeout: float = 3) -> None:
    wait_until(lambda: holders(site) == want, timeout, what=f"VIP held by nodes {want}")


def adverts_go_by(node: VipcastNode, key: str, count: int) -> None:
    start = node.status()[key]
    wait_until(
        lambda: node.status()[key] >= start + count,
        count * INTERVAL + 3,
        what=f"{count} more {key} on node{node.index}",
    )


def auth_errors(ka: KeepalivedPeer) -> dict[str, int]:
    return {k: v for k, v in ka.stats().items() if k.startswith(AUTH_ERRORS) and v}


def trailers_from(frames: list[Frame], source: str) -> list[bytes]:
    """The auth trailers of the IPv4 VRRP adverts sent from ``source``."""
    src = bytes(int(b) for b in source.split("."))
    found = []
    for f in frames:
        if f.ethertype != 0x0800 or f.data[23] != 112 or f.data[26:30] != src:
            continue
        total = int.from_bytes(f.data[16:18], "big")
        found.append(f.data[14 + total - AUTH_TRAILER_LEN : 14 + total])
    return found


# -- both ways, enforce on both -------------------------------------------------------------


def test_vipcast_higher_then_failover_to_keepalived_and_back(pair: Pair) -> None:
    site = pair.site
    n1 = pair.vipcast(150, pair.vipcast_auth({1: KEY1}, 1))
    n1.wait_state("MASTER")
    ka = pair.keepalived(100, ka_auth({1: KEY1}, 1))
    ka.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_sent", 15)  # > 4 of keepalived's Master_Down_Intervals
    assert ka.states() == ["BACKUP"], ka.log()
    assert holders(site) == {VIPCAST}
    stats = ka.stats()
    assert stats["Advertisements/Received"] >= 10
    assert auth_errors(ka) == {}, ka.log()

    n1.proc.signal(signal.SIGTERM)  # our signed priority-0 advert: keepalived takes over
    wait_holders(site, {KEEPALIVED}, 2)
    assert n1.proc.wait(5) == 0, n1.proc.output()
    ka.wait_state("MASTER")
    assert ka.count("Backup received priority 0 advertisement") == 1, ka.log()

    n1 = pair.vipcast(150, pair.vipcast_auth({1: KEY1}, 1))  # preempts keepalived again
    n1.wait_state("MASTER")
    ka.wait_state("BACKUP")
    wait_holders(site, {VIPCAST})
    assert auth_errors(ka) == {}
    assert n1.status()["rejected"] == {}


def test_keepalived_higher_then_failover_to_vipcast_and_back(pair: Pair) -> None:
    site = pair.site
    ka = pair.keepalived(150, ka_auth({1: KEY1}, 1))
    wait_holders(site, {KEEPALIVED})
    n1 = pair.vipcast(100, pair.vipcast_auth({1: KEY1}, 1))
    n1.wait_state("BACKUP")
    wait_until(lambda: n1.status()["master"] == node_address(KEEPALIVED), 2, what="master")
    adverts_go_by(n1, "adverts_received", 10)  # keepalived's signed adverts, verified
    status = n1.status()
    assert status["state"] == "BACKUP"
    assert status["rejected"] == {}
    assert status["auth"] == {"mode": "enforce", "active_key": 1, "keys": [1]}

    ka.kill()  # a crash (its VIP stays behind): we take over after Master_Down_Interval
    n1.wait_state("MASTER", 2)
    wait_until(lambda: VIPCAST in holders(site), 2, what="VIP on node1")

    ka = pair.keepalived(150, ka_auth({1: KEY1}, 1))  # back, preempts
    n1.wait_state("BACKUP", 3)
    wait_holders(site, {KEEPALIVED})
    ka.proc.signal(signal.SIGTERM)  # its signed priority 0: we take over at once
    n1.wait_state("MASTER", 2)
    reason = n1.status()["last_transition"]["reason"]
    assert reason.startswith(f"priority 0 from {node_address(KEEPALIVED)}"), reason
    assert ka.proc.wait(5) == 0
    assert n1.status()["rejected"] == {}


# -- a rotation, by SIGHUP on both ----------------------------------------------------------


def test_key_rotation_by_sighup_on_both_without_a_flap(pair: Pair) -> None:
    site = pair.site
    n1 = pair.vipcast(150, pair.vipcast_auth({1: KEY1}, 1))
    n1.wait_state("MASTER")
    ka = pair.keepalived(100, ka_auth({1: KEY1}, 1))
    ka.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_sent", 10)
    transitions = n1.status()["transitions"]

    def both(keys_: dict[int, bytes], active: int) -> None:
        reloads = ka.count("Reloading")
        ka.reload(pair.ka_config(100, ka_auth(keys_, active)))
        auth = pair.vipcast_auth(keys_, active)
        election = {"priority": 150, "advert_interval": INTERVAL}
        sections = node_sections(site, VIPCAST, election=election, **{"election.auth": auth})
        n1.config.write_text(render_config(sections))
        n1.proc.signal(signal.SIGHUP)
        want = {"mode": "enforce", "active_key": active, "keys": sorted(keys_)}
        wait_until(lambda: n1.status()["auth"] == want, 3, what=f"vipcast reloaded {want}")
        wait_until(lambda: ka.count("Reloading") > reloads, 3, what="keepalived reloading")
        adverts_go_by(n1, "adverts_sent", 10)

    with Capture(site.nodes[VIPCAST - 1]) as cap:
        both({1: KEY1, 2: KEY2}, 1)  # the new key everywhere
        both({1: KEY1, 2: KEY2}, 2)  # switch the signing key
        both({2: KEY2}, 2)  # the old key gone
    ids = [parse_trailer(t).key_id for t in trailers_from(cap.frames, node_address(VIPCAST))]
    assert ids[0] == 1
    assert ids[-1] == 2
    assert ids == sorted(ids), "one switch from key 1 to key 2"

    assert n1.status()["transitions"] == transitions  # no flap on vipcast
    assert n1.status()["state"] == "MASTER"
    assert ka.states() == ["BACKUP"], ka.log()  # nor on keepalived
    assert holders(site) == {VIPCAST}
    assert auth_errors(ka) == {}, ka.log()
    assert n1.status()["rejected"] == {}


# -- a mismatched key: each rejects the other, counted -------------------------------------


def test_mismatched_keys_each_side_rejects_the_other_and_counts_it(pair: Pair) -> None:
    site = pair.site
    n1 = pair.vipcast(150, pair.vipcast_auth({1: KEY1}, 1))
    n1.wait_state("MASTER")
    ka = pair.keepalived(100, ka_auth({1: KEY2}, 1))
    ka.wait_state("MASTER", 3)  # it never hears a valid advert from us
    wait_holders(site, {VIPCAST, KEEPALIVED})
    wait_until(lambda: n1.status()["rejected"].get("bad_hmac", 0) >= 5, 3, what="bad_hmac")
    status = n1.status()
    assert set(status["rejected"]) == {"bad_hmac"}
    assert status["state"] == "MASTER"  # none of its adverts reached our election
    assert status["adverts_received"] == 0
    errors = auth_errors(ka)
    assert set(errors) == {BAD_HMAC}, ka.log()
    assert errors[BAD_HMAC] >= 5
    assert "invalid authentication HMAC from" in ka.log()


# -- RFC 9568's message-only checksum (keepalived v3_checksum_as_v2) -----------------------


def test_message_only_checksum_with_auth_both_ways(pair: Pair) -> None:
    site = pair.site
    n1 = pair.vipcast(150, pair.vipcast_auth({1: KEY1}, 1), checksum="message-only")
    n1.wait_state("MASTER")
    ka = pair.keepalived(100, ka_auth({1: KEY1}, 1), checksum_as_v2=True)
    ka.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_sent", 15)
    assert ka.states() == ["BACKUP"], ka.log()
    assert ka.count("Invalid VRRPv3 checksum") == 0
    assert auth_errors(ka) == {}

    n1.proc.signal(signal.SIGTERM)
    assert n1.proc.wait(5) == 0
    ka.wait_state("MASTER", 2)
    n1 = pair.vipcast(50, pair.vipcast_auth({1: KEY1}, 1), checksum="message-only")
    n1.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_received", 10)  # keepalived's message-only form, signed
    assert n1.status()["rejected"] == {}
    assert holders(site) == {KEEPALIVED}


def test_keepalived_24_without_as_v2_rejects_our_message_only_form(pair: Pair) -> None:
    """The form really is on the wire: the default keepalived refuses it."""
    n1 = pair.vipcast(150, pair.vipcast_auth({1: KEY1}, 1), checksum="message-only")
    n1.wait_state("MASTER")
    ka = pair.keepalived(100, ka_auth({1: KEY1}, 1))
    ka.wait_log("Invalid VRRPv3 checksum")
    ka.wait_state("MASTER", 3)  # it never heard a valid advert from us
    assert n1.status()["state"] == "MASTER"
