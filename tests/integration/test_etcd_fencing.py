"""Fencing in the lab: the etcd leader cut off from the quorum, not from the router.

Two vipcast nodes on the etcd backend (the witness's etcd), one feed in envelope mode
with an outbound port; on each node an app (tests.lab.recorder) records the term and
the relay's ingress time of every datagram and answers each one through the outbound
port, naming the request's term; the remote sender counts the replies per request.
Mid-stream the leader loses the witness (nft), keeps the router. The checker finds no
overlap of relayed terms (property 10: the old leader stopped relaying before the new
one began) and no request answered twice (property 6).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_etcd_election import (  # noqa: F401
    TTL,
    cut_from_witness,
    leader_of,
    quorum_site,
)
from tests.lab import checker
from tests.lab.faults import nft_delete
from tests.lab.nodes import VipcastNode, start_node
from tests.lab.recorder import EventsRecorder
from tests.lab.wait import wait_until
from vipcast.lab.process import NsProcess
from vipcast.lab.site import VIP, Site, etcd_endpoint

pytestmark = pytest.mark.root

RATE, SECONDS = 400, 9  # the sender: 3,600 numbers, the cut after CUT_AFTER s of them
CUT_AFTER = 2.0
FEED = {
    "name": "radar",
    "port": 8600,
    "mode": "envelope",
    "deliver": ["127.0.0.1:9600"],
    "outbound": "127.0.0.1:9700",
}


def fenced_node(site: Site, i: int) -> VipcastNode:
    return start_node(
        site,
        i,
        election={"backend": "etcd"},
        etcd={"endpoints": [etcd_endpoint()], "lease_ttl": TTL, "renew_interval": 0.25},
        cluster={"group": "239.255.86.1:8601"},
        feeds=[FEED],
    )


def recorder(site: Site, host: Any, *args: str) -> tuple[NsProcess, Path]:
    out = site.lab.workdir / f"fencing-{host.name}-{args[0]}-{len(site.lab.processes)}.json"
    cmd = [sys.executable, "-m", "tests.lab.recorder", *args, "--out", str(out)]
    return host.spawn(cmd, name=f"recorder-{args[0]}"), out


def feed_term(node: VipcastNode) -> int | None:
    """The highest term the node's receiver believes on the feed (None: no report yet)."""
    feed = node.status()["feeds"].get("radar")
    return None if feed is None else int(feed["term"])


def deliveries(records: list[list[Any]]) -> list[checker.Delivery]:
    return [
        checker.Delivery(int(s), int(q), int(n), float(t), int(term), int(ingress))
        for s, q, n, t, term, ingress in records
    ]


def recorded_run(records: dict[str, list[list[Any]]], log: dict[str, Any], vip: str) -> checker.Run:
    """The apps' records and the sender's log as the checker's run (no fault windows:
    every property is judged over the whole run, replies to ``vip``:8600 each once)."""
    return checker.Run(
        nodes={n: checker.NodeRecord(n, deliveries=deliveries(r)) for n, r in records.items()},
        faults=[],
        sender=checker.SenderLog(log["count"], log["marks"], log["end"]),
        liveness_bound=0,
        vip_tolerance=0,
        split_tolerance=0,
        replies=[checker.Reply(int(n), o, (h, int(p)), t) for n, o, h, p, t in log["replies"]],
        reply_source=(vip, 8600),
        reply_every=1,
    )


def test_a_leader_cut_from_etcd_stops_before_the_next_term_relays_or_replies(
    quorum_site: Site,  # noqa: F811
) -> None:
    site = quorum_site
    nodes = [fenced_node(site, 1), fenced_node(site, 2)]
    leader, follower = leader_of(nodes)
    events = {n.index: EventsRecorder(f"node{n.index}", lambda n=n: n.socket) for n in nodes}
    old_term = leader.status()["term"]
    for node in nodes:  # the data planes fence from the leader's term on
        wait_until(
            lambda node=node: feed_term(node) == old_term,
            5,
            what=f"node{node.index}'s receiver at term {old_term}",
        )
    apps = [
        recorder(site, host, "app", "9600", "--reply", "9700", "--reply-every", "1")
        for host in site.nodes
    ]
    for _, out in apps:
        wait_until(lambda out=out: out.with_suffix(".ready").exists(), 10, what="app ready")
    sender, sent = recorder(
        site, site.remote, "send", VIP, "8600", "--count", str(RATE * SECONDS),
        "--rate", str(RATE), "--replies",
    )  # fmt: skip
    time.sleep(CUT_AFTER)  # the fault's time: traffic under the first term
    host = cut_from_witness(site, leader)
    wait_until(
        lambda: follower.status()["state"] == "MASTER", TTL + 4, what="the follower takes over"
    )
    new_term = follower.status()["term"]
    wait_until(sent.exists, SECONDS + 10, what="the sender done, replies counted")
    for proc, _ in apps:
        proc.stop()
    nft_delete(host, "cut")

    records = {
        f"node{i + 1}": json.loads(out.read_text())["records"] for i, (_, out) in enumerate(apps)
    }
    run = recorded_run(records, json.loads(sent.read_text()), VIP)
    spans = checker.term_spans(run)
    assert sorted(spans) == [old_term, new_term], spans  # both terms relayed: not vacuous
    assert old_term < new_term
    assert checker.check_terms(run) == []
    assert checker.check_replies(run) == []
    answered = {term: 0 for term in spans}  # replies came under both terms too
    numbers = {r.number for r in run.replies}
    for d in run.nodes[f"node{follower.index}"].deliveries:
        answered[d.term] += d.number in numbers
    assert min(answered.values()) > RATE // 2, answered
    gap = (spans[new_term][0] - spans[old_term][1]) / 1e9
    assert 0 < gap < TTL + 2, gap  # the old leader stopped first, within its lease
    print(f"terms {old_term} -> {new_term}: {gap:.3f} s between them; replies {answered}")
    stopped = relay_events(events[leader.index], "relaying stopped")
    started = relay_events(events[follower.index], f"term {new_term}")
    assert stopped, "the old leader's data plane never reported its relay stopped"
    assert started, f"the new leader's data plane never reported relaying under {new_term}"
    assert stopped[-1] < started[0]  # the data planes say so too: stop, then start
    sender.stop()
    for recorded in events.values():
        recorded.close()


def relay_events(events: EventsRecorder, text: str) -> list[float]:
    """When a node's data plane reported a relay change whose text has ``text``."""
    return [e["at"] for e in events.of_kind("relay") if text in e["message"]]
