"""Receive-side sequencing: every node delivers the same datagrams in the same order.

Pure, MoldUDP64-style: ``accept(message, now)`` and ``handle_timer(now)`` return
actions; ``next_timer()`` says when to call ``handle_timer`` again. ``now`` is a
monotonic clock in nanoseconds. The rules are in ``docs/protocol.md``
("Envelope (LAN protocol)"); in short, per feed:

* A node with no history of a feed joins at the live edge: the first sequence
  number it sees (or the one after a heartbeat's) is where it starts.
* Once it follows a feed, every later session is delivered from sequence 1,
  after the previous session's last datagram (make-before-break merge). A newer
  session that appears while the current one has not ended is held for
  ``takeover_grace_ns`` (its END_OF_SESSION may be on its way); then the current
  session's outstanding gaps are reported lost and delivery switches.
* Sessions with an id at or below the newest one started are stale: ignored.
* Gaps are requested (``RequestRetransmit``) every ``retry_interval_ns``; after
  ``max_tries`` requests in a row bring nothing back they are reported
  (``GapUnrecoverable``) and skipped; also on UNAVAILABLE, and when more than
  ``window`` datagrams wait behind them.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, fields
from typing import Final, NamedTuple

from vipcast.core.envelope import (
    Data,
    Datagram,
    EndOfSession,
    Heartbeat,
    Message,
    Nack,
    Unavailable,
)


@dataclass(frozen=True, slots=True)
class SequencerConfig:
    """Tuning; times in nanoseconds."""

    window: int = 4096  # datagrams held per feed waiting for a gap or a session merge
    retry_interval_ns: int = 20_000_000  # between two requests for one gap
    max_tries: int = 5  # unanswered requests per gap before it is given up
    request_delay_ns: int = 0  # wait before the first request (tolerate reordering)
    max_request: int = 4096  # datagrams asked for in one request
    takeover_grace_ns: int = 10_000_000  # hold a new session this long for the old one's end
    handover_grace_ns: int = 2_000_000_000  # ... this long if the old one said it is closing

    def __post_init__(self) -> None:
        if self.window < 1 or self.max_tries < 1 or self.max_request < 1:
            raise ValueError("window, max_tries and max_request must be >= 1")
        times = (
            self.retry_interval_ns,
            self.request_delay_ns,
            self.takeover_grace_ns,
            self.handover_grace_ns,
        )
        if min(times) < 0:
            raise ValueError("times must be >= 0")


# ---------------------------------------------------------------- actions


class Deliver(NamedTuple):
    """Hand ``datagram`` (number ``seq`` of ``session``) to the local apps of ``feed``.

    A named tuple: one is built per datagram, at half a frozen dataclass's cost.
    """

    datagram: Datagram
    seq: int
    session: int
    feed: int


@dataclass(frozen=True, slots=True)
class RequestRetransmit:
    """Send a NACK for ``count`` datagrams from ``first`` to relay ``node``."""

    feed: int
    session: int
    first: int
    count: int
    node: int


@dataclass(frozen=True, slots=True)
class GapUnrecoverable:
    """Datagrams ``first``..``first+count-1`` of ``session`` are lost; delivery skips them.

    Emitted at the gap's place in the delivery order. ``reason``: "unavailable"
    (the relay said so), "tries" (no answer), "window" (too much waiting behind
    it), "failover" (a newer session took over before the gap was filled).
    """

    feed: int
    session: int
    first: int
    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """Delivery of ``feed`` now follows ``session`` from ``first_seq``.

    ``reason``: "join" (first session this node sees: live edge), "successor"
    (the previous session ended cleanly), "takeover" (it did not).
    """

    feed: int
    session: int
    node: int
    first_seq: int
    reason: str


Action = Deliver | RequestRetransmit | GapUnrecoverable | SessionStarted

_new: Final = tuple.__new__  # builds a Deliver without a Python frame (hot path)


@dataclass(slots=True)
class Counters:
    """Per-feed counts; datagrams unless said otherwise."""

    delivered: int = 0
    duplicates: int = 0  # received again after delivery or while held
    gaps_detected: int = 0  # gaps (not datagrams)
    recovered: int = 0  # gap filled by a retransmission
    reordered: int = 0  # gap filled by a late original
    unrecoverable: int = 0  # reported lost
    late: int = 0  # arrived after its gap was reported lost
    stale: int = 0  # messages of old sessions, and datagrams past a session's end
    requests: int = 0  # RequestRetransmit actions

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# ---------------------------------------------------------------- one session


class _Gap:
    """Missing sequence numbers ``first``..``last``; ``lost`` is set once given up."""

    __slots__ = ("due", "first", "last", "lost", "tries")

    def __init__(self, first: int, last: int, due: int, tries: int = 0) -> None:
        self.first, self.last, self.due, self.tries = first, last, due, tries
        self.lost: str | None = None


def _gap_first(gap: _Gap) -> int:
    return gap.first


class _Stream:
    """One (feed, session): reorder buffer, gaps, and its output in delivery order.

    Invariant: every number in ``next``..``high`` is either held or in exactly
    one gap, and ``next`` is the first number of ``gaps[0]`` when ``next <= high``.
    """

    __slots__ = (
        "cfg",
        "closing",
        "counters",
        "feed",
        "gaps",
        "held",
        "high",
        "last",
        "next",
        "next_session",
        "node",
        "out",
        "session",
        "start",
    )

    def __init__(
        self, feed: int, msg: Message, start: int, cfg: SequencerConfig, counters: Counters
    ) -> None:
        self.feed, self.session, self.node = feed, msg.session, msg.node
        self.cfg, self.counters = cfg, counters
        self.start = start  # the first number delivered
        self.next = start  # next number to deliver
        self.high = start - 1  # highest number known to exist
        self.last: int | None = None  # the session's end, once known
        self.next_session = 0
        self.closing = False  # its relay began a planned handover
        self.held: dict[int, Datagram] = {}
        self.gaps: list[_Gap] = []
        self.out: list[Action] = []

    @property
    def complete(self) -> bool:
        """Ended, and everything up to the end delivered or reported."""
        return self.last is not None and self.next > self.last

    def backlog(self) -> int:
        """Datagrams this stream holds (out of order, or ready but not yet released)."""
        return len(self.held) + len(self.out)

    def data(
        self,
        first: int,
        datagrams: tuple[Datagram, ...],
        retrans: bool,
        now: int,
        acts: list[Action],
    ) -> None:
        """Take a DATA message's datagrams."""
        seq = first
        for datagram in datagrams:
            if seq == self.next and seq > self.high and (self.last is None or seq <= self.last):
                self.next, self.high = seq + 1, seq
                self.out.append(_new(Deliver, (datagram, seq, self.session, self.feed)))
                self.counters.delivered += 1
            else:
                self._one(seq, datagram, retrans, now, acts)
            seq += 1

    def _one(
        self, seq: int, datagram: Datagram, retrans: bool, now: int, acts: list[Action]
    ) -> None:
        """The slow path: a datagram out of order, repeated, or past the end."""
        if seq < self.next or seq in self.held:
            self.counters.duplicates += 1
        elif self.last is not None and seq > self.last:
            self.counters.stale += 1
        elif seq > self.high:
            self.extend(seq - 1, now, acts)
            self.high = seq
            self.held[seq] = datagram
        else:
            self._fill(seq, datagram, retrans)

    def _fill(self, seq: int, datagram: Datagram, retrans: bool) -> None:
        """``seq`` lies in a gap: take it (and deliver what it unblocks)."""
        i = bisect_right(self.gaps, seq, key=_gap_first) - 1
        gap = self.gaps[i]
        if gap.lost is not None:
            self.counters.late += 1
            return
        if retrans:
            self.counters.recovered += 1
            gap.tries = 0  # the relay answers: tries count requests that go unanswered
        else:
            self.counters.reordered += 1
        self._cut(i, seq)
        self.held[seq] = datagram
        self._drain()

    def _cut(self, i: int, seq: int) -> None:
        """Remove ``seq`` from gap ``i``."""
        gap = self.gaps[i]
        if gap.first == gap.last:
            del self.gaps[i]
        elif seq == gap.first:
            gap.first += 1
        elif seq == gap.last:
            gap.last -= 1
        else:
            self.gaps.insert(i + 1, _Gap(seq + 1, gap.last, gap.due, gap.tries))
            gap.last = seq - 1

    def _drain(self) -> None:
        """Release held datagrams and lost gaps that have become next in line."""
        while True:
            datagram = self.held.pop(self.next, None)
            if datagram is not None:
                self.out.append(_new(Deliver, (datagram, self.next, self.session, self.feed)))
                self.counters.delivered += 1
                self.next += 1
            elif self.gaps and self.gaps[0].lost is not None and self.gaps[0].first == self.next:
                self._release_lost(self.gaps.pop(0))
            else:
                return

    def _release_lost(self, gap: _Gap) -> None:
        count = gap.last - gap.first + 1
        reason = gap.lost or "tries"
        self.out.append(GapUnrecoverable(self.feed, self.session, gap.first, count, reason))
        self.counters.unrecoverable += count
        self.next = gap.last + 1

    def extend(self, last: int, now: int, acts: list[Action]) -> None:
        """Numbers up to ``last`` exist (a heartbeat, an end, a later datagram)."""
        if last > self.high:
            gap = _Gap(self.high + 1, last, now + self.cfg.request_delay_ns)
            self.gaps.append(gap)
            self.high = last
            self.counters.gaps_detected += 1
            if self.cfg.request_delay_ns == 0:
                self._request(gap, now, acts)

    def end(self, last: int, next_session: int, now: int, acts: list[Action]) -> None:
        """END_OF_SESSION: nothing follows ``last``."""
        self.extend(last, now, acts)
        self.last = self.high
        self.next_session = next_session or self.next_session

    def _request(self, gap: _Gap, now: int, acts: list[Action]) -> None:
        count = min(gap.last - gap.first + 1, self.cfg.max_request)
        acts.append(RequestRetransmit(self.feed, self.session, gap.first, count, self.node))
        self.counters.requests += 1
        gap.tries += 1
        gap.due = now + self.cfg.retry_interval_ns

    def unavailable(self, first: int, count: int) -> None:
        """The relay cannot resend ``first``..``first+count-1``: give those up."""
        last = first + count - 1
        self._split_at(first)
        self._split_at(last + 1)
        for gap in self.gaps:
            if first <= gap.first and gap.last <= last and gap.lost is None:
                gap.lost = "unavailable"
        self._drain()

    def _split_at(self, seq: int) -> None:
        """Make ``seq`` the first number of its gap, if it lies inside one."""
        i = bisect_right(self.gaps, seq, key=_gap_first) - 1
        if i >= 0 and self.gaps[i].first < seq <= self.gaps[i].last:
            gap = self.gaps[i]
            twin = _Gap(seq, gap.last, gap.due, gap.tries)
            twin.lost = gap.lost
            self.gaps.insert(i + 1, twin)
            gap.last = seq - 1

    def timer(self, now: int, acts: list[Action]) -> None:
        """Re-request gaps that are due; give up those out of tries."""
        for gap in self.gaps:
            if gap.lost is None and gap.due <= now:
                if gap.tries >= self.cfg.max_tries:
                    gap.lost = "tries"
                else:
                    self._request(gap, now, acts)
        self._drain()

    def next_due(self) -> int | None:
        """When the earliest pending gap wants its next request."""
        return min((g.due for g in self.gaps if g.lost is None), default=None)

    def give_up(self, reason: str, *, all_gaps: bool) -> bool:
        """Report the first open gap (or all of them) lost and release what follows."""
        found = False
        for gap in self.gaps:
            if gap.lost is None:
                gap.lost, found = reason, True
                if not all_gaps:
                    break
        self._drain()
        return found


# ---------------------------------------------------------------- one feed


class _Feed:
    """The sessions of one feed: the one being delivered and newer ones held behind it."""

    def __init__(self, feed: int, cfg: SequencerConfig) -> None:
        self.feed, self.cfg = feed, cfg
        self.counters = Counters()
        self.current: _Stream | None = None
        self.pending: dict[int, _Stream] = {}
        self.floor = 0  # newest session started or seen ended; anything not newer is stale
        self.followed = False  # seen anything: later sessions are delivered from 1
        self.after = "join"  # SessionStarted reason for the next session
        self.named = 0  # the successor named by the last END_OF_SESSION
        self.deadline: int | None = None  # end of the current session's takeover grace
        self.grace_from = 0  # when that grace began

    def accept(self, msg: Message, now: int) -> list[Action]:
        """Route one message to its session and settle the feed."""
        acts: list[Action] = []
        stream = self._stream_for(msg, now, acts)
        if stream is not None:
            self._apply(stream, msg, now, acts)
        self._settle(now, acts)
        return acts

    def _stream_for(self, msg: Message, now: int, acts: list[Action]) -> _Stream | None:
        """The stream of ``msg``'s session, opening one if the session is new."""
        sid = msg.session
        if self.current is not None and self.current.session == sid:
            return self.current
        stream = self.pending.get(sid)
        if stream is not None:
            return stream
        unasked = isinstance(msg, Unavailable) or (isinstance(msg, Data) and msg.retransmission)
        if sid <= self.floor or unasked:
            self.counters.stale += 1
            return None
        return self._open(msg, now, acts) if self.followed else self._join(msg, now, acts)

    def _join(self, msg: Message, now: int, acts: list[Action]) -> _Stream | None:
        """The first session this node sees on the feed: start at the live edge."""
        self.followed = True
        if isinstance(msg, Data):
            start = msg.first_seq
        elif isinstance(msg, Heartbeat):
            start = msg.last_seq + 1
        else:  # its end: the next session is delivered from its start
            self.floor, self.after = msg.session, "successor"
            self.named = msg.next_session if isinstance(msg, EndOfSession) else 0
            return None
        stream = _Stream(self.feed, msg, start, self.cfg, self.counters)
        self._start(stream, now, acts)
        return stream

    def _open(self, msg: Message, now: int, acts: list[Action]) -> _Stream:
        """A newer session on a feed this node follows: delivered from sequence 1."""
        stream = _Stream(self.feed, msg, 1, self.cfg, self.counters)
        if self.current is None:
            self._start(stream, now, acts)
        else:
            self.pending[stream.session] = stream
            self._arm_grace(now)
        return stream

    def _arm_grace(self, now: int) -> None:
        """A newer session waits: the current one has until the deadline to end."""
        cur = self.current
        if self.deadline is None and cur is not None and cur.last is None:
            self.grace_from = now
            self.deadline = now + self._grace(cur)

    def _grace(self, cur: _Stream) -> int:
        """Long for a session closing in a planned handover, short after a crash."""
        return self.cfg.handover_grace_ns if cur.closing else self.cfg.takeover_grace_ns

    def _start(self, stream: _Stream, now: int, acts: list[Action]) -> None:
        """Make ``stream`` the session being delivered; drop pending ones it supersedes."""
        self.pending.pop(stream.session, None)
        self.current, self.floor, self.deadline = stream, stream.session, None
        for old in [p for p in self.pending.values() if p.session < stream.session]:
            self.counters.stale += old.backlog()
            del self.pending[old.session]
        start = SessionStarted(self.feed, stream.session, stream.node, stream.start, self.after)
        acts.append(start)
        if self.pending:
            self._arm_grace(now)

    def _apply(self, stream: _Stream, msg: Message, now: int, acts: list[Action]) -> None:
        if isinstance(msg, Data):
            stream.data(msg.first_seq, msg.datagrams, msg.retransmission, now, acts)
        elif isinstance(msg, Heartbeat):
            stream.extend(msg.last_seq, now, acts)
            if msg.closing and not stream.closing:
                stream.closing = True
                if stream is self.current and self.deadline is not None:
                    self.deadline = self.grace_from + self._grace(stream)
        elif isinstance(msg, EndOfSession):
            stream.end(msg.last_seq, msg.next_session, now, acts)
            if stream is self.current:
                self.deadline = None
        elif isinstance(msg, Unavailable):
            stream.unavailable(msg.first_seq, msg.count)

    def _settle(self, now: int, acts: list[Action]) -> None:
        """Release the current session's output; end, abandon and promote sessions."""
        while True:
            cur = self.current
            if cur is None:
                if not self.pending:
                    return
                self._start(self._successor(), now, acts)
                continue
            while len(cur.held) > self.cfg.window and cur.give_up("window", all_gaps=False):
                pass
            abandon = self._abandon_reason(cur, now)
            if abandon is not None:
                cur.give_up(abandon, all_gaps=True)
            acts.extend(cur.out)
            cur.out.clear()
            if not cur.complete and abandon is None:
                return
            self._retire(cur)

    def _abandon_reason(self, cur: _Stream, now: int) -> str | None:
        """Why the current session must give up its gaps now, if a newer one waits."""
        if not self.pending:
            return None
        if cur.last is None and self.deadline is not None and now >= self.deadline:
            return "failover"
        if sum(p.backlog() for p in self.pending.values()) > self.cfg.window:
            return "window"
        return None

    def _retire(self, cur: _Stream) -> None:
        """The current session is over: the next one starts from the pending."""
        self.after = "successor" if cur.last is not None else "takeover"
        self.named = cur.next_session
        self.current, self.deadline = None, None

    def _successor(self) -> _Stream:
        """The pending session to deliver next: the one named, else the oldest."""
        named = self.pending.get(self.named)
        return named if named is not None else self.pending[min(self.pending)]

    def timer(self, now: int) -> list[Action]:
        """Run due requests of every session, then settle."""
        acts: list[Action] = []
        for stream in self._streams():
            stream.timer(now, acts)
        self._settle(now, acts)
        return acts

    def _streams(self) -> list[_Stream]:
        return ([self.current] if self.current else []) + list(self.pending.values())

    def next_timer(self) -> int | None:
        """The earliest time this feed needs ``timer``."""
        if not self.pending and (self.current is None or not self.current.gaps):
            return None  # the usual case, asked after every batch: no gap, nothing waiting
        times = [t for s in self._streams() if (t := s.next_due()) is not None]
        if self.deadline is not None and self.pending:
            times.append(self.deadline)
        return min(times, default=None)


# ---------------------------------------------------------------- all feeds


class Sequencer:
    """The receive side of every feed on this node."""

    def __init__(self, config: SequencerConfig | None = None) -> None:
        self.config: Final = config or SequencerConfig()
        self._feeds: dict[int, _Feed] = {}

    def accept(self, msg: Message, now: int) -> list[Action]:
        """Take DATA, HEARTBEAT, END_OF_SESSION or UNAVAILABLE; NACKs are the relay's."""
        if isinstance(msg, Nack):
            return []
        feed = self._feeds.get(msg.feed)
        if feed is None:
            feed = self._feeds[msg.feed] = _Feed(msg.feed, self.config)
        return feed.accept(msg, now)

    def handle_timer(self, now: int) -> list[Action]:
        """Retry or give up gaps, end takeover graces; call at ``next_timer()``."""
        acts: list[Action] = []
        for feed in self._feeds.values():
            acts.extend(feed.timer(now))
        return acts

    def next_timer(self) -> int | None:
        """When ``handle_timer`` should next run (``None``: no timer needed)."""
        times = [t for f in self._feeds.values() if (t := f.next_timer()) is not None]
        return min(times, default=None)

    def counters(self, feed: int) -> Counters:
        """The counts of one feed (zeros if never seen)."""
        known = self._feeds.get(feed)
        return known.counters if known is not None else Counters()

    def totals(self) -> Counters:
        """The counts of all feeds added up."""
        total = Counters()
        for feed in self._feeds.values():
            total.add(feed.counters)
        return total

    def feeds(self) -> list[int]:
        """The feed ids seen so far."""
        return sorted(self._feeds)

    def session(self, feed: int) -> int | None:
        """The session being delivered on ``feed``, if any."""
        known = self._feeds.get(feed)
        return known.current.session if known and known.current else None
