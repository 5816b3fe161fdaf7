"""``[election.auth]``: keys by id (inline or from files), active key, mode, window."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vipcast import config, keys
from vipcast.config import ConfigError

HEX = "hex:" + bytes(range(32)).hex()


def doc(auth: dict[str, Any], interval: float = 1.0) -> dict[str, Any]:
    return {
        "node": {"name": "n1", "interface": "eth0"},
        "election": {"vrid": 51, "advert_interval": interval, "auth": auth},
        "vip": {"addresses": ["198.18.0.100/24"]},
    }


def test_keys_inline_and_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    keys.write_key_file(tmp_path / "vrrp.key", b"k" * 32)
    (tmp_path / "node.toml").write_text(
        "[node]\nname = 'n1'\ninterface = 'eth0'\n"
        "[election]\nvrid = 51\n"
        "[election.auth]\n"
        f'keys = {{ 1 = "{HEX}", 2 = "file:vrrp.key" }}\n'
        "active_key = 2\nmode = 'permissive'\n"
        "[vip]\naddresses = ['198.18.0.100/24']\n"
    )
    a = config.load(tmp_path / "node.toml").election.auth
    assert a is not None
    assert a.secrets() == {1: bytes(range(32)), 2: b"k" * 32}
    assert a.active_key == 2
    assert a.mode == "permissive"
    assert a.keys[1].path == tmp_path / "vrrp.key"
    assert a.anti_replay == "time"


def test_defaults_are_keepalivedss() -> None:
    a = config.parse(doc({"keys": {"1": HEX}, "active_key": 1})).election.auth
    assert a is not None
    assert (a.mode, a.anti_replay, a.time_window) == ("enforce", "time", 5)
    slow = config.parse(doc({"keys": {"1": HEX}, "active_key": 1}, 20)).election.auth
    assert slow is not None
    assert slow.time_window == 60  # 3 x the advert interval


def test_no_table_no_auth() -> None:
    cfg = config.parse(
        {
            "node": {"name": "n1", "interface": "eth0"},
            "election": {"vrid": 51},
            "vip": {"addresses": ["198.18.0.100/24"]},
        }
    )
    assert cfg.election.auth is None


@pytest.mark.parametrize(
    ("auth", "path", "reason"),
    [
        ({"keys": {"1": HEX}}, "election.auth.active_key", "required"),
        ({"keys": {"1": HEX}, "active_key": 2}, "election.auth.active_key", "not one of"),
        ({"keys": {}, "active_key": 1}, "election.auth.keys", "at least one"),
        ({"keys": {"x": HEX}, "active_key": 1}, "election.auth.keys.x", "key id"),
        ({"keys": {"0": HEX}, "active_key": 1}, "election.auth.keys.0", "key id 0"),
        ({"keys": {"1": "short"}, "active_key": 1}, "election.auth.keys.1", "5 bytes"),
        (
            {"keys": {"1": "file:/nonexistent/k"}, "active_key": 1},
            "election.auth.keys.1",
            "key file",
        ),
        ({"keys": {"1": 5}, "active_key": 1}, "election.auth.keys.1", "key id (1..255) ="),
        ({"keys": {"1": HEX, "01": HEX}, "active_key": 1}, "election.auth.keys", "duplicate"),
        ({"keys": {"1": HEX}, "active_key": 1, "mode": "on"}, "election.auth.mode", "enforce"),
        (
            {"keys": {"1": HEX}, "active_key": 1, "time_window": 0},
            "election.auth.time_window",
            "1..300",
        ),
        (
            {"keys": {"1": HEX}, "active_key": 1, "time_window": 301},
            "election.auth.time_window",
            "1..300",
        ),
        (
            {"keys": {"1": HEX}, "active_key": 1, "anti_replay": "x"},
            "election.auth.anti_replay",
            "monotonic",
        ),
        ({"keys": {"1": HEX}, "active_key": 1, "typo": 1}, "election.auth.typo", "unknown key"),
    ],
)
def test_mistakes_name_the_key(auth: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(doc(auth))
    assert e.value.path == path
    assert reason in e.value.reason


def test_a_key_file_readable_by_others_is_found(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keys.write_key_file(path, b"k" * 32)
    assert not keys.readable_by_others(path)
    os.chmod(path, 0o644)
    assert keys.readable_by_others(path)
