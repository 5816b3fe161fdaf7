"""core/lease: leadership from a lease, against an etcd-like store on a fake clock.

The store keeps etcd's rules (a lease expires ``ttl`` after its last grant or renewal
as the server receives it; the key goes with it; the term is the key's creation
revision). The invariant every scenario checks: at no instant do two nodes consider
themselves leader, and a node leads only while the store says its lease holds the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from vipcast.core.lease import NO_QUORUM, Leadership, LeaseParams, Step
from vipcast.core.vrrp.machine import State

PARAMS = LeaseParams(ttl=2, renew_interval=0.5, max_drift=0.01, stop_margin=0.2)
LATENCY = 0.01  # one way, client to server


@dataclass
class Store:
    """etcd's lease and key semantics, in server time (the fake clock)."""

    revision: int = 1
    leases: dict[int, float] = field(default_factory=dict)  # id -> expiry
    key: tuple[str, int, int] | None = None  # (value, lease, create revision)
    next_lease: int = 100

    def expire(self, t: float) -> None:
        for lease, expiry in list(self.leases.items()):
            if t >= expiry:
                del self.leases[lease]
                if self.key and self.key[1] == lease:
                    self.key, self.revision = None, self.revision + 1

    def grant(self, ttl: int, t: float) -> int:
        self.next_lease += 1
        self.leases[self.next_lease] = t + ttl
        return self.next_lease

    def renew(self, lease: int, t: float) -> int:
        if lease not in self.leases:
            return -1
        self.leases[lease] = t + PARAMS.ttl
        return PARAMS.ttl

    def campaign(self, value: str, lease: int, t: float) -> tuple[str, int, int]:
        if self.key is None and lease in self.leases:
            self.revision += 1
            self.key = (value, lease, self.revision)
        assert self.key is not None or lease not in self.leases
        return self.key or ("", 0, 0)

    def revoke(self, lease: int) -> None:
        self.leases.pop(lease, None)
        if self.key and self.key[1] == lease:
            self.key, self.revision = None, self.revision + 1

    def holder_lease(self) -> int | None:
        return self.key[1] if self.key else None


@dataclass
class Node:
    core: Leadership
    reachable: bool = True
    alive: bool = True
    busy_until: float = 0.0  # one request in flight at a time


class Cluster:
    """Nodes and a store on one fake clock, stepped in small increments."""

    def __init__(self, names: list[str], dt: float = 0.01, *, watch: bool = False) -> None:
        self.store = Store()
        self.watch = watch  # every change of the key hinted to every node (a watch)
        self.seen_revision = self.store.revision
        self.now = 0.0
        self.dt = dt
        self.nodes = {n: Node(Leadership(PARAMS, n)) for n in names}
        self.leader_log: list[tuple[float, str | None]] = []
        for node in self.nodes.values():
            node.core.start(self.now)

    def leaders(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.alive and node.core.is_leader(self.now)]

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + self.dt, 6)
            self.store.expire(self.now)
            for name, node in self.nodes.items():
                if node.alive:
                    node.core.tick(self.now)
                    self._step(name, node)
            self._hint()
            self._check()

    def _hint(self) -> None:
        if not self.watch or self.store.revision == self.seen_revision:
            return
        self.seen_revision = self.store.revision
        for node in self.nodes.values():
            if node.alive and node.reachable:
                node.core.changed(self.now)

    def _step(self, name: str, node: Node) -> None:
        if self.now < node.busy_until:
            return
        step = node.core.due(self.now)
        if step is None:
            return
        sent, at_server = self.now, self.now + LATENCY
        node.busy_until = sent + 2 * LATENCY
        if not node.reachable:
            node.core.failed(step, self.now)
            return
        self.store.expire(at_server)
        c, back = node.core, sent + 2 * LATENCY
        if step is Step.GRANT:
            c.granted(self.store.grant(PARAMS.ttl, at_server), PARAMS.ttl, sent, back)
        elif step is Step.RENEW:
            assert c.lease is not None
            c.renewed(self.store.renew(c.lease, at_server), sent, back)
        elif step is Step.REVOKE:
            assert c.lease is not None
            self.store.revoke(c.lease)
            c.revoked(sent, back)
        elif step is Step.CLEAR:
            assert c.stale_lease is not None
            self.store.revoke(c.stale_lease)
            c.cleared(sent, back)
        else:
            if step is Step.CAMPAIGN and c.lease is not None:
                self.store.campaign(name, c.lease, at_server)
            key = self.store.key
            if key is None:
                c.observed(None, None, 0, sent, back)
            else:
                c.observed(key[0], key[1], key[2], sent, back)

    def _check(self) -> None:
        leaders = self.leaders()
        assert len(leaders) <= 1, f"two leaders at {self.now}: {leaders}"
        for name in leaders:
            node = self.nodes[name]
            assert self.store.holder_lease() == node.core.lease, f"{name} leads without the key"
        current = leaders[0] if leaders else None
        if not self.leader_log or self.leader_log[-1][1] != current:
            self.leader_log.append((self.now, current))

    def leader(self) -> str | None:
        leaders = self.leaders()
        return leaders[0] if leaders else None


def test_the_margin_is_ttl_less_drift_less_stop_margin() -> None:
    assert PARAMS.safe_for(2) == pytest.approx(2 * 0.99 - 0.2)


def test_one_leader_elected_and_it_keeps_its_term() -> None:
    c = Cluster(["a", "b"])
    c.run(1.0)
    leader = c.leader()
    assert leader is not None
    term = c.nodes[leader].core.held_term
    c.run(10.0)
    assert c.leader() == leader
    assert c.nodes[leader].core.held_term == term
    assert c.nodes[leader].core.state is State.MASTER
    other = next(n for n in c.nodes if n != leader)
    assert c.nodes[other].core.state is State.BACKUP
    assert c.nodes[other].core.leader == leader


def test_leader_crash_the_other_takes_over_within_ttl_and_an_interval() -> None:
    c = Cluster(["a", "b"])
    c.run(1.0)
    old = c.leader()
    assert old is not None
    old_term = c.nodes[old].core.held_term
    c.nodes[old].alive = False
    crashed = c.now
    c.run(4.0)
    new = c.leader()
    assert new is not None
    assert new != old
    took_over = next(t for t, who in c.leader_log if who == new)
    assert took_over - crashed <= PARAMS.ttl + PARAMS.renew_interval + 0.1
    new_term = c.nodes[new].core.held_term
    assert new_term is not None
    assert old_term is not None
    assert new_term > old_term


def test_leader_cut_off_from_the_store_stops_before_its_lease_expires() -> None:
    """The partition: the old leader stops first, the new one starts after expiry."""
    c = Cluster(["a", "b"])
    c.run(1.0)
    old = c.leader()
    assert old is not None
    c.nodes[old].reachable = False
    c.run(5.0)  # _check: never two leaders, nobody leads without the key
    new = c.leader()
    assert new is not None
    assert new != old
    stopped = next(t for t, who in c.leader_log if who is None)
    started = next(t for t, who in c.leader_log if who == new)
    assert stopped < started
    core = c.nodes[old].core
    assert core.stats.stepped_down_unrenewed == 1
    assert core.state is State.FAULT
    assert core.stats.quorum_lost == 1


def test_majority_lost_no_leader_reported_then_regained() -> None:
    c = Cluster(["a", "b"])
    c.run(1.0)
    for node in c.nodes.values():
        node.reachable = False
    c.run(PARAMS.ttl + 0.5)
    assert c.leader() is None
    for node in c.nodes.values():
        assert node.core.state is State.FAULT
        assert node.core.leader is None
    for node in c.nodes.values():
        node.reachable = True
    c.run(PARAMS.ttl + 2.0)
    assert c.leader() is not None
    assert {n.core.state for n in c.nodes.values()} == {State.MASTER, State.BACKUP}


def test_fault_is_reported_with_its_name() -> None:
    core = Leadership(PARAMS, "a")
    core.start(0.0)
    core.failed(Step.GRANT, 1.0)
    assert core.state is State.BACKUP
    (t,) = core.tick(2.0)
    assert t.new is State.FAULT
    assert t.reason == NO_QUORUM


def test_a_node_declines_to_campaign_while_a_track_fails() -> None:
    c = Cluster(["a", "b"])
    c.run(1.0)
    leader = c.leader()
    assert leader is not None
    other = next(n for n in c.nodes if n != leader)
    c.nodes[other].core.decline("track:uplink", "uplink down", c.now)
    c.nodes[leader].alive = False
    c.run(5.0)
    assert c.leader() is None  # the only candidate declines: nobody leads
    assert c.nodes[other].core.state is State.FAULT
    c.nodes[other].core.accept("track:uplink", c.now)
    c.run(1.0)
    assert c.leader() == other


def test_a_declining_leader_resigns_at_once() -> None:
    c = Cluster(["a", "b"])
    c.run(1.0)
    leader = c.leader()
    assert leader is not None
    c.nodes[leader].core.decline("link", "link down", c.now)
    assert c.leader() is None  # it stopped the instant it declined
    c.run(PARAMS.renew_interval + 0.1)  # revoked: the other's next campaign wins
    assert c.leader() not in (None, leader)


def test_planned_handover_resigns_and_the_next_takes_over_within_an_interval() -> None:
    c = Cluster(["a", "b"])
    c.run(1.0)
    old = c.leader()
    assert old is not None
    c.nodes[old].core.resign(c.now, hold_off=PARAMS.ttl * 2)
    resigned = c.now
    c.run(PARAMS.renew_interval + 0.1)
    new = c.leader()
    assert new is not None
    assert new != old
    took_over = next(t for t, who in c.leader_log if who == new)
    assert took_over - resigned <= PARAMS.renew_interval + 0.1
    c.run(5.0)
    assert c.leader() == new  # the old one does not take it back
    assert c.nodes[old].core.state is State.BACKUP


def test_a_resigned_leader_sees_its_successor_within_a_handover_poll() -> None:
    """No watch: the successor takes the key at its poll; the old one, polling every
    ``handover_poll`` since it resigned, names it well before its own next poll."""
    c = Cluster(["a", "b"])
    c.run(1.0)
    old = c.leader()
    assert old is not None
    new = "b" if old == "a" else "a"
    c.nodes[old].core.resign(c.now, hold_off=PARAMS.ttl * 2)
    wait = 0.0
    while c.leader() != new and wait < PARAMS.renew_interval + 0.1:
        c.run(c.dt)
        wait += c.dt
    assert c.leader() == new
    took_over = c.now
    while c.nodes[old].core.leader != new and c.now - took_over < 1.0:
        c.run(c.dt)
    assert c.now - took_over <= PARAMS.handover_poll + 3 * LATENCY + c.dt
    assert c.nodes[old].core.next_campaign - c.now > PARAMS.handover_poll  # polls slow again


def test_with_a_watch_the_follower_takes_a_resigned_key_at_once() -> None:
    c = Cluster(["a", "b"], watch=True)
    c.run(1.0)
    old = c.leader()
    assert old is not None
    new = "b" if old == "a" else "a"
    c.nodes[old].core.resign(c.now, hold_off=PARAMS.ttl * 2)
    c.run(0.1)  # revoke, hint, campaign, hint, read: a few round trips
    assert c.leader() == new
    assert c.nodes[old].core.leader == new


def test_with_a_watch_a_crashed_leaders_key_is_taken_as_it_expires() -> None:
    c = Cluster(["a", "b"], watch=True)
    c.run(1.0)
    old = c.leader()
    assert old is not None
    new = "b" if old == "a" else "a"
    c.nodes[old].alive = False
    expiry = c.store.leases[c.nodes[old].core.lease or 0]
    c.run(expiry - c.now + 0.05)  # a tenth of renew_interval (0.5 s) after the expiry
    assert c.leader() == new


def test_a_hint_makes_the_leader_read_the_key_once() -> None:
    core = Leadership(PARAMS, "a")
    core.start(0.0)
    core.granted(7, 2, 0.0, 0.01)
    core.observed("a", 7, 42, 0.02, 0.03)
    assert core.due(0.1) is None
    core.changed(0.1)
    assert core.due(0.1) is Step.CAMPAIGN
    core.observed("a", 7, 42, 0.1, 0.12)
    assert core.due(0.13) is None
    assert core.held_term == 42


def test_a_restarted_node_gives_up_its_previous_runs_lease_at_once() -> None:
    c = Cluster(["a", "b"])
    c.run(1.0)
    old = c.leader()
    assert old is not None
    expiry = c.store.leases[c.nodes[old].core.lease or 0]
    c.nodes[old] = Node(Leadership(PARAMS, old))  # a new process: the old lease unknown to it
    c.nodes[old].core.start(c.now)
    c.run(0.2)  # grant, campaign (lost to its own old key), revoke that, campaign
    assert c.leader() is not None
    assert c.now < expiry - 1.0  # long before the old lease would have expired
    assert c.nodes[old].core.stale_lease is None
    assert c.nodes[old].core.stats.stale_revoked == 1


def test_a_leader_that_stepped_down_unrenewed_revokes_its_old_lease_when_etcd_answers() -> None:
    """A new raft leader renews every lease (promotion): the key of a leader that was cut
    off would outlive the cut by a TTL; the node gives it up as soon as etcd answers."""
    c = Cluster(["a"])
    c.run(1.0)
    a = c.nodes["a"]
    old_lease = a.core.lease
    a.reachable = False
    while a.core.is_leader(c.now):
        c.run(c.dt)
    assert old_lease in c.store.leases  # stopped before the store's expiry: key and all
    expiry = c.store.leases[old_lease or 0] = c.now + PARAMS.ttl  # etcd's lease promotion
    a.reachable = True
    while old_lease in c.store.leases and c.now < expiry:
        c.run(c.dt)
    assert c.now < expiry - 1.0, "not revoked before the promoted lease's expiry"
    c.run(0.1)
    assert old_lease not in c.store.leases
    assert c.leader() == "a"  # under a new lease, a new term


def test_handover_with_nobody_to_take_over_comes_back() -> None:
    c = Cluster(["a"])
    c.run(1.0)
    assert c.leader() == "a"
    c.nodes["a"].core.resign(c.now, hold_off=1.0)
    c.run(0.5)
    assert c.leader() is None
    c.run(2.0)
    assert c.leader() == "a"


def test_an_expired_lease_at_renewal_is_dropped_and_a_new_term_won() -> None:
    core = Leadership(PARAMS, "a")
    core.start(0.0)
    core.granted(7, 2, 0.0, 0.01)
    core.observed("a", 7, 42, 0.02, 0.03)
    assert core.is_leader(0.05)
    assert core.held_term == 42
    (t,) = core.renewed(-1, 0.5, 0.51)
    assert t.new is State.BACKUP
    assert core.lease is None
    assert core.due(0.6) is Step.GRANT


def test_a_slow_answer_does_not_make_a_leader_past_its_safe_time() -> None:
    core = Leadership(PARAMS, "a")
    core.start(0.0)
    core.granted(7, 2, 0.0, 0.01)
    core.observed("a", 7, 42, 0.02, 1.9)  # the answer arrived after safe_until (1.78)
    assert core.state is not State.MASTER
    assert not core.is_leader(1.9)
