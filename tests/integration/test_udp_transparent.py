"""The UDP layer inside namespaces: free binding, spoofed delivery, multicast fan-out."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator

import pytest

from tests.lab.capture import Capture, Frame
from tests.lab.udp import send_numbered
from tests.lab.wait import wait_until
from vipcast.lab.site import LAN6, REMOTE, REMOTE6, VIP, Host, Lab, Site, build_site, node_address
from vipcast.linux import mmsg, udp
from vipcast.linux.spoof import SpoofingSender

pytestmark = pytest.mark.root

NODE1_V6 = str(LAN6.network_address + 11)  # fd00:198:18::b
NODE2_V6 = str(LAN6.network_address + 12)
VIP6 = str(LAN6.network_address + 100)
GROUP = "239.255.86.1"
SENDER4 = ("198.19.0.2", 40000)
SENDER6 = (REMOTE6, 40000)


@pytest.fixture
def site6(lab: Lab) -> Site:
    """The standard site with IPv6 on the LAN too."""
    return build_site(lab, ipv6=True)


@pytest.fixture
def apps() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def app_socket(made: list[socket.socket], host: Host, address: str) -> socket.socket:
    """A plain application socket, as any local app would open it (IPv6: dual-stack)."""
    family = udp.family_of(address)
    sock = host.socket(family, socket.SOCK_DGRAM)
    made.append(sock)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, 0))
    sock.settimeout(5)
    return sock


def collect(receiver: mmsg.Receiver, into: list[mmsg.Received]) -> int:
    """Add what the receiver has now (copied) to ``into``; returns the new total."""
    into.extend(r._replace(payload=memoryview(bytes(r.payload))) for r in receiver.receive())
    return len(into)


# ---------------------------------------------------------------- free binding


def test_a_relay_bound_before_the_vip_exists_receives_once_it_is_added(site: Site) -> None:
    node = site.nodes[0]
    with node.entered():
        sock = udp.udp_socket(socket.AF_INET)
    udp.bind_freebind(sock, VIP, 8600)
    udp.enable_pktinfo(sock)
    receiver = mmsg.MmsgReceiver(sock, pktinfo=True)
    got: list[mmsg.Received] = []
    try:
        node.add_address("eth0", f"{VIP}/24")
        sent = send_numbered(site.remote, (VIP, 8600), 5, rate=1000)
        wait_until(lambda: collect(receiver, got) == 5, 5, what="5 datagrams at the VIP")
    finally:
        sock.close()
    assert [bytes(r.payload) for r in got] == sent
    assert {r.source[0] for r in got} == {REMOTE}
    assert {r.destination for r in got} == {(VIP, 8600)}


def test_an_ipv6_relay_bound_before_the_vip_exists_receives_once_it_is_added(
    site6: Site,
) -> None:
    node, other = site6.nodes
    with node.entered():
        sock = udp.udp_socket(socket.AF_INET6)
    udp.bind_freebind(sock, VIP6, 8600)
    udp.enable_pktinfo(sock)
    receiver = mmsg.MmsgReceiver(sock, pktinfo=True)
    sender = other.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    got: list[mmsg.Received] = []
    try:
        node.add_address("eth0", f"{VIP6}/64")
        for i in range(5):
            sender.sendto(b"v6 %d" % i, (VIP6, 8600))
        wait_until(lambda: collect(receiver, got) == 5, 5, what="5 datagrams at the IPv6 VIP")
    finally:
        sock.close()
        sender.close()
    assert [bytes(r.payload) for r in got] == [b"v6 %d" % i for i in range(5)]
    assert {r.source[0] for r in got} == {NODE2_V6}
    assert {r.destination for r in got} == {(VIP6, 8600)}


# ---------------------------------------------------------------- spoofed delivery

DELIVERIES = [
    pytest.param(SENDER4, "127.0.0.1", "127.0.0.1", SENDER4, id="v4-to-loopback"),
    pytest.param(SENDER4, node_address(1), node_address(1), SENDER4, id="v4-to-lan-address"),
    pytest.param(SENDER4, "0.0.0.0", "127.0.0.1", SENDER4, id="v4-to-wildcard-app"),
    pytest.param(SENDER6, "::1", "::1", SENDER6, id="v6-to-loopback"),
    pytest.param(SENDER6, NODE1_V6, NODE1_V6, SENDER6, id="v6-to-lan-address"),
    pytest.param(
        SENDER4, "::", "::ffff:127.0.0.1", ("::ffff:198.19.0.2", 40000), id="v4-to-dual-stack-app"
    ),
]


@pytest.mark.parametrize(("source", "app_address", "destination", "seen_as"), DELIVERIES)
def test_a_local_app_sees_the_original_sender_as_the_source(
    site6: Site,
    apps: list[socket.socket],
    source: tuple[str, int],
    app_address: str,
    destination: str,
    seen_as: tuple[str, int],
) -> None:
    node = site6.nodes[0]
    app = app_socket(apps, node, app_address)
    with node.entered(), SpoofingSender() as spoofer:
        assert spoofer.send(b"as if from afar", source, (destination, app.getsockname()[1]))
        data, sender = app.recvfrom(2048)
        assert spoofer.raw_sent == 0
    assert data == b"as if from afar"
    assert sender[:2] == seen_as


@pytest.mark.parametrize(
    ("holder_address", "app_address"),
    [(node_address(1), "127.0.0.1"), (NODE1_V6, "::1")],
    ids=["v4", "v6"],
)
def test_a_sender_on_this_node_is_spoofed_through_a_raw_socket(
    site6: Site, apps: list[socket.socket], holder_address: str, app_address: str
) -> None:
    node = site6.nodes[0]
    holder = app_socket(apps, node, holder_address)  # the original sender, still bound
    source = (holder_address, holder.getsockname()[1])
    app = app_socket(apps, node, app_address)
    with node.entered(), SpoofingSender() as spoofer:
        for i in range(3):
            assert spoofer.send(b"local %d" % i, source, (app_address, app.getsockname()[1]))
        got = [app.recvfrom(2048) for _ in range(3)]
        assert spoofer.raw_sent == 3
    assert [data for data, _ in got] == [b"local %d" % i for i in range(3)]
    assert {sender[:2] for _, sender in got} == {source}


def test_many_senders_are_spoofed_with_a_bounded_number_of_sockets(
    site6: Site, apps: list[socket.socket]
) -> None:
    node = site6.nodes[0]
    app = app_socket(apps, node, "127.0.0.1")
    sources = [("198.19.0.2", 41000 + i) for i in range(6)] + [("198.19.0.2", 41000)]
    with node.entered(), SpoofingSender(max_sockets=2) as spoofer:
        for i, source in enumerate(sources):
            assert spoofer.send(b"%d" % i, source, ("127.0.0.1", app.getsockname()[1]))
            assert spoofer.open_sockets <= 2
        got = [app.recvfrom(2048) for _ in sources]
        assert spoofer.evicted == 5
    assert [sender for _, sender in got] == sources


def _icmp_unreachable_quoting(frame: Frame) -> str | None:
    """The quoted destination of an ICMP port-unreachable in an IPv4 frame, else None."""
    ip = frame.data[14:]
    if frame.ethertype != 0x0800 or ip[9] != 1:
        return None
    icmp = ip[(ip[0] & 0x0F) * 4 :]
    if icmp[0] != 3 or icmp[1] != 3:
        return None
    return str(ipaddress.ip_address(icmp[8 + 16 : 8 + 20]))


def test_no_app_on_a_lan_address_sends_icmp_to_the_sender_but_on_loopback_it_stays_home(
    site: Site,
) -> None:
    node = site.nodes[0]
    with Capture(site.remote) as capture, node.entered(), SpoofingSender() as spoofer:
        assert spoofer.send(b"nobody home", SENDER4, ("127.0.0.1", 9))
        assert spoofer.send(b"nobody home", (REMOTE, 40001), (node_address(1), 9))
        quoted = wait_until(
            lambda: [q for f in capture.frames if (q := _icmp_unreachable_quoting(f))],
            5,
            what="an ICMP port unreachable at the remote sender",
        )
    assert quoted == [node_address(1)]


# ---------------------------------------------------------------- multicast


def test_multicast_reaches_a_member_on_the_sending_host_and_one_on_another(site: Site) -> None:
    sender_node, other_node = site.nodes
    receivers, socks = [], []
    for node in (sender_node, other_node):
        with node.entered():
            sock = udp.udp_socket(socket.AF_INET)
            sock.bind(("0.0.0.0", 9700))
            udp.join_group(sock, GROUP, "eth0")
        udp.enable_pktinfo(sock)
        socks.append(sock)
        receivers.append(mmsg.MmsgReceiver(sock, pktinfo=True))
    with sender_node.entered():
        out = udp.udp_socket(socket.AF_INET)
        udp.multicast_sender(out, "eth0", ttl=1, loop=True)
    socks.append(out)
    try:
        batched = [b"batch %d" % i for i in range(20)]
        segmented = [b"gso %02d" % i for i in range(10)]
        assert mmsg.MmsgSender(out).send((p, (GROUP, 9700)) for p in batched).sent == 20
        assert mmsg.send_segments(out, segmented, (GROUP, 9700)).sent == 10
        for receiver in receivers:
            got: list[mmsg.Received] = []
            wait_until(lambda r=receiver, g=got: collect(r, g) >= 30, 5, what="30 datagrams")
            time.sleep(0.05)
            collect(receiver, got)
            assert [bytes(r.payload) for r in got] == batched + segmented
            assert {r.source[0] for r in got} == {node_address(1)}
            assert {r.destination for r in got} == {(GROUP, 9700)}
    finally:
        for sock in socks:
            sock.close()
