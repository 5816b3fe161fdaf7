"""The metric names a PromQL expression reads, and the names a real daemon exports.

Shared by the tests of packaging/prometheus/ and packaging/grafana/: an alert or a
panel naming a metric the daemon does not export would never fire or show anything.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vipcast.config import load
from vipcast.daemon.election import Election
from vipcast.daemon.node import Node

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "node.toml"
PROMETHEUS_OWN = {"up"}  # series Prometheus makes for every target
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_CALL = re.compile(r"\s*(\(|(by|without)\b)")  # a function, or an aggregation's grouping


def metric_names(expr: str) -> set[str]:
    """Every metric an expression selects (function names, keywords, labels left out)."""
    text = _LABEL_LISTS.sub(r"\1", _RANGES.sub("", _MATCHERS.sub("", _STRING.sub('""', expr))))
    names = set()
    for m in _WORD.finditer(text):
        word = m.group()
        if word.lower() in _KEYWORDS or _CALL.match(text, m.end()):
            continue
        names.add(word)
    return names


def exported_names() -> set[str]:
    """Every sample name of a daemon's exposition, built the way ``vipcast run`` builds it
    (a Node from the example configuration: its feeds, the election's reject reasons)."""

    async def build() -> str:
        node = Node(load(EXAMPLE))
        try:
            return generate_latest(node.metrics.registry).decode()
        finally:
            if isinstance(node.election, Election):
                node.election.vips.close()  # its netlink socket, opened at construction

    text = asyncio.run(build())
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def unknown(names: set[str], exported: set[str]) -> set[str]:
    return names - exported - PROMETHEUS_OWN
