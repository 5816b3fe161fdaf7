"""Clear, actionable errors: bad config, unknown interface, missing privileges, no daemon."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.lab.nodes import node_sections, render_config, start_node
from tests.lab.wait import wait_until
from vipcast.lab.site import Site

EXAMPLE = Path(__file__).parents[2] / "examples" / "node.toml"


def vipcast(
    *args: str, ns: str | None = None, user: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vipcast", *args]
    if user:  # an unprivileged user with no capabilities
        argv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            *argv,
        ]
    if ns:
        argv = ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.root
def test_check_config_accepts_the_example(site: Site) -> None:
    """On a node whose eth0 has an IPv4 address (check-config looks at the interface)."""
    result = vipcast("check-config", str(EXAMPLE), ns=site.nodes[0].ns)
    assert result.returncode == 0, result.stderr
    assert "vrid 51" in result.stdout
    assert "VRRP and relay from 198.18.0.11" in result.stdout


@pytest.mark.root
def test_check_config_refuses_an_interface_that_is_not_here(site: Site) -> None:
    """run would exit 3 on this host; check-config says so first (--offline: not asked)."""
    result = vipcast("check-config", str(EXAMPLE), ns=site.switch.ns)
    assert result.returncode == 3, result.stdout
    assert "node.interface: no interface 'eth0'" in result.stderr
    assert "--offline" in result.stderr
    offline = vipcast("check-config", "--offline", str(EXAMPLE), ns=site.switch.ns)
    assert offline.returncode == 0, offline.stderr


@pytest.mark.root
def test_a_handover_asked_of_a_backup_is_one_error_line(site: Site) -> None:
    master = start_node(site, 1, election={"priority": 200})
    master.wait_state("MASTER")
    backup = start_node(site, 2, election={"priority": 100})
    backup.wait_state("BACKUP")
    result = vipcast("handover", "--socket", backup.socket, "--timeout", "1")
    assert result.returncode == 1
    assert "handover refused: this node is BACKUP, not MASTER" in result.stderr
    # logged once, at INFO
    wait_until(lambda: "refused: this node is BACKUP" in backup.proc.output(), 5, what="log")
    log = backup.proc.output()
    assert "Traceback" not in log, log
    assert "failed" not in log, log


def test_an_invalid_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("priority = 150", "priority = 300"))
    result = vipcast("check-config", str(bad))
    assert result.returncode == 3
    assert "election.priority: an integer 1..255" in result.stderr


def test_status_without_a_daemon_says_so(tmp_path: Path) -> None:
    result = vipcast("status", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 1
    assert "is it running?" in result.stderr


@pytest.mark.root
def test_an_unknown_interface_is_named_with_the_ones_that_exist(site: Site) -> None:
    sections = node_sections(site, 1, node={"interface": "eth9"})
    path = site.lab.workdir / "eth9.toml"
    path.write_text(render_config(sections))
    result = vipcast("run", "--config", str(path), ns=site.nodes[0].ns)
    assert result.returncode != 0
    assert "no interface 'eth9'" in result.stderr
    assert "eth0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.root
def test_missing_capabilities_are_explained(site: Site) -> None:
    shared = Path(tempfile.mkdtemp(prefix="vipcast-user-"))  # readable by the user
    shared.chmod(0o755)
    sections = node_sections(site, 1)
    sections["node"]["control_socket"] = str(shared / "control.sock")
    path = shared / "user.toml"
    path.write_text(render_config(sections))
    path.chmod(0o644)
    shared.chmod(0o777)
    try:
        result = vipcast("run", "--config", str(path), ns=site.nodes[0].ns, user=True)
    finally:
        shutil.rmtree(shared)
    assert result.returncode == 4, result.stderr
    assert "CAP_NET_RAW" in result.stderr
    assert "AmbientCapabilities" in result.stderr
    assert "Traceback" not in result.stderr
