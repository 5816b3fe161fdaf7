"""Every counter status shows is a metric, every label set starts at zero, promtool agrees."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from vipcast.daemon import metrics
from vipcast.daemon.dataplane.stats import FeedStats
from vipcast.daemon.metrics import Metrics
from vipcast.daemon.node import IGNORED_REASONS

CORE = Path(metrics.__file__).parents[1] / "core"


def exposition() -> str:
    m = Metrics()
    m.init_feeds(["radar", "voice"], IGNORED_REASONS)
    return generate_latest(m.registry).decode()


def test_every_feed_counter_of_status_is_a_metric() -> None:
    shown = {f.name for f in dataclasses.fields(FeedStats)}
    exported = set(metrics.FEED_COUNTERS) | {"split_brains", *IGNORED_REASONS}
    assert shown == exported, shown ^ exported


def test_every_envelope_reject_reason_of_the_core_is_exported() -> None:
    raised = set()
    for source in CORE.rglob("*.py"):
        raised |= set(re.findall(r'BadEnvelope\(\s*"(\w+)"', source.read_text()))
    assert raised, "no BadEnvelope reasons found: the scan is broken"
    assert raised <= set(metrics.DECODE_REASONS), raised - set(metrics.DECODE_REASONS)


def test_labelled_counters_have_a_zero_sample_before_their_first_increment() -> None:
    text = exposition()
    for stat, (name, _) in metrics.FEED_COUNTERS.items():
        assert f'vipcast_{name}_total{{feed="voice"}} 0.0' in text, stat
    assert 'vipcast_envelopes_rejected_total{reason="bad_tag"} 0.0' in text
    assert 'vipcast_nacks_rejected_total{reason="foreign"} 0.0' in text
    assert 'vipcast_envelopes_ignored_total{feed="radar",reason="not_leader"} 0.0' in text
    assert 'vipcast_split_brains_total{feed="radar"} 0.0' in text
    assert 'vipcast_transitions_total{new="MASTER",old="BACKUP"} 0.0' in text


def test_the_oversized_help_says_what_the_docs_say() -> None:
    assert "# HELP vipcast_datagrams_oversized_total datagrams too big for one unfragmented" in (
        exposition()
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (package prometheus)")
def test_promtool_check_metrics_passes() -> None:
    done = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
