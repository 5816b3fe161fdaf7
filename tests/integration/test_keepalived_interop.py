"""vipcast and a real keepalived (2.2.7) in one virtual router: VRID 51, VRRPv3, 0.1 s.

node1 runs vipcast, node2 keepalived; both hold 198.18.0.100/24 when master. The
oracles are ``ip -json addr`` (who holds the VIP), keepalived's own log (its states,
its checksum and version errors) and frames captured on the wire.

What these tests establish about keepalived 2.2.7:

* It sends and accepts only the pseudo-header form of the VRRPv3 IPv4 checksum. It has
  no option to accept RFC 9568's message-only form (``v3_checksum_as_v2`` arrived in
  2.2.8): it logs ``Invalid VRRPv3 checksum`` for every message-only advert and becomes
  master beside us. Keep ``election.checksum = "pseudo-header"`` with keepalived.
* vipcast accepts keepalived's adverts whatever its own send form is.
* A VRRPv2 keepalived in the same VRID is rejected with reason "version", and
  keepalived logs ``wrong version``: a mixed site shows up in both.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.lab import oracles
from tests.lab.capture import Capture, Frame
from tests.lab.keepalived_peer import KeepalivedPeer, start_peer
from tests.lab.nodes import VipcastNode, start_node
from tests.lab.wait import wait_until
from vipcast.core.vrrp.timers import master_down_interval
from vipcast.lab.site import VIP, Site, node_address

pytestmark = [pytest.mark.root, pytest.mark.keepalived]

INTERVAL = 0.1  # seconds; keepalived accepts down to 0.01 with VRRPv3
VIPCAST, KEEPALIVED = 1, 2  # node numbers
RESIGNED = "Backup received priority 0 advertisement"  # keepalived's words
BAD_CHECKSUM = "Invalid VRRPv3 checksum"


def holders(site: Site) -> set[int]:
    """The nodes whose eth0 carries the VIP, as ``ip -json addr`` says."""
    return {i for i, node in enumerate(site.nodes, 1) if VIP in oracles.addresses(node)}


def wait_holders(site: Site, want: set[int], timeout: float = 3) -> None:
    wait_until(lambda: holders(site) == want, timeout, what=f"VIP held by nodes {want}")


def vipcast(site: Site, priority: int, **election: object) -> VipcastNode:
    return start_node(
        site,
        VIPCAST,
        election={"priority": priority, "advert_interval": INTERVAL, **election},
    )


def keepalived(site: Site, priority: int, **options: Any) -> KeepalivedPeer:
    return start_peer(site, KEEPALIVED, priority=priority, advert_int=INTERVAL, **options)


def adverts_go_by(node: VipcastNode, key: str, count: int) -> None:
    """Wait until ``node`` has sent or received (``key``) ``count`` more adverts."""
    start = node.status()[key]
    try:
        wait_until(
            lambda: node.status()[key] >= start + count,
            count * INTERVAL * 3 + 5,  # keepalived under the suite's load can be slow to send
            what=f"{count} more {key} on node{node.index}",
        )
    except AssertionError as e:  # say what the node saw instead
        status = node.status()
        seen = {k: status.get(k) for k in ("state", "master", key, "rejected", "adverts_sent")}
        raise AssertionError(f"{e}; from {start}: {seen}") from None


def priority_zero_from(frames: list[Frame], source: str) -> list[Frame]:
    """VRRP adverts with priority 0 sent from ``source`` (IPv4, protocol 112)."""
    src = bytes(int(b) for b in source.split("."))

    def resigning(f: Frame) -> bool:
        if f.ethertype != 0x0800 or f.data[23] != 112 or f.data[26:30] != src:
            return False
        vrrp = 14 + (f.data[14] & 0x0F) * 4
        return f.data[vrrp + 2] == 0

    return [f for f in frames if resigning(f)]


# -- multicast, pseudo-header checksums (both implementations' default) -----------------


def test_vipcast_master_keepalived_backup_then_resign_and_preempt(site: Site) -> None:
    n1 = vipcast(site, 150)
    n1.wait_state("MASTER")
    ka = keepalived(site, 100)
    ka.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_sent", 15)  # > 4 of keepalived's Master_Down_Intervals
    assert ka.states() == ["BACKUP"], ka.log()
    assert holders(site) == {VIPCAST}
    assert ka.count(BAD_CHECKSUM) == 0

    start = time.monotonic()
    n1.proc.signal(signal.SIGTERM)
    wait_holders(site, {KEEPALIVED}, 2)
    took = time.monotonic() - start
    assert n1.proc.wait(5) == 0, n1.proc.output()
    ka.wait_state("MASTER")
    assert ka.count(RESIGNED) == 1, ka.log()  # it took over on our priority-0 advert
    assert took < 1.0

    n1 = vipcast(site, 150)  # back with the higher priority: it preempts
    n1.wait_state("MASTER")
    ka.wait_state("BACKUP")
    wait_holders(site, {VIPCAST})
    assert "Master received advert from 198.18.0.11 with higher priority 150" in ka.log()


def test_keepalived_master_vipcast_backup_then_crash_and_graceful_stop(site: Site) -> None:
    ka = keepalived(site, 150)
    wait_holders(site, {KEEPALIVED})
    n1 = vipcast(site, 100)
    n1.wait_state("BACKUP")
    wait_until(lambda: n1.status()["master"] == node_address(KEEPALIVED), 2, what="master seen")
    adverts_go_by(n1, "adverts_received", 10)
    status = n1.status()
    assert status["state"] == "BACKUP"
    assert status["rejected"] == {}
    assert holders(site) == {KEEPALIVED}

    # Crash: no priority-0 advert, so the backup waits out Master_Down_Interval.
    down = master_down_interval(100, round(INTERVAL * 100))
    with Capture(site.nodes[VIPCAST - 1]) as cap:
        start = time.monotonic()
        ka.kill()
        n1.wait_state("MASTER", 2)
        took = time.monotonic() - start
        wait_until(lambda: VIP in oracles.addresses(site.nodes[0]), 2, what="VIP on node1")
    assert priority_zero_from(cap.frames, node_address(KEEPALIVED)) == []
    assert n1.status()["last_transition"]["reason"] == "master down timer expired"
    assert down - INTERVAL - 0.05 < took < down + 0.3, f"took {took:.3f} s, down {down:.3f} s"

    # Graceful: keepalived comes back, preempts, then resigns on SIGTERM.
    ka = keepalived(site, 150)
    n1.wait_state("BACKUP", 3)
    wait_holders(site, {KEEPALIVED})
    start = time.monotonic()
    ka.proc.signal(signal.SIGTERM)  # keepalived takes ~1 s to exit: do not wait for it here
    n1.wait_state("MASTER", 2)
    took = time.monotonic() - start
    assert ka.proc.wait(5) == 0, ka.log()
    reason = n1.status()["last_transition"]["reason"]
    assert reason.startswith(f"priority 0 from {node_address(KEEPALIVED)}"), reason
    assert took < down, f"took {took:.3f} s"
    wait_holders(site, {VIPCAST})


# -- checksum forms ---------------------------------------------------------------------


def test_vipcast_accepts_keepalived_adverts_whatever_its_own_send_form(site: Site) -> None:
    ka = keepalived(site, 150)
    wait_holders(site, {KEEPALIVED})
    n1 = vipcast(site, 100, checksum="message-only")
    n1.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_received", 10)
    status = n1.status()
    assert status["state"] == "BACKUP"
    assert status["master"] == node_address(KEEPALIVED)
    assert status["rejected"] == {}
    assert ka.states() == ["BACKUP", "MASTER"]
    assert holders(site) == {KEEPALIVED}


def test_keepalived_rejects_message_only_checksums_and_both_become_master(site: Site) -> None:
    """keepalived 2.2.7 cannot take RFC 9568's form: the docs say "pseudo-header"."""
    n1 = vipcast(site, 150, checksum="message-only")
    n1.wait_state("MASTER")
    ka = keepalived(site, 100)
    ka.wait_log(BAD_CHECKSUM)
    ka.wait_state("MASTER")  # it never heard a valid advert from us
    wait_holders(site, {VIPCAST, KEEPALIVED})
    # we hear keepalived's (pseudo-header) adverts, outrank them and stay master
    adverts_go_by(n1, "adverts_received", 5)
    status = n1.status()
    assert status["state"] == "MASTER"
    assert status["rejected"] == {}
    assert ka.count(BAD_CHECKSUM) >= 5


# -- unicast ---------------------------------------------------------------------------


def test_unicast_peers_interoperate_both_ways(site: Site) -> None:
    me, peer = node_address(VIPCAST), node_address(KEEPALIVED)
    n1 = vipcast(site, 150, unicast_peers=[peer])
    n1.wait_state("MASTER")
    ka = keepalived(site, 100, unicast_src=peer, unicast_peers=[me])
    ka.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_sent", 15)
    assert ka.states() == ["BACKUP"], ka.log()  # it hears our unicast adverts
    assert holders(site) == {VIPCAST}

    n1.proc.signal(signal.SIGTERM)
    assert n1.proc.wait(5) == 0
    ka.wait_state("MASTER", 2)
    assert ka.count(RESIGNED) == 1, ka.log()
    wait_holders(site, {KEEPALIVED})

    n1 = vipcast(site, 50, unicast_peers=[peer])  # lower now: it must follow keepalived
    n1.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_received", 10)
    status = n1.status()
    assert status["state"] == "BACKUP"
    assert status["master"] == peer
    assert status["rejected"] == {}
    assert ka.count(BAD_CHECKSUM) == 0


# -- a VRRPv2 keepalived ---------------------------------------------------------------


def test_vrrpv2_keepalived_in_the_same_vrid_is_rejected_as_version(site: Site) -> None:
    n1 = vipcast(site, 150)
    n1.wait_state("MASTER")
    # VRRPv2 counts whole seconds; priority 255 makes keepalived master (and advertise) at once
    ka = start_peer(site, KEEPALIVED, priority=255, version=2, advert_int=1, state="MASTER")
    wait_until(lambda: n1.status()["rejected"].get("version"), 3, what="version rejections")
    ka.wait_log("wrong version. Received 3 and expect 2")
    status = n1.status()
    assert set(status["rejected"]) == {"version"}
    assert status["state"] == "MASTER"  # VRRPv2 adverts never reach the election
    assert status["adverts_received"] == 0
    wait_holders(site, {VIPCAST, KEEPALIVED})
