"""The election survives its own send paths failing: a takeover while adverts cannot leave.

A ``drop`` verdict in nftables' output hook makes ``sendmsg`` on the raw VRRP socket fail
with EPERM. Before the fix that error escaped the timer callback in the middle of a
takeover: the node was MASTER with no VIP, no adverts and no timer, for good.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.lab import oracles
from tests.lab.capture import Capture
from tests.lab.nodes import start_node
from tests.lab.wait import wait_until
from vipcast.lab.site import VIP, Host, Site, node_address

pytestmark = pytest.mark.root

IPPROTO_VRRP = 112
TABLE = "vipcast_sendfail"


def _nft(host: Host, *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.ns}", "--", "nft", *args],
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
    )


def drop_vrrp_output(host: Host) -> None:
    """Every VRRP packet ``host`` sends is dropped in the output hook: sendmsg gets EPERM."""
    rules = f"""
table inet {TABLE} {{
  chain output {{
    type filter hook output priority 0; policy accept;
    meta l4proto {IPPROTO_VRRP} counter drop
  }}
}}
"""
    _nft(host, "-f", "-", stdin=rules)


def allow_vrrp_output(host: Host) -> None:
    _nft(host, "delete", "table", "inet", TABLE)


def holds_vip(site: Site, i: int) -> bool:
    return VIP in oracles.addresses(site.nodes[i - 1])


def adverts_from(cap: Capture, src: str, after: float) -> int:
    """VRRP packets (IPv4 protocol 112) from ``src`` seen on the wire since ``after``."""
    packed = bytes(int(b) for b in src.split("."))
    return len(
        cap.matching(
            lambda f: (
                f.time >= after
                and f.ethertype == 0x0800
                and f.data[23] == IPPROTO_VRRP
                and f.data[26:30] == packed
            )
        )
    )


def test_takeover_while_adverts_fail_with_eperm_holds_the_vip_and_recovers(site: Site) -> None:
    n1 = start_node(site, 1, election={"priority": 150})
    n2 = start_node(site, 2, election={"priority": 100})
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    wait_until(lambda: n2.status()["master"] == node_address(1), 3, what="node2 hears node1")
    assert n2.status()["send_errors"] == {"advert": 0, "announce": 0, "vip_add": 0, "vip_remove": 0}

    drop_vrrp_output(site.nodes[1])
    n1.proc.kill_group()  # SIGKILL: no resignation, node2 takes over on its down timer
    n1.proc.wait(5)
    # Master_Down_Interval at priority 100, 0.1 s adverts: 0.36 s; the VIP comes with it
    # although node2's takeover advert (and every one after it) fails with EPERM
    wait_until(lambda: holds_vip(site, 2), 2, what="node2 holds the VIP (ip -json addr)")
    assert n2.state() == "MASTER"
    wait_until(
        lambda: n2.status()["send_errors"]["advert"] >= 3,
        2,
        what="node2 counts its failed adverts",
    )
    time.sleep(0.3)  # the fault's duration: more adverts fail meanwhile

    with Capture(site.nodes[0]) as cap:  # node1's wire: its daemon is gone, its port is not
        allow_vrrp_output(site.nodes[1])
        allowed = time.monotonic()
        wait_until(
            lambda: adverts_from(cap, node_address(2), allowed) >= 3,
            2,
            what="node2's adverts on the wire again",
        )
    status = n2.status()
    assert status["state"] == "MASTER"
    assert status["vips_held"] == [f"{VIP}/24"]
    assert holds_vip(site, 2)
    errors_then = status["send_errors"]["advert"]
    time.sleep(0.3)  # several advert intervals with the rule gone: no new errors
    assert n2.status()["send_errors"]["advert"] == errors_then
