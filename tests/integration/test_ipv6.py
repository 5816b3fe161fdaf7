"""IPv6 end to end with real daemons: an IPv6 VIP, feeds received on it, the cluster over
an ff12:: group or unicast, replies from the IPv6 VIP, a crash failover."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab import faults, oracles
from tests.lab.capture import Capture
from tests.lab.nodes import VipcastNode, start_node
from tests.lab.udp import UdpSink, send_numbered
from tests.lab.wait import wait_until
from vipcast.api import Receiver
from vipcast.lab.site import REMOTE6, VIP6, Host, Lab, Site, build_site, node_address6

pytestmark = pytest.mark.root

EXAMPLE = Path(__file__).parents[2] / "examples" / "node-ipv6.toml"
GROUP = "ff12::86:1"
GROUP6 = {"group": f"[{GROUP}]:8601"}
FEED_PORT = 8600


@pytest.fixture
def site6(lab: Lab) -> Site:
    return build_site(lab, nodes=2, ipv6=True)


def feed(**over: Any) -> dict[str, Any]:
    return {"name": "radar", "port": FEED_PORT, "deliver": ["127.0.0.1:9600"], **over}


def ipv6_sections(
    site: Site, i: int, cluster: dict[str, Any], *, unicast: bool = False
) -> dict[str, dict[str, Any]]:
    election: dict[str, Any] = {"priority": 150 if i == 1 else 100}
    if unicast:
        election["unicast_peers"] = [node_address6(j) for j in (1, 2) if j != i]
    return {
        "election": election,
        "vip": {"addresses": [f"{VIP6}/64"]},
        "cluster": cluster,
    }


def ipv6_pair(
    site: Site, cluster: dict[str, Any] = GROUP6, *, unicast: bool = False, **feed_over: Any
) -> tuple[VipcastNode, VipcastNode]:
    feeds = [feed(**feed_over)]
    n1 = start_node(site, 1, feeds=feeds, **ipv6_sections(site, 1, cluster, unicast=unicast))
    n2 = start_node(site, 2, feeds=feeds, **ipv6_sections(site, 2, cluster, unicast=unicast))
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    return n1, n2


def sinks(site: Site) -> list[UdpSink]:
    return [UdpSink(node, "127.0.0.1", 9600) for node in site.nodes]


def link_local(host: Host) -> str:
    """The host's fe80:: address, as ``ip -json`` reports it."""
    found = [a for a in oracles.addresses(host) if a.startswith("fe80:")]
    assert len(found) == 1, found
    return found[0]


def test_both_nodes_apps_receive_the_identical_sequence_over_an_ff12_group(
    site6: Site,
) -> None:
    n1, n2 = ipv6_pair(site6)
    apps = sinks(site6)
    sent = send_numbered(site6.remote, (VIP6, FEED_PORT), 1000, rate=5000)
    for app in apps:
        wait_until(lambda app=app: len(app.received) >= 1000, 10, what="1000 at each app")
        assert app.payloads == sent
    assert VIP6 in oracles.addresses(site6.nodes[0])
    radar = lambda n: n.status()["feeds"].get("radar", {})  # noqa: E731  (reported every 0.5 s)
    wait_until(lambda: radar(n1).get("relayed") == 1000, 5, what="node1's counters")
    wait_until(lambda: radar(n2).get("delivered") == 1000, 5, what="node2's counters")
    assert radar(n2)["relayed"] == 0


def envelope_sources(cap: Capture) -> set[str]:
    """IPv6 sources of the UDP packets to the cluster group seen on the wire."""
    group = socket.inet_pton(socket.AF_INET6, GROUP)
    ip6 = [f.data[14:] for f in cap.frames if f.ethertype == 0x86DD]
    return {
        socket.inet_ntop(socket.AF_INET6, p[8:24])
        for p in ip6
        if p[6] == socket.IPPROTO_UDP
        and p[24:40] == group
        and p[42:44] == (8601).to_bytes(2, "big")
    }


def test_envelopes_leave_the_master_from_its_link_local_address(site6: Site) -> None:
    """The relay's source is the address the election knows the master by."""
    _n1, n2 = ipv6_pair(site6)
    master = link_local(site6.nodes[0])
    wait_until(lambda: n2.status()["master"] == master, 3, what="node2 hears node1")
    with Capture(site6.nodes[1]) as cap:
        send_numbered(site6.remote, (VIP6, FEED_PORT), 5, rate=1000)
        wait_until(lambda: envelope_sources(cap), 5, what="an envelope on node2's wire")
    assert envelope_sources(cap) == {master}


def test_losses_are_recovered_by_nacks_to_the_link_local_relay(site6: Site) -> None:
    """A NACK goes back to fe80::x%eth0: without the scope it could not be sent."""
    _n1, n2 = ipv6_pair(site6)
    faults.random_loss(site6.nodes[1], 10, udp_dport=8601)
    apps = sinks(site6)
    sent = send_numbered(site6.remote, (VIP6, FEED_PORT), 3000, rate=3000)
    for app in apps:
        wait_until(lambda app=app: len(app.received) >= 3000, 15, what="3000 at each app")
        assert app.payloads == sent
    assert faults.dropped_by_loss(site6.nodes[1]) > 0
    recovered = lambda: n2.status()["feeds"]["radar"]["recovered"]  # noqa: E731
    assert wait_until(recovered, 5, what="node2's recoveries reported")


def test_unicast_receivers_over_ipv6_with_unicast_vrrp(site6: Site) -> None:
    receivers = {"receivers": [f"[{node_address6(i)}]:8601" for i in (1, 2)]}
    n1, n2 = ipv6_pair(site6, receivers, unicast=True)
    assert n1.status()["primary_address"] == node_address6(1)  # VRRP and relay from the ULA
    wait_until(lambda: n2.status()["master"] == node_address6(1), 3, what="node2 hears node1")
    apps = sinks(site6)
    sent = send_numbered(site6.remote, (VIP6, FEED_PORT), 500, rate=5000)
    for app in apps:
        wait_until(lambda app=app: len(app.received) >= 500, 10, what="500 at each app")
        assert app.payloads == sent


def test_after_a_crash_node2_takes_the_ipv6_vip_and_its_apps_keep_receiving(
    site6: Site,
) -> None:
    n1, n2 = ipv6_pair(site6, mode="envelope")
    with site6.nodes[1].entered():
        rx = Receiver("127.0.0.1", 9600)
    try:
        send_numbered(site6.remote, (VIP6, FEED_PORT), 10, rate=1000, src_port=40123)
        before = [rx.receive(timeout=5) for _ in range(10)]
        n1.proc.kill_group(signal.SIGKILL)  # the node dies: daemon and data plane at once
        n2.wait_state("MASTER", 3)
        wait_until(lambda: VIP6 in oracles.addresses(site6.nodes[1]), 3, what="VIP on node2")
        send_numbered(site6.remote, (VIP6, FEED_PORT), 10, rate=1000, src_port=40123)
        after = [rx.receive(timeout=5) for _ in range(10)]
    finally:
        rx.close()
    assert all(before)
    assert all(after)
    assert [m.payload for m in after if m] == [b"seq=%d" % i for i in range(10)]
    assert {m.session for m in before if m} != {m.session for m in after if m}
    assert [m.sequence for m in after if m] == list(range(1, 11))
    first = after[0]
    assert first is not None
    assert (first.source, first.destination) == ((REMOTE6, 40123), (VIP6, FEED_PORT))


def test_replies_leave_from_the_ipv6_vip_and_feed_port(site6: Site) -> None:
    ipv6_pair(site6, outbound="127.0.0.1:9700", send_to=[f"[{REMOTE6}]:8600"])
    remote = UdpSink(site6.remote, REMOTE6, 8600)
    try:
        for node in site6.nodes:  # the app on every node replies
            sock = node.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(b"reply from " + node.name.encode(), ("127.0.0.1", 9700))
            sock.close()
        wait_until(lambda: remote.received, 5, what="a reply at the remote centre")
    finally:
        remote.close()
    assert [r.data for r in remote.received] == [b"reply from node1"]  # the master's only
    assert remote.received[0].source == (VIP6, FEED_PORT)


# ---------------------------------------------------------------- check-config on a host


def check_config(host: Host, path: Path) -> subprocess.CompletedProcess[str]:
    vipcast = [sys.executable, "-m", "vipcast", "check-config", str(path)]
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.ns}", "--", *vipcast],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_ipv6_example_passes_check_config_on_an_ipv6_node(site6: Site) -> None:
    done = check_config(site6.nodes[0], EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_check_config_rejects_ipv6_unicast_on_a_link_local_only_interface(
    site: Site, tmp_path: Path
) -> None:
    """The plain site's nodes have IPv6 link-local addresses only."""
    path = tmp_path / "unicast6.toml"
    path.write_text(
        '[node]\nname = "n1"\ninterface = "eth0"\n'
        '[election]\nvrid = 51\nunicast_peers = ["fd00:198:18::c"]\n'
        '[vip]\naddresses = ["fd00:198:18::100/64"]\n'
        '[cluster]\nreceivers = ["[fd00:198:18::b]:8601", "[fd00:198:18::c]:8601"]\n'
        '[[feed]]\nname = "radar"\nport = 8600\ndeliver = ["127.0.0.1:9600"]\n'
    )
    done = check_config(site.nodes[0], path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no global IPv6 address" in done.stderr
