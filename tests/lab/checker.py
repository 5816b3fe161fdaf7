"""The tee's promises, checked from what the apps and the oracles recorded: pure functions.

Input is a :class:`Run`: per node, what its app received (session, sequence, sender's
number, arrival time), the gaps and ``split_brain`` events the node reported, when the
node was (re)started; state and VIP samples (status, ``ip -json addr``, the router's
ARP entry); the fault schedule; the sender's log. Output is a list of
:class:`Violation`, each with the property it breaks and a sentence a person can act on.

The properties (numbered as in the campaign's brief):

1. Liveness: after each heal, every node's apps get datagrams *sent after the heal*
   within ``liveness_bound`` seconds.
2. No silent loss: per session, every sequence number in 1..max known anywhere is
   delivered at the node or inside a gap the node reported (never both), and the loss
   the node reports equals the loss measured at its app. A node never reports more loss
   than the sender could have lost.
3. No duplicates: no (session, sequence) and no sender's number twice at an app.
4. Agreement: within a session, delivery is in sequence order everywhere; the order of
   sessions agrees between nodes; where it does not (a split), and wherever two nodes
   were MASTER at once, a ``split_brain`` event reports it.
5. One address, one master: after each heal exactly one node holds the VIP and the
   router's ARP entry points at it; no node is MASTER without the VIP or holds it while
   not MASTER for longer than ``vip_tolerance``.
6. Replies once: every answer reaches the remote from the VIP's feed address; no request
   is answered twice unless two nodes were MASTER around then (a split, which property 4
   requires to be reported; with ``Run.excuse_split_replies`` off, as for the fenced etcd
   backend, not even then); in fault-free time every request some app received is
   answered (the apps answer every ``Run.reply_every``-th number).
10. One term at a time (etcd fencing): the datagrams relayed under each term, by the
   relay's ingress time, end before the first one relayed under a higher term begins,
   and no sender's number is delivered under two terms. Term 0 (VRRP) is not judged.

Roles (issue 13), from :class:`RoleRun`, checked by :func:`check_roles`:

7. At most one copy of each master role cluster-wide, outside a split (and outside
   ``overlap`` seconds around a takeover: the old master's role stops while the new
   one's starts, each on its own).
8. No orphan processes: once every daemon has stopped, no role's or hook's process lives.
9. No flapping: takeovers in the role faults' span at most one per hold time (plus the
   first).

Times are ``time.monotonic()`` seconds; texts show them relative to ``Run.t0``.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

FOREIGN_NUMBER = 1 << 62  # numbers at or above this are forged payloads, never the sender's
EXAMPLES = 5  # ranges or items quoted in one violation's text


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Delivery:
    """One datagram as an app received it."""

    session: int
    seq: int
    number: int  # the sender's number in the payload
    at: float
    term: int = 0  # the fencing term it was relayed under (0: VRRP, or not recorded)
    ingress_ns: int = 0  # when its relay received it (Unix ns: one clock in the lab)


@dataclass(frozen=True)
class Gap:
    """A ``gap`` event: ``count`` datagrams from ``first`` of ``session`` reported lost."""

    session: int
    first: int
    count: int
    at: float
    reason: str = ""

    @property
    def last(self) -> int:
        return self.first + self.count - 1


@dataclass(frozen=True)
class SplitEvent:
    """A ``split_brain`` event."""

    at: float
    sessions: tuple[int, ...] = ()
    data: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Reply:
    """An answer as the remote received it: the request's number, the node whose app sent it."""

    number: int
    node: str
    source: tuple[str, int]
    at: float


@dataclass
class NodeRecord:
    name: str
    deliveries: list[Delivery] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    splits: list[SplitEvent] = field(default_factory=list)
    restarts: list[tuple[float, float]] = field(default_factory=list)  # (killed, up again)
    reported_lost: int | None = None  # status feeds.<feed>.lost, this incarnation
    reported_duplicates: int | None = None
    recorder_problems: list[str] = field(default_factory=list)  # the harness's own losses


@dataclass(frozen=True)
class StatusSample:
    at: float
    node: str
    state: str | None  # None: no answer (frozen, restarting)


@dataclass(frozen=True)
class AddrSample:
    """Which nodes hold the VIP (``ip -json addr``), all read at ``at``."""

    at: float
    holders: frozenset[str]


@dataclass(frozen=True)
class ArpSample:
    at: float
    mac: str | None  # the router's neighbour entry for the VIP


@dataclass(frozen=True)
class Fault:
    name: str
    start: float
    heal: float  # when the fault was undone (for a restart: when the node answered again)


@dataclass
class SenderLog:
    """What the remote sender sent: numbers 0..count-1; ``marks``: (number, time before it)."""

    count: int
    marks: list[tuple[int, float]]
    end: float

    def time_of(self, number: int) -> float | None:
        """About when ``number`` was sent: the time of the last mark at or before it."""
        i = bisect.bisect_right([m[0] for m in self.marks], number) - 1
        return self.marks[i][1] if i >= 0 else None

    def first_number_after(self, t: float) -> int | None:
        """A number sent at or after ``t`` (the first mark at or after it)."""
        times = [m[1] for m in self.marks]
        i = bisect.bisect_left(times, t)
        return self.marks[i][0] if i < len(self.marks) else None


@dataclass
class Run:
    nodes: dict[str, NodeRecord]
    faults: list[Fault]
    sender: SenderLog
    liveness_bound: float  # 3 x advert_interval + skew + 1 s
    vip_tolerance: float  # how long a node may be MASTER without the VIP, or the reverse
    split_tolerance: float  # two MASTERs at once for longer than this is a split
    t0: float = 0.0
    end: float = 0.0
    status_samples: list[StatusSample] = field(default_factory=list)
    addr_samples: list[AddrSample] = field(default_factory=list)
    arp_samples: list[ArpSample] = field(default_factory=list)
    macs: dict[str, str] = field(default_factory=dict)  # node -> its LAN interface's MAC
    replies: list[Reply] = field(default_factory=list)  # property 6's records
    reply_source: tuple[str, int] | None = None  # where answers must come from (VIP, port)
    reply_every: int = 0  # the apps answer numbers divisible by this; 0: they do not answer
    excuse_split_replies: bool = True  # property 6: False (etcd: fenced) excuses no duplicate


@dataclass(frozen=True)
class Violation:
    prop: int
    node: str
    text: str
    at: float | None = None  # when it showed, where known (to tell which fault caused it)

    def __str__(self) -> str:
        return f"property {self.prop} ({PROPERTY_NAMES[self.prop]}) at {self.node}: {self.text}"


PROPERTY_NAMES = {
    0: "harness",
    1: "liveness",
    2: "no silent loss",
    3: "no duplicates",
    4: "agreement",
    5: "one address, one master",
    6: "replies once",
    7: "one copy of each master role",
    8: "no orphan processes",
    9: "no flapping",
    10: "one term at a time",
}


# ---------------------------------------------------------------- intervals


Interval = tuple[int, int]  # inclusive


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(i for i in intervals if i[0] <= i[1]):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def runs(values: Iterable[int]) -> list[Interval]:
    """Sorted distinct integers as maximal runs."""
    return merge((v, v) for v in values)


def size(intervals: Iterable[Interval]) -> int:
    return sum(hi - lo + 1 for lo, hi in intervals)


def subtract(whole: Interval, holes: Sequence[Interval]) -> list[Interval]:
    """``whole`` minus merged ``holes``."""
    out, lo = [], whole[0]
    for a, b in holes:
        if b < lo or a > whole[1]:
            continue
        if a > lo:
            out.append((lo, a - 1))
        lo = max(lo, b + 1)
    if lo <= whole[1]:
        out.append((lo, whole[1]))
    return out


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def show(intervals: Sequence[Interval]) -> str:
    parts = [f"#{lo}" if lo == hi else f"#{lo}..#{hi}" for lo, hi in intervals[:EXAMPLES]]
    more = f" and {len(intervals) - EXAMPLES} more ranges" if len(intervals) > EXAMPLES else ""
    return ", ".join(parts) + more


# ---------------------------------------------------------------- the checks


def check(run: Run) -> list[Violation]:
    """Every property, every node."""
    found: list[Violation] = []
    for fn in CHECKS:
        found += fn(run)
    return found


def check_harness(run: Run) -> list[Violation]:
    """What the recorders themselves missed: the run cannot be judged where they did."""
    return [Violation(0, n.name, p) for n in run.nodes.values() for p in n.recorder_problems]


def heals(run: Run) -> list[Fault]:
    """Faults whose heal is not followed by another fault within the liveness bound."""
    ordered = sorted(run.faults, key=lambda f: f.start)
    out = []
    for i, fault in enumerate(ordered):
        later = [f.start for f in ordered[i + 1 :]]
        if not later or min(later) >= fault.heal + run.liveness_bound:
            out.append(fault)
    return out


def _rel(run: Run, t: float) -> str:
    return f"t={t - run.t0:.2f}s"


def check_liveness(run: Run) -> list[Violation]:
    """Property 1 after each heal; a stall that outlasts later faults is reported once."""
    found = []
    stalled_until: dict[str, float] = {}
    for fault in heals(run):
        deadline = fault.heal + run.liveness_bound
        number = run.sender.first_number_after(fault.heal)
        if number is None or deadline > run.sender.end or deadline > run.end:
            continue  # the sender (or the run) stopped before the bound: nothing to judge
        for node in run.nodes.values():
            first = next(
                (d.at for d in node.deliveries if number <= d.number < FOREIGN_NUMBER), None
            )
            if stalled_until.get(node.name, 0.0) > fault.start:
                continue  # still stalled by an earlier fault: that one is reported
            stalled_until[node.name] = float("inf") if first is None else first
            if first is None or first > deadline:
                when = "never" if first is None else f"only {first - fault.heal:.2f}s after it"
                found.append(
                    Violation(
                        1,
                        node.name,
                        f"after {fault.name} healed at {_rel(run, fault.heal)}, no datagram "
                        f"sent after the heal reached the app within "
                        f"{run.liveness_bound:.2f}s ({when})",
                        fault.heal,
                    )
                )
    return found


def known_ranges(run: Run) -> dict[int, int]:
    """Per relay session, the highest sequence number known anywhere.

    Known from deliveries and reported gaps, bounded by what the sender could have sent:
    within a session, numbers grow with sequence numbers, so no sequence number is above
    the highest delivered one by more than the sender's numbers after it. A session whose
    deliveries are all forged payloads was run by no relay: it is not counted.
    """
    delivered: dict[int, tuple[int, int]] = {}  # session -> (top seq, its number)
    forged: set[int] = set()
    gap_top: dict[int, int] = {}
    in_flight = _in_flight_at_kills(run)
    for node in run.nodes.values():
        for d in node.deliveries:
            if (node.name, d.session, d.seq) in in_flight:
                continue
            if d.number >= FOREIGN_NUMBER:
                forged.add(d.session)
            elif d.seq > delivered.get(d.session, (0, 0))[0]:
                delivered[d.session] = (d.seq, d.number)
        for g in node.gaps:
            gap_top[g.session] = max(gap_top.get(g.session, 0), g.last)
    unseen = run.sender.count - len(
        {d.number for n in run.nodes.values() for d in n.deliveries if d.number < FOREIGN_NUMBER}
    )
    top: dict[int, int] = {}
    for session in delivered.keys() | gap_top.keys():
        if session in forged and session not in delivered:
            continue
        seq, number = delivered.get(session, (0, -1))
        room = run.sender.count - 1 - number if session in delivered else unseen
        top[session] = max(seq, min(gap_top.get(session, 0), seq + max(room, 0)))
    return {s: t for s, t in top.items() if t > 0}


IN_FLIGHT = 0.1  # s before a SIGKILL in which a relay's own app may be alone in its batch


def _in_flight_at_kills(run: Run) -> set[tuple[str, int, int]]:
    """What only a killed master's own app got just before the kill: (node, session, seq).

    A relay hands its node's apps a batch first, then sends it on the LAN; a SIGKILL
    between the two leaves a batch nobody else heard of, and nobody can report it. Those
    datagrams do not extend the known ranges the other nodes are held to.
    """
    seen: dict[tuple[int, int], set[str]] = {}
    for n in run.nodes.values():
        for d in n.deliveries:
            seen.setdefault((d.session, d.seq), set()).add(n.name)
    out: set[tuple[str, int, int]] = set()
    for node in run.nodes.values():
        for killed, _ in node.restarts:
            for d in node.deliveries:
                alone = seen[(d.session, d.seq)] == {node.name}
                # the app may read its socket after the kill: the batch was sent before
                if alone and killed - IN_FLIGHT <= d.at <= killed + IN_FLIGHT:
                    out.add((node.name, d.session, d.seq))
    return out


Key = tuple[int, int]  # (session, seq), ordered as time orders them (session ids grow)


def _records_in_order(node: NodeRecord, real: Iterable[int]) -> list[tuple[float, Key, Key]]:
    """(time, first key, last key) of every delivery and gap of ``node`` in a ``real``
    relay session, by time (a forged session's id may be above every real one)."""
    sessions = set(real)
    items = [
        (d.at, (d.session, d.seq), (d.session, d.seq))
        for d in node.deliveries
        if d.session in sessions
    ]
    items += [
        (g.at, (g.session, g.first), (g.session, g.last))
        for g in node.gaps
        if g.session in sessions
    ]
    return sorted(items)


def blackouts(
    node: NodeRecord, top: dict[int, int], earlier: Callable[[int, float], list[Interval]]
) -> dict[int, list[Interval]]:
    """Per session, what ``node`` could not have seen: relayed while it was down.

    For each restart and each session, the numbers between the last one the node
    delivered or reported before it was killed and the first one after it was up again
    (to the session's end if none), except what some node had already got before the
    kill (``earlier(session, t)``: the runs delivered anywhere before ``t``). Per
    session, not by session id order: a relay that leads again resumes its older
    session after a newer one.
    """
    out: dict[int, list[Interval]] = {}
    records = _records_in_order(node, top)
    for killed, up in node.restarts:
        for session, last in top.items():
            before = [r[2][1] for r in records if r[0] < killed and r[2][0] == session]
            after = [r[1][1] for r in records if r[0] > up and r[1][0] == session]
            start, stop = max(before, default=0) + 1, min(after, default=last + 1) - 1
            if start <= stop:
                window = (start, min(stop, last))
                holes = earlier(session, killed - IN_FLIGHT)
                out.setdefault(session, []).extend(subtract(window, holes))
    return {s: merge(v) for s, v in out.items()}


def _delivered_before(run: Run) -> Callable[[int, float], list[Interval]]:
    """``(session, t)`` -> the runs of that session some node delivered before ``t``."""
    by_session: dict[int, list[tuple[float, int]]] = {}
    for n in run.nodes.values():
        for d in n.deliveries:
            by_session.setdefault(d.session, []).append((d.at, d.seq))
    for items in by_session.values():
        items.sort()

    def earlier(session: int, t: float) -> list[Interval]:
        items = by_session.get(session, [])
        return runs(q for at, q in items[: bisect.bisect_left(items, (t, -1))])

    return earlier


def check_accounting(run: Run) -> list[Violation]:
    """Property 2 at every node."""
    top = known_ranges(run)
    found = []
    for node in run.nodes.values():
        found += _account_node(run, node, top)
    return found


def _first_seen(run: Run, session: int, seq: int) -> float | None:
    """When any node delivered (session, seq), or the nearest later datagram of it."""
    times = [
        d.at
        for n in run.nodes.values()
        for d in n.deliveries
        if d.session == session and d.seq >= seq
    ]
    return min(times, default=None)


def _account_node(run: Run, node: NodeRecord, top: dict[int, int]) -> list[Violation]:
    found: list[Violation] = []
    excused = blackouts(node, top, _delivered_before(run))
    reported = measured = 0
    for session, last in sorted(top.items()):
        delivered = runs(d.seq for d in node.deliveries if d.session == session)
        gaps = merge((g.first, g.last) for g in node.gaps if g.session == session)
        reported += sum(g.count for g in node.gaps if g.session == session)
        out = excused.get(session, [])
        missing = subtract((1, last), merge(delivered + gaps + out))
        measured += size(subtract((1, last), merge(delivered + out)))
        if missing:
            found.append(
                Violation(
                    2,
                    node.name,
                    f"session {session}: {size(missing)} datagrams neither delivered nor "
                    f"reported lost ({show(missing)}; known range #1..#{last})",
                    _first_seen(run, session, missing[0][0]),
                )
            )
        both = intersect(delivered, gaps)
        if both:
            found.append(
                Violation(
                    2,
                    node.name,
                    f"session {session}: {size(both)} datagrams delivered and also "
                    f"reported lost ({show(both)})",
                )
            )
    if reported != measured:
        found.append(
            Violation(
                2,
                node.name,
                f"gap events report {reported} datagrams lost; the app is missing {measured}",
            )
        )
    found += _phantom_loss(run, node, sum(g.count for g in node.gaps))
    found += _status_counter(run, node)
    return found


def _phantom_loss(run: Run, node: NodeRecord, reported: int) -> list[Violation]:
    got = {d.number for d in node.deliveries if d.number < FOREIGN_NUMBER}
    could = run.sender.count - len(got)
    if reported > could:
        return [
            Violation(
                2,
                node.name,
                f"reports {reported} datagrams lost, but the sender sent {run.sender.count} "
                f"and the app got {len(got)} of them: at most {could} can be lost",
            )
        ]
    return []


def _status_counter(run: Run, node: NodeRecord) -> list[Violation]:
    """The status ``lost`` counter (this incarnation) against the gap events since its start."""
    if node.reported_lost is None:
        return []
    since = node.restarts[-1][1] if node.restarts else float("-inf")
    events = sum(g.count for g in node.gaps if g.at > since)
    if node.reported_lost != events:
        return [
            Violation(
                2,
                node.name,
                f"status says {node.reported_lost} lost; gap events say {events}",
            )
        ]
    return []


def check_duplicates(run: Run) -> list[Violation]:
    found = []
    for node in run.nodes.values():
        keys = Counter((d.session, d.seq) for d in node.deliveries)
        twice = sorted(k for k, n in keys.items() if n > 1)
        if twice:
            shown = ", ".join(f"{s}#{q}" for s, q in twice[:EXAMPLES])
            found.append(
                Violation(3, node.name, f"{len(twice)} (session, seq) delivered twice: {shown}")
            )
        numbers = Counter(d.number for d in node.deliveries if d.number < FOREIGN_NUMBER)
        again = sorted(n for n, c in numbers.items() if c > 1)
        if again:
            shown = ", ".join(str(n) for n in again[:EXAMPLES])
            found.append(
                Violation(
                    3,
                    node.name,
                    f"{len(again)} of the sender's datagrams delivered twice (numbers {shown})",
                )
            )
    return found


def session_runs(node: NodeRecord) -> list[int]:
    """Sessions in the order the app received them, consecutive repeats collapsed."""
    out: list[int] = []
    for d in node.deliveries:
        if not out or out[-1] != d.session:
            out.append(d.session)
    return out


def dual_masters(run: Run, longer_than: float | None = None) -> list[tuple[float, float]]:
    """Intervals in which two or more nodes said MASTER, longer than ``split_tolerance``."""
    latest: dict[str, str | None] = {}
    out: list[tuple[float, float]] = []
    start: float | None = None
    last_at = 0.0
    for s in sorted(run.status_samples, key=lambda s: s.at):
        latest[s.node] = s.state
        dual = sum(1 for v in latest.values() if v == "MASTER") >= 2
        if dual and start is None:
            start = s.at
        elif not dual and start is not None:
            out.append((start, s.at))
            start = None
        last_at = s.at
    if start is not None:
        out.append((start, last_at))
    least = run.split_tolerance if longer_than is None else longer_than
    return [(a, b) for a, b in out if b - a > least]


def check_agreement(run: Run) -> list[Violation]:
    found = []
    for node in run.nodes.values():
        found += _in_order(node)
    split_sessions = _disagreeing_sessions(run)
    reported = {s for n in run.nodes.values() for e in n.splits for s in e.sessions}
    unreported = sorted(split_sessions - reported)
    if unreported:
        orders = "; ".join(f"{n.name} {session_runs(n)}" for n in run.nodes.values())
        found.append(
            Violation(
                4,
                "cluster",
                f"sessions {unreported} delivered in different orders or interleaved "
                f"({orders}) with no split_brain event naming them",
            )
        )
    events = sorted(e.at for n in run.nodes.values() for e in n.splits)
    for a, b in dual_masters(run):
        limit = b + run.liveness_bound
        if not any(a <= t <= limit for t in events):
            found.append(
                Violation(
                    4,
                    "cluster",
                    f"two MASTERs from {_rel(run, a)} to {_rel(run, b)} and no split_brain "
                    f"event by {_rel(run, limit)}",
                    a,
                )
            )
    return found


def _in_order(node: NodeRecord) -> list[Violation]:
    last: dict[int, int] = {}
    bad = 0
    example = ""
    for d in node.deliveries:
        if d.seq <= last.get(d.session, 0) and not example:
            example = f"session {d.session} #{d.seq} after #{last[d.session]}"
        if d.seq <= last.get(d.session, 0):
            bad += 1
        last[d.session] = max(last.get(d.session, 0), d.seq)
    if bad:
        return [Violation(4, node.name, f"{bad} datagrams out of sequence order ({example})")]
    return []


def _disagreeing_sessions(run: Run) -> set[int]:
    """Sessions a node interleaved with another, or nodes ordered differently."""
    out: set[int] = set()
    orders = {n.name: session_runs(n) for n in run.nodes.values()}
    for order in orders.values():
        seen: set[int] = set()
        for i, s in enumerate(order):
            if s in seen:  # came back to a session after another one
                out |= set(order[order.index(s) : i + 1])
            seen.add(s)
    names = list(orders)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = set(orders[a]) & set(orders[b])
            first_a = [s for s in dict.fromkeys(orders[a]) if s in common]
            first_b = [s for s in dict.fromkeys(orders[b]) if s in common]
            out |= {x for x, y in zip(first_a, first_b, strict=True) if x != y}
    return out


def _fault_free(run: Run) -> list[tuple[float, float]]:
    """From each heal plus the liveness bound until the next fault (or the run's end)."""
    ordered = sorted(run.faults, key=lambda f: f.start)
    spans, begin = [], run.t0
    for fault in ordered:
        if fault.start > begin:
            spans.append((begin, fault.start))
        begin = max(begin, fault.heal + run.liveness_bound)
    if run.end > begin:
        spans.append((begin, run.end))
    return spans


SAMPLE_SLACK = 0.1
"""s an address sample may take to read every node: it is stamped when it begins, so one
stamped just before a fault may have seen the fault (a handover's two holders)."""


def check_vip(run: Run) -> list[Violation]:
    found = []
    spans = _fault_free(run)
    for a, b in spans:
        for s in run.addr_samples:
            if a <= s.at <= b - SAMPLE_SLACK and len(s.holders) != 1:
                found.append(
                    Violation(
                        5,
                        "cluster",
                        f"{len(s.holders)} nodes hold the VIP at {_rel(run, s.at)} "
                        f"({sorted(s.holders) or 'none'}), outside any fault",
                        s.at,
                    )
                )
                break
        found += _arp_points_at_holder(run, a, b)
    found += _state_matches_vip(run)
    return found


def _arp_points_at_holder(run: Run, a: float, b: float) -> list[Violation]:
    holders = [(s.at, s.holders) for s in run.addr_samples]
    times = [h[0] for h in holders]
    for s in run.arp_samples:
        if not a <= s.at <= b:
            continue
        i = bisect.bisect_right(times, s.at) - 1
        if i < 0 or len(holders[i][1]) != 1:
            continue
        (holder,) = holders[i][1]
        if s.mac != run.macs.get(holder):
            return [
                Violation(
                    5,
                    "router",
                    f"ARP entry for the VIP is {s.mac} at {_rel(run, s.at)}, but {holder} "
                    f"({run.macs.get(holder)}) holds it",
                    s.at,
                )
            ]
    return []


def _state_matches_vip(run: Run) -> list[Violation]:
    """No node MASTER without the VIP, or holding it as BACKUP, for too long."""
    found = []
    for name in run.nodes:
        states = [(s.at, s.state) for s in run.status_samples if s.node == name]
        times = [t for t, _ in states]
        wrong_since: float | None = None
        worst, when = "", None
        for s in run.addr_samples:
            i = bisect.bisect_right(times, s.at) - 1
            state = states[i][1] if i >= 0 else None
            holds = name in s.holders
            mismatch = (state == "MASTER" and not holds) or (state == "BACKUP" and holds)
            if mismatch and wrong_since is None:
                wrong_since = s.at
            elif not mismatch:
                wrong_since = None
            if wrong_since is not None and s.at - wrong_since > run.vip_tolerance and not worst:
                what = "MASTER without the VIP" if state == "MASTER" else f"{state} with the VIP"
                worst = f"{what} from {_rel(run, wrong_since)} to at least {_rel(run, s.at)}"
                when = wrong_since
        if worst:
            found.append(Violation(5, name, worst, when))
    return found


def check_replies(run: Run) -> list[Violation]:
    """Property 6: from the VIP, at most once outside a split, none missing in calm time."""
    if not run.reply_every:
        return []
    return [*_reply_sources(run), *_replies_twice(run), *_replies_missing(run)]


def _reply_sources(run: Run) -> list[Violation]:
    wrong = [r for r in run.replies if r.source != run.reply_source]
    if not wrong:
        return []
    r = wrong[0]
    text = (
        f"{len(wrong)} answers did not come from {run.reply_source}, e.g. #{r.number} "
        f"from {r.source} ({r.node}'s app) at {_rel(run, r.at)}"
    )
    return [Violation(6, r.node, text, r.at)]


def _replies_twice(run: Run) -> list[Violation]:
    """Each number answered once, except where two nodes were MASTER (give or take)."""
    margin = run.split_tolerance
    masters = dual_masters(run, longer_than=0.0) if run.excuse_split_replies else []
    splits = [(a - margin, b + margin) for a, b in masters]
    copies: dict[int, list[Reply]] = {}
    for r in run.replies:
        copies.setdefault(r.number, []).append(r)
    twice = [
        rs
        for rs in copies.values()
        if len(rs) > 1 and not all(any(a <= r.at <= b for a, b in splits) for r in rs)
    ]
    if not twice:
        return []
    first = min(twice, key=lambda rs: rs[0].at)
    where = ", ".join(f"{r.node} at {_rel(run, r.at)}" for r in first)
    text = (
        f"{len(twice)} requests answered more than once outside a split, e.g. "
        f"#{first[0].number} ({where})"
    )
    return [Violation(6, "cluster", text, first[0].at)]


def _replies_missing(run: Run) -> list[Violation]:
    """Requests sent in fault-free time, received by some app, never answered."""
    calm = [(a, b - run.liveness_bound) for a, b in _fault_free(run)]
    received = {
        d.number
        for n in run.nodes.values()
        for d in n.deliveries
        if d.number < FOREIGN_NUMBER and d.number % run.reply_every == 0
    }
    answered = {r.number for r in run.replies}
    missing = [
        n
        for n in sorted(received - answered)
        if (t := run.sender.time_of(n)) is not None and any(a <= t <= b for a, b in calm)
    ]
    if not missing:
        return []
    t = run.sender.time_of(missing[0])
    text = f"{len(missing)} requests sent in calm time were never answered: {show(runs(missing))}"
    return [Violation(6, "cluster", text, t)]


def term_spans(run: Run) -> dict[int, tuple[int, int]]:
    """Per non-zero term, the first and last relay ingress time (ns) of what apps got."""
    spans: dict[int, tuple[int, int]] = {}
    for node in run.nodes.values():
        for d in node.deliveries:
            if d.term:
                lo, hi = spans.get(d.term, (d.ingress_ns, d.ingress_ns))
                spans[d.term] = (min(lo, d.ingress_ns), max(hi, d.ingress_ns))
    return spans


def check_terms(run: Run) -> list[Violation]:
    """Property 10: relayed terms never overlap; no number is relayed under two terms."""
    found: list[Violation] = []
    spans = sorted(term_spans(run).items())
    for (old, (_, old_end)), (new, (new_start, _)) in itertools.pairwise(spans):
        if old_end >= new_start:
            overlap = (old_end - new_start) / 1e9
            found.append(
                Violation(10, "cluster", f"term {old} relayed {overlap:.3f} s into term {new}")
            )
    terms: dict[int, set[int]] = {}
    for node in run.nodes.values():
        for d in node.deliveries:
            if d.term and d.number < FOREIGN_NUMBER:
                terms.setdefault(d.number, set()).add(d.term)
    twice = sorted(n for n, ts in terms.items() if len(ts) > 1)
    if twice:
        shown = ", ".join(f"#{n} {sorted(terms[n])}" for n in twice[:EXAMPLES])
        found.append(Violation(10, "cluster", f"numbers relayed under two terms: {shown}"))
    return found


CHECKS: tuple[Callable[[Run], list[Violation]], ...] = (
    check_harness,
    check_liveness,
    check_accounting,
    check_duplicates,
    check_agreement,
    check_vip,
    check_replies,
    check_terms,
)


# ---------------------------------------------------------------- roles (7-9)


@dataclass(frozen=True)
class RoleSample:
    """At ``at``: live copies of each master role, per node (their process ids)."""

    at: float
    copies: dict[str, dict[str, list[int]]]  # role -> node -> pids


@dataclass
class RoleRun:
    samples: list[RoleSample]
    splits: list[tuple[float, float]]  # two masters at once, or the nodes partitioned
    leftovers: list[str]  # role or hook processes alive after every daemon stopped
    takeovers: list[float]  # when the VIP changed hands
    hold_time: float
    span: tuple[float, float]  # the role faults' span, for property 9
    overlap: float = 0.1  # seconds two copies may overlap at a takeover
    t0: float = 0.0


def check_roles(run: RoleRun) -> list[Violation]:
    return [*check_one_copy(run), *check_no_orphans(run), *check_no_flapping(run)]


def check_one_copy(run: RoleRun) -> list[Violation]:
    out = []
    excused = [(a - run.overlap, b + run.overlap) for a, b in run.splits]
    excused += [(t - run.overlap, t + run.overlap) for t in run.takeovers]
    for s in run.samples:
        if any(a <= s.at <= b for a, b in excused):
            continue
        for role, per_node in s.copies.items():
            count = sum(len(pids) for pids in per_node.values())
            if count > 1:
                where = ", ".join(f"{n}: {p}" for n, p in sorted(per_node.items()) if p)
                text = f"{count} copies of master role {role} at +{s.at - run.t0:.2f} s ({where})"
                out.append(Violation(7, "cluster", text, s.at))
    return out[:EXAMPLES]


def check_no_orphans(run: RoleRun) -> list[Violation]:
    return [Violation(8, "cluster", f"still running after the daemons: {p}") for p in run.leftovers]


def check_no_flapping(run: RoleRun) -> list[Violation]:
    a, b = run.span
    inside = [t for t in run.takeovers if a <= t <= b]
    allowed = 1 + (b - a) / run.hold_time
    if len(inside) <= allowed:
        return []
    text = (
        f"{len(inside)} takeovers in {b - a:.1f} s with hold_time {run.hold_time:g} s "
        f"(at most {allowed:.1f})"
    )
    return [Violation(9, "cluster", text, inside[-1])]
