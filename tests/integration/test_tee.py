"""The tee with real daemons: every datagram sent to the VIP reaches the apps on every node."""

from __future__ import annotations

import signal
import socket
from typing import Any

import pytest

from tests.lab import oracles
from tests.lab.faults import stalled
from tests.lab.nodes import VipcastNode, start_node
from tests.lab.udp import UdpSink, send_numbered
from tests.lab.wait import wait_until
from vipcast.api import Receiver
from vipcast.lab.site import REMOTE, VIP, Site, node_address

pytestmark = pytest.mark.root

GROUP = {"group": "239.255.86.1:8601"}
UNICAST = {"receivers": [f"{node_address(1)}:8601", f"{node_address(2)}:8601"]}


def feed(**over: Any) -> dict[str, Any]:
    return {"name": "radar", "port": 8600, "deliver": ["127.0.0.1:9600"], **over}


def tee_pair(
    site: Site, cluster: dict[str, Any] = GROUP, **feed_over: Any
) -> tuple[VipcastNode, VipcastNode]:
    feeds = [feed(**feed_over)]
    n1 = start_node(site, 1, election={"priority": 150}, cluster=cluster, feeds=feeds)
    n2 = start_node(site, 2, cluster=cluster, feeds=feeds)
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    return n1, n2


def sinks(site: Site, port: int = 9600) -> list[UdpSink]:
    return [UdpSink(node, "127.0.0.1", port) for node in site.nodes]


def got(sink: UdpSink, n: int) -> bool:
    return len(sink.received) >= n


def dataplane_pid(node: VipcastNode) -> int:
    """The data-plane child of a ``vipcast run`` process."""
    children = f"/proc/{node.proc.pid}/task/{node.proc.pid}/children"
    with open(children) as f:
        return int(f.read().split()[0])


def test_both_nodes_apps_receive_the_identical_sequence(site: Site) -> None:
    tee_pair(site)
    apps = sinks(site)
    sent = send_numbered(site.remote, (VIP, 8600), 2000, rate=5000)
    for app in apps:
        wait_until(lambda app=app: got(app, 2000), 10, what="2000 datagrams at each app")
    assert apps[0].payloads == sent
    assert apps[1].payloads == sent


def test_envelope_mode_shows_the_original_sender_through_the_python_api(site: Site) -> None:
    with site.nodes[1].entered():
        rx = Receiver("127.0.0.1", 9600)
    tee_pair(site, mode="envelope")
    try:
        send_numbered(site.remote, (VIP, 8600), 5, rate=1000, src_port=40123)
        messages = [rx.receive(timeout=5) for _ in range(5)]
    finally:
        rx.close()
    assert all(m is not None for m in messages)
    assert [m.payload for m in messages if m] == [b"seq=%d" % i for i in range(5)]
    first = messages[0]
    assert first is not None
    assert first.source == (REMOTE, 40123)
    assert first.destination == (VIP, 8600)
    assert [m.sequence for m in messages if m] == [1, 2, 3, 4, 5]
    assert first.session > 0
    assert first.feed == 1


def test_transparent_mode_preserves_the_original_source(site: Site) -> None:
    tee_pair(site, mode="transparent")
    apps = sinks(site)
    send_numbered(site.remote, (VIP, 8600), 20, rate=2000, src_port=40777)
    for app in apps:
        wait_until(lambda app=app: got(app, 20), 5, what="20 datagrams")
        assert {r.source for r in app.received} == {(REMOTE, 40777)}


def test_unicast_fanout_reaches_every_receiver(site: Site) -> None:
    tee_pair(site, cluster=UNICAST)
    apps = sinks(site)
    sent = send_numbered(site.remote, (VIP, 8600), 500, rate=5000)
    for app in apps:
        wait_until(lambda app=app: got(app, 500), 5, what="500 datagrams")
        assert app.payloads == sent


def test_after_a_master_crash_delivery_resumes_under_a_new_session(site: Site) -> None:
    n1, n2 = tee_pair(site, mode="envelope", deliver=["127.0.0.1:9600"])
    with site.nodes[1].entered():
        rx = Receiver("127.0.0.1", 9600)
    try:
        send_numbered(site.remote, (VIP, 8600), 10, rate=1000)
        before = [rx.receive(timeout=5) for _ in range(10)]
        n1.proc.kill_group(signal.SIGKILL)  # the node dies: daemon and data plane at once
        n2.wait_state("MASTER", 3)
        send_numbered(site.remote, (VIP, 8600), 10, rate=1000)
        after = [rx.receive(timeout=5) for _ in range(10)]
    finally:
        rx.close()
    assert all(before)
    assert all(after)
    assert {m.session for m in before if m} != {m.session for m in after if m}
    assert [m.sequence for m in after if m] == list(range(1, 11))


def test_replies_leave_once_from_the_vip_and_feed_port(site: Site) -> None:
    tee_pair(site, outbound="127.0.0.1:9700", send_to=[f"{REMOTE}:8600"])
    remote = UdpSink(site.remote, REMOTE, 8600)
    for node in site.nodes:  # the app on every node replies
        sock = node.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"reply from " + node.name.encode(), ("127.0.0.1", 9700))
        sock.close()
    wait_until(lambda: remote.received, 5, what="a reply at the remote centre")
    assert [r.data for r in remote.received] == [b"reply from node1"]  # the master's only
    assert remote.received[0].source == (VIP, 8600)


def test_the_python_sender_names_its_destination(site: Site) -> None:
    from vipcast.api import Sender

    tee_pair(site, outbound="127.0.0.1:9700")
    remote = UdpSink(site.remote, REMOTE, 8700)
    with site.nodes[0].entered():
        sender = Sender(("127.0.0.1", 9700), feed=1)
    sender.send(b"hello", (REMOTE, 8700))
    sender.close()
    wait_until(lambda: remote.received, 5, what="the reply")
    assert remote.received[0].data == b"hello"
    assert remote.received[0].source == (VIP, 8600)


def test_malformed_and_foreign_envelopes_are_ignored_and_counted(site: Site) -> None:
    _n1, n2 = tee_pair(site)
    apps = sinks(site)
    junk = site.nodes[0].socket(socket.AF_INET, socket.SOCK_DGRAM)
    for payload in (b"VC\x99garbage", b"not an envelope", b""):
        junk.sendto(payload, (node_address(2), 8601))
    junk.close()
    stranger = site.remote.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.sendto(b"VC" + bytes(40), (node_address(2), 8601))
    stranger.close()
    wait_until(
        lambda: sum(n2.status()["feeds"].get("rejected_envelopes", {}).values()) >= 4,
        5,
        what="4 rejected envelopes counted",
    )
    rejected = n2.status()["feeds"]["rejected_envelopes"]
    assert rejected.get("foreign") == 1
    sent = send_numbered(site.remote, (VIP, 8600), 100, rate=2000)
    for app in apps:
        wait_until(lambda app=app: got(app, 100), 5, what="traffic still flows")
        assert app.payloads == sent


def test_a_stopped_receiver_stalls_neither_the_relay_nor_the_other_node(site: Site) -> None:
    _n1, n2 = tee_pair(site)
    apps = sinks(site)
    with stalled(dataplane_pid(n2)):
        sent = send_numbered(site.remote, (VIP, 8600), 3000, rate=10000)
        wait_until(lambda: got(apps[0], 3000), 10, what="node1 gets everything meanwhile")
        assert apps[0].payloads == sent
    wait_until(lambda: got(apps[1], 3000), 10, what="node2 catches up after SIGCONT")
    assert apps[1].payloads == sent
    assert VIP in oracles.addresses(site.nodes[0])
