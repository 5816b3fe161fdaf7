"""The Linux adapters of the election, in real namespaces, checked by independent oracles.

Oracles: ``ip -json`` (addresses, neighbours), frames captured on the wire and decoded by
Scapy, and keepalived as a real VRRPv3 peer.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_interface

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRPv3
from scapy.packet import Raw

from tests.lab import oracles
from tests.lab.capture import Capture, Frame
from tests.lab.keepalived import start_keepalived
from tests.lab.wait import wait_until
from vipcast.lab.netns import NETNS_DIR
from vipcast.lab.site import LAN6, VIP, Host, Lab, Site, build_site, node_address
from vipcast.linux.announce import Announcer
from vipcast.linux.vip import LinkDown, LinkUp, NetlinkWatcher, VipAdded, VipManager, VipRemoved
from vipcast.linux.vrrp_socket import GROUP_V4, GROUP_V6, RawAdvert, VrrpSocket

pytestmark = pytest.mark.root

VIP4 = ip_interface(f"{VIP}/24")
VIP6 = ip_interface(f"{LAN6.network_address + 0x100}/64")
NODE1, NODE2 = IPv4Address(node_address(1)), IPv4Address(node_address(2))


@pytest.fixture
def site6(lab: Lab) -> Site:
    return build_site(lab, ipv6=True)


# --- helpers -------------------------------------------------------------------------


def _mac(host: Host) -> str:
    return oracles.link_mac(host)


def _flags_of(host: Host, address: str) -> dict[str, object]:
    """The ``ip -json addr`` entry of one address (its flags, such as "tentative")."""
    for link in oracles.ip_json(host, "addr", "show", "dev", "eth0"):
        for entry in link.get("addr_info", []):
            if entry["local"] == address:
                return dict(entry)
    raise AssertionError(f"{address} not on {host.name}")


def _dad_done(host: Host) -> bool:
    links = oracles.ip_json(host, "addr", "show", "dev", "eth0")
    return not any(a.get("tentative") for link in links for a in link.get("addr_info", []))


def _link_local(host: Host) -> IPv6Address:
    links = oracles.ip_json(host, "addr", "show", "dev", "eth0")
    scoped = [a for link in links for a in link.get("addr_info", []) if a.get("scope") == "link"]
    return IPv6Address(scoped[0]["local"])


def _vrrp4(src: IPv4Address, dst: IPv4Address = GROUP_V4, priority: int = 100) -> bytes:
    """A VRRPv3 message built by Scapy, checksummed with the IPv4 pseudo-header."""
    advert = VRRPv3(vrid=51, priority=priority, adv=100, addrlist=[VIP])
    return bytes(IP(src=str(src), dst=str(dst), proto=112) / advert)[20:]


def _vrrp6(src: IPv6Address, dst: IPv6Address = GROUP_V6) -> bytes:
    advert = VRRPv3(vrid=51, priority=100, adv=100, addrlist=[str(src)])
    return bytes(IPv6(src=str(src), dst=str(dst)) / advert)[40:]


def _vrrp_frames(capture: Capture) -> list[Ether]:
    def is_vrrp(frame: Frame) -> bool:
        pkt = Ether(frame.data)
        return (IP in pkt and pkt[IP].proto == 112) or (IPv6 in pkt and pkt[IPv6].nh == 112)

    return [Ether(f.data) for f in capture.matching(is_vrrp)]


def _collect(watcher: NetlinkWatcher, wanted: object, seen: list[object]) -> list[object]:
    def arrived() -> bool:
        seen.extend(watcher.read_events())
        return wanted in seen

    wait_until(arrived, 5, what=f"{wanted} from the netlink watcher")
    return seen


@pytest.fixture
def watcher(site: Site) -> Iterator[NetlinkWatcher]:
    with site.nodes[0].entered():
        the_watcher = NetlinkWatcher("eth0", [VIP4])
    yield the_watcher
    the_watcher.close()


# --- VipManager ------------------------------------------------------------------------


def test_vip_manager_adds_and_removes_idempotently(site6: Site) -> None:
    node = site6.nodes[0]
    with node.entered():
        vips = VipManager("eth0", [VIP4, VIP6])
    try:
        assert vips.add() == [VIP4, VIP6]
        assert vips.add() == []  # already there: fine
        assert {str(VIP4.ip), str(VIP6.ip)} <= oracles.addresses(node)
        assert "tentative" not in _flags_of(node, str(VIP6.ip))  # usable at once (nodad)
        assert vips.present() == {VIP4, VIP6}
        assert vips.remove() == [VIP4, VIP6]
        assert vips.remove() == []  # already gone: fine
        assert not {str(VIP4.ip), str(VIP6.ip)} & oracles.addresses(node)
        assert vips.present() == set()
    finally:
        vips.close()


def test_vip_manager_follows_an_interface_re_created_under_the_same_name(lab: Lab) -> None:
    host = lab.host("h")

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", host.ns, *args], check=True)

    create = ["link", "add", "vip0", "type", "veth", "peer", "name", "vip0p"]  # no dummy here
    ip(*create)
    with host.entered(), VipManager("vip0", [VIP4]) as vips:
        assert vips.add() == [VIP4]
        ip("link", "del", "vip0")
        ip(*create)
        assert vips.present() == set()
        assert vips.add() == [VIP4]
        ip("link", "del", "vip0")
        ip(*create)
        assert vips.add() == [VIP4]  # the index it kept is gone: it looks again
    assert oracles.addresses(host, "vip0") == {VIP}


# --- NetlinkWatcher ----------------------------------------------------------------------


def test_watcher_reports_a_vip_deleted_and_re_added_by_someone_else(
    site: Site, watcher: NetlinkWatcher
) -> None:
    node = site.nodes[0]
    with node.entered(), VipManager("eth0", [VIP4]) as vips:
        vips.add()
    assert _collect(watcher, VipAdded(VIP4), []) == [VipAdded(VIP4)]
    subprocess.run(["ip", "-n", node.ns, "addr", "del", str(VIP4), "dev", "eth0"], check=True)
    assert _collect(watcher, VipRemoved(VIP4), []) == [VipRemoved(VIP4)]
    subprocess.run(["ip", "-n", node.ns, "addr", "add", str(VIP4), "dev", "eth0"], check=True)
    assert _collect(watcher, VipAdded(VIP4), []) == [VipAdded(VIP4)]
    assert watcher.present == {VIP4}


def test_watcher_reports_the_node_link_set_down_and_up(site: Site, watcher: NetlinkWatcher) -> None:
    assert watcher.link_up
    site.nodes[0].set_link("eth0", up=False)
    assert _collect(watcher, LinkDown("eth0"), []) == [LinkDown("eth0")]
    site.nodes[0].set_link("eth0", up=True)
    assert _collect(watcher, LinkUp("eth0"), []) == [LinkUp("eth0")]


def test_watcher_reports_carrier_loss_when_the_switch_port_goes_down(
    site: Site, watcher: NetlinkWatcher
) -> None:
    # the node's eth0 stays administratively up; its veth peer going down drops the carrier
    site.switch.set_link("p-node1", up=False)
    assert _collect(watcher, LinkDown("eth0"), []) == [LinkDown("eth0")]
    site.switch.set_link("p-node1", up=True)
    assert _collect(watcher, LinkUp("eth0"), []) == [LinkUp("eth0")]


def test_watcher_and_vip_manager_work_inside_an_event_loop(
    site: Site, watcher: NetlinkWatcher
) -> None:
    # pyroute2 0.9's synchronous IPRoute raises "This event loop is already running" here
    node = site.nodes[0]
    with node.entered():
        vips = VipManager("eth0", [VIP4])
    delete = ["ip", "-n", node.ns, "addr", "del", str(VIP4), "dev", "eth0"]

    async def scenario() -> object:
        loop = asyncio.get_running_loop()
        removed: asyncio.Future[object] = loop.create_future()

        def on_readable() -> None:
            for event in watcher.read_events():
                if isinstance(event, VipRemoved) and not removed.done():
                    removed.set_result(event)

        loop.add_reader(watcher.fileno(), on_readable)
        try:
            vips.add()
            await asyncio.to_thread(subprocess.run, delete, check=True)
            return await asyncio.wait_for(removed, 5)
        finally:
            loop.remove_reader(watcher.fileno())

    try:
        assert asyncio.run(scenario()) == VipRemoved(VIP4)
    finally:
        vips.close()


# --- Announcer ---------------------------------------------------------------------------


def _router_knows_vip_at(site: Site, host: Host) -> None:
    """Give the router a neighbour entry for the VIP pointing at ``host`` (it holds the VIP)."""
    host.add_address("eth0", str(VIP4))
    ping = site.router.spawn(["ping", "-c", "1", "-W", "2", VIP])
    assert ping.wait(5) == 0, ping.output()
    assert oracles.neighbour_mac(site.router, VIP) == _mac(host)


def test_gratuitous_arp_is_not_enough_to_create_a_neighbour_entry(site: Site) -> None:
    # Linux's default net.ipv4.conf.*.arp_accept=0: a gratuitous ARP updates an existing
    # entry but never creates one. This is why the tests below make the entry first.
    with site.nodes[0].entered(), Announcer("eth0") as announcer, Capture(site.router) as cap:
        assert announcer.announce([VIP4.ip], "both") == 2
        wait_until(lambda: len(cap.matching(lambda f: f.ethertype == 0x0806)) == 2, 5)
    assert oracles.neighbour_mac(site.router, VIP) is None


def test_gratuitous_arp_request_moves_the_routers_entry_to_the_new_master(site: Site) -> None:
    node1, node2 = site.nodes
    _router_knows_vip_at(site, node2)
    with node1.entered(), Announcer("eth0") as announcer, Capture(site.router) as cap:
        assert announcer.announce([VIP4], "request") == 1
        wait_until(lambda: oracles.neighbour_mac(site.router, VIP) == _mac(node1), 5)
        frames = cap.matching(lambda f: f.ethertype == 0x0806)
    arps = [Ether(f.data) for f in frames if Ether(f.data).src == _mac(node1)]
    assert len(arps) == 1
    arp = arps[0][ARP]
    assert (arps[0].dst, arp.op, arp.hwsrc, arp.psrc, arp.pdst) == (
        "ff:ff:ff:ff:ff:ff",
        1,
        _mac(node1),
        VIP,
        VIP,
    )


def test_gratuitous_arp_reply_overrides_even_a_fresh_entry(site: Site) -> None:
    # The entry was confirmed a moment ago, inside its 1 s locktime. Linux overrides it only
    # for what it recognises as gratuitous: a reply counts when target MAC == sender MAC.
    node1, node2 = site.nodes
    _router_knows_vip_at(site, node2)
    with node1.entered(), Announcer("eth0") as announcer, Capture(site.router) as cap:
        assert announcer.announce([VIP4], "reply") == 1
        wait_until(lambda: oracles.neighbour_mac(site.router, VIP) == _mac(node1), 0.5)
        frames = cap.matching(lambda f: f.ethertype == 0x0806 and Ether(f.data).src == _mac(node1))
    arp = Ether(frames[0].data)[ARP]
    assert (arp.op, arp.hwsrc, arp.hwdst, arp.psrc, arp.pdst) == (
        2,
        _mac(node1),
        _mac(node1),
        VIP,
        VIP,
    )


def test_unsolicited_na_moves_the_routers_ipv6_entry_to_the_new_master(site6: Site) -> None:
    node1, node2 = site6.nodes
    node2.add_address("eth0", str(VIP6))
    ping = site6.router.spawn(["ping", "-6", "-c", "1", "-W", "2", str(VIP6.ip)])
    assert ping.wait(5) == 0, ping.output()
    assert oracles.neighbour_mac(site6.router, str(VIP6.ip)) == _mac(node2)
    with node1.entered(), Announcer("eth0") as announcer, Capture(site6.router) as cap:
        assert announcer.announce([VIP6], "both") == 1  # one NA, whatever the form
        wait_until(lambda: oracles.neighbour_mac(site6.router, str(VIP6.ip)) == _mac(node1), 5)
        frames = cap.matching(lambda f: ICMPv6ND_NA in Ether(f.data))
    pkt = next(Ether(f.data) for f in frames if Ether(f.data).src == _mac(node1))
    na = pkt[ICMPv6ND_NA]
    assert (pkt.dst, pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (
        "33:33:00:00:00:01",
        str(VIP6.ip),
        "ff02::1",
        255,
    )
    assert (na.R, na.S, na.O, na.tgt, pkt[ICMPv6NDOptDstLLAddr].lladdr) == (
        0,
        0,
        1,
        str(VIP6.ip),
        _mac(node1),
    )
    checksum = na.cksum
    del na.cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NA].cksum == checksum


# --- VrrpSocket --------------------------------------------------------------------------


def test_multicast_advert_reaches_the_peer_with_ttl_255_and_not_the_sender(site: Site) -> None:
    node1, node2 = site.nodes
    with node1.entered():
        sender = VrrpSocket("eth0", 4)
    with node2.entered():
        receiver = VrrpSocket("eth0", 4)
    message = _vrrp4(NODE1)
    try:
        with Capture(node2) as cap:
            assert sender.destinations() == [GROUP_V4]
            assert sender.send(message, GROUP_V4)
            got = wait_until(receiver.recv, 5, what="the advert at node2")
            frames = wait_until(lambda: _vrrp_frames(cap), 5, what="the advert on node2's wire")
        assert got == RawAdvert(message, NODE1, GROUP_V4, 255)
        assert 0.0 <= got.age < 1.0  # stamped by the kernel on arrival
        assert sender.recv() is None  # multicast loop is off: we do not hear ourselves
        pkt = frames[0]
        assert (pkt.dst, pkt[IP].ttl, pkt[IP].tos, pkt[IP].src, pkt[IP].dst) == (
            "01:00:5e:00:00:12",
            255,
            0xC0,
            str(NODE1),
            str(GROUP_V4),
        )
    finally:
        sender.close()
        receiver.close()


def test_unicast_mode_sends_to_the_peer_only_and_hears_no_multicast(site: Site) -> None:
    node1, node2 = site.nodes
    with node1.entered():
        unicast1 = VrrpSocket("eth0", 4, unicast_peers=[NODE2])
        multicast1 = VrrpSocket("eth0", 4)
    with node2.entered():
        unicast2 = VrrpSocket("eth0", 4, unicast_peers=[NODE1])
        multicast2 = VrrpSocket("eth0", 4)  # joins the group on node2
    sockets = [unicast1, multicast1, unicast2, multicast2]
    try:
        assert unicast1.destinations() == [NODE2]
        message = _vrrp4(NODE1, NODE2)
        with Capture(node1) as cap:
            assert unicast1.send(message, NODE2)
            got = wait_until(unicast2.recv, 5, what="the unicast advert at node2")
            frames = wait_until(lambda: _vrrp_frames(cap), 5, what="the advert on node1's wire")
        assert got == RawAdvert(message, NODE1, NODE2, 255)
        assert unicast2.is_known_source(got.src)
        assert not unicast2.is_known_source(IPv4Address("198.18.0.13"))
        assert [(f.dst, f[IP].dst) for f in frames] == [(_mac(node2), str(NODE2))]
        # a multicast advert reaches node2's group member, never its unicast socket
        multicast2.recv()  # the unicast copy above (raw sockets see every protocol-112 packet)
        assert multicast1.send(_vrrp4(NODE1), GROUP_V4)
        wait_until(multicast2.recv, 5, what="the multicast advert at node2")
        assert unicast2.recv() is None
    finally:
        for sock in sockets:
            sock.close()


def test_ipv6_advert_reaches_the_peer_from_the_link_local_address(site6: Site) -> None:
    node1, node2 = site6.nodes
    source = _link_local(node1)
    with node1.entered():
        sender = VrrpSocket("eth0", 6)
    with node2.entered():
        receiver = VrrpSocket("eth0", 6)
    message = _vrrp6(source)
    try:
        assert sender.source == source
        # link bounced: the link-local address is in DAD again, so sending waits, quietly
        node1.set_link("eth0", up=False)
        node1.set_link("eth0", up=True)
        assert "tentative" in _flags_of(node1, str(source))
        assert sender.send(message, GROUP_V6) is False
        assert sender.send_errors == {"EINVAL": 1}
        wait_until(lambda: _dad_done(node1) and _dad_done(node2), 5, what="IPv6 DAD on the nodes")
        with Capture(node2) as cap:
            assert sender.send(message, GROUP_V6)
            got = wait_until(receiver.recv, 5, what="the IPv6 advert at node2")
            frames = wait_until(lambda: _vrrp_frames(cap), 5, what="the advert on the wire")
        assert got == RawAdvert(message, source, GROUP_V6, 255)
        assert sender.recv() is None
        pkt = frames[0]
        assert (pkt.dst, pkt[IPv6].hlim, pkt[IPv6].tc, pkt[IPv6].src, pkt[IPv6].dst) == (
            "33:33:00:00:00:12",
            255,
            0xC0,
            str(source),
            str(GROUP_V6),
        )
    finally:
        sender.close()
        receiver.close()


def test_an_advert_sent_with_ttl_64_is_reported_with_ttl_64(site: Site) -> None:
    node1, node2 = site.nodes
    with node2.entered():
        receiver = VrrpSocket("eth0", 4)
    forger = node1.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    try:
        forger.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 64)
        forger.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, NODE1.packed)
        forger.sendto(_vrrp4(NODE1), (str(GROUP_V4), 0))
        got = wait_until(receiver.recv, 5, what="the forged advert at node2")
        assert got is not None
        assert (got.src, got.ttl) == (NODE1, 64)  # reported as is: the daemon rejects it
    finally:
        forger.close()
        receiver.close()


def test_setup_errors_say_what_is_wrong(site: Site) -> None:
    with site.nodes[0].entered():
        with pytest.raises(LookupError) as missing:
            VrrpSocket("eth9", 4)
        assert str(missing.value) == "no interface 'eth9'; interfaces here: eth0, lo"
        with pytest.raises(LookupError, match="no interface 'eth9'"):
            VipManager("eth9", [VIP4])
        with pytest.raises(OSError, match="not an address of eth0") as err:
            VrrpSocket("eth0", 4, source=NODE2)
        assert err.value.errno == errno.EADDRNOTAVAIL
        with pytest.raises(LookupError, match="no interface 'eth9'"):
            Announcer("eth9")


_WITHOUT_CAPS = """
import json
from ipaddress import ip_interface
from vipcast.linux.announce import Announcer
from vipcast.linux.privileges import missing_capabilities
from vipcast.linux.vip import VipManager
from vipcast.linux.vrrp_socket import VrrpSocket

report = {"missing": missing_capabilities(["CAP_NET_RAW", "CAP_NET_ADMIN"])}
attempts = {
    "vrrp": lambda: VrrpSocket("eth0", 4),
    "announce": lambda: Announcer("eth0"),
    "vip": lambda: VipManager("eth0", [ip_interface("198.18.0.100/24")]).add(),
}
for name, attempt in attempts.items():
    try:
        attempt()
        report[name] = "no error"
    except PermissionError as exc:
        report[name] = str(exc)
print(json.dumps(report))
"""


def test_missing_capabilities_are_explained(site: Site) -> None:
    # root, with CAP_NET_RAW and CAP_NET_ADMIN dropped from the bounding set before exec
    argv = [
        "nsenter",
        f"--net={NETNS_DIR / site.nodes[0].ns}",
        "--",
        "setpriv",
        "--bounding-set=-net_raw,-net_admin",
        "--inh-caps=-net_raw,-net_admin",
        sys.executable,
        "-c",
        _WITHOUT_CAPS,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=20).stdout
    report = json.loads(out)
    assert report["missing"] == ["CAP_NET_RAW", "CAP_NET_ADMIN"]
    hint = "run as root, or grant it with AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN"
    assert report["vrrp"].startswith("vipcast needs CAP_NET_RAW to open a raw VRRP socket")
    assert report["announce"].startswith("vipcast needs CAP_NET_RAW to open an AF_PACKET")
    assert report["vip"].startswith("vipcast needs CAP_NET_ADMIN to add 198.18.0.100/24 to eth0")
    assert all(hint in report[k] for k in ("vrrp", "announce", "vip"))


# --- keepalived as a real peer ----------------------------------------------------------


@pytest.mark.keepalived
def test_keepalived_adverts_are_received_with_ttl_255(site: Site, lab: Lab) -> None:
    node1, node2 = site.nodes
    with node1.entered():
        receiver = VrrpSocket("eth0", 4)
    try:
        start_keepalived(node2, lab, vrid=51, priority=100, advert_int=1, vips=[f"{VIP}/24"])
        # keepalived starts as backup and takes over after Master_Down_Interval (~3.6 s)
        got = wait_until(receiver.recv, 8, what="keepalived's first advert")
    finally:
        receiver.close()
    assert got is not None
    assert (got.src, got.dst, got.ttl) == (NODE2, GROUP_V4, 255)
    pkt = IP(bytes(IP(src=str(got.src), dst=str(got.dst), proto=112) / Raw(got.payload)))
    advert = pkt[VRRPv3]
    assert (advert.version, advert.type, advert.vrid, advert.priority) == (3, 1, 51, 100)
    assert (advert.adv, advert.ipcount, advert.addrlist) == (100, 1, [VIP])
    checksum = advert.chksum
    del advert.chksum  # keepalived's default covers the IPv4 pseudo-header, as Scapy does
    assert IP(bytes(pkt))[VRRPv3].chksum == checksum
