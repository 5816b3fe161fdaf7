"""The demo's final report: the timeline, the measured outages and losses, the sessions."""

from __future__ import annotations

import ipaddress
import re
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vipcast.config import ClusterConfig
from vipcast.demo import measure
from vipcast.demo.cluster import PRIORITIES, DaemonEvent

WIDTH = 100  # the report fits a 100-column terminal

PHASES = {
    "start": "steady traffic",
    "failover": "failover (master cut off)",
    "return": "old master back",
    "handover": "planned handover",
}


@dataclass(frozen=True)
class Action:
    """Something the demo did (or saw answered), at a wall-clock time."""

    time: float
    name: str
    text: str


@dataclass
class Result:
    t0: float  # wall clock when the radar started
    duration: float
    actions: list[Action]
    events: list[DaemonEvent]
    radar: dict[str, Any]
    apps: dict[str, dict[str, Any]]
    daemons: dict[str, dict[str, Any]]
    node_addresses: dict[str, str]
    measured: list[measure.WindowResult] = field(default_factory=list)
    retransmit_age: float = ClusterConfig.retransmit_age  # the nodes' cluster.retransmit_age


_SESSION_ID = re.compile(r"\b\d{12,}\b")  # session ids in daemon messages, shown in hex


def rel(wall: float, t0: float) -> str:
    return f"{wall - t0:+8.3f} s"


def session_name(session: int) -> str:
    return f"{session:#x}" if session else "-"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _int_keys(counts: Mapping[str, int] | None) -> dict[int, int]:
    return {int(k): int(v) for k, v in (counts or {}).items()}


def compute(result: Result) -> list[measure.WindowResult]:
    marks = [a for a in result.actions if a.name in PHASES]
    if not marks:
        return []
    wins = measure.windows(
        [PHASES[a.name] for a in marks], [a.time for a in marks], result.t0 + result.duration
    )
    apps = {
        name: (sorted(app.get("arrivals") or []), _int_keys(app.get("received_by_tod")))
        for name, app in result.apps.items()
    }
    return measure.measure(wins, _int_keys(result.radar.get("sent_by_tod")), apps)


def takeover_after(events: Sequence[DaemonEvent], after: float) -> DaemonEvent | None:
    """The first transition to MASTER at or after ``after``."""
    return next(
        (
            e
            for e in events
            if e.kind == "transition" and e.data.get("new") == "MASTER" and e.time >= after
        ),
        None,
    )


# --- rendering ----------------------------------------------------------------------------


def render(result: Result) -> str:
    result.measured = compute(result)
    lines = ["", *_timeline(result), "", *_table(result), "", *_verdicts(result)]
    lines += ["", *_sessions(result), "", *_keys(result), "", _summary(result), ""]
    return "\n".join(wrapped for line in lines for wrapped in fit(line))


def fit(line: str, width: int = WIDTH) -> list[str]:
    """A line as lines of at most ``width`` columns, broken between words, indented after."""
    if len(line) <= width:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()) + 4)
    return textwrap.wrap(
        line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _timeline(r: Result) -> list[str]:
    entries = [(a.time, "demo", a.text) for a in r.actions]
    for e in r.events:
        if e.kind == "transition":
            entries.append((e.time, e.node, e.message))
        elif e.kind == "handover":
            entries.append((e.time, e.node, f"handover: {e.message}"))
        elif e.kind in {"relay", "session", "gap", "vip_restored"}:
            message = _SESSION_ID.sub(lambda m: session_name(int(m.group(0))), e.message)
            entries.append((e.time, e.node, f"{e.kind}: {message}"))
    start = time.strftime("%H:%M:%S", time.localtime(r.t0))
    out = [f"Timeline (seconds from the start of traffic, {start})"]
    out += [f"  {rel(t, r.t0)}  {who:<6} {text}" for t, who, text in sorted(entries)]
    return out


def _table(r: Result) -> list[str]:
    names = sorted(r.apps)
    out = [
        "Measured at the applications. outage: the longest silence between two datagrams",
        f"that began within {measure.OUTAGE_SPAN:g} s of the event (steady traffic: in the "
        "whole window);",
        "lost: reports the radar sent in the window minus those of them the app decoded",
    ]
    head = f"  {'phase':<25} {'from':>7} {'to':>7} {'sent':>7}"
    for name in names:
        head += f"  {name + ' outage':>14} {'lost':>6}"
    out.append(head)
    for w in r.measured:
        row = (
            f"  {w.window.name:<25} {w.window.start - r.t0:>+7.2f} {w.window.end - r.t0:>+7.2f} "
            f"{w.sent:>7,}"
        )
        for name in names:
            n = w.nodes[name]
            outage = f"cut off {n.outage:.2f} s" if n.cut_off and n.outage else _ms(n.outage)
            row += f"  {outage:>14} {n.loss:>6,}"
        out.append(row)
    return out


def _window(r: Result, phase: str) -> measure.WindowResult | None:
    return next((w for w in r.measured if w.window.name == PHASES[phase]), None)


def _action(r: Result, name: str) -> Action | None:
    return next((a for a in r.actions if a.name == name), None)


def _per_node(w: measure.WindowResult) -> str:
    return ", ".join(
        f"{name} outage {_ms(n.outage)} lost {n.loss:,}" for name, n in sorted(w.nodes.items())
    )


def _resumed(r: Result, node: str, after: float) -> DaemonEvent | None:
    """When ``node``'s receiver began delivering a new session, after ``after``."""
    return next(
        (e for e in r.events if e.kind == "session" and e.node == node and e.time >= after), None
    )


def _verdicts(r: Result) -> list[str]:
    out: list[str] = []
    cut, back, hand = _action(r, "failover"), _action(r, "return"), _action(r, "handover")
    if cut is not None and (w := _window(r, "failover")) is not None:
        out += _failover(r, cut, w)
    if back is not None and (w := _window(r, "return")) is not None:
        end = hand.time if hand is not None else r.t0 + r.duration
        new = takeover_after(r.events, back.time)
        if new is not None and new.time < end:
            out.append(
                f"return: {new.node} took the VIP back {(new.time - back.time) * 1000:.0f} ms "
                f"after its link came up (preempt = true, priority {PRIORITIES[0]} > "
                f"{PRIORITIES[1]}): {_per_node(w)}"
            )
        else:
            out.append(f"return: the master stayed master (no preemption): {_per_node(w)}")
    if hand is not None and (w := _window(r, "handover")) is not None:
        new = takeover_after(r.events, hand.time)
        who = f"{new.node} took over {(new.time - hand.time) * 1000:.0f} ms later; " if new else ""
        worst = max((n.outage or 0.0 for n in w.nodes.values()), default=0.0)
        lost = sum(max(0, n.loss) for n in w.nodes.values())
        out.append(f"handover: {who}outage {_ms(worst)} (worst node), {lost:,} reports lost")
        out.append(f"handover: {_per_node(w)}")
    return out


def _failover(r: Result, cut: Action, w: measure.WindowResult) -> list[str]:
    out = []
    new = takeover_after(r.events, cut.time)
    if new is None:
        return ["failover: no node took over (see the timeline)"]
    out.append(
        f"failover: {new.node} became MASTER {(new.time - cut.time) * 1000:.0f} ms after the "
        f"cut, at {rel(new.time, r.t0).strip()}"
    )
    resumed = _resumed(r, new.node, new.time)
    if resumed is not None:
        out.append(
            f"failover: {new.node}'s receiver delivered the new session from "
            f"{rel(resumed.time, r.t0).strip()} ({(resumed.time - new.time) * 1000:.0f} ms later: "
            "it waits up to cluster.takeover_grace for the old master's end of session)"
        )
    live = {k: v for k, v in w.nodes.items() if not v.cut_off}
    for name, n in sorted(live.items()):
        out.append(
            f"failover: outage {_ms(n.outage)} at {name}'s app, {n.loss:,} reports lost "
            "(sent to the VIP before a live master held it)"
        )
    floor = min((n.loss for n in live.values()), default=0)
    back = _action(r, "return")
    cut_for = (back.time if back else r.t0 + r.duration) - cut.time
    for name, n in sorted(w.nodes.items()):
        if not n.cut_off:
            continue
        text = f"failover: {name} was cut off for {n.outage or 0:.2f} s; "
        if live and n.loss <= floor:
            text += (
                f"back on the LAN it caught up (retransmissions), missing only the "
                f"{n.loss:,} reports no node got"
            )
        else:
            text += f"it missed {n.loss:,} reports"
            if live and cut_for >= r.retransmit_age / 2:
                text += (
                    f", {n.loss - floor:,} more than {', '.join(sorted(live))}: the cut "
                    f"({cut_for:.2f} s) was not short against cluster.retransmit_age "
                    f"({r.retransmit_age:g} s): when the node came back and asked for what "
                    "it had missed, the oldest reports had been kept that long already and "
                    "were gone (a longer retransmit_age, within retransmit_buffer, covers "
                    "longer cuts)"
                )
        out.append(text)
    return out


def _sessions(r: Result) -> list[str]:
    by_address = {int(ipaddress.ip_address(a)) & 0xFFFF: n for n, a in r.node_addresses.items()}
    sessions: dict[int, dict[str, dict[str, Any]]] = {}
    for name, app in r.apps.items():
        for key, info in (app.get("sessions") or {}).items():
            sessions.setdefault(int(key), {})[name] = info
    out = ["Sessions seen by the apps (a new session at every takeover; id = ms << 16 | node)"]
    for session in sorted(sessions):
        relay = by_address.get(session & 0xFFFF, f"node id {session & 0xFFFF}")
        began = rel((session >> 16) / 1000, r.t0).strip()
        seen = "; ".join(
            f"{name} #{info.get('first_seq')}..#{info.get('last_seq')} ({info.get('count', 0):,})"
            for name, info in sorted(sessions[session].items())
        )
        out.append(f"  {session_name(session)}  relayed by {relay}, from {began}: {seen}")
    return out


def _keys(r: Result) -> list[str]:
    """What each daemon signed and verified with, and what it refused (status, at the end)."""
    out = ["Keys each node signed and verified with (new, in the demo's folder, mode 0600)"]
    for name, status in sorted(r.daemons.items()):
        out.append(f"  {name}: {_advert_keys(status)}; {_envelope_keys(status)}")
    return out


def _advert_keys(status: Mapping[str, Any]) -> str:
    auth = status.get("auth")
    if not auth:
        return "adverts unauthenticated"
    refused = sum((status.get("rejected") or {}).values())
    return f"adverts key {auth['active_key']} ({auth['mode']}), {refused} refused"


def _envelope_keys(status: Mapping[str, Any]) -> str:
    feeds = status.get("feeds") or {}
    auth = feeds.get("cluster_auth")
    if not auth:
        return "envelopes unauthenticated"
    envelopes = sum((feeds.get("rejected_envelopes") or {}).values())
    nacks = sum((feeds.get("rejected_nacks") or {}).values())
    return f"envelopes key {auth['active_key']}, {envelopes} refused; NACKs {nacks} refused"


def _summary(r: Result) -> str:
    sent = int(r.radar.get("sent", 0))
    parts = [
        f"{name} decoded {int(app.get('reports', 0)):,} of {sent:,} reports "
        f"({int(app.get('aircraft', 0))} aircraft)"
        for name, app in sorted(r.apps.items())
    ]
    tods = [_int_keys(app.get("received_by_tod")) for app in r.apps.values()]
    if len(tods) == 2:
        a, b = tods
        differ = sum(abs(a.get(k, 0) - b.get(k, 0)) for k in a.keys() | b.keys())
        parts.append(
            "the same reports on both" if differ == 0 else f"the apps differ by {differ} report(s)"
        )
    if (w := _window(r, "failover")) is not None and (
        live := [n for n in w.nodes.values() if not n.cut_off]
    ):
        worst = max(live, key=lambda n: n.outage or 0.0)
        parts.append(f"failover: {_ms(worst.outage)} outage, {worst.loss:,} reports lost")
    if (w := _window(r, "handover")) is not None:
        worst_outage = max((n.outage or 0.0 for n in w.nodes.values()), default=0.0)
        lost = max((n.loss for n in w.nodes.values()), default=0)
        parts.append(f"planned handover: {_ms(worst_outage)} outage, {lost:,} reports lost")
    bad = sum(int(a.get("duplicates", 0)) + int(a.get("undecodable", 0)) for a in r.apps.values())
    parts.append("no duplicates" if bad == 0 else f"{bad} duplicate or undecodable datagrams")
    return "Summary: " + "; ".join(parts) + "."


def succeeded(r: Result) -> bool:
    """The demo showed what it should: both apps decoded reports, the failover happened."""
    decoded = all(int(a.get("reports", 0)) > 0 for a in r.apps.values()) and len(r.apps) == 2
    cut = _action(r, "failover")
    return decoded and cut is not None and takeover_after(r.events, cut.time) is not None
