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


def load_example(tmp_path: Path) -> config.Config:
    """The example as it is: its key files (public examples) lie beside it."""
    return config.load(EXAMPLE)


def test_the_annotated_example_loads(tmp_path: Path) -> None:
    cfg = load_example(tmp_path)
    assert cfg.cluster.auth is not None
    assert [k.id for k in cfg.cluster.auth.keys] == [cfg.cluster.auth.active_key] == [1]
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


# ---------------------------------------------------------------- cluster keys

HEX_KEY = "hex:" + bytes(range(32)).hex()


def test_cluster_auth_takes_keys_by_id_from_values_and_files(tmp_path: Path) -> None:
    (tmp_path / "k2").write_text("hex:" + "ab" * 40 + "\n")
    data = with_("cluster.auth", {"keys": {"1": HEX_KEY, "2": "file:k2"}, "active_key": 2})
    auth = config.parse(data, base=tmp_path).cluster.auth
    assert auth is not None
    assert auth.secrets() == {1: bytes(range(32)), 2: b"\xab" * 40}
    assert auth.active_key == 2
    assert auth.keys[1].path == tmp_path / "k2"
    assert (auth.anti_replay, auth.time_window, auth.window_ns) == ("time", 5.0, 5_000_000_000)
    assert "ab" not in repr(auth)  # secrets never printed


def test_cluster_key_is_the_shorthand_for_key_id_1_with_its_bytes_unchanged() -> None:
    auth = config.parse(with_("cluster.key", "a shared secret of 16+ chars")).cluster.auth
    assert auth is not None
    assert auth.secrets() == {1: b"a shared secret of 16+ chars"}
    assert auth.active_key == 1
    assert config.parse(MINIMAL).cluster.auth is None


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"keys": {"1": HEX_KEY}, "active_key": 2}, "cluster.auth.active_key: key id 2 is not in"),
        ({"keys": {"1": HEX_KEY}}, "cluster.auth.active_key: required"),
        ({"keys": {}, "active_key": 1}, "cluster.auth.keys: at least one key"),
        ({"keys": {"0": HEX_KEY}, "active_key": 1}, r"cluster.auth.keys.0: key id 0 not in 1..255"),
        ({"keys": {"x": HEX_KEY}, "active_key": 1}, "cluster.auth.keys.x: key id"),
        ({"keys": {"1": "short"}, "active_key": 1}, "cluster.auth.keys.1: key 1 is 5 bytes"),
        ({"keys": {"1": "hex:zz"}, "active_key": 1}, "cluster.auth.keys.1: not hex"),
        ({"keys": {"1": "file:/nonexistent/k"}, "active_key": 1}, "cluster.auth.keys.1: key file"),
        ({"keys": {"1": HEX_KEY}, "active_key": 1, "anti_replay": "x"}, "anti_replay: one of"),
        ({"keys": {"1": HEX_KEY}, "active_key": 1, "time_window": 0.5}, "time_window"),
        ({"keys": {"1": HEX_KEY}, "active_key": 1, "kyes": 1}, "cluster.auth.kyes: unknown key"),
    ],
)
def test_cluster_auth_mistakes_name_the_key(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(with_("cluster.auth", auth))


def test_cluster_key_and_cluster_auth_together_are_refused() -> None:
    data = with_("cluster.auth", {"keys": {"1": HEX_KEY}, "active_key": 1})
    data["cluster"]["key"] = "a shared secret of 16+ chars"
    with pytest.raises(ConfigError, match=r"cluster.key: give cluster.key or \[cluster.auth\]"):
        config.parse(data)
