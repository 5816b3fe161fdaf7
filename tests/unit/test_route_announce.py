"""[vip] announce = "route": its keys, each mistake named, and the netlink requests it sends."""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from vipcast import config
from vipcast.config import ConfigError
from vipcast.daemon import guard, vips
from vipcast.lab import routed
from vipcast.linux.route import RouteSpec, host_routes, route_request

ROUTED: dict[str, Any] = {
    "node": {"name": "n1", "interface": "eth0"},
    "election": {"vrid": 51},
    "vip": {"addresses": ["198.18.100.1/32"], "announce": "route"},
}


def routed_vip(**vip: Any) -> dict[str, Any]:
    data = {k: dict(v) for k, v in ROUTED.items()}
    data["vip"].update(vip)
    return data


def refused(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        config.parse(data)
    return e.value


def test_arp_is_the_default_and_route_mode_has_written_defaults() -> None:
    arp = config.parse({**ROUTED, "vip": {"addresses": ["198.18.0.100/24"]}})
    assert arp.vip.announce == "arp"
    assert vips.route_spec(arp) is None
    cfg = config.parse(ROUTED)
    assert vips.route_spec(cfg) == RouteSpec(100, 200, "lo")
    assert vips.held_where(cfg) == "lo and table 100"
    assert not vips.announces_by_arp(cfg)
    spec = vips.route_spec(config.parse(routed_vip(route_table=1000, local_interface="vip0")))
    assert spec == RouteSpec(1000, 200, "vip0")


@pytest.mark.parametrize(
    ("vip", "path"),
    [
        ({"announce": "bgp"}, "vip.announce"),
        ({"garp_count": 3}, "vip.garp_count"),  # no announcements in route mode: refused
        ({"garp_refresh": 0}, "vip.garp_refresh"),
        ({"route_table": 254}, "vip.route_table"),  # main: would change forwarding
        ({"route_table": 255}, "vip.route_table"),
        ({"route_table": 0}, "vip.route_table"),
        ({"route_table": 2**32}, "vip.route_table"),
        ({"route_protocol": 4}, "vip.route_protocol"),  # static: the administrator's
        ({"route_protocol": 256}, "vip.route_protocol"),
        ({"local_interface": "eth0"}, "vip.local_interface"),  # that is ARP mode
        ({"local_interface": "a" * 16}, "vip.local_interface"),
        ({"addresses": ["198.18.100.1/24"]}, "vip.addresses[0]"),  # a host address only
    ],
)
def test_route_mode_mistakes_name_their_key(vip: dict[str, Any], path: str) -> None:
    assert refused(routed_vip(**vip)).path == path


@pytest.mark.parametrize("key", ["route_table", "route_protocol", "local_interface"])
def test_route_keys_are_refused_in_arp_mode(key: str) -> None:
    value = "lo" if key == "local_interface" else 101
    data = routed_vip(**{key: value})
    data["vip"].pop("announce")
    data["vip"]["addresses"] = ["198.18.0.100/24"]
    e = refused(data)
    assert e.path == f"vip.{key}"
    assert 'announce = "arp"' in e.reason


def decode(request: bytes) -> Any:
    (msg,) = MarshalRtnl().parse(request)
    return msg


def test_the_add_request_creates_or_replaces_a_host_route_in_our_table() -> None:
    vip = ipaddress.ip_interface("198.18.100.1/32")
    msg = decode(route_request(vip, RouteSpec(100, 200, "lo"), 7, add=True))
    header = msg["header"]
    assert header["type"] == RTM_NEWROUTE
    assert header["flags"] & NLM_F_CREATE
    assert header["flags"] & NLM_F_REPLACE
    assert not header["flags"] & NLM_F_EXCL  # idempotent: a second add is no error
    assert (msg["family"], msg["dst_len"], msg["table"]) == (socket.AF_INET, 32, 100)
    assert (msg["proto"], msg["type"], msg["scope"]) == (200, 1, 253)  # unicast, link
    assert msg.get_attr("RTA_DST") == "198.18.100.1"
    assert msg.get_attr("RTA_TABLE") == 100
    assert msg.get_attr("RTA_OIF") == 7


def test_a_table_above_255_travels_in_rta_table_and_ipv6_is_a_slash_128() -> None:
    vip = ipaddress.ip_interface("fd00:198:18:100::1/128")
    msg = decode(route_request(vip, RouteSpec(70000, 201, "vip0"), 3, add=True))
    assert (msg["family"], msg["dst_len"]) == (socket.AF_INET6, 128)
    assert msg["table"] == 252  # RT_TABLE_COMPAT
    assert msg.get_attr("RTA_TABLE") == 70000
    assert msg["proto"] == 201


def test_the_delete_names_table_prefix_and_protocol_not_the_interface() -> None:
    vip = ipaddress.ip_interface("198.18.100.1/32")
    msg = decode(route_request(vip, RouteSpec(100, 200, "lo"), 7, add=False))
    assert msg["header"]["type"] == RTM_DELROUTE
    assert (msg["proto"], msg["scope"], msg["type"]) == (200, 255, 0)  # ours, any scope
    assert msg.get_attr("RTA_OIF") is None
    assert (msg.get_attr("RTA_DST"), msg.get_attr("RTA_TABLE")) == ("198.18.100.1", 100)


def test_host_routes_and_the_guards_route_argument() -> None:
    hosts = host_routes([ipaddress.ip_interface("198.18.100.1/32")])
    assert hosts == (ipaddress.ip_interface("198.18.100.1/32"),)
    assert host_routes([ipaddress.ip_interface("fd00::1/64")])[0].network.prefixlen == 128
    spec = RouteSpec(100, 200, "lo")
    args = guard.Guard("eth0", hosts, None, route=spec)._argv(5)  # type: ignore[arg-type]
    assert args[args.index("--route") + 1] == "100:200:lo"
    assert guard._route_arg("100:200:lo") == spec


# --------------------------------------------- the "Two sites" guide shows what works

GUIDE = Path(__file__).parents[2] / "docs" / "operations.md"


def guide_blocks() -> list[str]:
    text = GUIDE.read_text()
    section = text[text.index("## Two sites") :]
    section = section[: section.index("\n## ", 1)]
    return [block.split("\n", 1)[1] for block in section.split("```")[1::2]]


def test_the_guides_bird_configs_are_the_labs() -> None:
    """The lab runs these very files (tests/integration/test_routed_vip.py)."""
    blocks = guide_blocks()
    node1 = routed.node_bird_conf(
        routed.node_address(1),
        routed.node_as(1),
        routed.gateway(1),
        routed.ROUTER_AS,
        routed.ROUTE_TABLE,
        routed.ROUTE_PROTOCOL,
    )
    peers = [(routed.gateway(i), routed.node_address(i), routed.node_as(i)) for i in (1, 2)]
    router = routed.router_bird_conf(
        routed.gateway(1), routed.ROUTER_AS, peers, [f"{routed.VIP}/32"]
    )
    assert node1 in blocks
    assert router in blocks


def test_the_guides_node_config_loads(tmp_path: Path) -> None:
    (toml,) = [b for b in guide_blocks() if b.startswith("[node]")]
    data = tomllib.loads(toml)
    (tmp_path / "cluster.key").write_bytes(bytes(range(32)))
    data["cluster"]["auth"]["keys"] = {"1": "file:cluster.key"}
    cfg = config.parse(data, base=tmp_path)
    assert vips.route_spec(cfg) == RouteSpec(routed.ROUTE_TABLE, routed.ROUTE_PROTOCOL, "lo")
    assert cfg.vip.addresses == (ipaddress.ip_interface(f"{routed.VIP}/32"),)
    assert cfg.election.backend == "etcd"
