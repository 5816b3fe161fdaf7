"""CPU scheduling: the election's timers first, everything else as usual.

At 10 ms adverts a timer late by tens of milliseconds is a spurious failover, and on
a busy two-core machine a normal process can wait that long for a CPU. So the main
process (the election: tiny CPU, event driven) asks for SCHED_RR priority 1, as
keepalived's VRRP process can; the data plane and every program the daemon starts
(roles, hooks, probes) go back to normal scheduling: the kernel does it for them
(``SCHED_RESET_ON_FORK``, or the unit's ``CPUSchedulingResetOnFork=yes``), so they
start without a Python ``preexec_fn`` (a plain fork costs milliseconds; the
kernel's reset costs nothing); :func:`normal` is the fallback.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("vipcast.scheduling")

ELECTION_RT_PRIORITY = 1
REAL_TIME = (os.SCHED_RR, os.SCHED_FIFO)


def policy(pid: int = 0) -> int:
    """The scheduling policy without the reset-on-fork flag."""
    return os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK


def children_inherit_real_time() -> bool:
    """Whether a child would start real-time (so it must reset itself)."""
    current = os.sched_getscheduler(0)
    return policy() in REAL_TIME and not current & os.SCHED_RESET_ON_FORK


def prefer_election() -> bool:
    """Make this process real-time (SCHED_RR); False if not permitted (needs CAP_SYS_NICE)."""
    if policy() in REAL_TIME:
        return True  # already, e.g. CPUSchedulingPolicy=rr in the unit
    try:
        os.sched_setscheduler(
            0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(ELECTION_RT_PRIORITY)
        )
    except (PermissionError, OSError) as e:
        log.warning(
            "election runs without real-time scheduling (%s): under heavy CPU load "
            "its timers may fire late; grant CAP_SYS_NICE or CPUSchedulingPolicy=rr",
            e.strerror or e,
        )
        return False
    log.info("election scheduled SCHED_RR priority %d", ELECTION_RT_PRIORITY)
    return True


def normal() -> None:
    """Back to SCHED_OTHER (for children of the real-time process); never raises."""
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass
