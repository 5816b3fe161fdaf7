"""vipcast and keepalived 2.4.3 with ``auth_hmac``: an IPv6 virtual router, and the rollout.

node1 runs vipcast, node2 keepalived 2.4.3 (``tests/lab/keepalived24.py``); VRID 51,
VRRPv3, 0.1 s adverts. Oracles: ``ip -json addr`` (who holds the VIP, sampled through
the whole rollout), keepalived's log (its states) and stats file (SIGUSR2), vipcast's
status, the adverts on the wire (a trailer or none).
"""

from __future__ import annotations

import signal
import socket
from typing import Any

import pytest

from tests.lab import oracles
from tests.lab.capture import Capture, Frame
from tests.lab.keepalived24 import (
    AUTH_ERRORS,
    KEEPALIVED,
    VIPCAST,
    HolderSampler,
    Pair,
    adverts_go_by,
    auth_errors,
    holders,
    ka_auth,
    keepalived24_binary,
    wait_holders,
)
from tests.lab.wait import wait_until
from vipcast.core.vrrp.codec import AUTH_TRAILER_LEN
from vipcast.lab.site import VIP6, Host, Lab, Site, build_site, node_address

pytestmark = [pytest.mark.root]

KEY = bytes(range(32))
ROLLOUT = ("receive-only", "permissive", "enforce")  # docs/operations.md, in this order
ADVERTS = 5  # adverts that go by after each reload (0.5 s)


@pytest.fixture(scope="module")
def keepalived24() -> str:
    return keepalived24_binary()


def link_local(host: Host) -> str:
    found = [a for a in oracles.addresses(host) if a.startswith("fe80:")]
    assert len(found) == 1, found
    return found[0]


# -- IPv6: both signing, failover both ways -------------------------------------------------


def test_ipv6_vip_with_auth_hmac_fails_over_both_ways(lab: Lab, keepalived24: str) -> None:
    site = build_site(lab, nodes=2, ipv6=True)
    pair = Pair(site, keepalived24, vips=(f"{VIP6}/64",))
    auth, ka_block = pair.vipcast_auth({1: KEY}, 1), ka_auth({1: KEY}, 1)
    n1 = pair.vipcast(150, auth)
    n1.wait_state("MASTER")
    ka = pair.keepalived(100, ka_block)
    ka.wait_state("BACKUP")
    adverts_go_by(n1, "adverts_sent", 10)  # signed from fe80::, verified (enforce)
    assert ka.states() == ["BACKUP"], ka.log()
    assert holders(site, VIP6) == {VIPCAST}
    assert ka.stats()["Advertisements/Received"] >= 5
    assert auth_errors(ka) == {}, ka.log()

    n1.proc.signal(signal.SIGTERM)  # our signed priority 0: keepalived takes the VIP
    wait_holders(site, {KEEPALIVED}, 3, vip=VIP6)
    assert n1.proc.wait(5) == 0, n1.proc.output()
    ka.wait_state("MASTER")
    assert ka.count("Backup received priority 0 advertisement") == 1, ka.log()

    n1 = pair.vipcast(100, auth)  # now the backup: keepalived's signed IPv6 adverts
    n1.wait_state("BACKUP")
    master = link_local(site.nodes[KEEPALIVED - 1])
    wait_until(lambda: n1.status()["master"] == master, 3, what="node1 hears keepalived")
    adverts_go_by(n1, "adverts_received", 10)
    ka.proc.signal(signal.SIGTERM)  # its signed priority 0: we take over at once
    n1.wait_state("MASTER", 2)
    wait_holders(site, {VIPCAST}, 3, vip=VIP6)
    assert n1.status()["last_transition"]["reason"].startswith(f"priority 0 from {master}")
    assert ka.proc.wait(5) == 0
    assert n1.status()["rejected"] == {}
    assert n1.status()["transitions"] == 2  # INIT -> BACKUP -> MASTER: nothing in between


# -- the documented rollout: unauthenticated -> receive-only -> permissive -> enforce ---------


def signed_adverts(frames: list[Frame], source: str) -> list[bool]:
    """For each IPv4 VRRP advert from ``source``, in order: has it a trailer?"""
    src = socket.inet_aton(source)
    found = []
    for f in list(frames):
        ip = f.data[14:]
        if f.ethertype != 0x0800 or ip[9] != 112 or ip[12:16] != src:
            continue
        vrrp = ip[(ip[0] & 0x0F) * 4 : int.from_bytes(ip[2:4], "big")]
        found.append(len(vrrp) == 8 + 4 * vrrp[3] + AUTH_TRAILER_LEN)
    return found


class Rollout:
    """One mixed pair stepping through the modes; ``master`` is the side with priority 150."""

    def __init__(self, pair: Pair, master: int) -> None:
        self.pair, self.master = pair, master
        self.backup = VIPCAST if master == KEEPALIVED else KEEPALIVED
        self.priority = {master: 150, self.backup: 100}

    def auths(self, mode: str | None) -> dict[int, dict[str, Any] | None]:
        if mode is None:
            return {VIPCAST: None, KEEPALIVED: None}
        ours = self.pair.vipcast_auth({1: KEY}, 1, mode)
        return {VIPCAST: ours, KEEPALIVED: ka_auth({1: KEY}, 1, mode)}

    def start(self) -> None:
        """Both unauthenticated, the master first."""
        pair, auth = self.pair, self.auths(None)
        for side in (self.master, self.backup):
            if side == VIPCAST:
                pair.vipcast(self.priority[VIPCAST], auth[VIPCAST])
            else:
                pair.keepalived(self.priority[KEEPALIVED], auth[KEEPALIVED])
        wait_holders(pair.site, {self.master})
        assert pair.n1 is not None
        pair.n1.wait_state("MASTER" if self.master == VIPCAST else "BACKUP")
        assert pair.ka is not None
        pair.ka.wait_state("BACKUP" if self.master == VIPCAST else "MASTER")
        self.adverts()

    def reload(self, side: int, mode: str) -> None:
        auth = self.auths(mode)[side]
        if side == VIPCAST:
            self.pair.reload_vipcast(self.priority[VIPCAST], auth)
        else:
            self.pair.reload_keepalived(self.priority[KEEPALIVED], auth)

    def adverts(self) -> None:
        """The master's adverts go by, as vipcast sends or accepts them."""
        n1 = self.pair.n1
        assert n1 is not None
        adverts_go_by(n1, "adverts_sent" if self.master == VIPCAST else "adverts_received", ADVERTS)


@pytest.mark.parametrize(
    "master", [VIPCAST, KEEPALIVED], ids=["vipcast-master", "keepalived-master"]
)
def test_rollout_by_reloads_keeps_one_master_and_never_moves_the_vip(
    site: Site, keepalived24: str, master: int
) -> None:
    """The docs' rollout: each sweep a reload on each node, in either order, hitless.

    Per sweep one side reloads first and adverts go by in the mixed state before the
    other follows: receive-only and permissive the master first (a receive-only backup
    verifies signed adverts), enforce the backup first (an enforcing backup, a master
    still permissive). After each sweep: the master's adverts carry a trailer exactly
    when the mode signs; no rejection on either side; one holder, no transition.
    """
    pair = Pair(site, keepalived24)
    rollout = Rollout(pair, master)
    rollout.start()
    n1, ka = pair.n1, pair.ka
    assert n1 is not None
    assert ka is not None
    transitions, ka_states = n1.status()["transitions"], ka.states()
    source = node_address(master)
    sampler = HolderSampler(site)
    with Capture(site.nodes[VIPCAST - 1]) as cap:
        for mode in ROLLOUT:
            first, second = (
                (rollout.backup, master) if mode == "enforce" else (master, rollout.backup)
            )
            rollout.reload(first, mode)
            rollout.adverts()
            rollout.reload(second, mode)
            want = [mode != "receive-only"] * ADVERTS
            wait_until(
                lambda want=want: signed_adverts(cap.frames, source)[-ADVERTS:] == want,
                3,
                what=f"the master's adverts in mode {mode}",
            )
            assert holders(site) == {master}, mode
            assert n1.status()["transitions"] == transitions, mode
            assert ka.states() == ka_states, (mode, ka.log())
            assert n1.status()["rejected"] == {}, mode
            assert auth_errors(ka) == {}, (mode, ka.log())
    assert sampler.stop() == {frozenset({master})}  # never moved, never two holders

    # the backup really enforces: the master falling back to unsigned adverts is refused
    rollout.reload(master, "receive-only")
    if master == VIPCAST:
        missing = f"{AUTH_ERRORS}/Missing"
        wait_until(lambda: auth_errors(ka).get(missing, 0) >= 3, 3, what="keepalived: Missing")
    else:
        wait_until(lambda: n1.status()["rejected"].get("no_trailer", 0) >= 3, 3, what="no_trailer")
