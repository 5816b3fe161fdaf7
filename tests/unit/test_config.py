"""Configuration: the documented contract loads; every mistake names its key."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import pytest

from vipcast import config
from vipcast.config import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "node.toml"

MINIMAL: dict[str, Any] = {
    "node": {"name": "n1", "interface": "eth0"},
    "election": {"vrid": 51},
    "vip": {"addresses": ["198.18.0.100/24"]},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {k: dict(v) for k, v in MINIMAL.items()}
    *parents, key = path.split(".")
    target = data
    for p in parents:
        target = target.setdefault(p, {})
    target[key] = value
    return data


def test_the_annotated_example_loads() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.election.vrid == 51
    assert cfg.election.advert_interval == 0.1
    assert cfg.vip.addresses == (ipaddress.ip_interface("198.18.0.100/24"),)
    assert cfg.cluster.group == ("239.255.86.1", 8601)
    assert cfg.feeds[0].send_to == (("198.19.0.2", 8600),)
    assert cfg.feeds[0].feed_id == 1
    assert cfg.metrics.listen == ("127.0.0.1", 9586)


def test_defaults_fill_a_minimal_file() -> None:
    cfg = config.parse(MINIMAL)
    assert cfg.election.priority == 100
    assert cfg.election.checksum == "pseudo-header"
    assert cfg.vip.garp_refresh == 60.0
    assert cfg.feeds == ()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("election.priority", 0, "election.priority: an integer 1..255"),
        ("election.priority", 256, "election.priority: an integer 1..255"),
        ("election.vrid", "51", "election.vrid: an integer 1..255"),
        ("election.advert_interval", 0.005, "election.advert_interval: a number of seconds"),
        ("election.advert_interval", 41, "election.advert_interval: a number of seconds"),
        ("election.advert_interval", 0.015, "whole number of centiseconds"),
        ("election.checksum", "rfc", "election.checksum: one of"),
        ("election.unicast_peers", ["not-an-ip"], "election.unicast_peers[0]: an IP address"),
        ("election.preemt", True, "election.preemt: unknown key"),
        ("vip.addresses", ["198.18.0.100"], "vip.addresses[0]: an address with its prefix"),
        ("vip.addresses", [], "vip.addresses: at least one address"),
        ("node.interface", "a-very-long-interface-name", "node.interface: an interface name"),
        ("cluster.group", "198.18.0.1:8601", "cluster.group: 198.18.0.1 is not a multicast"),
        ("cluster.key", "short", "cluster.key: a shared key of at least 16"),
        ("bogus", 1, "bogus: unknown key"),
    ],
)
def test_mistakes_name_the_key_and_the_reason(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.parse(with_(path, value))


def test_missing_required_key_is_named() -> None:
    data = {k: v for k, v in MINIMAL.items() if k != "election"}
    with pytest.raises(ConfigError, match="election: required table"):
        config.parse(data)


def test_feed_port_may_be_a_service_name() -> None:
    data = with_("cluster.group", "239.255.86.1:8601")
    data["feed"] = [{"name": "dns", "port": "domain"}]
    assert config.parse(data).feeds[0].port == 53


def test_unknown_service_name_is_reported() -> None:
    data = with_("cluster.group", "239.255.86.1:8601")
    data["feed"] = [{"name": "x", "port": "no-such-service-vc"}]
    with pytest.raises(ConfigError, match=r"feed\[0\].port: no UDP service"):
        config.parse(data)


def test_duplicate_feed_ports_are_rejected() -> None:
    data = with_("cluster.group", "239.255.86.1:8601")
    data["feed"] = [{"name": "a", "port": 8600}, {"name": "b", "port": 8600}]
    with pytest.raises(ConfigError, match=r"feed\[1\].port: duplicate port"):
        config.parse(data)


def test_feeds_need_a_cluster_destination() -> None:
    data = dict(MINIMAL, feed=[{"name": "a", "port": 8600}])
    with pytest.raises(ConfigError, match="cluster: feeds need"):
        config.parse(data)


def test_ipv6_endpoints_use_brackets() -> None:
    data = with_("feed", [{"name": "a", "port": 8600, "deliver": ["[fd00:198:18::b]:9600"]}])
    data["cluster"] = {"group": "239.255.86.1:8601"}
    assert config.parse(data).feeds[0].deliver == (("fd00:198:18::b", 9600),)


def test_broken_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nname=1")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        config.load(bad)


def test_example_is_valid_toml_for_other_tools_too() -> None:
    assert "feed" in tomllib.loads(EXAMPLE.read_text())
