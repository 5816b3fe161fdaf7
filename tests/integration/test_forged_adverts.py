"""A LAN host forges and replays VRRP adverts: nothing changes state, every one is counted.

Two vipcast nodes (node1 master at 150, node2 backup at 100) and an intruder on the LAN
switch (198.18.0.50). The forged adverts are built by Scapy (an independent encoder,
valid checksums, TTL 255); the replayed ones are node1's own signed adverts, captured on
the intruder's port and re-sent unchanged. The oracle is ``ip -json addr``, sampled
through and after each attack: node1 keeps the VIP the whole time.

Without the plausibility bounds (docs/protocol.md) one advert at priority 255 from the
intruder left no VIP anywhere for about 2 s, and one announcing a 40.95 s interval for
over 2 minutes (3 x 40.95 s): the master stepped down, the backup waited its new
Master_Down_Interval for a master that never spoke again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRPv3
from scapy.packet import Raw

from tests.lab import oracles
from tests.lab.capture import Capture
from tests.lab.nemesis import INTRUDER, add_intruder, send_raw
from tests.lab.nodes import VipcastNode, start_node
from tests.lab.wait import wait_until
from vipcast import keys
from vipcast.core.vrrp.codec import AUTH_TRAILER_LEN
from vipcast.lab.site import VIP, Host, Site, node_address

pytestmark = [pytest.mark.root]

GROUP = "224.0.0.18"
INTERVAL = 0.1
WATCH = 2.5  # seconds each attack is watched: past the ~2 s outage it used to cause


def forged(priority: int, interval_cs: int, src: str = INTRUDER, trailer: bytes = b"") -> bytes:
    """One VRRPv3 advert for VRID 51 built by Scapy: valid checksum, TTL 255.

    A ``trailer`` goes after the addresses; the IPv4 checksum does not cover it.
    """
    vrrp = VRRPv3(vrid=51, priority=priority, ipcount=1, addrlist=[VIP], adv=interval_cs)
    message = bytes(IP(src=src, dst=GROUP, ttl=255, proto=112) / vrrp)[20:]
    return bytes(IP(src=src, dst=GROUP, ttl=255, proto=112) / Raw(message + trailer))


def nodes(site: Site, auth: dict[str, Any] | None) -> tuple[VipcastNode, VipcastNode]:
    extra = {} if auth is None else {"election.auth": auth}
    n1 = start_node(site, 1, election={"priority": 150, "advert_interval": INTERVAL}, **extra)
    n1.wait_state("MASTER")
    n2 = start_node(site, 2, election={"priority": 100, "advert_interval": INTERVAL}, **extra)
    n2.wait_state("BACKUP")
    return n1, n2


def watch_vip_stays(site: Site, n1: VipcastNode, seconds: float) -> None:
    """node1 holds the VIP at every sample for ``seconds``, node2 never does."""
    end = time.monotonic() + seconds
    samples = 0
    while time.monotonic() < end:
        on1 = VIP in oracles.addresses(site.nodes[0])
        on2 = VIP in oracles.addresses(site.nodes[1])
        assert on1, f"node1 lost the VIP after {samples} samples"
        assert not on2, f"node2 took the VIP after {samples} samples"
        samples += 1
        time.sleep(0.02)  # the sampling pace
    assert samples > 20
    assert n1.status()["state"] == "MASTER"


def send(intruder: Host, packets: list[bytes]) -> None:
    send_raw(intruder, [(p, GROUP) for p in packets])


def rejected(node: VipcastNode, reason: str) -> int:
    return int(node.status()["rejected"].get(reason, 0))


def wait_rejected(node: VipcastNode, reason: str, count: int) -> None:
    wait_until(
        lambda: rejected(node, reason) >= count,
        2,
        what=f"node{node.index}: {count} rejected as {reason}",
    )


def test_unauthenticated_out_of_bounds_adverts_are_not_adopted(site: Site) -> None:
    intruder = add_intruder(site)
    n1, n2 = nodes(site, None)
    before = (n1.status()["transitions"], n2.status()["transitions"])

    send(intruder, [forged(255, round(INTERVAL * 100))])  # the owner's priority, not the owner
    watch_vip_stays(site, n1, WATCH)
    for n in (n1, n2):
        wait_rejected(n, "implausible_priority", 1)

    send(intruder, [forged(200, 4095)])  # outranks node1, announces 40.95 s
    watch_vip_stays(site, n1, WATCH)
    for n in (n1, n2):
        wait_rejected(n, "implausible_interval", 1)
    assert (n1.status()["transitions"], n2.status()["transitions"]) == before
    assert "implausible" in n1.proc.output()  # the WARNING


def test_with_auth_forged_and_replayed_adverts_change_nothing_and_are_counted(
    site: Site,
) -> None:
    intruder = add_intruder(site)
    path = site.lab.workdir / "vrrp.key"
    keys.write_key_file(path, keys.new_key())
    auth = {"keys": {"1": f"file:{path}"}, "active_key": 1, "time_window": 1}
    n1, n2 = nodes(site, auth)
    before = (n1.status()["transitions"], n2.status()["transitions"])
    me = node_address(1)

    with Capture(intruder) as cap:
        wait_until(lambda: len(captured(cap, me)) >= 5, 3, what="node1's adverts captured")
    signed = captured(cap, me)[-5:]
    assert all(len(p) == 20 + 12 + AUTH_TRAILER_LEN for p in signed)

    # unsigned, at the owner's priority; then a trailer with a made-up HMAC, then a replay
    send(intruder, [forged(255, 10)] * 3)
    bogus = signed[-1][:-16] + bytes(16)
    send(intruder, [forged(254, 10, trailer=signed[-1][-AUTH_TRAILER_LEN:])])
    send(intruder, [bogus] * 2)
    send(intruder, signed)  # the captured adverts, re-sent as they were
    watch_vip_stays(site, n1, 1.0)
    wait_rejected(n2, "no_trailer", 3)
    wait_rejected(n2, "bad_hmac", 1 + 2)  # the grafted trailer and the zeroed HMAC
    wait_rejected(n2, "replay", 5)
    wait_rejected(n1, "no_trailer", 3)
    assert rejected(n1, "bad_hmac") == 1  # its own source the kernel drops (a local source)

    time.sleep(1.6)  # the captures age past the 1 s window (the fault's duration)
    send(intruder, signed)
    watch_vip_stays(site, n1, 1.0)
    wait_rejected(n2, "stale", 5)
    assert (n1.status()["transitions"], n2.status()["transitions"]) == before
    assert n2.status()["master"] == me


def captured(cap: Capture, source: str) -> list[bytes]:
    """node1's VRRP packets seen by the intruder, IP header included."""
    src = bytes(int(b) for b in source.split("."))
    found = []
    for f in list(cap.frames):
        if f.ethertype == 0x0800 and f.data[23] == 112 and f.data[26:30] == src:
            total = int.from_bytes(f.data[16:18], "big")
            found.append(f.data[14 : 14 + total])
    return found
