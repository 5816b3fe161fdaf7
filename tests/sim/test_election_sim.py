"""Elections among two or three routers on a fake LAN: who wins, and how fast."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tests.sim.fakenet import LOSSLESS, FakeLan, Fates, Node
from vipcast.core.vrrp.machine import RouterParams, State
from vipcast.core.vrrp.timers import master_down_interval, skew_time

EXACT = 1e-9
LOSSY = Fates(drop=0.15, duplicate=0.05, delay=0.1, corrupt=0.05, latency=0.001, max_delay=0.3)
SEEDS = range(8)


def host(last_octet: int) -> IPv4Address:
    return IPv4Address(f"198.18.0.{last_octet}")


def trio_lan(
    seed: int = 0, fates: Fates = LOSSLESS, **fields: object
) -> tuple[FakeLan, Node, Node, Node]:
    """Priorities 200, 150, 100 at .13, .12, .11; the middle one checksums message-only."""
    lan = FakeLan(seed, fates)
    nodes = [
        lan.add(
            params(octet, priority, **fields),
            "message-only" if priority == 150 else "pseudo-header",
        )
        for octet, priority in ((13, 200), (12, 150), (11, 100))
    ]
    high, middle, low = nodes
    return lan, high, middle, low


def params(octet: int, priority: int, **fields: object) -> RouterParams:
    values: dict[str, object] = {"vrid": 51, "priority": priority, "primary_address": host(octet)}
    values.update(fields)
    return RouterParams(**values)  # type: ignore[arg-type]


def only_master(lan: FakeLan) -> Node:
    [master] = lan.masters()
    return master


def assert_single_holder(lan: FakeLan, after: float = 0.0) -> None:
    for snapshot in lan.history:
        if snapshot.now >= after:
            assert len(snapshot.holders) <= 1, snapshot
            assert snapshot.holders <= snapshot.masters, snapshot


def share_with_one_master(lan: FakeLan, start: float, end: float) -> float:
    """The fraction of [start, end] during which exactly one node was master."""
    total = 0.0
    for current, following in zip(lan.history, [*lan.history[1:], None], strict=True):
        until = end if following is None else following.now
        overlap = min(until, end) - max(current.now, start)
        if overlap > 0 and len(current.masters) == 1:
            total += overlap
    return total / (end - start)


def master_since(lan: FakeLan, node: Node, moment: float) -> float:
    """The first time at or after ``moment`` that ``node`` was master."""
    current = [s for s in lan.history if s.now <= moment][-1]
    if node.address in current.masters:
        return moment
    return min(s.now for s in lan.history if s.now > moment and node.address in s.masters)


# -- lossless: the formulas, exactly ---------------------------------------------------


def test_exactly_one_master_emerges_after_master_down_interval() -> None:
    lan, high, middle, low = trio_lan()
    lan.start()
    lan.run_until(30.0)
    assert only_master(lan) is high
    assert high.became_master_at() == pytest.approx(master_down_interval(200, 100), abs=EXACT)
    assert middle.transitions[-1].new is low.transitions[-1].new is State.BACKUP
    assert_single_holder(lan)
    assert not lan.rejected


def test_killing_the_master_hands_over_after_master_down_interval() -> None:
    lan, high, middle, low = trio_lan()
    lan.start()
    lan.run_until(10.3)
    lan.kill(high)
    lan.run_until(20.0)
    assert only_master(lan) is middle
    last_heard = lan.last_delivery(high, middle, before=10.3)
    taken = middle.became_master_at(after=10.3)
    assert taken == pytest.approx(last_heard + master_down_interval(150, 100), abs=EXACT)
    assert taken - 10.3 <= master_down_interval(150, 100)
    assert low.router.current_master == middle.address
    assert_single_holder(lan)


def test_graceful_shutdown_hands_over_after_skew_time() -> None:
    lan, high, middle, _ = trio_lan(advert_interval=0.1)
    lan.start()
    lan.run_until(5.05)
    lan.shutdown(high)
    assert not high.holds_vips
    lan.run_until(10.0)
    assert only_master(lan) is middle
    taken = middle.became_master_at(after=5.05)
    assert taken == pytest.approx(5.05 + skew_time(150, 10), abs=EXACT)
    assert_single_holder(lan)


def test_partition_then_heal_converges_to_the_highest_priority() -> None:
    lan, high, middle, low = trio_lan()
    lan.start()
    lan.run_until(10.0)
    lan.partition([high], [middle, low])
    lan.run_until(20.0)
    assert {n.address for n in lan.masters()} == {high.address, middle.address}
    lan.run_until(20.5)
    announced = high.announcements
    middle_speaks_at = middle.router.next_timer()
    assert middle_speaks_at is not None
    assert middle_speaks_at < (high.router.next_timer() or 0.0)  # the lower master speaks first
    lan.heal()
    lan.run_until(21.5)
    assert only_master(lan) is high
    assert high.announcements == announced + 1  # re-announced on hearing the lower master
    yielded = middle.transitions[-1]
    assert (yielded.now, yielded.reason) == (
        middle_speaks_at,
        f"higher priority 200 from {high.address}",
    )
    assert low.router.current_master == high.address
    assert_single_holder(lan, after=middle_speaks_at)


def test_equal_priority_higher_address_wins() -> None:
    lan = FakeLan(0)
    low, high = lan.add(params(11, 100)), lan.add(params(12, 100))
    lan.start()
    lan.run_until(10.0)
    down = master_down_interval(100, 100)
    # both time out together, then the lower address yields at once
    assert low.became_master_at() == high.became_master_at() == down
    assert only_master(lan) is high
    assert_single_holder(lan, after=down + EXACT)


def test_late_higher_priority_node_preempts_after_master_down_interval() -> None:
    lan, high, middle, _ = trio_lan()
    lan.start(middle)
    lan.run_until(10.0)
    assert only_master(lan) is middle
    lan.start(high)
    lan.run_until(20.0)
    assert only_master(lan) is high
    assert high.became_master_at() == pytest.approx(10.0 + master_down_interval(200, 100))
    assert_single_holder(lan)


def test_late_higher_priority_node_without_preempt_waits() -> None:
    lan, high, middle, _ = trio_lan(preempt=False)
    lan.start(middle)
    lan.run_until(10.0)
    lan.start(high)
    lan.run_until(60.0)
    assert only_master(lan) is middle
    lan.kill(middle)
    lan.run_until(70.0)
    assert only_master(lan) is high


def test_preempt_delay_postpones_the_takeover() -> None:
    lan, high, middle, _ = trio_lan(preempt_delay=5.0)
    lan.start(middle)
    lan.run_until(10.0)
    lan.start(high)
    lan.run_until(30.0)
    last_followed = lan.last_delivery(middle, high, before=15.0)
    assert high.became_master_at() == pytest.approx(
        last_followed + master_down_interval(200, 100), abs=EXACT
    )
    assert high.became_master_at() > 15.0
    assert_single_holder(lan)


# -- lossy: convergence, with tolerances ----------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_one_master_despite_loss(seed: int) -> None:
    lan, high, *_ = trio_lan(seed, LOSSY)
    lan.start()
    lan.run_until(120.0)
    assert share_with_one_master(lan, 10.0, 120.0) > 0.95
    assert sum(lan.rejected.values()) > 0  # corrupted adverts were caught
    lan.fates = LOSSLESS
    lan.run_until(125.0)
    assert only_master(lan) is high


@pytest.mark.parametrize("seed", SEEDS)
def test_killing_the_master_on_a_lossy_lan(seed: int) -> None:
    lan, high, middle, _ = trio_lan(seed, LOSSY)
    lan.start()
    lan.run_until(30.3)
    lan.kill(high)
    lan.run_until(40.0)
    worst = master_down_interval(150, 100) + LOSSY.latency + LOSSY.max_delay
    assert master_since(lan, middle, 30.3) - 30.3 <= worst
    lan.fates = LOSSLESS
    lan.run_until(45.0)
    assert only_master(lan) is middle


@pytest.mark.parametrize("seed", SEEDS)
def test_partition_and_heal_on_a_lossy_lan(seed: int) -> None:
    lan, high, middle, low = trio_lan(seed, LOSSY, advert_interval=0.2)
    lan.start()
    lan.run_until(5.0)
    lan.partition([high, low], [middle])
    lan.run_until(10.0)
    assert middle.router.state is State.MASTER
    lan.heal()
    lan.fates = LOSSLESS
    lan.run_until(11.0)
    assert only_master(lan) is high
    assert_single_holder(lan, after=11.0)
