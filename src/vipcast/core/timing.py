"""The data plane's timing rules, in one place; every value in nanoseconds.

Relays and receivers agree on these without negotiating: a receiver judges a
relay silent after a few of the heartbeats the relay promises, and confirms an
implausible claim only once it has lasted longer than one forged packet can.
The configurable ones (``cluster.takeover_grace``, ``cluster.handover_grace``)
take their defaults from here.
"""

from __future__ import annotations

from typing import Final

MS: Final = 1_000_000

HEARTBEAT_INTERVAL_NS: Final = 50 * MS
"""An idle relay states its last sequence number at least this often."""

HEARTBEAT_TICK_NS: Final = 25 * MS
"""How often a relay checks whether a feed has been idle for a heartbeat."""

SILENCE_NS: Final = 4 * HEARTBEAT_INTERVAL_NS
"""A stream not heard from for this long is silent: its relay is gone or cut off."""

CONFIRM_NS: Final = 2 * HEARTBEAT_INTERVAL_NS
"""An implausible claim (a far jump, an unknown relay's session) must be repeated over
at least this long before a receiver believes it: one forged packet never is."""

END_REPEATS_NS: Final = (5 * MS, 30 * MS, 120 * MS, 300 * MS)
"""END_OF_SESSION goes out at once and again after each delay: it closes a merge, and
after a split it is how the other side learns what it missed. The spread outlasts
:data:`CONFIRM_NS`."""

END_REFRESH_NS: Final = 1_000 * MS
END_REFRESH_FOR_NS: Final = 60_000 * MS
"""After the repeats, a relay states its last session's end once a second for a minute
(relaying again or not): a receiver cut off when the session ended (its link down, a
partition) learns the exact tail it missed, and reports it, once it hears again."""

TAKEOVER_GRACE_NS: Final = 50 * MS
"""A new master's session waits this long for the end of a session whose relay vanished."""

HANDOVER_GRACE_NS: Final = 2_000 * MS
"""... and this long for a session whose relay announced a planned handover."""

DRAIN_TICK_NS: Final = 10 * MS
DRAIN_QUIET_TICKS: Final = 3
"""A relay that received nothing new for this many ticks in a row is drained."""

RETRY_INTERVAL_NS: Final = 20 * MS
"""Between two retransmission requests for one gap."""

MAX_TRIES: Final = 25
"""Unanswered requests in a row before a gap is given up: half a second of a relay that
does not answer (busy, or frozen for a moment), far less than it keeps datagrams for."""
