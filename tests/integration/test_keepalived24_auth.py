"""vipcast and a real keepalived 2.4.3 in one virtual router with ``auth_hmac``.

keepalived 2.4.3 is built from ``../shared/anchors`` (``build.sh keepalived``, cached; CI
has ``shared/`` beside its clone; ``VIPCAST_SHARED`` points elsewhere). Where it is
absent these tests skip saying so, except with ``CI=true``, where they fail.

node1 runs vipcast, node2 keepalived; VRID 51, VRRPv3, 0.1 s adverts, ``mode enforce``
on both unless a test says otherwise. Oracles: ``ip -json addr`` (who holds the VIP),
keepalived's own log and its stats file (SIGUSR2), vipcast's status, frames on the wire.
"""

from __future__ import annotations

import signal

import pytest

from tests.lab.capture import Capture, Frame
from tests.lab.keepalived24 import (
    BAD_HMAC,
    INTERVAL,
    KEEPALIVED,
    VIPCAST,
    Pair,
    adverts_go_by,
    auth_errors,
    holders,
    ka_auth,
    keepalived24_binary,
    wait_holders,
)
from tests.lab.wait import wait_until
from vipcast.core.vrrp.auth import parse_trailer
from vipcast.core.vrrp.codec import AUTH_TRAILER_LEN
from vipcast.lab.site import Site, node_address

pytestmark = [pytest.mark.root]

KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))


@pytest.fixture(scope="module")
def keepalived24() -> str:
    return keepalived24_binary()


@pytest.fixture
def pair(site: Site, keepalived24: str) -> Pair:
    return Pair(site, keepalived24)


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
        pair.reload_keepalived(100, ka_auth(keys_, active))
        pair.reload_vipcast(150, pair.vipcast_auth(keys_, active))
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
    # keepalived restarts its master's advert timer on every packet it reads, rejected or
    # not: with ours every 0.1 s its own 0.1 s adverts would hardly ever leave
    ka = pair.keepalived(100, ka_auth({1: KEY2}, 1), advert_int=INTERVAL / 2)
    ka.wait_state("MASTER", 3)  # it never hears a valid advert from us
    wait_holders(site, {VIPCAST, KEEPALIVED})
    wait_until(lambda: n1.status()["rejected"].get("bad_hmac", 0) >= 5, 3, what="bad_hmac")
    status = n1.status()
    assert set(status["rejected"]) == {"bad_hmac"}
    assert status["state"] == "MASTER"  # none of its adverts reached our election
    assert status["adverts_received"] == 0
    # keepalived counts on its own clock: wait for its fifth refusal too (a loaded machine
    # once read 4 at the moment ours reached 5)
    wait_until(lambda: auth_errors(ka).get(BAD_HMAC, 0) >= 5, 3, what="keepalived's bad HMAC")
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
