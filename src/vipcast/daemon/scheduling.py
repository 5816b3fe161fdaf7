"""CPU scheduling: the election's timers first, everything else as usual.

At 10 ms adverts a timer late by tens of milliseconds is a spurious failover, and on
a busy two-core machine a normal process can wait that long for a CPU. So the main
process (the election: tiny CPU, event driven) asks for SCHED_RR priority 1, as
keepalived's VRRP process can; the data plane and every program the daemon starts
(roles, hooks, probes) go back to normal scheduling.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("vipcast.scheduling")

ELECTION_RT_PRIORITY = 1


def prefer_election() -> bool:
    """Make this process real-time (SCHED_RR); False if not permitted (needs CAP_SYS_NICE)."""
    if os.sched_getscheduler(0) in (os.SCHED_RR, os.SCHED_FIFO):
        return True  # already, e.g. CPUSchedulingPolicy=rr in the unit
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(ELECTION_RT_PRIORITY))
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
