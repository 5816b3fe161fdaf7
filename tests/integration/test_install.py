"""``make install`` on this host (under a temporary folder), the unit it writes, uninstall.

The install is the real one (a virtualenv built with the system Python, pip, the unit
written with the chosen paths); systemd's own tools judge the unit: ``verify`` and the
``security`` exposure. No systemd runs here as PID 1, so the sandbox is checked by those
tools and by the syscall sets below, not by starting the service.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
MAX_EXPOSURE = 3.0
# what the daemon calls that a seccomp filter could refuse: raw sockets and netlink,
# batched I/O, the election's timerfd and SCHED_RR, process groups for roles and hooks
DAEMON_SYSCALLS = (
    "socket", "setsockopt", "bind", "sendmmsg", "recvmmsg", "sendto", "recvfrom",
    "epoll_wait", "timerfd_create", "timerfd_settime", "sched_setscheduler", "prctl",
    "setpgid", "kill", "clone", "execve", "wait4", "pidfd_open", "capget", "ioctl",
)  # fmt: skip

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (package systemd)"
)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("install")
    paths = {
        "PREFIX": root / "opt" / "vipcast",
        "BINDIR": root / "bin",
        "SYSCONFDIR": root / "etc",
        "UNITDIR": root / "systemd",
        "DOCDIR": root / "doc",
    }
    done = run("make", "-C", str(REPO), "install", "SYSTEM_USER=", *make_args(paths))
    assert done.returncode == 0, done.stdout + done.stderr
    return {**paths, "unit": paths["UNITDIR"] / "vipcast.service"}


def make_args(paths: dict[str, Path]) -> list[str]:
    return [f"{k}={v}" for k, v in paths.items() if k.isupper()]


def unit_value(unit: Path, key: str) -> str:
    (value,) = re.findall(rf"^{key}=(.*)$", unit.read_text(), re.M)
    return value


def test_the_command_on_path_runs_from_the_venv(installed: dict[str, Path]) -> None:
    command = installed["BINDIR"] / "vipcast"
    assert command.resolve() == (installed["PREFIX"] / "bin" / "vipcast").resolve()
    version = run(str(command), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("vipcast ")
    checked = run(str(command), "check-config", "--offline", str(REPO / "examples" / "node.toml"))
    assert checked.returncode == 0, checked.stderr


def test_the_installed_unit_passes_systemd_analyze_verify(installed: dict[str, Path]) -> None:
    unit = installed["unit"]
    exec_start = unit_value(unit, "ExecStart").split()
    assert exec_start[0] == str(installed["BINDIR"] / "vipcast")
    assert exec_start[-1] == str(installed["SYSCONFDIR"] / "vipcast" / "node.toml")
    doc = unit_value(unit, "Documentation").removeprefix("file://")
    assert Path(doc).is_file(), doc  # the docs are where the unit says
    assert (installed["SYSCONFDIR"] / "vipcast" / "node.toml.example").is_file()
    for shipped in ("vipcast-rules.yml", "vipcast.json", "vipcast.lua"):  # alerts, dashboard
        assert (installed["DOCDIR"] / shipped).is_file(), shipped  # and dissector, with the docs
    done = run("systemd-analyze", "verify", str(unit))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_the_unit_is_hardened_but_keeps_what_the_daemon_needs(installed: dict[str, Path]) -> None:
    unit = installed["unit"]
    done = run("systemd-analyze", "security", "--offline=yes", str(unit))
    level = float(re.findall(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)[0])
    assert level <= MAX_EXPOSURE, done.stdout
    text = unit.read_text()
    for needed in (
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
        "CPUSchedulingPolicy=rr",
        "RestrictRealtime=no",
        "Type=notify",
        "WatchdogSec=",
    ):
        assert needed in text
    families = unit_value(unit, "RestrictAddressFamilies").split()
    assert {"AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"} <= set(families)
    allowed = syscalls(unit_value(unit, "SystemCallFilter").split())
    assert not set(DAEMON_SYSCALLS) - allowed, sorted(set(DAEMON_SYSCALLS) - allowed)


def syscalls(names: list[str]) -> set[str]:
    """Every system call the filter's groups and names allow, expanded as systemd does."""
    out, todo, seen = set(), list(names), set()
    while todo:
        name = todo.pop()
        if not name.startswith("@"):
            out.add(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        listing = run("systemd-analyze", "syscall-filter", name).stdout.splitlines()
        todo += [line.strip() for line in listing[1:] if line.strip() and "#" not in line]
    return out


def test_uninstall_removes_all_but_the_config(installed: dict[str, Path]) -> None:
    config = installed["SYSCONFDIR"] / "vipcast" / "node.toml"
    config.write_text("# the operator's own\n")
    done = run("make", "-C", str(REPO), "uninstall", *make_args(installed))
    assert done.returncode == 0, done.stderr
    for gone in ("PREFIX", "DOCDIR", "unit"):
        assert not installed[gone].exists(), gone
    assert not (installed["BINDIR"] / "vipcast").exists()
    assert config.read_text() == "# the operator's own\n"
