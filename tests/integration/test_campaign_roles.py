"""The fault campaign's role faults (issue 13) and properties 7-9 (tests/lab/checker.py).

Faults: a role crash loop on the master and on both nodes, hooks that hang and fork
(across a handover), SIGHUP during a failing weighted track, SIGKILL of the daemon with
its roles running (then a restart). Properties: at most one copy of each master role
cluster-wide outside a split, no orphan processes, no flapping beyond one takeover per
hold time.
"""

from __future__ import annotations

import time

import pytest

from tests.lab import checker, nemesis
from tests.lab.wait import wait_until
from vipcast.lab.site import Site

pytestmark = pytest.mark.root


def test_role_faults_break_no_role_property(site: Site) -> None:
    c = nemesis.start_role_cluster(site, hold_time=2.0)
    sampler = nemesis.RoleSampler(c)
    notes = [nemesis.role_crash_loop(c, both=False, seconds=5.0)]
    crash_start = c.faults[-1].start
    notes.append(nemesis.role_crash_loop(c, both=True, seconds=5.0))
    crash_end = c.faults[-1].heal
    wait_until(lambda: c.master() is not None, 10, what="a master after the crash loops")
    notes.append(nemesis.hook_hangs_and_forks(c, seconds=2.0))
    notes.append(nemesis.sighup_during_failing_track(c, seconds=1.5))
    master = c.master()
    notes.append(nemesis.sigkill_with_roles(c, seconds=1.0))
    assert master is not None
    wait_until(lambda: c.master() is not None, 10, what="a master after the restart")
    time.sleep(1.0)  # observation after the last fault, not a sync wait
    takeovers = sampler.close()
    for node in c.nodes.values():
        node.proc.stop(15)
    everything = [
        (f"node{i}", what, pid)
        for i in c.nodes
        for what in ("role", "hook")
        for pid in c.pids(i, what)
    ]
    leftovers = [f"{what} pid {pid} of {n}" for n, what, pid in everything if nemesis.live([pid])]
    run = checker.RoleRun(
        samples=sampler.samples,
        splits=[],
        leftovers=leftovers,
        takeovers=takeovers,
        hold_time=c.hold_time,
        span=(crash_start, crash_end),
        overlap=0.3,
        t0=c.t0,
    )
    violations = checker.check_roles(run)
    assert not violations, "\n".join([*notes, *map(str, violations)])
    assert len(c.pids(1, "hook") + c.pids(2, "hook")) >= 2  # the hooks did hang and fork
