"""The etcd backend on a 3-member etcd (one member in each node's namespace, one on a
witness host: vipcast.lab.etcd), under the campaign's traffic and checker.

Each test runs tests/lab/nemesis's cluster (2,000 datagrams/s from the remote through
the router to the VIP, envelope-mode apps recording every datagram on both nodes, state
and ``ip -json addr`` sampled) with ``election.backend = "etcd"``; each node lists its
own member first. Judged by tests/lab/checker.py, plus what each case promises:

* one member down (the leader's own, then the witness's): nothing changes, nothing lost;
* two members down (the majority): the leader withdraws the VIP within ``lease_ttl``
  (plus etcd's election timeout: a raft leader left alone renews until it steps down)
  and says so (FAULT in status, the transition event, the state metric); once the
  members are back a leader holds the VIP again and the apps get datagrams again;
* ``vipcast handover``: the other node leads, not one datagram lost.
"""

from __future__ import annotations

import dataclasses
import random
import time
import urllib.request
from typing import Any

import pytest

from tests.lab import checker, nemesis, oracles
from tests.lab.nemesis import Cluster
from tests.lab.wait import wait_until
from vipcast.core.lease import NO_QUORUM
from vipcast.lab import etcd
from vipcast.lab.site import VIP, Site

pytestmark = pytest.mark.root
TTL = 2  # s: the lease; the lab's members (election timeout 0.5 s) grant down to 1 s
METRICS = "127.0.0.1:9586"
DOWN = 2.0  # s a member stays down: a lease TTL


@pytest.fixture
def members(site: Site) -> etcd.EtcdCluster:
    return etcd.build_etcd_cluster(site)


@pytest.fixture
def cluster(site: Site, members: etcd.EtcdCluster) -> Cluster:
    def sections(i: int) -> dict[str, dict[str, Any]]:
        return {
            "election": {"backend": "etcd"},
            "etcd": {
                "endpoints": members.endpoints(first=f"node{i}"),
                "lease_ttl": TTL,
                "renew_interval": 0.25,
            },
            "metrics": {"listen": METRICS},
        }

    return nemesis.start_cluster(site, sections=sections)


def judge(c: Cluster, liveness_bound: float | None = None) -> checker.Run:
    run = c.finish()
    if liveness_bound is not None:
        run = dataclasses.replace(run, liveness_bound=liveness_bound)
    violations = checker.check(run)
    assert not violations, "\n".join(str(v) for v in violations)
    return run


def assert_nothing_lost(run: checker.Run) -> None:
    """No gap reported, and every app got every number between its first and last."""
    for node in run.nodes.values():
        assert not node.gaps, (node.name, node.gaps[:3])
        numbers = sorted({d.number for d in node.deliveries})
        missing = numbers[-1] - numbers[0] + 1 - len(numbers)
        assert missing == 0, f"{node.name}: {missing} numbers never delivered"


def metrics(site: Site, i: int) -> str:
    with site.nodes[i - 1].entered(), urllib.request.urlopen(f"http://{METRICS}/metrics") as r:
        return str(r.read().decode())


def test_one_member_down_the_leaders_own_then_the_witness_changes_nothing(
    cluster: Cluster, members: etcd.EtcdCluster
) -> None:
    c = cluster
    term = c.nodes[1].status()["term"]
    transitions = {i: n.status()["transitions"] for i, n in c.nodes.items()}
    raft_leaders = []

    def member_down(name: str) -> nemesis.Fn:
        def fault(c: Cluster, rng: random.Random, seconds: float) -> str:
            raft_leaders.append(members.leader())
            members.kill(name)
            time.sleep(seconds)  # the member is down
            members.start(name)
            return f"etcd member {name} SIGKILLed for {seconds:g}s"

        return fault

    for name in ("node1", "witness"):
        c.inject(member_down(name), random.Random(0), DOWN)
    c.settle()
    for i, n in c.nodes.items():
        s = n.status()
        assert s["transitions"] == transitions[i], (i, s["transitions"], raft_leaders)
    assert c.nodes[1].status()["term"] == term
    assert c.nodes[1].status()["etcd_errors"], "the leader's own member was never asked"
    assert_nothing_lost(judge(c))


def test_majority_lost_the_vip_is_withdrawn_and_reported_then_regained(
    site: Site, cluster: Cluster, members: etcd.EtcdCluster
) -> None:
    c = cluster
    lost_at: list[float] = []
    observed: dict[str, Any] = {}

    def majority_lost(c: Cluster, rng: random.Random, seconds: float) -> str:
        members.kill("node1")
        members.kill("witness")
        # lost for sure once both have exited (a SIGKILLed etcd may take a while to go,
        # stuck in an fsync under load; until then the majority may still renew)
        lost_at.append(time.monotonic())
        wait_until(lambda: c.nodes[1].state() == "FAULT", TTL + 2, what="node1 reports FAULT")
        observed["status"] = c.nodes[1].status()
        observed["metrics"] = metrics(site, 1)
        time.sleep(seconds)  # the majority stays lost
        observed["back_at"] = time.monotonic()  # the majority may answer from here on
        members.start("node1")
        members.start("witness")
        return f"etcd members node1 and witness SIGKILLed for {seconds:g}s"

    c.inject(majority_lost, random.Random(0), DOWN)
    regained = time.monotonic()
    wait_until(lambda: _vip_held(c), 4 * TTL + 5, what="a leader holds the VIP again")
    took = time.monotonic() - regained
    c.settle()

    withdrawn = next(t for t, held in c.sampler.addrs if t > lost_at[0] and "node1" not in held)
    # within the TTL of the last renewal; a raft leader left alone renews leases (etcd
    # renews on the leader, outside raft) until it steps down, one election timeout
    assert withdrawn - lost_at[0] < TTL + etcd.ELECTION_MS / 1000, withdrawn - lost_at[0]
    during = [held for t, held in c.sampler.addrs if withdrawn < t < observed["back_at"]]
    assert during, "no samples while the majority was lost"
    assert not any(during), "a node held the VIP without an etcd majority"
    status = observed["status"]
    assert status["quorum"] is False, status
    assert status["leading"] is False, status
    assert 'vipcast_state{state="FAULT"} 1.0' in observed["metrics"]
    faults = [e for e in c.events[1].of_kind("transition") if e["data"]["new"] == "FAULT"]
    assert faults, "no transition to FAULT in node1's events"
    assert faults[0]["data"]["reason"] == NO_QUORUM, faults
    # the old leader gives up its old lease (which etcd's new raft leader renewed) once
    # etcd answers: a leader again soon after, the apps within the bound
    judge(c, liveness_bound=took + nemesis.liveness_bound())


def _vip_held(c: Cluster) -> bool:
    return any(VIP in oracles.addresses(c.host(i)) for i in c.nodes)


def test_planned_handover_loses_nothing(cluster: Cluster) -> None:
    c = cluster
    term = c.nodes[1].status()["term"]
    c.inject(nemesis.handover, random.Random(0), 0.0)
    c.settle()
    assert c.nodes[2].status()["term"] > term
    run = judge(c)
    assert_nothing_lost(run)
    assert {d.session for d in run.nodes["node2"].deliveries} != {
        d.session for d in run.nodes["node2"].deliveries if d.at < run.faults[0].start
    }, "node2 never relayed"
