"""After a freeze or a split brain heals, both nodes deliver again, and the split is reported.

Each node's app records (session, sequence, datagram number) in envelope mode; the
checks are over those records and the nodes' reports, not over our logs.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.lab import faults
from tests.lab.nodes import SinkProcess, VipcastNode, start_node, start_sender, start_sink
from tests.lab.wait import wait_until
from vipcast.lab.site import VIP, Site, node_address

pytestmark = pytest.mark.root

FEEDS = [{"name": "radar", "port": 8600, "deliver": ["127.0.0.1:9600"], "mode": "envelope"}]
CLUSTER = {"group": "239.255.86.1:8601"}


def pair(site: Site) -> tuple[VipcastNode, VipcastNode]:
    n1 = start_node(site, 1, election={"priority": 150}, cluster=CLUSTER, feeds=FEEDS)
    n2 = start_node(site, 2, cluster=CLUSTER, feeds=FEEDS)
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    return n1, n2


def feed(node: VipcastNode) -> dict[str, Any]:
    return dict(node.status()["feeds"].get("radar", {}))


def delivered(node: VipcastNode) -> int:
    return int(feed(node).get("delivered", 0))


def records(app: SinkProcess) -> list[tuple[int, int, int]]:
    return [tuple(r) for batch in app.result() for r in batch]  # type: ignore[misc]


def check_node(recs: list[tuple[int, int, int]], lost: int) -> None:
    """No duplicates; per session in order; what the node missed is what it reported."""
    numbers = [n for _, _, n in recs]
    assert len(numbers) == len(set(numbers)), "a datagram delivered twice"
    per_session: dict[int, list[int]] = {}
    for session, seq, _ in recs:
        per_session.setdefault(session, []).append(seq)
    holes = 0
    for seqs in per_session.values():
        assert seqs == sorted(seqs)
        holes += seqs[-1] - seqs[0] + 1 - len(seqs)
    assert holes <= lost


def partition(site: Site) -> None:
    """The two nodes stop hearing each other (both still reach the router)."""
    for i, host in enumerate(site.nodes, start=1):
        other = node_address(3 - i)
        rules = f"""
table inet vipcast_split {{
  chain input {{
    type filter hook input priority -300; policy accept;
    ip saddr {other} drop
  }}
}}
"""
        faults.nft(host, rules)


def heal(site: Site) -> None:
    for host in site.nodes:
        faults.nft_delete(host, "vipcast_split")


def test_after_a_freeze_of_the_master_both_nodes_deliver_again(site: Site) -> None:
    n1, n2 = pair(site)
    apps = [start_sink(site, 1, envelope=True), start_sink(site, 2, envelope=True)]
    sender = start_sender(site, (VIP, 8600), 24_000, 2_000)
    wait_until(lambda: delivered(n2) > 2000, 10, what="traffic")
    with faults.stalled_group(n1.proc.pid):
        n2.wait_state("MASTER", 5)
        time.sleep(2.0)  # the freeze itself
    healed = time.monotonic()
    n1.wait_state("MASTER", 5)
    n2.wait_state("BACKUP", 5)
    before = [delivered(n1), delivered(n2)]
    wait_until(
        lambda: delivered(n1) > before[0] + 200 and delivered(n2) > before[1] + 200,
        3,
        what="both nodes delivering again after the heal",
    )
    assert time.monotonic() - healed < 4
    assert sender.wait(30) == 0
    wait_until(lambda: not feed(n2).get("lost", 0) < 0, 1)
    splits = int(feed(n1).get("split_brains", 0))
    assert splits >= 1  # node1 learns what node2 relayed while it was frozen
    for node, app in zip((n1, n2), apps, strict=True):
        check_node(records(app), int(feed(node)["lost"]))


def test_after_a_partition_between_the_nodes_heals_both_deliver_again(site: Site) -> None:
    n1, n2 = pair(site)
    apps = [start_sink(site, 1, envelope=True), start_sink(site, 2, envelope=True)]
    sender = start_sender(site, (VIP, 8600), 24_000, 2_000)
    wait_until(lambda: delivered(n2) > 2000, 10, what="traffic")
    partition(site)
    n2.wait_state("MASTER", 5)
    time.sleep(3.0)  # the split itself
    heal(site)
    n2.wait_state("BACKUP", 5)
    before = [delivered(n1), delivered(n2)]
    wait_until(
        lambda: delivered(n1) > before[0] + 200 and delivered(n2) > before[1] + 200,
        3,
        what="both nodes delivering again after the heal",
    )
    assert sender.wait(30) == 0
    assert int(feed(n1).get("split_brains", 0)) >= 1
    for node, app in zip((n1, n2), apps, strict=True):
        check_node(records(app), int(feed(node)["lost"]))
