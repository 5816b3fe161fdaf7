"""packaging/grafana/vipcast.json: it parses, its PromQL is valid and names real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.promql_names import ROOT, exported_names, metric_names, unknown

DASHBOARD = ROOT / "packaging" / "grafana" / "vipcast.json"
# what Grafana puts in place of its variables before it queries
VARIABLES = {"$__rate_interval": "5m", "$cluster": ".*", "$instance": ".*"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def exprs(board: dict[str, Any]) -> list[str]:
    """Every query: panel targets and annotations."""
    found = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    return found + [a["expr"] for a in board["annotations"]["list"] if "expr" in a]


def variable_metrics(board: dict[str, Any]) -> set[str]:
    queries = [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return {re.match(r"label_values\((\w+)", q)[1] for q in queries}  # type: ignore[index]


def test_it_parses_with_unique_panel_ids_and_a_layout() -> None:
    board = dashboard()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)) > 10
    for panel in panels(board):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_it_shows_state_rates_loss_and_failovers() -> None:
    board = dashboard()
    kinds = {p["type"] for p in panels(board)}
    assert "state-timeline" in kinds
    used = set().union(*(metric_names(e) for e in exprs(board)))
    for metric in (
        "vipcast_state",
        "vipcast_datagrams_relayed_total",
        "vipcast_datagrams_delivered_total",
        "vipcast_datagrams_lost_total",
        "vipcast_datagrams_recovered_total",
    ):
        assert metric in used, metric
    failovers = [a for a in board["annotations"]["list"] if a.get("name") == "Failovers"]
    assert failovers
    assert "vipcast_transitions_total" in failovers[0]["expr"]


def test_every_query_uses_the_chosen_data_source() -> None:
    board = dashboard()
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_metric_the_dashboard_reads_is_exported() -> None:
    board, exported = dashboard(), exported_names()
    for expr in exprs(board):
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        assert not unknown(names, exported), (expr, unknown(names, exported))
    assert not unknown(variable_metrics(board), exported)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (package prometheus)")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool checks each query as a recording rule, Grafana's variables filled in."""
    rules = []
    for i, query in enumerate(exprs(dashboard())):
        expr = query
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"  # JSON is YAML
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
