"""packaging/prometheus/: the rules load, their unit tests pass, they name real metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.promql_names import ROOT, exported_names, metric_names, unknown

RULES = ROOT / "packaging" / "prometheus" / "vipcast-rules.yml"
RULE_TESTS = ROOT / "packaging" / "prometheus" / "vipcast-rules.test.yml"
# the rules file's two forms of `expr:`: one line, or a folded block (more indented)
_EXPR = re.compile(r"^(?P<indent> *)expr: (?P<value>.*)$")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool (Debian package prometheus)"
)


def promtool(*args: str, cwd: Path = RULES.parent) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def rule_exprs(text: str) -> list[str]:
    """Each rule's expression; a folded one (``>-``) is its more indented lines joined."""
    lines, exprs = text.splitlines(), []
    for i, line in enumerate(lines):
        m = _EXPR.match(line)
        if m is None:
            continue
        value = m["value"]
        if value in (">-", ">", "|", "|-"):
            indent, body = len(m["indent"]), []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following.strip())
            value = " ".join(body)
        exprs.append(value)
    return exprs


def alerts(text: str) -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", text, re.M)


def test_the_expression_reader_reads_both_forms() -> None:
    text = "      - alert: A\n        expr: up == 0\n      - alert: B\n        expr: >-\n"
    text += "          rate(x_total[5m])\n          > 0\n        for: 1m\n"
    assert rule_exprs(text) == ["up == 0", "rate(x_total[5m]) > 0"]


@needs_promtool
def test_promtool_check_rules_passes_and_every_rule_is_read() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", done.stdout)
    assert found is not None, done.stdout
    assert int(found[1]) == len(rule_exprs(RULES.read_text())) == len(alerts(RULES.read_text()))


@needs_promtool
def test_promtool_test_rules_passes() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    tests = RULE_TESTS.read_text()
    for alert in alerts(RULES.read_text()):
        blocks = re.findall(
            rf"alertname: {alert}\n\s+exp_alerts:(.*?)(?=\n\s+- eval_time|\n\n|\Z)", tests, re.S
        )
        assert any(b.strip() == "[]" for b in blocks), f"{alert}: no test where it stays silent"
        assert any("exp_labels" in b for b in blocks), f"{alert}: no test where it fires"


def test_every_metric_the_rules_read_is_exported() -> None:
    exported = exported_names()
    for expr in rule_exprs(RULES.read_text()):
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}: the reader is broken"
        assert not unknown(names, exported), (expr, unknown(names, exported))


def test_the_rule_tests_feed_only_exported_series() -> None:
    series = re.findall(r"series: '([A-Za-z_:][A-Za-z0-9_:]*)\{", RULE_TESTS.read_text())
    assert len(series) > 10
    assert not unknown(set(series), exported_names())


def test_a_misspelt_metric_would_be_caught() -> None:
    assert unknown(metric_names("rate(vipcast_datagram_lost_total[5m]) > 0"), exported_names())
