"""[election] backend and [etcd]: the quorum backend's keys, each mistake named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vipcast import config
from vipcast.cli import check_config
from vipcast.config import ConfigError

ETCD: dict[str, Any] = {
    "node": {"name": "n1", "interface": "eth0"},
    "election": {"backend": "etcd"},
    "vip": {"addresses": ["198.18.0.100/24"]},
    "etcd": {"endpoints": ["http://198.18.0.30:2379"]},
}


def etcd_with(**keys: Any) -> dict[str, Any]:
    data = {k: dict(v) for k, v in ETCD.items()}
    data["etcd"].update(keys)
    return data


def test_the_default_backend_is_vrrp_and_needs_a_vrid() -> None:
    cfg = config.parse(
        {
            "node": {"name": "n1", "interface": "eth0"},
            "election": {"vrid": 7},
            "vip": {"addresses": ["198.18.0.100/24"]},
        }
    )
    assert cfg.election.backend == "vrrp"
    assert cfg.etcd is None
    with pytest.raises(ConfigError) as e:
        config.parse({**cfg_without_vrid(), "election": {}})
    assert e.value.path == "election.vrid"


def cfg_without_vrid() -> dict[str, Any]:
    return {"node": ETCD["node"], "vip": ETCD["vip"]}


def test_etcd_defaults() -> None:
    cfg = config.parse(ETCD)
    e = cfg.etcd
    assert e is not None
    assert cfg.election.backend == "etcd"
    assert e.endpoints == ("http://198.18.0.30:2379",)
    assert e.election == "vipcast/leader"
    assert e.lease_ttl == 2
    assert e.renew_every == 0.5
    assert e.timeout == 0.5
    assert e.ca_file is None


def test_tls_and_auth_files_relative_to_the_config(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem", "password"):
        (tmp_path / name).write_text("x")
    data = etcd_with(
        endpoints=["https://198.18.0.30:2379"],
        ca_file="ca.pem",
        cert_file="cert.pem",
        key_file="key.pem",
        user="vipcast",
        password_file="password",  # noqa: S106 (a file name)
    )
    e = config.parse(data, base=tmp_path).etcd
    assert e is not None
    assert e.ca_file == str(tmp_path / "ca.pem")
    assert e.password_file == str(tmp_path / "password")
    assert e.user == "vipcast"


@pytest.mark.parametrize(
    ("keys", "path", "reason"),
    [
        ({"endpoints": []}, "etcd.endpoints", "at least one"),
        ({"endpoints": ["198.18.0.30:2379"]}, "etcd.endpoints[0]", "http://host:port"),
        ({"endpoints": ["ftp://h:1"]}, "etcd.endpoints[0]", "http://host:port"),
        ({"endpoints": ["http://h:99999"]}, "etcd.endpoints[0]", "not a port"),
        ({"lease_ttl": 0}, "etcd.lease_ttl", "1..3600"),
        ({"lease_ttl": 1.5}, "etcd.lease_ttl", "integer"),
        ({"renew_interval": 1.0}, "etcd.renew_interval", "half of lease_ttl"),
        ({"max_drift": 0.5}, "etcd.max_drift", "fraction"),
        ({"stop_margin": 1.5}, "etcd.stop_margin", "second renewal"),
        ({"election": "a b"}, "etcd.election", "without spaces"),
        ({"ca_file": "/nonexistent/ca.pem"}, "etcd.ca_file", "No such file"),
        ({"user": "vipcast"}, "etcd.user", "password or password_file"),
        ({"password": "pw"}, "etcd.user", "give user with"),
        ({"lease": 3}, "etcd.lease", "unknown key"),
    ],
)
def test_mistakes_name_the_key(keys: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(etcd_with(**keys))
    assert e.value.path == path
    assert reason in e.value.reason


def test_tls_files_need_https(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ConfigError) as e:
        config.parse(etcd_with(ca_file="ca.pem"), base=tmp_path)
    assert e.value.path == "etcd.endpoints"


def test_backend_and_table_go_together() -> None:
    no_table = {k: v for k, v in ETCD.items() if k != "etcd"}
    with pytest.raises(ConfigError, match="needs an \\[etcd\\] table"):
        config.parse(no_table)
    vrrp = {**ETCD, "election": {"vrid": 3}}
    with pytest.raises(ConfigError, match='backend = "etcd"'):
        config.parse(vrrp)
    with pytest.raises(ConfigError) as e:
        config.parse({**ETCD, "election": {"backend": "raft"}})
    assert e.value.path == "election.backend"


def test_an_inline_password_or_a_file_not_both(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    e = config.parse(etcd_with(user="vipcast", password="secret")).etcd  # noqa: S106
    assert e is not None
    assert (e.user, e.password, e.password_file) == ("vipcast", "secret", None)
    with pytest.raises(ConfigError) as err:
        config.parse(
            etcd_with(user="v", password="s", password_file="pw"),  # noqa: S106
            base=tmp_path,
        )
    assert err.value.path == "etcd.password"


def test_check_config_warns_of_open_etcd_secrets_and_plain_etcd(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem", "pw"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o600)
    secure = etcd_with(
        endpoints=["https://198.18.0.30:2379"],
        ca_file="ca.pem",
        cert_file="cert.pem",
        key_file="key.pem",
        user="vipcast",
        password_file="pw",  # noqa: S106 (a file name)
    )
    assert check_config.warnings(config.parse(secure, base=tmp_path)) == []
    (tmp_path / "key.pem").chmod(0o640)
    (line,) = check_config.warnings(config.parse(secure, base=tmp_path))
    assert line.startswith(f"{tmp_path / 'key.pem'} is readable by others")
    plain = check_config.warnings(config.parse(ETCD))
    assert any("without authentication" in w for w in plain), plain
    assert any("plain http" in w for w in plain), plain
    assert not any("adverts" in w for w in plain), plain  # no VRRP with this backend


def test_check_config_warns_of_an_inline_password_in_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("")
    path.chmod(0o644)
    cfg = config.parse(etcd_with(user="vipcast", password="secret"))  # noqa: S106
    lines = check_config.warnings(cfg, path)
    assert f"{path} is readable by others (chmod 600 {path})" in lines
