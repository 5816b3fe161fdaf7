"""Gap-free, identical streams: loss on the LAN, a frozen receiver, handover, crash."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.lab import faults
from tests.lab.nodes import VipcastNode, start_node, start_sender, start_sink
from tests.lab.wait import wait_until
from vipcast.daemon import control
from vipcast.lab.site import VIP, Site

pytestmark = pytest.mark.root

FEEDS = [{"name": "radar", "port": 8600, "deliver": ["127.0.0.1:9600"]}]
CLUSTER = {"group": "239.255.86.1:8601"}


def pair(site: Site, **election: Any) -> tuple[VipcastNode, VipcastNode]:
    n1 = start_node(site, 1, election={"priority": 150, **election}, cluster=CLUSTER, feeds=FEEDS)
    n2 = start_node(site, 2, election=election, cluster=CLUSTER, feeds=FEEDS)
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    return n1, n2


def send(site: Site, count: int, rate: float) -> None:
    sender = start_sender(site, (VIP, 8600), count, rate)
    assert sender.wait(count / rate + 30) == 0, sender.output()


def stat(node: VipcastNode, name: str) -> int:
    """A counter of the radar feed (0 until the data plane's first report)."""
    return int(node.status()["feeds"].get("radar", {}).get(name, 0))


def settled(node: VipcastNode, count: int) -> bool:
    return stat(node, "delivered") + stat(node, "lost") >= count


def test_five_percent_loss_on_one_nodes_cluster_port_is_fully_recovered(site: Site) -> None:
    n1, n2 = pair(site)
    faults.random_loss(site.nodes[1], 5, udp_dport=8601)
    apps = [start_sink(site, 1), start_sink(site, 2)]
    count = 200_000  # 20k/s for 10 s
    send(site, count, 20_000)
    for node in (n1, n2):
        wait_until(lambda node=node: settled(node, count), 30, what="every datagram settled")
    dropped = faults.dropped_by_loss(site.nodes[1])
    envelopes = n1.status()["feeds"]["radar"]["envelopes"]
    got = [app.result() for app in apps]
    assert dropped > envelopes * 0.02  # the loss really happened, to whole envelopes
    assert got[0] == list(range(count))
    assert got[1] == got[0]
    assert n2.status()["feeds"]["radar"]["recovered"] > 0


def test_a_receiver_frozen_for_200ms_catches_up_without_gaps(site: Site) -> None:
    _, n2 = pair(site)
    apps = [start_sink(site, 1), start_sink(site, 2)]
    sender = start_sender(site, (VIP, 8600), 20_000, 10_000)
    wait_until(lambda: stat(n2, "delivered") > 2000, 10, what="traffic")
    with faults.stalled(dataplane_pid(n2)):
        time.sleep(0.2)  # the length of the freeze: the fault itself, not a wait
    assert sender.wait(30) == 0
    wait_until(lambda: settled(n2, 20_000), 20, what="node2 caught up")
    got = [app.result() for app in apps]
    assert got[1] == list(range(20_000))
    assert got[0] == got[1]


def dataplane_pid(node: VipcastNode) -> int:
    with open(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children") as f:
        return int(f.read().split()[0])


@pytest.mark.parametrize("how", ["vipcast handover", "SIGTERM"])
def test_planned_handover_at_5k_per_second_loses_nothing(site: Site, how: str) -> None:
    n1, n2 = pair(site)
    apps = [start_sink(site, 1), start_sink(site, 2)]
    count = 25_000
    sender = start_sender(site, (VIP, 8600), count, 5_000)
    wait_until(lambda: stat(n1, "relayed") > 5000, 10, what="traffic")
    if how == "SIGTERM":
        n1.proc.signal(signal.SIGTERM)
    else:
        answer = control.request(n1.socket, "handover", timeout=20, wait=10)
        assert answer["ok"], answer
    n2.wait_state("MASTER", 5)
    assert sender.wait(30) == 0
    wait_until(lambda: settled(n2, count), 20, what="node2 settled")
    survivor = apps[1].result()
    assert survivor == list(range(count))  # nothing lost, nothing twice, in order
    assert n2.status()["feeds"]["radar"]["lost"] == 0
    if how != "SIGTERM":
        assert apps[0].result() == survivor


def test_crash_failover_reports_exactly_the_loss_the_apps_see(site: Site) -> None:
    feeds = [{**FEEDS[0], "mode": "envelope"}]
    n1 = start_node(site, 1, election={"priority": 150}, cluster=CLUSTER, feeds=feeds)
    n2 = start_node(site, 2, cluster=CLUSTER, feeds=feeds)
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    app = start_sink(site, 2, envelope=True)
    count = 20_000
    sender = start_sender(site, (VIP, 8600), count, 5_000)
    wait_until(lambda: stat(n1, "relayed") > 5000, 10, what="traffic")
    n1.proc.kill_group(signal.SIGKILL)  # the master node dies, data plane included
    n2.wait_state("MASTER", 5)
    assert sender.wait(30) == 0
    wait_until(lambda: settled(n2, count // 2), 10, what="node2 delivering again")
    records = [tuple(r) for batch in app.result() for r in batch]
    sessions = sorted({s for s, _, _ in records})
    assert len(sessions) == 2  # the dead master's and the new one's
    numbers = [n for _, _, n in records]
    assert len(numbers) == len(set(numbers))  # nothing delivered twice
    assert numbers == sorted(numbers)  # in order
    old = [q for s, q, _ in records if s == sessions[0]]
    new = [q for s, q, _ in records if s == sessions[1]]
    assert new == list(range(1, len(new) + 1))  # the new session is gap-free
    holes = max(old) - len(old)  # numbered by the dead master, never delivered
    assert stat(n2, "lost") == holes  # what is reported is exactly what the app missed
    missing = count - len(numbers)
    assert 0 < missing < count / 2  # lost only while the failure was being detected
