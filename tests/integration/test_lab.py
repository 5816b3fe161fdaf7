"""Self-tests of the namespace lab: the base every integration test stands on."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.lab import faults, oracles
from tests.lab.capture import Capture
from tests.lab.udp import UdpSink, send_numbered
from tests.lab.wait import wait_until
from vipcast.lab import netns
from vipcast.lab.site import REMOTE, Lab, Site, build_site, mac, node_address

pytestmark = pytest.mark.root


def test_datagram_from_remote_centre_reaches_a_node_through_the_router(site: Site) -> None:
    sink = UdpSink(site.nodes[0], "0.0.0.0", 9600)
    try:
        send_numbered(site.remote, (node_address(1), 9600), 5, rate=1000)
        wait_until(lambda: len(sink.received) == 5, 5, what="5 datagrams at node1")
        assert {r.source[0] for r in sink.received} == {REMOTE}
        assert sink.payloads == [b"seq=%d" % i for i in range(5)]
    finally:
        sink.close()


def test_router_arp_entry_for_a_node_is_visible_through_the_oracle(site: Site) -> None:
    proc = site.router.spawn(["ping", "-c", "1", "-W", "2", node_address(2)])
    assert proc.wait(5) == 0, proc.output()
    node_mac = oracles.link_mac(site.nodes[1])
    assert node_mac == mac(site.nodes[1].index, 0)
    assert oracles.neighbour_mac(site.router, node_address(2)) == node_mac


def test_capture_sees_frames_inside_a_namespace(site: Site) -> None:
    with Capture(site.nodes[0]) as cap:
        send_numbered(site.remote, (node_address(1), 9601), 3, rate=1000)
        frames = wait_until(
            lambda: cap.matching(lambda f: f.ethertype == 0x0800 and b"seq=2" in f.data),
            5,
            what="the third datagram on node1's wire",
        )
    assert frames[0].data[:6] == bytes.fromhex(oracles.link_mac(site.nodes[0]).replace(":", ""))


def test_random_loss_drops_about_the_asked_share(site: Site) -> None:
    faults.random_loss(site.nodes[0], 50, udp_dport=9602)
    sink = UdpSink(site.nodes[0], "0.0.0.0", 9602)
    try:
        send_numbered(site.remote, (node_address(1), 9602), 400, rate=4000)
        wait_until(lambda: faults.dropped_by_loss(site.nodes[0]) + len(sink.received) == 400, 5)
        assert 100 < len(sink.received) < 300
    finally:
        sink.close()


def test_processes_are_stopped_and_their_output_kept(lab: Lab) -> None:
    host = lab.host("h")
    proc = host.spawn(["sh", "-c", "echo started; exec sleep 30"])
    wait_until(lambda: "started" in proc.output(), 5)
    assert netns.pids(host.ns) == [proc.pid]
    assert proc.stop(timeout=2) == -15  # SIGTERM


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip() for line in out.stdout.splitlines()}


def test_twenty_sites_built_and_destroyed_leave_nothing_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    links_before = _root_links()
    for _ in range(20):
        with Lab(workdir=tmp_path) as lab:
            s = build_site(lab)
            # a tracked child and an untracked grandchild
            s.remote.spawn(["sh", "-c", "sleep 61.25 & exec sleep 61.25"])
            prefix = lab.prefix
        assert netns.names(prefix) == []
    assert _root_links() == links_before
    leftover = subprocess.run(
        ["pgrep", "-f", "sleep 61.25"], check=False, capture_output=True, text=True
    )
    assert leftover.stdout == ""


def test_sockets_opened_in_a_namespace_stay_there(site: Site) -> None:
    sock = site.nodes[0].socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((node_address(1), 0))  # only node1 has this address
    finally:
        sock.close()
