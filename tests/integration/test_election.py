"""The election with real daemons in namespaces, checked with independent oracles."""

from __future__ import annotations

import signal
import socket
import time

import pytest
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRPv3

from tests.lab import oracles
from tests.lab.capture import Capture
from tests.lab.nodes import VipcastNode, start_node
from tests.lab.wait import wait_until
from vipcast.lab.site import VIP, Site, node_address

pytestmark = pytest.mark.root


def holds_vip(site: Site, i: int) -> bool:
    return VIP in oracles.addresses(site.nodes[i - 1])


def pair(site: Site, **overrides: dict[str, object]) -> tuple[VipcastNode, VipcastNode]:
    n1 = start_node(site, 1, election={"priority": 150, **overrides.get("election", {})})
    n2 = start_node(site, 2, election={"priority": 100, **overrides.get("election", {})})
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    wait_until(lambda: n2.status()["master"] == node_address(1), 3, what="node2 hears node1")
    return n1, n2


def router_learns(site: Site, i: int) -> None:
    """The router's ARP entry for the VIP points at node ``i`` (ip -json neigh)."""
    want = oracles.link_mac(site.nodes[i - 1])
    wait_until(
        lambda: oracles.neighbour_mac(site.router, VIP) == want,
        5,
        what=f"router's ARP entry for the VIP -> node{i} ({want})",
    )


def ping_vip(site: Site) -> None:
    proc = site.remote.spawn(["ping", "-c", "1", "-W", "1", VIP])
    assert proc.wait(5) == 0, proc.output()


def test_first_election_gives_the_vip_to_the_highest_priority(site: Site) -> None:
    pair(site)
    assert holds_vip(site, 1)
    assert not holds_vip(site, 2)
    ping_vip(site)
    router_learns(site, 1)


def test_status_reports_master_priority_vips_and_last_transition(site: Site) -> None:
    n1, n2 = pair(site)
    s1, s2 = n1.status(), n2.status()
    assert s1["vips_held"] == [f"{VIP}/24"]
    assert s2["vips_held"] == []
    assert s2["master"] == node_address(1)
    assert s1["last_transition"]["new"] == "MASTER"
    assert "master down" in s1["last_transition"]["reason"]
    assert s1["adverts_sent"] > 0
    assert s2["adverts_received"] > 0


def test_master_link_cut_moves_the_vip_and_the_router_follows(site: Site) -> None:
    n1, n2 = pair(site)
    ping_vip(site)
    router_learns(site, 1)
    site.switch.set_link("p-node1", up=False)  # the cable is pulled at the switch
    n2.wait_state("MASTER", 3)
    n1.wait_state("FAULT", 3)
    wait_until(lambda: not holds_vip(site, 1), 3, what="node1 releases the VIP")
    router_learns(site, 2)
    site.switch.set_link("p-node1", up=True)
    n1.wait_state("MASTER", 5)  # preempt: it comes back
    router_learns(site, 1)


def test_sigterm_resigns_at_once_and_leaves_no_vip(site: Site) -> None:
    n1, n2 = pair(site)
    ping_vip(site)
    router_learns(site, 1)
    start = time.monotonic()
    n1.proc.signal(signal.SIGTERM)
    assert n1.proc.wait(5) == 0, n1.proc.output()
    assert not holds_vip(site, 1)
    n2.wait_state("MASTER", 2)
    # priority 0 shortens the wait to Skew_Time (~0.06 s at 0.1 s adverts), far under 0.3 s
    assert time.monotonic() - start < 1.0
    router_learns(site, 2)


def test_sigkill_of_the_master_process_fails_over_and_a_restart_cleans_up(site: Site) -> None:
    n1, n2 = pair(site)
    n1.proc.signal(signal.SIGKILL)
    n1.proc.wait(5)
    n2.wait_state("MASTER", 3)
    n1b = start_node(site, 1, election={"priority": 150})
    n1b.wait_state("MASTER", 5)
    n2.wait_state("BACKUP", 3)
    assert holds_vip(site, 1)
    assert not holds_vip(site, 2)


def test_nopreempt_keeps_the_current_master(site: Site) -> None:
    n1, n2 = pair(site, election={"preempt": False})
    n1.proc.stop()
    n2.wait_state("MASTER", 3)
    n1b = start_node(site, 1, election={"priority": 150, "preempt": False})
    n1b.wait_state("BACKUP", 3)
    # it stays backup for many advert intervals
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert n1b.state() == "BACKUP"
        assert n2.state() == "MASTER"
    assert holds_vip(site, 2)


def test_unicast_peers_elect_without_multicast(site: Site) -> None:
    with Capture(site.nodes[1]) as cap:
        n1 = start_node(site, 1, election={"priority": 150, "unicast_peers": [node_address(2)]})
        n2 = start_node(site, 2, election={"unicast_peers": [node_address(1)]})
        n1.wait_state("MASTER")
        n2.wait_state("BACKUP")
        adverts = wait_until(
            lambda: [IP(f.data[14:]) for f in cap.matching(lambda f: f.data[23:24] == b"\x70")],
            3,
            what="adverts on node2's wire",
        )
    assert {p.dst for p in adverts} == {node_address(2)}
    assert {p.ttl for p in adverts} == {255}
    assert adverts[0][VRRPv3].vrid == 51


def test_a_vip_deleted_by_hand_comes_back(site: Site) -> None:
    pair(site)
    proc = site.nodes[0].spawn(["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])
    assert proc.wait(5) == 0
    wait_until(lambda: holds_vip(site, 1), 3, what="VIP restored on node1")


def _raw_sender(site: Site, i: int) -> socket.socket:
    sock = site.nodes[i - 1].socket(socket.AF_INET, socket.SOCK_RAW, 112)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    return sock


def _forge(
    priority: int = 254,
    vrid: int = 51,
    ttl: int = 255,
    chksum: int | None = None,
    src: str = "198.18.0.13",
    dst: str = "224.0.0.18",
) -> bytes:
    pkt = IP(src=src, dst=dst, ttl=ttl, proto=112) / VRRPv3(
        vrid=vrid, priority=priority, ipcount=1, addrlist=[VIP], adv=10, chksum=chksum
    )
    return bytes(pkt)


def test_forged_adverts_change_nothing_and_are_counted(site: Site) -> None:
    n1, n2 = pair(site)
    sock = _raw_sender(site, 2)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    forged = {
        "ttl": _forge(ttl=64),
        "checksum": _forge(chksum=0x1234),
        "vrid": _forge(vrid=52),
    }
    for _ in range(3):
        for data in forged.values():
            sock.sendto(data, ("224.0.0.18", 0))
    sock.close()
    wait_until(
        lambda: set(forged) <= set(n1.status()["rejected"]),
        3,
        what=f"rejections counted: {set(forged)}",
    )
    assert n1.state() == "MASTER"
    assert n2.state() == "BACKUP"
    assert holds_vip(site, 1)


def test_unknown_unicast_source_is_rejected(site: Site) -> None:
    n1 = start_node(site, 1, election={"priority": 150, "unicast_peers": [node_address(2)]})
    n1.wait_state("MASTER")
    sock = _raw_sender(site, 2)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    # priority 254 from an address that is not a configured peer: must not win
    sock.sendto(
        _forge(src=node_address(2).replace(".12", ".13"), dst=node_address(1)), (node_address(1), 0)
    )
    sock.close()
    wait_until(
        lambda: n1.status()["rejected"].get("unicast_source"),
        3,
        what="unknown unicast source counted",
    )
    assert n1.state() == "MASTER"


def test_sighup_with_unchanged_settings_causes_no_flap(site: Site) -> None:
    n1, n2 = pair(site)
    before = n1.status()["last_transition"]
    n1.proc.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in n1.proc.output(), 5, what="reload logged")
    assert n1.status()["last_transition"] == before
    assert n1.state() == "MASTER"
    assert n2.state() == "BACKUP"


def test_sighup_applies_a_new_priority(site: Site) -> None:
    n1, n2 = pair(site)
    text = n2.config.read_text().replace("priority = 100", "priority = 200")
    n2.config.write_text(text)
    n2.proc.signal(signal.SIGHUP)
    n2.wait_state("MASTER", 5)  # preempts with its new priority
    n1.wait_state("BACKUP", 5)
    assert n2.status()["priority"] == 200


def test_sigterm_on_a_lone_master_still_releases_the_vip(site: Site) -> None:
    n1 = start_node(site, 1, election={"priority": 150})
    n1.wait_state("MASTER")
    n1.proc.signal(signal.SIGTERM)  # its handover finds nobody; it must stop cleanly anyway
    assert n1.proc.wait(15) == 0, n1.proc.output()
    assert "MASTER -> STOPPED" in n1.proc.output() or "-> STOPPED" in n1.proc.output()
    assert "Traceback" not in n1.proc.output()
    assert not holds_vip(site, 1)


def test_handover_with_no_peer_is_refused_and_the_node_stays_master(site: Site) -> None:
    from vipcast.daemon import control

    n1 = start_node(site, 1, election={"priority": 150})
    n1.wait_state("MASTER")
    answer = control.request(n1.socket, "handover", timeout=15, wait=5)
    assert answer["ok"] is False
    assert "no peer took over" in answer["error"]
    n1.wait_state("MASTER", 3)
    assert n1.status()["priority"] == 150
    assert holds_vip(site, 1)
