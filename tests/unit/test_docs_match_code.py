"""The docs show what the code does: the state diagram and rules come from the table."""

from __future__ import annotations

from pathlib import Path

from vipcast.core.vrrp.diagram import mermaid, rules_table

PROTOCOL = Path(__file__).parents[2] / "docs" / "protocol.md"


def test_protocol_doc_has_the_generated_state_diagram() -> None:
    text = PROTOCOL.read_text()
    assert mermaid() in text
    assert rules_table() in text
