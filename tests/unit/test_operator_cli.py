"""What an operator meets first: check-config on and off the node, --help, status errors.

Real processes (``python -m vipcast``) and a real unix socket; no daemon is needed for
these, so they run unprivileged and fast.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vipcast import config
from vipcast.cli import status

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "node.toml"
NO_SUCH_IF = "vcnone9"


def vipcast(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vipcast", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def elsewhere(tmp_path: Path) -> Path:
    """The example, for a machine whose interface this host does not have."""
    path = tmp_path / "other.toml"
    text = EXAMPLE.read_text().replace('interface = "eth0"', f'interface = "{NO_SUCH_IF}"')
    path.write_text(text.replace("file:", f"file:{EXAMPLE.parent}/"))
    return path


def test_check_config_on_a_host_without_the_interface_is_an_error(tmp_path: Path) -> None:
    result = vipcast("check-config", str(elsewhere(tmp_path)))
    assert result.returncode == 3, result
    assert f"node.interface: no interface {NO_SUCH_IF!r}" in result.stderr
    assert "not on this host" in result.stderr
    assert "--offline" in result.stderr
    assert "Traceback" not in result.stderr
    assert "OK" not in result.stdout


def test_check_config_offline_checks_a_file_for_another_machine(tmp_path: Path) -> None:
    result = vipcast("check-config", "--offline", str(elsewhere(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "not checked (--offline)" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(elsewhere(tmp_path).read_text().replace("priority = 150", "priority = 300"))
    refused = vipcast("check-config", "--offline", str(bad))
    assert refused.returncode == 3
    assert "election.priority" in refused.stderr


def test_help_speaks_to_the_user_not_the_code() -> None:
    result = vipcast("--help")
    assert result.returncode == 0
    assert "Entry point" not in result.stdout
    assert "exit codes" not in result.stdout
    assert "virtual IP" in result.stdout
    assert "check-config" in result.stdout


def test_status_json_without_a_daemon_answers_json_on_stdout(tmp_path: Path) -> None:
    result = vipcast("status", "--json", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["ok"] is False
    assert "is it running?" in answer["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_permission_error_on_the_socket_says_so(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        path.chmod(0o660)  # as the daemon leaves it
        listener.listen(1)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        argv += [sys.executable, "-m", "vipcast", "status", "--socket", str(path)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=env, check=False
        )
    finally:
        listener.close()
    assert result.returncode == 1
    assert "Permission denied" in result.stderr
    assert "is it running?" not in result.stderr
    assert "root or as the daemon's user or group" in result.stderr


def test_human_status_has_no_python_reprs_and_sessions_in_hex() -> None:
    answer = {
        "ok": True,
        "status": {
            "state": "MASTER",
            "handed_over": False,
            "vips_held": True,
            "rejected": {},
            "faults": {},
            "master": None,
            "feeds": {"radar": {"session": 0x1A2B3C4D5E, "delivering": 0, "delivered": 7}},
            "roles": {"web": {"running": True, "last_failure": None}},
        },
    }
    text = status.render(answer)
    rows = dict(line.split(None, 1) for line in text.splitlines())
    assert rows["handed_over"] == "no"
    assert rows["vips_held"] == "yes"
    assert rows["rejected"] == "-"
    assert rows["master"] == "-"
    assert rows["feeds.radar.session"] == "1a2b3c4d5e"
    assert rows["feeds.radar.delivering"] == "-"  # no session followed yet
    assert rows["feeds.radar.delivered"] == "7"
    assert rows["roles.web.running"] == "yes"
    assert not re.search(r"\{\}|\bFalse\b|\bTrue\b|\bNone\b", text), text


# --------------------------------------------------------- the README reference table


def readme_keys() -> set[str]:
    """Every key the README's "Configuration reference" table names."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    found: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        for cell in re.findall(r"`([^`]+)`", line.split("|")[1]):
            array = re.match(r"\[\[(\w+)\]\] (.+)", cell)
            if array:
                found |= {f"{array[1]}[].{k.strip()}" for k in array[2].split(",")}
            else:
                found.add(cell)
    return found


def config_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> set[str]:
    """Every key the loader reads (a _Table.get), over configs that open every table."""
    seen: set[str] = set()
    original = config._Table.get

    def recording(self: config._Table, key: str, *args: object) -> object:
        seen.add(re.sub(r"\[\d+\]", "[]", self.path_of(key)))
        return original(self, key, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(config._Table, "get", recording)
    data = config.tomllib.loads(elsewhere(tmp_path).read_text())
    data["role"] = [{"name": "web", "when": "master", "command": ["true"]}]
    data["track"] = [{"name": "up", "kind": "interface", "target": "eth0"}]
    config.parse(data)
    del data["cluster"]["auth"]
    data["cluster"]["key"] = "sixteen-chars-or-more"
    config.parse(data)
    data["election"] = {"backend": "etcd"}
    data["etcd"] = {"endpoints": ["http://198.18.0.30:2379"]}
    config.parse(data)
    return seen


def test_every_config_key_is_in_the_readme_reference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = config_keys(monkeypatch, tmp_path)
    assert len(keys) > 60  # the recording saw the loader
    missing = sorted(keys - readme_keys())
    assert not missing, f"README.md 'Configuration reference' lacks {missing}"
