"""The state machine as a Mermaid diagram, generated from the transition table."""

from __future__ import annotations

from vipcast.core.vrrp.machine import State, describe_transitions


def mermaid() -> str:
    """``stateDiagram-v2`` text: one arrow per rule that changes state."""
    lines = ["stateDiagram-v2", "    [*] --> INITIALIZE"]
    for state, event, target, _ in describe_transitions():
        if target is not state:
            lines.append(f"    {state.value} --> {target.value}: {event.value}")
    lines.append(f"    {State.STOPPED.value} --> [*]")
    return "\n".join(lines)


def rules_table() -> str:
    """The rules as a Markdown table: state, input, next state, what the router does."""
    rows = ["| state | input | next state | what it does |", "|---|---|---|---|"]
    for state, event, target, effect in describe_transitions():
        rows.append(f"| {state.value} | {event.value} | {target.value} | {effect} |")
    return "\n".join(rows)
