"""A routed site: two node subnets behind one router, BGP from the nodes' BIRD to the router's.

::

                       ┌── eth0 198.18.1.1/24 ── node1 198.18.1.11  (AS 64513, etcd)
    remote 198.19.0.2 ── eth2 router eth1 198.18.2.1/24 ── node2 198.18.2.12  (AS 64514, etcd)
                       └── eth3 198.18.3.1/24 ── witness 198.18.3.30  (etcd)
                         (AS 64512)

The VIP, 198.18.100.1/32, is in neither node subnet: the router reaches it only through
the host route the leader's BIRD announces (``[vip] announce = "route"``). Each node runs
``bird`` with :func:`node_bird_conf` (learn the vipcast table, export it over BGP), the
router with :func:`router_bird_conf` (import the nodes' routes into its kernel table).
VRRP cannot cross the router, so the lab's elections use etcd: a 3-member cluster, one
member on each node and one on the witness (each in its own subnet: raft crosses the
router too), the raft leader kept on the witness (:mod:`vipcast.lab.etcd`).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vipcast.lab import etcd
from vipcast.lab.etcd import EtcdCluster
from vipcast.lab.process import NsProcess
from vipcast.lab.site import REMOTE, ROUTER_REMOTE, Host, Lab

VIP = "198.18.100.1"
ROUTER_AS, NODE_AS = 64512, 64513  # node i: NODE_AS + i - 1 (private ASNs)
WITNESS = "198.18.3.30"
ROUTE_TABLE, ROUTE_PROTOCOL = 100, 200  # vipcast's defaults, written out in the configs
BGP_HOLD = 3  # seconds: a dead node's route goes after this (keepalives every second)
START_TIMEOUT = 15.0  # seconds for a BIRD to answer on its socket


def subnet(i: int) -> ipaddress.IPv4Network:
    """Node ``i``'s subnet: 198.18.i.0/24, the router at .1."""
    return ipaddress.IPv4Network(f"198.18.{i}.0/24")


def gateway(i: int) -> str:
    return str(subnet(i).network_address + 1)


def node_address(i: int) -> str:
    """Node ``i``'s address: 198.18.1.11, 198.18.2.12."""
    return str(subnet(i).network_address + 10 + i)


def node_as(i: int) -> int:
    return NODE_AS + i - 1


def node_bird_conf(
    address: str, local_as: int, router: str, router_as: int, table: int, protocol: int
) -> str:
    """A node's bird.conf: learn vipcast's host routes, export them (only them) over BGP."""
    return f"""\
router id {address};
protocol device {{ }}
# the host routes vipcast's leader puts in table {table} (proto {protocol}), learnt from the kernel
protocol kernel vipcast {{
  kernel table {table};
  learn;
  ipv4 {{ import where krt_source = {protocol}; export none; }};
}}
protocol bgp site_router {{
  local {address} as {local_as};
  neighbor {router} as {router_as};
  hold time {BGP_HOLD};
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 4;
  ipv4 {{ import none; export where proto = "vipcast"; }};
}}
"""


def router_bird_conf(
    router_id: str, local_as: int, peers: list[tuple[str, str, int]], vips: list[str]
) -> str:
    """The router's bird.conf: one passive session per node ``(local, neighbour, AS)``,
    accepting only the ``vips`` (host prefixes); they go into the kernel's main table."""
    accept = ", ".join(vips)
    sessions = "".join(
        f"""\
protocol bgp node{i} {{
  local {local} as {local_as};
  neighbor {neighbour} as {peer_as};
  passive;
  hold time {BGP_HOLD};
  ipv4 {{ import where net ~ [ {accept} ]; export none; }};
}}
"""
        for i, (local, neighbour, peer_as) in enumerate(peers, start=1)
    )
    return f"""\
router id {router_id};
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}
{sessions}"""


@dataclass
class Bird:
    """One ``bird -f`` in a host, and ``birdc`` on its control socket."""

    host: Host
    socket: Path
    proc: NsProcess

    def birdc(self, *command: str) -> str:
        done = subprocess.run(
            ["birdc", "-s", str(self.socket), *command],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return done.stdout

    def answers(self) -> bool:
        return self.socket.exists() and "BIRD" in self.birdc("show", "status")


def start_bird(host: Host, conf: str) -> Bird:
    """Run BIRD 2 in ``host`` with ``conf``, in the foreground, its files in the workdir."""
    base = host.lab.workdir / f"bird-{host.name}"
    Path(f"{base}.conf").write_text(conf)
    sock = Path(f"{base}.ctl")
    proc = host.spawn(
        ["bird", "-f", "-c", f"{base}.conf", "-s", str(sock), "-P", f"{base}.pid"], name="bird"
    )
    return Bird(host, sock, proc)


@dataclass
class RoutedSite:
    """The site of the module docstring; ``nodes``, ``remote``, ``router`` as in ``Site``."""

    lab: Lab
    router: Host
    remote: Host
    witness: Host
    nodes: list[Host]
    birds: dict[str, Bird] = field(default_factory=dict)
    etcd: EtcdCluster | None = None

    def etcd_endpoints(self, i: int) -> list[str]:
        """The client URLs node ``i`` is configured with: its own member first."""
        assert self.etcd is not None
        return self.etcd.endpoints(first=f"node{i}")

    @property
    def vip(self) -> str:
        return VIP


def build_routed_site(
    lab: Lab,
    nodes: int = 2,
    *,
    election_ms: int = etcd.ELECTION_MS,
    raft_leader: str | None = "witness",
) -> RoutedSite:
    """The hosts, addresses and routes, BIRD everywhere (sessions establishing), and the
    etcd members healthy (``election_ms``, ``raft_leader``: see
    :func:`vipcast.lab.etcd.start_members`)."""
    router, remote, witness = lab.host("router"), lab.host("remote"), lab.host("witness")
    router.sysctl("net.ipv4.ip_forward", 1)
    members = [_node(lab, router, i) for i in range(1, nodes + 1)]
    _leaf(lab, router, remote, "eth2", f"{ROUTER_REMOTE}/24", f"{REMOTE}/24", ROUTER_REMOTE)
    witness_gw = gateway(3)
    _leaf(lab, router, witness, "eth3", f"{witness_gw}/24", f"{WITNESS}/24", witness_gw)
    site = RoutedSite(lab, router, remote, witness, members)
    peers = [(gateway(i), node_address(i), node_as(i)) for i in range(1, nodes + 1)]
    site.birds["router"] = start_bird(
        router, router_bird_conf(gateway(1), ROUTER_AS, peers, [f"{VIP}/32"])
    )
    for i, node in enumerate(members, start=1):
        conf = node_bird_conf(
            node_address(i), node_as(i), gateway(i), ROUTER_AS, ROUTE_TABLE, ROUTE_PROTOCOL
        )
        site.birds[node.name] = start_bird(node, conf)
    places = [(f"node{i}", node, node_address(i)) for i, node in enumerate(members, start=1)]
    site.etcd = etcd.start_members(
        lab, [*places, ("witness", witness, WITNESS)], election_ms=election_ms,
        raft_leader=raft_leader,
    )  # fmt: skip
    _wait(lambda: all(b.answers() for b in site.birds.values()), "BIRD on every host")
    return site


def established(site: RoutedSite) -> bool:
    """Every BGP session of the router is up."""
    out = site.birds["router"].birdc("show", "protocols")
    sessions = [line for line in out.splitlines() if line.startswith("node")]
    return bool(sessions) and all("Established" in line for line in sessions)


def router_route(site: RoutedSite, dst: str = VIP) -> list[str]:
    """The gateways of the router's kernel route to ``dst`` (``ip -json route``)."""
    out = subprocess.run(
        ["ip", "-n", site.router.ns, "-json", "route", "show", dst],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(str(r.get("gateway")) for r in json.loads(out or "[]"))


def _node(lab: Lab, router: Host, i: int) -> Host:
    node = lab.host(f"node{i}")
    address, gw = f"{node_address(i)}/24", gateway(i)
    _leaf(lab, router, node, f"eth{i - 1}", f"{gw}/24", address, gw)
    return node


def _leaf(
    lab: Lab, router: Host, host: Host, router_if: str, router_cidr: str, cidr: str, gw: str
) -> None:
    """A veth from the router to ``host``'s eth0, addressed, ``host`` routed by the router."""
    lab.link(router, router_if, host, "eth0")
    router.add_address(router_if, router_cidr)
    host.add_address("eth0", cidr)
    host.default_route(gw)


def _wait(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:g}s")
        time.sleep(0.05)
