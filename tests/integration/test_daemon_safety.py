"""The VIP never outlives the daemon; one daemon per configuration; `vipcast release`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.lab import oracles
from tests.lab.nodes import VipcastNode, node_sections, render_config, start_node
from tests.lab.wait import wait_until
from vipcast.lab.netns import NETNS_DIR
from vipcast.lab.site import VIP, Site

pytestmark = pytest.mark.root

RELEASE_DEADLINE = 1.0  # s from the main process's death to the VIP gone from the node
EXIT_RUNNING = 5  # vipcast.cli.main.EXIT_RUNNING
FEEDS = {
    "cluster": {"group": "239.255.86.1:8601"},
    "feeds": [{"name": "f", "port": 8600, "deliver": ["127.0.0.1:9600"]}],
}
# an unprivileged user holding only what the systemd unit grants
UNIT_USER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
UNIT_CAPS = ["--inh-caps=+net_admin,+net_raw", "--ambient-caps=+net_admin,+net_raw"]


def holds_vip(site: Site, i: int) -> bool:
    return VIP in oracles.addresses(site.nodes[i - 1])


def pair(site: Site, **kw: Any) -> tuple[VipcastNode, VipcastNode]:
    n1 = start_node(site, 1, election={"priority": 150}, **kw)
    n1.wait_state("MASTER")
    n2 = start_node(site, 2, election={"priority": 100}, **kw)
    n2.wait_state("BACKUP")
    return n1, n2


def children(pid: int) -> dict[int, str]:
    """The child processes of ``pid``, with their command lines."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        pids = [int(p) for p in f.read().split()]
    out = {}
    for child in pids:
        with open(f"/proc/{child}/cmdline", "rb") as f:
            out[child] = f.read().replace(b"\0", b" ").decode()
    return out


def child(pid: int, module: str) -> int:
    found = [c for c, cmd in children(pid).items() if f"-m {module} " in cmd]
    assert len(found) == 1, children(pid)
    return found[0]


def kill_main_process(node: VipcastNode) -> float:
    """SIGKILL the main process only (not its group): its children live on."""
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(5)
    return time.monotonic()


def router_follows(site: Site, i: int, *, announced: bool = True) -> None:
    """The router's ARP entry for the VIP is node ``i``'s (``announced``: from its GARP),
    and is again after the router asks anew: no other node answers for the VIP."""
    want = oracles.link_mac(site.nodes[i - 1])
    what = f"router's ARP entry for the VIP -> node{i}"
    if announced:
        wait_until(lambda: oracles.neighbour_mac(site.router, VIP) == want, 5, what=what)
    subprocess.run(["ip", "-n", site.router.ns, "neigh", "flush", "to", VIP], check=True)
    ping = site.remote.spawn(["ping", "-c", "1", "-W", "1", VIP])
    assert ping.wait(5) == 0, ping.output()
    assert oracles.neighbour_mac(site.router, VIP) == want


def takes_over_after_sigkill(site: Site, n1: VipcastNode, n2: VipcastNode) -> None:
    router_follows(site, 1, announced=False)
    killed = kill_main_process(n1)
    wait_until(lambda: not holds_vip(site, 1), RELEASE_DEADLINE, what="node1 drops the VIP")
    assert time.monotonic() - killed < RELEASE_DEADLINE + 0.1
    n2.wait_state("MASTER", 3)
    router_follows(site, 2)


def vipcast_in(
    site: Site, i: int, args: Sequence[str], user: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    ns = NETNS_DIR / site.nodes[i - 1].ns
    argv = ["nsenter", f"--net={ns}", "--", *user, sys.executable, "-m", "vipcast", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)


def processes_in_node1(site: Site) -> bool:
    pids = ["ip", "netns", "pids", site.nodes[0].ns]
    result = subprocess.run(pids, capture_output=True, check=True)
    return bool(result.stdout.split())


# --- the VIP never outlives the daemon -------------------------------------------


def test_sigkill_of_the_main_process_with_a_feed_removes_the_vip(site: Site) -> None:
    n1, n2 = pair(site, **FEEDS)
    takes_over_after_sigkill(site, n1, n2)


def test_sigkill_of_the_main_process_without_feeds_removes_the_vip(site: Site) -> None:
    n1, n2 = pair(site)
    takes_over_after_sigkill(site, n1, n2)


def test_the_data_plane_removes_the_vip_when_the_guard_cannot(site: Site) -> None:
    n1, n2 = pair(site, **FEEDS)
    guard = child(n1.proc.pid, "vipcast.daemon.guard")
    child(n1.proc.pid, "vipcast.daemon.dataplane")
    os.kill(guard, signal.SIGSTOP)  # the guard is frozen: only the data plane can act
    try:
        takes_over_after_sigkill(site, n1, n2)
    finally:
        os.kill(guard, signal.SIGCONT)


def test_a_guard_that_dies_is_started_again_and_still_guards(site: Site) -> None:
    n1, n2 = pair(site)  # no feeds: the guard alone removes the VIP
    first = child(n1.proc.pid, "vipcast.daemon.guard")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: guards(n1) not in ([], [first]), 5, what="a new guard")
    assert n1.state() == "MASTER"
    takes_over_after_sigkill(site, n1, n2)


def guards(node: VipcastNode) -> list[int]:
    return [c for c, cmd in children(node.proc.pid).items() if "vipcast.daemon.guard" in cmd]


# --- one daemon per configuration ------------------------------------------------


def test_a_second_run_of_the_same_config_touches_nothing(site: Site) -> None:
    n1 = start_node(site, 1, election={"priority": 150})
    n1.wait_state("MASTER")
    assert holds_vip(site, 1)
    second = vipcast_in(site, 1, ["run", "--config", str(n1.config)])
    assert second.returncode == EXIT_RUNNING, second.stderr
    assert "already runs" in second.stderr
    assert "Traceback" not in second.stderr
    assert Path(n1.socket).exists()
    assert holds_vip(site, 1)
    assert n1.state() == "MASTER"
    assert n1.status()["vips_held"] == [f"{VIP}/24"]


@pytest.mark.parametrize(
    ("other", "what"),
    [
        ({"node": {"control_socket": "other.sock"}}, "VRID 51 (ipv4) on eth0"),
        ({"election": {"vrid": 52}}, "the control socket"),
    ],
)
def test_a_second_daemon_for_the_same_router_or_socket_is_refused(
    site: Site, other: dict[str, dict[str, Any]], what: str
) -> None:
    n1 = start_node(site, 1, election={"priority": 150})
    n1.wait_state("MASTER")
    sections = node_sections(site, 1, election={"priority": 150})
    for table, values in other.items():
        sections[table].update(values)
    if "control_socket" in other.get("node", {}):
        sections["node"]["control_socket"] = str(Path(n1.socket).with_name("other.sock"))
    config = site.lab.workdir / "second.toml"
    config.write_text(render_config(sections))
    second = vipcast_in(site, 1, ["run", "--config", str(config)])
    assert second.returncode == EXIT_RUNNING, second.stderr
    assert what in second.stderr
    assert holds_vip(site, 1)
    assert n1.state() == "MASTER"


# --- vipcast release (the unit's ExecStopPost) -----------------------------------


def test_release_is_refused_while_the_daemon_runs_and_cleans_up_after_it(site: Site) -> None:
    n1 = start_node(site, 1, election={"priority": 150})
    n1.wait_state("MASTER")
    refused = vipcast_in(site, 1, ["release", "--config", str(n1.config)])
    assert refused.returncode == EXIT_RUNNING, refused.stderr
    assert "release refused" in refused.stderr
    assert holds_vip(site, 1)
    n1.proc.kill_group()  # what systemd does to the unit's processes: the guard dies too
    n1.proc.wait(5)
    wait_until(lambda: not processes_in_node1(site), 5, what="the whole group gone")
    assert holds_vip(site, 1)  # killed at once, nobody could remove it
    released = vipcast_in(site, 1, ["release", "--config", str(n1.config)])
    assert released.returncode == 0, released.stderr
    assert f"released {VIP}/24 from eth0" in released.stdout
    assert not holds_vip(site, 1)
    again = vipcast_in(site, 1, ["release", "--config", str(n1.config)])
    assert again.returncode == 0, again.stderr
    assert "nothing to release" in again.stdout


def test_release_works_as_the_units_user_and_explains_a_missing_capability(
    site: Site,
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="vipcast-user-"))
    try:
        shared.chmod(0o777)
        sections = node_sections(site, 1)
        sections["node"]["control_socket"] = str(shared / "control.sock")
        config = shared / "user.toml"
        config.write_text(render_config(sections))
        config.chmod(0o644)
        site.nodes[0].add_address("eth0", f"{VIP}/24")  # as a crashed daemon left it
        args = ["release", "--config", str(config)]
        bare = vipcast_in(site, 1, args, user=[*UNIT_USER, "--inh-caps=-all"])
        assert bare.returncode == 4, bare.stderr
        assert "CAP_NET_ADMIN" in bare.stderr
        assert holds_vip(site, 1)
        unit = vipcast_in(site, 1, args, user=[*UNIT_USER, *UNIT_CAPS])
        assert unit.returncode == 0, unit.stderr
        assert not holds_vip(site, 1)
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)
