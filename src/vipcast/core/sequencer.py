"""Receive-side sequencing: every node delivers the same datagrams in the same order.

Pure, MoldUDP64-style: ``accept(message, relay, now)``, ``set_leader(relay, now)``
and ``handle_timer(now)`` return actions; ``next_timer()`` says when to call
``handle_timer`` again. ``now`` is a monotonic clock in nanoseconds; ``relay`` is
the host a message came from. The rules are in ``docs/protocol.md`` ("Envelope
(LAN protocol)") and ``docs/architecture.md`` ("The session model"); in short,
per feed:

* **The election decides whom to follow.** Delivery follows the sessions of the
  relay the election sees as master (the *leader*), not the newest session id:
  an old master that resumes, a relay that restarts, a side of a healed split
  are all followed, or ended cleanly, by the same rules.
* A node with no history of a feed joins at the live edge. Once it follows a
  feed, every later session of the leader is delivered from sequence 1 (or from
  where this node left it, when it comes back), after the current session's
  last datagram (make-before-break merge).
* The current session may come from a former leader: it is delivered to its end
  (END_OF_SESSION), or, while the leader's session waits, for ``takeover_grace_ns``
  (``handover_grace_ns`` if it announced a planned handover); then its
  outstanding gaps are reported lost and delivery switches. A session of the
  leader's own relay that falls silent while a newer one of the same relay is
  heard is left the same way (the relay restarted).
* Sessions of other relays (a split brain, seen after the heal) are never
  delivered: what they carried is reported, as a :class:`SplitBrain` and a lost
  range, once they end or fall silent.
  So is the tail of a session this node left, learned from its end only after
  its relay began a newer one (the relay's link was down when it ended, then it led
  again): it can no longer come in order.
* Nothing one packet claims is believed at once if it is implausible: a sequence
  number more than ``max_jump`` beyond what is known must be repeated for
  ``confirm_ns`` first; an end before datagrams already held is ignored, and data
  after a claimed end withdraws the claim; a pending session that falls silent is
  dropped; UNAVAILABLE "not sent" withdraws a claimed tail.
* Gaps are requested (``RequestRetransmit``) every ``retry_interval_ns``; after
  ``max_tries`` requests in a row bring nothing back they are reported
  (``GapUnrecoverable``) and skipped; also on UNAVAILABLE, and when more than
  ``window`` datagrams wait behind them.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, fields
from typing import Final, NamedTuple

from vipcast.core import timing
from vipcast.core.envelope import (
    Data,
    Datagram,
    EndOfSession,
    Heartbeat,
    Message,
    Nack,
    Unavailable,
    UnavailableReason,
)
from vipcast.core.fencing import Fence


@dataclass(frozen=True, slots=True)
class SequencerConfig:
    """Tuning; times in nanoseconds."""

    window: int = 4096  # datagrams held per feed waiting for a gap or a session merge
    retry_interval_ns: int = timing.RETRY_INTERVAL_NS  # between two requests for one gap
    max_tries: int = timing.MAX_TRIES  # unanswered requests per gap before it is given up
    request_delay_ns: int = 0  # wait before the first request (tolerate reordering)
    max_request: int = 4096  # datagrams asked for in one request
    takeover_grace_ns: int = timing.TAKEOVER_GRACE_NS
    handover_grace_ns: int = timing.HANDOVER_GRACE_NS
    max_jump: int = 65536  # a claim further ahead than this must be confirmed
    confirm_ns: int = timing.CONFIRM_NS
    silence_ns: int = timing.SILENCE_NS
    max_sessions: int = 64  # sessions remembered per feed (past and other relays')
    trust_terms: bool = False  # cluster keys: an authentic envelope's term is believed

    def __post_init__(self) -> None:
        counts = (self.window, self.max_tries, self.max_request, self.max_jump, self.max_sessions)
        if min(counts) < 1:
            raise ValueError("window, max_tries, max_request, max_jump, max_sessions must be >= 1")
        times = (
            self.retry_interval_ns,
            self.request_delay_ns,
            self.takeover_grace_ns,
            self.handover_grace_ns,
            self.confirm_ns,
            self.silence_ns,
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
    it), "failover" (a newer session took over before the gap was filled), "split" (the
    datagrams went to another relay's session during a split brain).
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
    (the previous session ended cleanly), "takeover" (it did not), "resume" (a
    session this node left earlier, continued from where it left it).
    """

    feed: int
    session: int
    node: int
    first_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class SplitBrain:
    """Relay ``relay`` ran session ``session`` while this node followed ``leader``.

    Its datagrams ``first``..``last`` reached another side of a split, not this
    node's apps; a :class:`GapUnrecoverable` (reason "split") reports them lost.
    ``leader_session`` is the session this node was delivering (0: none).
    """

    feed: int
    leader: str | None
    leader_session: int
    relay: str
    session: int
    first: int
    last: int


Action = Deliver | RequestRetransmit | GapUnrecoverable | SessionStarted | SplitBrain

CONFIRM_MESSAGES: Final = 3  # distinct messages that make another relay's session real
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
    stale: int = 0  # messages of sessions already delivered to their end
    requests: int = 0  # RequestRetransmit actions
    implausible: int = 0  # claims not believed (far jumps, ends before held data, ...)
    withdrawn: int = 0  # claims taken back (data after an end, "not sent" tails)
    wrong_relay: int = 0  # a session's messages from another host than its relay's
    not_leader: int = 0  # messages of relays other than the leader's (not delivered)
    split_brains: int = 0  # sessions of another relay found after a split
    fenced: int = 0  # messages of a term below the highest believed (a deposed leader's)

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


def _top(msg: Message) -> int:
    """The highest sequence number a message says exists (0 for UNAVAILABLE)."""
    if isinstance(msg, Data):
        return msg.first_seq + len(msg.datagrams) - 1
    if isinstance(msg, Heartbeat | EndOfSession):
        return msg.last_seq
    return 0


class _Claims:
    """Believes a far jump only once it has been repeated for ``confirm_ns``.

    A relay that really is far ahead (a session resumed after a long split) keeps
    saying so in every message; one forged packet says it once.
    """

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: int | None = None

    def believe(self, top: int, known: int, cfg: SequencerConfig, now: int) -> bool:
        if top <= known + cfg.max_jump:
            self.since = None
            return True
        if self.since is None:
            self.since = now
        if now - self.since < cfg.confirm_ns:
            return False
        self.since = None
        return True


def attested(stream: _Stream, cfg: SequencerConfig) -> bool:
    """Heard in several messages, or over ``confirm_ns``: a relay's session, not a forgery."""
    return stream.messages >= CONFIRM_MESSAGES or stream.heard - stream.born >= cfg.confirm_ns


class _Stream:
    """One (feed, session) of one relay: reorder buffer, gaps, output in delivery order.

    Invariant: every number in ``next``..``high`` is either held or in exactly
    one gap, and ``next`` is the first number of ``gaps[0]`` when ``next <= high``.
    """

    __slots__ = (
        "born",
        "cfg",
        "claims",
        "closing",
        "counters",
        "feed",
        "gaps",
        "heard",
        "held",
        "high",
        "last",
        "messages",
        "next",
        "next_session",
        "node",
        "out",
        "relay",
        "session",
        "start",
        "why",
    )

    def __init__(
        self,
        feed: int,
        session: int,
        node: int,
        relay: str,
        start: int,
        cfg: SequencerConfig,
        counters: Counters,
        now: int,
    ) -> None:
        self.feed, self.session, self.node, self.relay = feed, session, node, relay
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
        self.born = self.heard = now  # when a message of it first and last arrived
        self.messages = 0  # how many were taken: evidence of a live relay
        self.claims = _Claims()
        self.why = ""  # SessionStarted reason when it is not the feed's usual one

    @property
    def complete(self) -> bool:
        """Ended, and everything up to the end delivered or reported."""
        return self.last is not None and self.next > self.last

    def backlog(self) -> int:
        """Datagrams this stream holds (out of order, or ready but not yet released)."""
        return len(self.held) + len(self.out)

    def silent(self, now: int) -> bool:
        return now - self.heard >= self.cfg.silence_ns

    def apply(self, msg: Message, now: int, acts: list[Action]) -> None:
        """Take one message of this session (already routed here)."""
        self.heard = now
        self.messages += 1
        top = _top(msg)
        if top and not self.claims.believe(top, self.high, self.cfg, now):
            self.counters.implausible += 1
            return
        if top > self.high + self.cfg.max_jump:  # confirmed: what its buffer lost is lost
            self.skip(top - self.cfg.max_jump)
        if isinstance(msg, Data):
            self.data(msg.first_seq, msg.datagrams, msg.retransmission, now, acts)
        elif isinstance(msg, Heartbeat):
            self.extend(msg.last_seq, now, acts)
            self.closing = self.closing or msg.closing
        elif isinstance(msg, EndOfSession):
            self.end(msg.last_seq, msg.next_session, now, acts)
        elif isinstance(msg, Unavailable):
            self.unavailable(msg.first_seq, msg.count, msg.reason)

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
            return
        if self.last is not None and seq > self.last:
            self.withdraw_end()  # data after the claimed end: the claim was false
        if seq > self.high:
            self.extend(seq - 1, now, acts)
            self.high = seq
            self.held[seq] = datagram
            self._drain()
        else:
            self._fill(seq, datagram, retrans)

    def withdraw_end(self) -> None:
        self.last, self.next_session = None, 0
        self.counters.withdrawn += 1

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

    def skip(self, upto: int) -> None:
        """Numbers up to ``upto`` exist but are beyond any relay's buffer: lost."""
        if upto > self.high:
            gap = _Gap(self.high + 1, upto, 0)
            gap.lost = "window"
            self.gaps.append(gap)
            self.high = upto
            self._drain()

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
        """END_OF_SESSION: nothing follows ``last`` (unless held datagrams prove otherwise)."""
        if last < self.high:  # a relay's end is never before what it said it sent
            self.counters.implausible += 1
            return
        self.extend(last, now, acts)
        self.last = last
        self.next_session = next_session or self.next_session

    def _request(self, gap: _Gap, now: int, acts: list[Action]) -> None:
        count = min(gap.last - gap.first + 1, self.cfg.max_request)
        acts.append(RequestRetransmit(self.feed, self.session, gap.first, count, self.node))
        self.counters.requests += 1
        gap.tries += 1
        gap.due = now + self.cfg.retry_interval_ns

    def unavailable(self, first: int, count: int, reason: UnavailableReason) -> None:
        """The relay cannot resend ``first``..``first+count-1``: give those up.

        "Not sent" beyond everything held withdraws a claimed tail instead: the
        relay never numbered it (a forged heartbeat or end said it did).
        """
        if reason is UnavailableReason.NOT_SENT and self._withdraw_tail(first):
            return
        last = first + count - 1
        self._split_at(first)
        self._split_at(last + 1)
        for gap in self.gaps:
            if first <= gap.first and gap.last <= last and gap.lost is None:
                gap.lost = "unavailable"
        self._drain()

    def _withdraw_tail(self, first: int) -> bool:
        if first > self.high or first < self.next or any(s >= first for s in self.held):
            return False
        self._split_at(first)
        self.gaps = [g for g in self.gaps if g.first < first]
        self.high = first - 1
        if self.last is not None and self.last >= first:
            self.withdraw_end()
        else:
            self.counters.withdrawn += 1
        return True

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


# ---------------------------------------------------------------- sessions not delivered


class _Other:
    """A session of a relay other than the leader's: tracked, never delivered.

    Once it ends or falls silent, what it carried is reported (a split brain): its
    datagrams reached another node's apps, or nobody's, but not this node's.
    """

    __slots__ = (
        "born",
        "claims",
        "ended",
        "followed",
        "heard",
        "high",
        "live",
        "messages",
        "node",
        "relay",
        "session",
        "start",
    )

    def __init__(
        self, session: int, node: int, relay: str, start: int, now: int, *, followed: bool
    ) -> None:
        self.session, self.node, self.relay = session, node, relay
        self.start, self.high = start, start - 1
        self.ended = False
        self.followed = followed  # delivered here before: what we learn now is its tail
        self.live = False  # heard relaying (DATA, HEARTBEAT), not only ending
        self.born = self.heard = now  # first and last heard
        self.claims = _Claims()
        self.messages = 0

    def confirmed(self, cfg: SequencerConfig) -> bool:
        """Heard over ``confirm_ns``, or in several messages: a relay's session, not one
        forged packet (a burst queued while this node was frozen counts)."""
        return self.heard - self.born >= cfg.confirm_ns or self.messages >= CONFIRM_MESSAGES

    def take(self, msg: Message, cfg: SequencerConfig, now: int) -> bool:
        """Note what ``msg`` says of the session; False if it is not believed."""
        self.heard = now
        top = _top(msg)
        if top and not self.claims.believe(top, self.high, cfg, now):
            return False
        self.messages += 1
        if not top:
            return True
        self.high = max(self.high, top)
        self.ended = self.ended or isinstance(msg, EndOfSession)
        self.live = self.live or not isinstance(msg, EndOfSession)
        return True

    @classmethod
    def from_stream(cls, stream: _Stream) -> _Other:
        """A waiting session of a relay no longer leading: tracked, with its evidence."""
        other = cls(
            stream.session, stream.node, stream.relay, stream.start, stream.heard, followed=False
        )
        other.high, other.born, other.messages = stream.high, stream.born, stream.messages
        other.claims.since = stream.claims.since
        return other

    def past(self, next_seq: int) -> _Past:
        """What to remember of it once it is no longer tracked."""
        return _Past(self.relay, next_seq, self.followed, self.born, self.claims.since)

    @property
    def split(self) -> bool:
        """Ran beside the leader's session (a split brain), not just a tail learned late."""
        return self.live or not self.followed


class _Past(NamedTuple):
    """A session this node left: everything before ``next`` was delivered or reported."""

    relay: str
    next: int
    followed: bool  # delivered here (else only noted, as another relay's)
    born: int = 0  # when it was first heard: its evidence outlives a drop
    claimed: int | None = None  # since when a far jump it makes has been claimed


# ---------------------------------------------------------------- one feed


class _Feed:
    """The sessions of one feed: the one delivered, the leader's waiting, the others."""

    def __init__(
        self, feed: int, cfg: SequencerConfig, leader: str | None, joined_ms: int, term: int = 0
    ) -> None:
        self.feed, self.cfg, self.joined_ms = feed, cfg, joined_ms
        self.counters = Counters()
        self.leader = leader  # the relay the election sees as master
        self.fence = Fence(grace_ns=cfg.handover_grace_ns, trusted=cfg.trust_terms, floor=term)
        self.current: _Stream | None = None  # the session being delivered
        self.pending: dict[int, _Stream] = {}  # the leader's sessions waiting behind it
        self.others: dict[int, _Other] = {}  # other relays' sessions, not delivered
        self.past: dict[int, _Past] = {}  # sessions left, oldest first (bounded)
        self.splits: dict[int, None] = {}  # other relays' sessions reported (bounded)
        self.followed = False  # seen anything: later sessions are delivered from 1
        self.after = "join"  # SessionStarted reason for the next session
        self.named = 0  # the successor named by the last END_OF_SESSION
        self.grace_from: int | None = None  # since when the leader's session waits

    # --- inputs

    def accept(self, msg: Message, relay: str, now: int) -> list[Action]:
        """Route one message to its session and settle the feed."""
        acts: list[Action] = []
        if not self.fence.admit(msg, relay, now):
            self.counters.fenced += 1
            if isinstance(msg, EndOfSession) and msg.session in self.past:
                self._open(msg, relay, now, acts, tail_only=True)  # reported, never fetched
                self._settle(now, acts)
            return acts
        stream = self._route(msg, relay, now, acts)
        if stream is not None:
            stream.apply(msg, now, acts)
        self._settle(now, acts)
        return acts

    def set_leader(self, relay: str | None, now: int, term: int = 0) -> list[Action]:
        """The election sees a new master: follow its relay's sessions from now on."""
        acts: list[Action] = []
        self.fence.believe(term, now)
        if relay == self.leader:
            return acts
        self.leader = relay
        for stream in [p for p in self.pending.values() if p.relay != relay]:
            del self.pending[stream.session]  # a former leader's, never delivered
            self._keep_other(_Other.from_stream(stream), acts)
        for other in [o for o in self.others.values() if o.relay == relay]:
            del self.others[other.session]
            self._enqueue(self._promote(other, now, acts), now, acts)
        cur = self.current
        if cur is not None and cur.relay == relay:
            self.grace_from = None
        self._arm_grace(now)
        self._settle(now, acts)
        return acts

    def _route(self, msg: Message, relay: str, now: int, acts: list[Action]) -> _Stream | None:
        """The stream ``msg`` belongs to, opening one if its session is new to us."""
        sid = msg.session
        cur = self.current
        known: _Stream | _Other | None = (
            cur if cur is not None and cur.session == sid else None
        ) or (self.pending.get(sid) or self.others.get(sid))
        if known is not None and known.relay != relay:
            self.counters.wrong_relay += 1
            return None
        if isinstance(known, _Other):
            self._note_other(known, msg, now, acts)
            return None
        if known is not None:
            return known
        return self._open(msg, relay, now, acts)

    def _open(
        self, msg: Message, relay: str, now: int, acts: list[Action], *, tail_only: bool = False
    ) -> _Stream | None:
        """A session new to this feed (or one left earlier): a stream, or a note of it.

        ``tail_only``: the end of a session this node left, from a deposed term: what it
        says beyond where this node left the session is reported lost, nothing more.
        """
        sid = msg.session
        unasked = isinstance(msg, Unavailable) or (isinstance(msg, Data) and msg.retransmission)
        past = self.past.get(sid)
        if past is not None and past.relay != relay:
            self.counters.wrong_relay += 1
            return None
        if unasked or (past is not None and _top(msg) < past.next):
            self.counters.stale += 1
            return None
        start, why = self._start_of(msg, relay, past, now)
        if start is None:
            return None
        if relay != self.leader or tail_only or self._moved_on(msg, relay):
            if relay != self.leader:
                self.counters.not_leader += 1
            followed = past is not None and past.followed
            other = _Other(sid, msg.node, relay, start, now, followed=followed)
            if past is not None:  # the evidence heard before still counts
                other.born, other.claims.since = past.born, past.claimed
            self._keep_other(other, acts)
            self._note_other(other, msg, now, acts)
            return None
        self.past.pop(sid, None)
        stream = _Stream(self.feed, sid, msg.node, relay, start, self.cfg, self.counters, now)
        stream.why = why
        self._enqueue(stream, now, acts)
        return stream

    def _moved_on(self, msg: Message, relay: str) -> bool:
        """The end of a session whose relay runs a newer one here: its tail, if any, can
        no longer be delivered in order, only reported (the relay led again meanwhile)."""
        if not isinstance(msg, EndOfSession):
            return False
        return any(s.relay == relay and s.session > msg.session for s in self._streams())

    def _start_of(
        self, msg: Message, relay: str, past: _Past | None, now: int
    ) -> tuple[int | None, str]:
        """Where delivery of a new session starts, and why; None: nothing to deliver.

        A session that began before this receiver did is joined at its live edge even
        on a feed it follows: a previous process of this node may have delivered its
        start already (after a restart), and delivering it again would duplicate it.
        """
        if past is not None:
            return past.next, "resume"
        older = (msg.session >> 16) < self.joined_ms
        if self.followed and not older:
            return 1, ""
        if isinstance(msg, Data):
            return msg.first_seq, "join"
        if isinstance(msg, Heartbeat):
            return msg.last_seq + 1, "join"
        if self.followed:  # an older session's end: nothing of it to deliver here
            return None, ""
        # its end, first: the next session is delivered from its start
        self.followed, self.after = True, "successor"
        if isinstance(msg, EndOfSession):
            self.named = msg.next_session
            self._remember(msg.session, _Past(relay, msg.last_seq + 1, False, now))
        return None, ""

    def _enqueue(self, stream: _Stream, now: int, acts: list[Action]) -> None:
        """The leader's session: delivered now, or after the current one."""
        self.followed = True
        if self.current is not None and self.current.complete:
            self._retire(self.current)
        if self.current is None:
            self._start(stream, now, acts)
        else:
            self.pending[stream.session] = stream
            self._arm_grace(now)

    def _promote(self, other: _Other, now: int, acts: list[Action]) -> _Stream:
        """An untracked session whose relay became the leader: delivered after all."""
        stream = _Stream(
            self.feed,
            other.session,
            other.node,
            other.relay,
            other.start,
            self.cfg,
            self.counters,
            other.heard,
        )
        stream.born, stream.messages = other.born, other.messages  # its evidence, kept
        stream.claims.since = other.claims.since
        stream.extend(other.high, now, acts)
        if other.ended:
            stream.last = stream.high
        return stream

    # --- other relays' sessions

    def _keep_other(self, other: _Other, acts: list[Action]) -> None:
        self.others[other.session] = other
        while len(self.others) > self.cfg.max_sessions:
            self._report_other(self.others[next(iter(self.others))], acts)

    def _note_other(self, other: _Other, msg: Message, now: int, acts: list[Action]) -> None:
        if not other.take(msg, self.cfg, now):
            self.counters.implausible += 1
        elif other.confirmed(self.cfg):
            self._superseded_by(other)
            if other.split and other.session not in self.splits:
                self._announce_split(other, acts)  # a split going on: say so now
            if other.ended:
                self._report_other(other, acts)

    def _superseded_by(self, other: _Other) -> None:
        """A former leader's session waiting for its end will not get it once its relay
        runs a newer session (its end was lost, a partition say): it waits a takeover's
        grace from then on, not a planned handover's."""
        cur = self.current
        if (
            cur is not None
            and cur.relay == other.relay != self.leader
            and cur.session < other.session
            and cur.last is None
        ):
            cur.closing = False

    def _report_other(self, other: _Other, acts: list[Action]) -> None:
        """A session delivered elsewhere (or nowhere) during a split: report it here."""
        del self.others[other.session]
        confirmed = other.confirmed(self.cfg)
        if not confirmed:
            self.counters.implausible += 1  # heard once: a forgery, or too little to tell
        if not confirmed:  # nothing reported: nothing passed over
            self._remember(other.session, other.past(other.start))
            return
        self._remember(other.session, other.past(other.high + 1))
        count = other.high - other.start + 1
        split = other.split and self.leader is not None
        if split and other.session not in self.splits:
            self._announce_split(other, acts)
        if count > 0:
            reason = "split" if split else "failover"  # else a tail learned after we left
            acts.append(GapUnrecoverable(self.feed, other.session, other.start, count, reason))
            self.counters.unrecoverable += count

    def _announce_split(self, other: _Other, acts: list[Action]) -> None:
        """Another relay runs a session beside the leader's: a split brain, reported once."""
        if self.leader is None:
            return
        self.splits[other.session] = None
        while len(self.splits) > self.cfg.max_sessions:
            del self.splits[next(iter(self.splits))]
        cur = self.current
        session = cur.session if cur else 0
        split = SplitBrain(
            self.feed, self.leader, session, other.relay, other.session, other.start, other.high
        )
        acts.append(split)
        self.counters.split_brains += 1

    def _remember(self, session: int, past: _Past) -> None:
        self.past.pop(session, None)
        self.past[session] = past
        while len(self.past) > self.cfg.max_sessions:
            del self.past[next(iter(self.past))]

    # --- the session being delivered

    def _arm_grace(self, now: int) -> None:
        """The leader's session waits for one of a former leader: the grace runs."""
        cur = self.current
        if (
            self.grace_from is None
            and self.pending
            and cur is not None
            and cur.last is None
            and cur.relay != self.leader
        ):
            self.grace_from = now

    def _grace(self, cur: _Stream) -> int:
        """Long for a session closing in a planned handover, short after a crash."""
        return self.cfg.handover_grace_ns if cur.closing else self.cfg.takeover_grace_ns

    def _start(self, stream: _Stream, now: int, acts: list[Action]) -> None:
        """Make ``stream`` the session being delivered."""
        self.pending.pop(stream.session, None)
        self.current, self.grace_from = stream, None
        reason = stream.why or self.after
        acts.append(SessionStarted(self.feed, stream.session, stream.node, stream.start, reason))
        self._arm_grace(now)

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
            if abandon is None and not (cur.complete and self.pending):
                return
            self._retire(cur)

    def _abandon_reason(self, cur: _Stream, now: int) -> str | None:
        """Why the current session must give up its gaps now, if the leader's waits."""
        if not self.pending:
            return None
        if cur.last is None:
            if self.grace_from is not None and now >= self.grace_from + self._grace(cur):
                return "failover"
            if cur.relay == self.leader and cur.silent(now) and self._restarted(cur):
                return "failover"  # the leader's relay restarted under a new session
        if sum(p.backlog() for p in self.pending.values()) > self.cfg.window:
            return "window"
        return None

    def _restarted(self, cur: _Stream) -> bool:
        """A newer session of ``cur``'s relay is heard as a live relay's (not one forged
        packet in its name, which must not take over from a relay that merely died)."""
        return any(p.relay == cur.relay and attested(p, self.cfg) for p in self.pending.values())

    def _retire(self, cur: _Stream) -> None:
        """The current session is over: the next one starts from the pending."""
        self.after = "successor" if cur.last is not None else "takeover"
        self.named = cur.next_session
        self._remember(cur.session, _Past(cur.relay, cur.next, True, cur.born, cur.claims.since))
        self.current, self.grace_from = None, None

    def _successor(self) -> _Stream:
        """The pending session to deliver next: the one named, else the best attested.

        Not the lowest id: a forged packet can carry any id, but not the stream of
        messages a live relay sends.
        """
        named = self.pending.get(self.named)
        if named is not None:
            return named
        return max(self.pending.values(), key=lambda p: (p.messages, p.heard, -p.session))

    # --- time

    def timer(self, now: int) -> list[Action]:
        """Run due requests, drop silent waiting sessions, report silent others, settle."""
        acts: list[Action] = []
        for stream in self._streams():
            stream.timer(now, acts)
        for stream in [p for p in self.pending.values() if p.silent(now)]:
            self._drop_pending(stream, acts)
        if not self.pending:
            self.grace_from = None
        for other in [o for o in self.others.values() if now - o.heard >= self.cfg.silence_ns]:
            self._report_other(other, acts)
        self._settle(now, acts)
        return acts

    def _drop_pending(self, stream: _Stream, acts: list[Action]) -> None:
        """A waiting session fell silent before its turn: never delivered.

        One forged packet is dropped without a word; a session heard enough to be a
        relay's (its new master died at once) is reported lost, range and all.
        """
        del self.pending[stream.session]
        count = stream.high - stream.start + 1
        if not attested(stream, self.cfg) or count < 1:
            self.counters.stale += stream.backlog()
            past = _Past(stream.relay, stream.start, False, stream.born)
        else:
            acts.append(
                GapUnrecoverable(self.feed, stream.session, stream.start, count, "failover")
            )
            self.counters.unrecoverable += count
            past = _Past(stream.relay, stream.high + 1, False, stream.born)
        self._remember(stream.session, past)

    def _streams(self) -> list[_Stream]:
        return ([self.current] if self.current else []) + list(self.pending.values())

    def next_timer(self) -> int | None:
        """The earliest time this feed needs ``timer``."""
        cur = self.current
        if not self.pending and not self.others and (cur is None or not cur.gaps):
            return None  # the usual case, asked after every batch: no gap, nothing waiting
        times = [t for s in self._streams() if (t := s.next_due()) is not None]
        silence = self.cfg.silence_ns
        times += [o.heard + silence for o in self.others.values()]
        times += [p.heard + silence for p in self.pending.values()]
        if cur is not None and self.pending and cur.last is None:
            if self.grace_from is not None:
                times.append(self.grace_from + self._grace(cur))
            if cur.relay == self.leader and self._restarted(cur):
                times.append(cur.heard + silence)
        return min(times, default=None)


# ---------------------------------------------------------------- all feeds


class Sequencer:
    """The receive side of every feed on this node."""

    def __init__(self, config: SequencerConfig | None = None, *, joined_unix_ns: int = 0) -> None:
        """``joined_unix_ns``: when this receiver started (wall clock, as session ids are):
        sessions begun before it are joined at their live edge, never from 1."""
        self.config: Final = config or SequencerConfig()
        self._feeds: dict[int, _Feed] = {}
        self.leader: str | None = None
        self.leader_term = 0  # the highest term the election named
        self.joined_ms = joined_unix_ns // 1_000_000

    def accept(self, msg: Message, relay: str, now: int) -> list[Action]:
        """Take DATA, HEARTBEAT, END_OF_SESSION or UNAVAILABLE sent from host ``relay``."""
        if isinstance(msg, Nack):
            return []
        feed = self._feeds.get(msg.feed)
        if feed is None:
            feed = self._feeds[msg.feed] = _Feed(
                msg.feed, self.config, self.leader, self.joined_ms, self.leader_term
            )
        return feed.accept(msg, relay, now)

    def set_leader(self, relay: str | None, now: int, term: int = 0) -> list[Action]:
        """The host of the relay the election sees as master (None: no master known),
        and the term the election read for it (0: VRRP, or none known): from now on no
        message of a lower term is delivered (``core/fencing.py``)."""
        self.leader = relay
        self.leader_term = max(self.leader_term, term)
        acts: list[Action] = []
        for feed in self._feeds.values():
            acts.extend(feed.set_leader(relay, now, term))
        return acts

    def handle_timer(self, now: int) -> list[Action]:
        """Retry or give up gaps, end graces, drop silent sessions; call at ``next_timer()``."""
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

    def term(self, feed: int) -> int:
        """The highest term believed on ``feed`` (the fence's floor)."""
        known = self._feeds.get(feed)
        return known.fence.floor if known else self.leader_term
