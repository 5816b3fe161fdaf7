"""``vipcast keygen`` and the security warnings of ``vipcast check-config``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vipcast import config, keys
from vipcast.cli import check_config
from vipcast.cli.main import EXIT_FAILURE, main


def test_keygen_writes_a_0600_key_that_parses_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vrrp.key"
    assert main(["keygen", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = keys.parse_key(1, f"file:{path}")
    assert len(key.secret) == keys.KEY_MIN
    before = path.read_bytes()
    assert main(["keygen", str(path)]) == EXIT_FAILURE
    assert path.read_bytes() == before
    assert main(["keygen", "--bytes", "64", str(tmp_path / "long.key")]) == 0
    assert len(keys.parse_key(1, f"file:{tmp_path / 'long.key'}").secret) == 64
    assert "file:" in capsys.readouterr().out


def cfg(tmp_path: Path, *, auth: bool, feeds: bool, mode: str = "enforce") -> config.Config:
    key = tmp_path / "k"
    if not key.exists():
        keys.write_key_file(key, keys.new_key())
    election: dict[str, object] = {"vrid": 51}
    if auth:
        election["auth"] = {"keys": {"1": f"file:{key}"}, "active_key": 1, "mode": mode}
    data: dict[str, object] = {
        "node": {"name": "n1", "interface": "eth0"},
        "election": election,
        "vip": {"addresses": ["198.18.0.100/24"]},
    }
    if feeds:
        data["cluster"] = {"group": "239.255.86.1:8601"}
        data["feed"] = [{"name": "f", "port": 8600}]
    return config.parse(data)


def test_check_config_warns_once_each(tmp_path: Path) -> None:
    lines = check_config.warnings(cfg(tmp_path, auth=False, feeds=True))
    assert len(lines) == 2
    assert lines[0].startswith("adverts are unauthenticated")
    assert lines[1].startswith("envelopes are unauthenticated")
    assert check_config.warnings(cfg(tmp_path, auth=True, feeds=False)) == []
    os.chmod(tmp_path / "k", 0o640)
    (line,) = check_config.warnings(cfg(tmp_path, auth=True, feeds=False))
    assert "readable by others" in line
    assert str(tmp_path / "k") in line
    os.chmod(tmp_path / "k", 0o600)
    (line,) = check_config.warnings(cfg(tmp_path, auth=True, feeds=False, mode="permissive"))
    assert "unsigned adverts are still accepted" in line
