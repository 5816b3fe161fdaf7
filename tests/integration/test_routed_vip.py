"""The VIP across subnets: a host route announced by each node's BIRD to the router's.

Oracle: the router's kernel route to VIP/32 (``ip -json route``) and BIRD's own view
(``birdc show route``); each node's table 100 and ``lo`` as ``ip -json`` reports them.
Leadership from a 3-member etcd, one member in each subnet (VRRP cannot cross the
router); the tee by unicast envelopes through the router, losses on one node recovered
by NACK across it. The leader cut from the etcd majority (not from the router) stops before
the next term relays or replies.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from typing import Any

import pytest

from tests.integration import test_etcd_fencing as fencing
from tests.lab import checker, faults, oracles
from tests.lab.capture import Capture
from tests.lab.nodes import VipcastNode, render_config
from tests.lab.udp import UdpSink, send_numbered
from tests.lab.wait import wait_until
from vipcast.lab.routed import (
    ROUTE_PROTOCOL,
    ROUTE_TABLE,
    VIP,
    RoutedSite,
    build_routed_site,
    established,
    node_address,
    router_route,
)
from vipcast.lab.site import ETCD_CLIENT_PORT, ETCD_PEER_PORT, REMOTE, Host, Lab, Site

pytestmark = pytest.mark.root
TTL = 2  # etcd 3.4's smallest grant
FEED = {
    "name": "radar",
    "port": 8600,
    "deliver": ["127.0.0.1:9600"],
    "outbound": "127.0.0.1:9700",
    "send_to": [f"{REMOTE}:8700"],
}


@pytest.fixture
def routed(lab: Lab) -> RoutedSite:
    site = build_routed_site(lab)  # the etcd members answer healthy once it returns
    wait_until(lambda: established(site), 15, what="BGP sessions node1, node2 established")
    return site


def node_table(site: RoutedSite | Site, i: int) -> dict[str, Any]:
    sock = str(site.lab.workdir / f"node{i}.sock")
    return {"name": f"node{i}", "interface": "eth0", "control_socket": sock}


def etcd_sections(site: RoutedSite, i: int) -> dict[str, dict[str, Any]]:
    nodes = [node_address(1), node_address(2)]
    return {
        "node": node_table(site, i),
        "election": {"backend": "etcd"},
        "etcd": {"endpoints": site.etcd_endpoints(i), "lease_ttl": TTL, "renew_interval": 0.25},
        "vip": {
            "addresses": [f"{VIP}/32"],
            "announce": "route",
            "route_table": ROUTE_TABLE,
            "route_protocol": ROUTE_PROTOCOL,
        },
        "cluster": {"receivers": [f"{a}:8601" for a in nodes], "members": nodes},
    }


def start(
    site: RoutedSite | Site, i: int, sections: dict[str, dict[str, Any]], feeds: list[Any]
) -> VipcastNode:
    path = site.lab.workdir / f"node{i}-{len(site.lab.processes)}.toml"
    path.write_text(render_config(sections, feeds))
    proc = site.nodes[i - 1].spawn(
        [sys.executable, "-m", "vipcast", "run", "--config", str(path)], name="vipcast"
    )
    node = VipcastNode(i, path, sections["node"]["control_socket"], proc)
    wait_until(lambda: node.state() is not None or proc.returncode is not None, 10)
    assert proc.returncode is None, proc.output()
    return node


def leader_of(nodes: list[VipcastNode]) -> tuple[VipcastNode, VipcastNode]:
    def find() -> tuple[VipcastNode, VipcastNode] | None:
        states = [n.status() for n in nodes]
        leaders = [n for n, s in zip(nodes, states, strict=True) if s["state"] == "MASTER"]
        if len(leaders) == 1 and all(s["master"] for s in states):
            return leaders[0], next(n for n in nodes if n is not leaders[0])
        return None

    return wait_until(find, 10, what="one etcd leader, known to both")


def table_routes(host: Host) -> list[dict[str, Any]]:
    """The node's table 100 (``ip -json``; asking for a table never used is an error)."""
    routes = oracles.ip_json(host, "route", "show", "table", "all")
    return [r for r in routes if r.get("table") == str(ROUTE_TABLE)]


def announced(host: Host) -> bool:
    """The node's table 100 holds our host route, and ``lo`` the VIP (``ip -json``)."""
    routes = table_routes(host)
    ours = [r for r in routes if r["dst"] == VIP and r.get("protocol") == str(ROUTE_PROTOCOL)]
    if ours:
        assert ours[0]["dev"] == "lo", ours
    return bool(ours) and VIP in oracles.addresses(host, "lo")


def withdrawn(host: Host) -> bool:
    return not table_routes(host) and VIP not in oracles.addresses(host, "lo")


def routed_to(site: RoutedSite, node: VipcastNode) -> bool:
    """The router's kernel and its BIRD both send VIP/32 to ``node`` only."""
    if router_route(site) != [node_address(node.index)]:
        return False
    shown = site.birds["router"].birdc("show", "route", "for", f"{VIP}/32", "all")
    vias = [line.split()[1] for line in shown.splitlines() if line.strip().startswith("via ")]
    return vias == [node_address(node.index)]


def test_the_route_follows_the_leader_across_subnets_and_never_outlives_it(
    routed: RoutedSite,
) -> None:
    site = routed
    nodes = [start(site, i, etcd_sections(site, i), [FEED]) for i in (1, 2)]
    leader, follower = leader_of(nodes)
    lead_host, follow_host = site.nodes[leader.index - 1], site.nodes[follower.index - 1]
    wait_until(lambda: routed_to(site, leader), 5, what="the router's route via the leader")
    assert announced(lead_host)
    assert withdrawn(follow_host)
    assert leader.status()["vips_held"] == [f"{VIP}/32"]

    apps = [UdpSink(node, "127.0.0.1", 9600) for node in site.nodes]
    faults.random_loss(follow_host, 10, udp_dport=8601)  # envelopes lost behind the router
    sent = send_numbered(site.remote, (VIP, 8600), 1000, rate=2000)
    for app in apps:
        wait_until(lambda app=app: len(app.received) >= 1000, 15, what="1000 at each app")
    assert faults.dropped_by_loss(follow_host) > 0
    faults.clear_loss(follow_host)
    assert apps[0].payloads == sent
    assert apps[1].payloads == sent
    assert follower.status()["feeds"]["radar"]["recovered"] > 0  # by NACK, across the router

    remote = UdpSink(site.remote, REMOTE, 8700)
    for node in site.nodes:  # every node's app replies; only the leader's leaves
        sock = node.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"reply from " + node.name.encode(), ("127.0.0.1", 9700))
        sock.close()
    wait_until(lambda: remote.received, 5, what="a reply at the remote centre")
    assert [r.data for r in remote.received] == [b"reply from " + lead_host.name.encode()]
    assert remote.received[0].source == (VIP, 8600)

    leader.proc.signal(signal.SIGKILL)  # the daemon only: its guard withdraws the route
    wait_until(lambda: withdrawn(lead_host), 3, what="the guard withdraws the dead leader's")
    wait_until(lambda: routed_to(site, follower), TTL + 3, what="the route moves over")
    assert announced(follow_host)
    survivor = apps[follower.index - 1]
    before = len(survivor.received)
    after = send_numbered(site.remote, (VIP, 8600), 200, rate=2000)
    wait_until(lambda: len(survivor.received) >= before + 200, 10, what="traffic after failover")
    assert survivor.payloads[before:] == after

    follower.proc.kill_group(signal.SIGKILL)  # daemon, guard and data plane at once
    follower.proc.wait(5)
    assert announced(follow_host)  # nobody was left to withdraw it: BIRD still announces it
    assert routed_to(site, follower)
    release = follow_host.spawn(
        [sys.executable, "-m", "vipcast", "release", "--config", str(follower.config)],
        name="release",
    )  # the unit's ExecStopPost=
    assert release.wait(30) == 0, release.output()
    assert f"released {VIP}/32 from lo and table {ROUTE_TABLE}" in release.output()
    assert withdrawn(follow_host)
    wait_until(lambda: router_route(site) == [], 3, what="the router's route withdrawn")


def test_route_mode_with_vrrp_on_one_lan_sends_no_arp(site: Site) -> None:
    """The same announcement under the VRRP backend: table 100 on the master, no GARP."""
    vip = {"addresses": [f"{VIP}/32"], "announce": "route"}

    def vrrp(i: int, priority: int) -> dict[str, dict[str, Any]]:
        election = {"vrid": 51, "priority": priority, "advert_interval": 0.1}
        return {"node": node_table(site, i), "election": election, "vip": vip}

    with Capture(site.router, "eth0") as capture:
        n1 = start(site, 1, vrrp(1, 150), [])
        n2 = start(site, 2, vrrp(2, 100), [])
        n1.wait_state("MASTER")
        n2.wait_state("BACKUP")
        wait_until(lambda: announced(site.nodes[0]), 3, what="the master's host route")
        assert withdrawn(site.nodes[1])
        n1.proc.signal(signal.SIGTERM)  # planned: the backup takes over, node1 withdraws
        n2.wait_state("MASTER", 5)
        wait_until(lambda: announced(site.nodes[1]), 3, what="the new master's host route")
        wait_until(lambda: withdrawn(site.nodes[0]), 5, what="the old master withdraws")
        adverts = capture.matching(lambda f: f.ethertype == 0x0800 and f.data[23] == 112)
        arp = capture.matching(lambda f: f.ethertype == 0x0806)
    assert adverts  # the capture saw the election
    assert [f for f in arp if f.data[28:32] == socket.inet_aton(VIP)] == []


def cut_from_etcd_majority(host: Host) -> None:
    """Drop etcd's client and peer traffic on ``host``'s link (nft table ``etcdcut``):
    its daemon still reaches its own member (local), which is now a minority; BGP, the
    feed and the envelopes pass."""
    ports = f"{{ {ETCD_CLIENT_PORT}, {ETCD_PEER_PORT} }}"
    faults.nft(
        host,
        "table inet etcdcut {\n"
        "  chain in { type filter hook input priority 0;\n"
        f'    iifname "eth0" tcp dport {ports} drop; iifname "eth0" tcp sport {ports} drop; }}\n'
        "  chain out { type filter hook output priority 0;\n"
        f'    oifname "eth0" tcp dport {ports} drop; oifname "eth0" tcp sport {ports} drop; }}\n'
        "}\n",
    )


def test_a_leader_cut_from_the_etcd_majority_stops_before_the_next_term_across_subnets(
    routed: RoutedSite,
) -> None:
    """The 3-member etcd of the two-site lab: the leader keeps the router (BGP, the feed,
    the envelopes) and its own member, loses the other two. The checker finds no overlap
    of relayed terms and no request answered twice; the route moves to the new leader."""
    site = routed
    nodes = [start(site, i, etcd_sections(site, i), [fencing.FEED]) for i in (1, 2)]
    leader, follower = leader_of(nodes)
    wait_until(lambda: routed_to(site, leader), 5, what="the router's route via the leader")
    old_term = leader.status()["term"]
    for node in nodes:
        wait_until(lambda node=node: fencing.feed_term(node) == old_term, 5, what="term known")
    apps = [
        fencing.recorder(site, host, "app", "9600", "--reply", "9700", "--reply-every", "1")
        for host in site.nodes
    ]
    for _, out in apps:
        wait_until(lambda out=out: out.with_suffix(".ready").exists(), 10, what="app ready")
    rate, seconds = fencing.RATE, fencing.SECONDS
    sender, sent = fencing.recorder(
        site, site.remote, "send", VIP, "8600", "--count", str(rate * seconds),
        "--rate", str(rate), "--replies",
    )  # fmt: skip
    time.sleep(fencing.CUT_AFTER)  # the fault's time: traffic under the first term
    lead_host = site.nodes[leader.index - 1]
    cut_from_etcd_majority(lead_host)
    wait_until(lambda: follower.status()["state"] == "MASTER", TTL + 4, what="a new leader")
    new_term = follower.status()["term"]
    wait_until(lambda: routed_to(site, follower), 5, what="the route via the new leader")
    assert withdrawn(lead_host)  # the cut-off leader let go of route and address
    wait_until(sent.exists, seconds + 10, what="the sender done, replies counted")
    for proc, _ in apps:
        proc.stop()
    faults.nft_delete(lead_host, "etcdcut")

    records = {
        f"node{i + 1}": json.loads(out.read_text())["records"] for i, (_, out) in enumerate(apps)
    }
    run = fencing.recorded_run(records, json.loads(sent.read_text()), VIP)
    spans = checker.term_spans(run)
    assert sorted(spans) == [old_term, new_term], spans  # both terms relayed: not vacuous
    assert checker.check_terms(run) == []  # no overlap of relayed terms
    assert checker.check_replies(run) == []  # none twice, every one from the VIP
    answered = {r.number for r in run.replies}
    late = [d for d in run.nodes[f"node{follower.index}"].deliveries if d.term == new_term]
    assert sum(d.number in answered for d in late) > rate // 2  # answered after the cut too
    sender.stop()
