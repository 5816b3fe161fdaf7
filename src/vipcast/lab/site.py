"""Virtual sites: hosts (namespaces), a LAN switch, veth links with deterministic MACs.

The standard site, the one tests, benchmarks and the demo use::

    remote 198.19.0.2 ── eth1 router eth0 198.18.0.1 ── switch (bridge) ──┬── node1 198.18.0.11
                                                                            └── node2 198.18.0.12

With ``ipv6=True`` every host also has an address in fd00:198:18::/48: the LAN is
fd00:198:18::/64 (router ::1, node ``i`` ::(10+i), the VIP ::100), the remote side
fd00:198:18:1::/64 (router ::1, remote ::2), and the router forwards IPv6.

Only 198.18.0.0/15 and fd00:198:18::/48 addresses are used. Every namespace is named
``vipcast-<pid>-<n>-<host>``, so parallel runs never collide, and leftovers of a
dead run are found by their pid (:func:`sweep`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import NetNS

from vipcast.lab import netns
from vipcast.lab.process import NsProcess
from vipcast.linux._rtnl import IFA_F_TENTATIVE, Rtnl

PREFIX = "vipcast-"
LAN = ipaddress.ip_network("198.18.0.0/24")
REMOTE_NET = ipaddress.ip_network("198.19.0.0/24")
ROUTER_LAN = "198.18.0.1"
ROUTER_REMOTE = "198.19.0.1"
REMOTE = "198.19.0.2"
VIP = "198.18.0.100"
# IPv6 (build_site(ipv6=True)): unique-local, only inside the namespaces
LAN6 = ipaddress.ip_network("fd00:198:18::/64")
REMOTE_NET6 = ipaddress.ip_network("fd00:198:18:1::/64")
ROUTER_LAN6 = str(LAN6.network_address + 1)
ROUTER_REMOTE6 = str(REMOTE_NET6.network_address + 1)
REMOTE6 = str(REMOTE_NET6.network_address + 2)
VIP6 = str(LAN6.network_address + 0x100)

DAD_TIMEOUT = 10.0  # seconds for every IPv6 address of a new site to become usable

_counter = itertools.count(1)
_NAME_RE = re.compile(rf"^{PREFIX}(\d+)-")
IFA_F_NODAD = 0x02


def mac(host_index: int, if_index: int) -> str:
    """Deterministic, locally administered MAC: 02:76:63:00:HH:II."""
    return f"02:76:63:00:{host_index:02x}:{if_index:02x}"


def node_address(i: int) -> str:
    """The LAN address of node ``i`` (1-based): 198.18.0.11, .12, ..."""
    return str(LAN.network_address + 10 + i)


def node_address6(i: int) -> str:
    """The IPv6 LAN address of node ``i`` (1-based): fd00:198:18::b, ::c, ..."""
    return str(LAN6.network_address + 10 + i)


@dataclass
class Host:
    """One namespace: a host, a router or the switch."""

    lab: Lab
    name: str
    ns: str
    index: int
    interfaces: dict[str, int] = field(default_factory=dict)

    def ipr(self) -> Any:
        """A pyroute2 NetNS handle; use as a context manager."""
        return NetNS(self.ns)

    def ifindex(self, ifname: str) -> int:
        with self.ipr() as ipr:
            found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LookupError(f"{self.name}: no interface {ifname}")
        return int(found[0])

    def add_address(self, ifname: str, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        with self.ipr() as ipr:
            ipr.addr(
                "add",
                index=self.ifindex(ifname),
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                flags=IFA_F_NODAD if iface.version == 6 else 0,
            )

    def default_route(self, gateway: str) -> None:
        """The default route of the gateway's family."""
        family = socket.AF_INET6 if ipaddress.ip_address(gateway).version == 6 else socket.AF_INET
        with self.ipr() as ipr:
            ipr.route("add", dst="default", gateway=gateway, family=family)

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a net.* sysctl inside this namespace."""
        path = Path("/proc/sys") / key.replace(".", "/")
        with netns.entered(self.ns):
            path.write_text(f"{value}\n")

    def set_link(self, ifname: str, *, up: bool) -> None:
        with self.ipr() as ipr:
            ipr.link("set", index=self.ifindex(ifname), state="up" if up else "down")

    def spawn(self, args: Sequence[str], *, name: str | None = None, **kw: Any) -> NsProcess:
        return self.lab.spawn(self, args, name=name, **kw)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        with netns.entered(self.ns):
            yield

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket opened inside this host's namespace."""
        with netns.entered(self.ns):
            return socket.socket(family, kind, proto)


class Lab:
    """Owns every namespace and process it makes; ``close()`` removes them all."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.id = next(_counter)
        self.prefix = f"{PREFIX}{os.getpid()}-{self.id}-"
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="vipcast-lab-"))
        self.hosts: dict[str, Host] = {}
        self.processes: list[NsProcess] = []

    def host(self, name: str) -> Host:
        ns = self.prefix + name
        netns.create(ns)
        host = Host(self, name, ns, index=len(self.hosts) + 1)
        self.hosts[name] = host
        return host

    def switch(self, name: str = "switch") -> Host:
        """A namespace holding one bridge, ``br0``: the LAN switch."""
        sw = self.host(name)
        with sw.ipr() as ipr:
            ipr.link("add", ifname="br0", kind="bridge", br_stp_state=0, br_forward_delay=0)
            ipr.link("set", index=ipr.link_lookup(ifname="br0")[0], state="up")
        return sw

    def link(self, a: Host, a_if: str, b: Host, b_if: str) -> None:
        """A veth pair between two hosts, both ends up, with deterministic MACs."""
        a_mac, b_mac = mac(a.index, len(a.interfaces)), mac(b.index, len(b.interfaces))
        peer = {"ifname": b_if, "net_ns_fd": b.ns, "address": b_mac}
        with a.ipr() as ipr:
            ipr.link("add", ifname=a_if, kind="veth", address=a_mac, peer=peer)
        a.interfaces[a_if] = len(a.interfaces)
        b.interfaces[b_if] = len(b.interfaces)
        a.set_link(a_if, up=True)
        b.set_link(b_if, up=True)

    def plug(self, switch: Host, host: Host, ifname: str = "eth0") -> None:
        """Connect ``host`` to the switch's bridge with a new veth."""
        port = f"p-{host.name}"[:15]
        self.link(switch, port, host, ifname)
        with switch.ipr() as ipr:
            bridge = ipr.link_lookup(ifname="br0")[0]
            ipr.link("set", index=ipr.link_lookup(ifname=port)[0], master=bridge)

    def spawn(
        self, host: Host, args: Sequence[str], *, name: str | None = None, **kw: Any
    ) -> NsProcess:
        label = name or Path(args[0]).name
        log = self.workdir / f"{host.name}-{label}-{len(self.processes)}.log"
        proc = NsProcess(host.ns, args, log, **kw)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        """Stop every process, remove every namespace; safe to call twice."""
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(timeout=3.0)
        for host in reversed(list(self.hosts.values())):
            netns.remove(host.ns)
        self.hosts.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Site:
    """The standard site: remote centre, router, switch, ``n`` nodes."""

    lab: Lab
    router: Host
    switch: Host
    remote: Host
    nodes: list[Host]

    @property
    def vip(self) -> str:
        return VIP


def build_site(lab: Lab, nodes: int = 2, *, ipv6: bool = False) -> Site:
    router, switch, remote = lab.host("router"), lab.switch(), lab.host("remote")
    lab.plug(switch, router, "eth0")
    lab.link(router, "eth1", remote, "eth0")
    router.add_address("eth0", f"{ROUTER_LAN}/24")
    router.add_address("eth1", f"{ROUTER_REMOTE}/24")
    router.sysctl("net.ipv4.ip_forward", 1)
    remote.add_address("eth0", f"{REMOTE}/24")
    remote.default_route(ROUTER_REMOTE)
    if ipv6:
        _ipv6_router_and_remote(router, remote)
    members = [_node(lab, switch, i, ipv6=ipv6) for i in range(1, nodes + 1)]
    if ipv6:  # link-local addresses in DAD can neither send VRRP nor be answered
        wait_for_dad([router, remote, *members])
    return Site(lab, router, switch, remote, members)


WITNESS = "198.18.0.30"  # a third host on the LAN: the etcd server of the quorum labs
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380


def etcd_endpoint(address: str = WITNESS) -> str:
    return f"http://{address}:{ETCD_CLIENT_PORT}"


def add_witness(site: Site, name: str = "witness", address: str = WITNESS) -> Host:
    """A host on the LAN running a one-member etcd (data in the lab's workdir)."""
    host = site.lab.host(name)
    site.lab.plug(site.switch, host, "eth0")
    host.add_address("eth0", f"{address}/24")
    host.set_link("lo", up=True)
    peer = f"http://{address}:{ETCD_PEER_PORT}"
    host.spawn(
        [
            "etcd",
            "--name",
            name,
            "--data-dir",
            str(site.lab.workdir / f"etcd-{name}"),
            "--listen-client-urls",
            etcd_endpoint(address),
            "--advertise-client-urls",
            etcd_endpoint(address),
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"{name}={peer}",
        ],
        name="etcd",
    )
    return host


def wait_for_dad(hosts: Sequence[Host], timeout: float = DAD_TIMEOUT) -> None:
    """Return once no IPv6 address of ``hosts`` is tentative (in duplicate address detection)."""
    deadline = time.monotonic() + timeout
    pending = [h for h in hosts if _tentative(h)]
    while pending:
        if time.monotonic() >= deadline:
            names = ", ".join(h.name for h in pending)
            raise TimeoutError(f"IPv6 addresses of {names} still tentative after {timeout:g}s")
        time.sleep(0.05)
        pending = [h for h in pending if _tentative(h)]


def _tentative(host: Host) -> bool:
    with host.entered(), Rtnl() as rtnl:
        return any(a.flags & IFA_F_TENTATIVE for a in rtnl.addresses(socket.AF_INET6))


def _node(lab: Lab, switch: Host, i: int, *, ipv6: bool) -> Host:
    node = lab.host(f"node{i}")
    lab.plug(switch, node, "eth0")
    node.add_address("eth0", f"{node_address(i)}/24")
    if ipv6:
        node.add_address("eth0", f"{node_address6(i)}/64")
        node.default_route(ROUTER_LAN6)
    node.default_route(ROUTER_LAN)
    return node


def _ipv6_router_and_remote(router: Host, remote: Host) -> None:
    router.add_address("eth0", f"{ROUTER_LAN6}/64")
    router.add_address("eth1", f"{ROUTER_REMOTE6}/64")
    router.sysctl("net.ipv6.conf.all.forwarding", 1)
    remote.add_address("eth0", f"{REMOTE6}/64")
    remote.default_route(ROUTER_REMOTE6)


def sweep() -> list[str]:
    """Remove namespaces left by runs whose process is gone; returns their names."""
    removed = []
    for name in netns.names(PREFIX):
        match = _NAME_RE.match(name)
        if match and not _alive(int(match.group(1))):
            netns.remove(name)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
