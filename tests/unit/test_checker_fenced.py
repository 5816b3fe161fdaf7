"""The checker's property 6 for a fenced backend (etcd): no duplicate reply is excused."""

from __future__ import annotations

import dataclasses

from tests.lab import checker as ck
from tests.lab.checker import SplitEvent
from tests.unit.test_checker import S1, S2, answered_by, clean


def test_answers_twice_while_two_nodes_are_master_break_property_6_when_fenced() -> None:
    run = answered_by(clean(), "node2", range(300, 400))
    run.status_samples = [
        dataclasses.replace(s, state="MASTER") if 2.9 <= s.at <= 4.1 else s
        for s in run.status_samples
    ]
    run.nodes["node2"].splits = [SplitEvent(4.2, (S1, S2))]
    assert ck.check_replies(run) == []  # VRRP: two masters excuse the duplicates
    run.excuse_split_replies = False
    found = ck.check_replies(run)
    assert [v.prop for v in found] == [6]
    assert "25 requests answered more than once outside a split, e.g. #300" in found[0].text
