"""The relay side of a feed's session: numbering, heartbeats, closing and the end.

Pure, like the VRRP machine: the caller passes ``now`` (monotonic nanoseconds)
and gets back the messages to send. A relay is *active* while its node holds the
VIPs; each activation is a new session numbered from 1. After it stops, the
session it ended is still *served* (NACKs for its tail) until the next one starts.
The timing rules are :mod:`vipcast.core.timing`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from vipcast.core import timing
from vipcast.core.envelope import EndOfSession, Heartbeat, new_session_id


@dataclass(slots=True)
class RelaySession:
    """One feed's relay state on one node."""

    feed: int
    node: int
    session: int = 0  # the active session (0: not relaying)
    served: int = 0  # the session NACKs are answered for: the active one, or the last ended
    next_seq: int = 1  # the number the next datagram gets
    last_sent: int = 0  # when anything of the session last went out
    ended: EndOfSession | None = None  # the last session's end, stated again for a while
    ended_at: int = 0
    end_sent: int = 0  # when that end last went out
    term: int = 0  # the fencing term of the active (or served) session; 0: unfenced (VRRP)

    @property
    def active(self) -> bool:
        return self.session != 0

    def start(self, unix_ns: int, now: int, term: int = 0) -> int:
        """Become the feed's relay under a new session, stamped ``term``; returns its id."""
        self.session = self.served = new_session_id(self.node, unix_ns, self.served)
        self.term = term
        self.next_seq, self.last_sent = 1, now
        return self.session

    def number(self, count: int, now: int) -> int:
        """Number ``count`` datagrams about to be sent; returns the first number."""
        first = self.next_seq
        self.next_seq += count
        self.last_sent = now
        return first

    def heartbeat(self, now: int) -> Heartbeat | None:
        """A heartbeat when the feed has been idle for the interval; None otherwise."""
        if not self.active or now - self.last_sent < timing.HEARTBEAT_INTERVAL_NS:
            return None
        self.last_sent = now
        return Heartbeat(self.feed, self.node, self.session, self.next_seq - 1, term=self.term)

    def closing(self) -> Heartbeat | None:
        """A heartbeat flagged closing: receivers will wait for this session's end."""
        if not self.active:
            return None
        last = self.next_seq - 1
        return Heartbeat(self.feed, self.node, self.session, last, closing=True, term=self.term)

    def stop(self, now: int, next_session: int = 0) -> EndOfSession | None:
        """Stop relaying; the END_OF_SESSION to send (repeated, see ``end_times``)."""
        if not self.active:
            return None
        last = self.next_seq - 1
        end = EndOfSession(self.feed, self.node, self.session, last, next_session, self.term)
        self.session = 0
        self.ended, self.ended_at, self.end_sent = end, now, now
        return end

    def end_refresh(self, now: int) -> EndOfSession | None:
        """The last session's end again, once per ``END_REFRESH_NS`` for a while; else None.

        Also while a newer session runs: a receiver cut off when the old one ended learns
        its tail from this, and reports it, even if this relay leads again by then.
        """
        end = self.ended
        if end is None or now - self.end_sent < timing.END_REFRESH_NS:
            return None
        if now - self.ended_at > timing.END_REFRESH_FOR_NS:
            self.ended = None
            return None
        self.end_sent = now
        return end


def end_times(now: int) -> list[int]:
    """When END_OF_SESSION goes out: now, then at each of timing's repeat delays."""
    return [now, *(now + delay for delay in timing.END_REPEATS_NS)]


@dataclass(slots=True)
class DrainWatch:
    """A planned handover's last step: drained once nothing new arrived for a few ticks."""

    last_total: int = -1
    quiet_ticks: int = 0

    def tick(self, relayed_total: int) -> bool:
        """One tick with the running total of datagrams relayed; True when drained."""
        if relayed_total == self.last_total:
            self.quiet_ticks += 1
        else:
            self.quiet_ticks, self.last_total = 0, relayed_total
        return self.quiet_ticks >= timing.DRAIN_QUIET_TICKS
