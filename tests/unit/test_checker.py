"""The campaign's checker on hand-made records: a clean run passes, each broken promise fails."""

from __future__ import annotations

import dataclasses

import pytest

from tests.lab import checker as ck
from tests.lab.checker import (
    AddrSample,
    ArpSample,
    Delivery,
    Fault,
    Gap,
    NodeRecord,
    Reply,
    Run,
    SenderLog,
    SplitEvent,
    StatusSample,
)

S1, S2 = 100 << 16 | 11, 200 << 16 | 12
RATE = 100.0  # datagrams per second: number n is sent at n / RATE
MACS = {"node1": "02:00:00:00:00:01", "node2": "02:00:00:00:00:02"}
FROM_VIP = ("198.18.0.100", 8600)
EVERY = 4  # the apps answer every 4th number


def stream(session: int, seqs: range, first_number: int, lag: float = 0.01) -> list[Delivery]:
    """Datagrams ``seqs`` of ``session`` carrying numbers from ``first_number``."""
    return [
        Delivery(session, q, first_number + k, (first_number + k) / RATE + lag)
        for k, q in enumerate(seqs)
    ]


def clean(count: int = 1000) -> Run:
    """Two nodes, one session, every datagram everywhere; node1 MASTER with the VIP."""
    nodes = {n: NodeRecord(n, deliveries=stream(S1, range(1, count + 1), 0)) for n in MACS}
    end = count / RATE
    times = [k * 0.02 for k in range(int(end / 0.02))]
    return Run(
        nodes=nodes,
        faults=[],
        sender=SenderLog(count, [(n, n / RATE) for n in range(0, count, 10)], end),
        liveness_bound=1.4,
        vip_tolerance=0.16,
        split_tolerance=0.26,
        t0=0.0,
        end=end,
        status_samples=[
            StatusSample(t, n, "MASTER" if n == "node1" else "BACKUP") for t in times for n in MACS
        ],
        addr_samples=[AddrSample(t, frozenset({"node1"})) for t in times],
        arp_samples=[ArpSample(t, MACS["node1"]) for t in times],
        macs=dict(MACS),
        replies=[Reply(n, "node1", FROM_VIP, n / RATE + 0.02) for n in range(0, count, EVERY)],
        reply_source=FROM_VIP,
        reply_every=EVERY,
    )


def props(run: Run) -> list[int]:
    return sorted({v.prop for v in ck.check(run)})


def texts(run: Run) -> str:
    return "\n".join(str(v) for v in ck.check(run))


def test_a_clean_run_has_no_violation() -> None:
    assert ck.check(clean()) == []


# ---------------------------------------------------------------- 1 liveness


def with_fault(run: Run, start: float, heal: float, name: str = "freeze") -> Run:
    run.faults.append(Fault(name, start, heal))
    return run


def test_nothing_new_after_a_heal_breaks_liveness() -> None:
    run = with_fault(clean(), 2.0, 3.0)
    node2 = run.nodes["node2"]
    node2.deliveries = [d for d in node2.deliveries if d.number < 300]  # nothing after 3 s
    node2.gaps = [Gap(S1, 301, 700, 9.0)]
    found = [v for v in ck.check(run) if v.prop == 1]
    assert [v.node for v in found] == ["node2"]
    assert "never" in found[0].text


def test_a_node_that_never_resumes_is_reported_once() -> None:
    run = with_fault(with_fault(clean(), 2.0, 3.0), 5.0, 5.5)
    node2 = run.nodes["node2"]
    node2.deliveries = [d for d in node2.deliveries if d.number < 300]
    node2.gaps = [Gap(S1, 301, 700, 9.0)]
    assert len(ck.check_liveness(run)) == 1


def test_old_datagrams_delivered_late_do_not_count_as_resumed() -> None:
    run = with_fault(clean(), 2.0, 3.0)
    node2 = run.nodes["node2"]
    late = [dataclasses.replace(d, at=d.at + 5.0) for d in node2.deliveries if d.number >= 200]
    node2.deliveries = [d for d in node2.deliveries if d.number < 200] + late
    found = [v for v in ck.check(run) if v.prop == 1]
    assert [v.node for v in found] == ["node2"]
    assert "only" in found[0].text


def test_resuming_within_the_bound_is_live() -> None:
    run = with_fault(clean(), 2.0, 3.0)
    assert ck.check_liveness(run) == []


def test_a_fault_followed_at_once_by_another_is_judged_at_the_later_heal() -> None:
    run = with_fault(with_fault(clean(), 2.0, 3.0), 3.5, 4.0)
    assert [f.heal for f in ck.heals(run)] == [4.0]


# ---------------------------------------------------------------- 2 no silent loss


def drop(run: Run, node: str, lo: int, hi: int) -> None:
    rec = run.nodes[node]
    rec.deliveries = [d for d in rec.deliveries if not lo <= d.seq <= hi]


def test_a_silently_missing_range_breaks_property_2() -> None:
    run = clean()
    drop(run, "node2", 500, 509)
    found = [v for v in ck.check(run) if v.prop == 2]
    assert all(v.node == "node2" for v in found)
    assert any(
        "10 datagrams neither delivered nor reported lost (#500..#509" in v.text for v in found
    )
    assert any("report 0 datagrams lost; the app is missing 10" in v.text for v in found)


def test_a_reported_gap_accounts_for_the_missing_range() -> None:
    run = clean()
    drop(run, "node2", 500, 509)
    run.nodes["node2"].gaps = [Gap(S1, 500, 10, 5.2, "timeout")]
    run.nodes["node2"].reported_lost = 10
    assert ck.check(run) == []


def test_loss_at_the_tail_is_seen_through_the_other_node() -> None:
    run = clean()
    drop(run, "node2", 990, 1000)  # the known range comes from node1's deliveries
    assert "#990..#1000" in texts(run)


def test_delivered_and_reported_lost_breaks_property_2() -> None:
    run = clean()
    run.nodes["node2"].gaps = [Gap(S1, 500, 10, 5.2)]
    assert "delivered and also reported lost (#500..#509)" in texts(run)


def test_a_gap_reported_twice_makes_reported_differ_from_measured() -> None:
    run = clean()
    drop(run, "node2", 500, 509)
    run.nodes["node2"].gaps = [Gap(S1, 500, 10, 5.2), Gap(S1, 500, 10, 5.3)]
    assert "report 20 datagrams lost; the app is missing 10" in texts(run)


def test_a_status_counter_that_disagrees_with_the_events_is_reported() -> None:
    run = clean()
    run.nodes["node1"].reported_lost = 3
    assert "status says 3 lost; gap events say 0" in texts(run)


def test_phantom_loss_beyond_what_the_sender_sent_is_reported() -> None:
    run = clean()
    far = 10**12
    for rec in run.nodes.values():  # both nodes swallow a forged "last sent 10^12"
        rec.gaps = [Gap(S1, 1001, far - 1000, 11.0, "heartbeat")]
    found = [v for v in ck.check(run) if v.prop == 2]
    assert {v.node for v in found} == {"node1", "node2"}
    assert sum("at most 0 can be lost" in v.text for v in found) == 2
    assert sum("the app is missing 0" in v.text for v in found) == 2


def test_a_phantom_gap_at_one_node_does_not_make_the_other_one_lose() -> None:
    run = clean()
    run.nodes["node2"].gaps = [Gap(S1, 1001, 10**12 - 1000, 11.0, "heartbeat")]
    found = ck.check(run)
    assert {v.node for v in found} == {"node2"}
    assert any("at most 0 can be lost" in v.text for v in found)


def test_a_forged_session_is_no_relay_session() -> None:
    run = clean()
    run.nodes["node2"].deliveries.append(Delivery(S2, 1, ck.FOREIGN_NUMBER, 10.5))
    assert S2 not in ck.known_ranges(run)
    assert ck.check_accounting(run) == []


def test_tail_loss_known_only_from_a_gap_is_bounded_by_the_sender() -> None:
    run = clean()
    drop(run, "node1", 991, 1000)
    drop(run, "node2", 991, 1000)
    run.nodes["node2"].gaps = [Gap(S1, 991, 10, 10.2)]  # node2 heard of them; node1 did not
    assert ck.known_ranges(run) == {S1: 1000}
    assert [v.node for v in ck.check(run)] == ["node1", "node1"]


def test_a_restart_excuses_what_was_relayed_while_the_node_was_down() -> None:
    run = clean()
    drop(run, "node2", 400, 599)  # down from 4.0 s to 6.0 s
    run.nodes["node2"].restarts = [(4.0, 6.0)]
    assert ck.check_accounting(run) == []


def test_a_forged_sessions_record_does_not_hide_a_restart() -> None:
    """A forged session's id is above every real one: it must not be where delivery was."""
    run = clean()
    drop(run, "node2", 400, 599)
    run.nodes["node2"].restarts = [(4.0, 6.0)]
    forged = Delivery(S2 << 8, 1, ck.FOREIGN_NUMBER + 1, 3.95)
    run.nodes["node2"].deliveries.append(forged)
    run.nodes["node2"].deliveries.sort(key=lambda d: d.at)
    assert ck.check_accounting(run) == []


def test_a_restart_does_not_excuse_loss_before_the_kill() -> None:
    run = clean()
    drop(run, "node2", 300, 309)
    drop(run, "node2", 400, 599)
    run.nodes["node2"].restarts = [(4.0, 6.0)]
    assert "#300..#309" in texts(run)


def test_blackout_spans_sessions() -> None:
    rec = NodeRecord(
        "n", deliveries=[Delivery(S1, 5, 5, 1.0), Delivery(S2, 7, 20, 3.0)], restarts=[(1.5, 2.5)]
    )
    assert ck.blackouts(rec, {S1: 10, S2: 9}, lambda s, t: []) == {
        S1: [(6, 10)],
        S2: [(1, 6)],
    }


def test_a_blackout_follows_each_session_not_the_newest_id() -> None:
    """node2 resumed its older session S1 after node1's newer S2; then node1 restarted."""
    run = clean()
    newer = S1 + (1 << 20)
    for rec in run.nodes.values():  # at 1.0..1.5 s: the newer session, then S1 again
        rec.deliveries = [*stream(newer, range(1, 51), 1000, lag=-9.0), *rec.deliveries]
        rec.deliveries.sort(key=lambda d: d.at)
    drop(run, "node1", 400, 599)
    run.nodes["node1"].restarts = [(4.0, 6.0)]
    run.sender.count = 1050
    assert ck.check_accounting(run) == []


def test_a_restart_does_not_excuse_what_the_others_had_before_the_kill() -> None:
    run = clean()
    drop(run, "node2", 350, 599)  # 350..399 reached node1 before node2 was killed at 4.0 s
    run.nodes["node2"].restarts = [(4.0, 6.0)]
    assert "40 datagrams neither delivered nor reported lost (#350..#389" in texts(run)


# ---------------------------------------------------------------- 3 duplicates


def test_the_same_sequence_number_twice_is_a_duplicate() -> None:
    run = clean()
    rec = run.nodes["node1"]
    rec.deliveries.insert(10, rec.deliveries[9])
    found = [v for v in ck.check(run) if v.prop == 3]
    assert [v.node for v in found] == ["node1", "node1"]  # by key and by number
    assert f"{S1}#10" in found[0].text


def test_the_same_datagram_in_two_sessions_is_a_duplicate() -> None:
    run = clean()
    for rec in run.nodes.values():  # a new relay sent 990..999 again, as session 2
        rec.deliveries += stream(S2, range(1, 11), 990, lag=0.5)
    found = [v for v in ck.check(run) if v.prop == 3]
    assert {v.node for v in found} == {"node1", "node2"}
    assert all("10 of the sender's datagrams delivered twice" in v.text for v in found)


def test_forged_payloads_are_not_the_senders_duplicates() -> None:
    run = clean()
    for rec in run.nodes.values():
        rec.deliveries += [Delivery(S2, 1, ck.FOREIGN_NUMBER, 10.5)]
    assert ck.check_duplicates(run) == []


# ---------------------------------------------------------------- 4 agreement


def two_sessions(run: Run) -> None:
    """Session S1 1..500, then S2 1..500 (a takeover at 5 s), at both nodes."""
    for rec in run.nodes.values():
        rec.deliveries = stream(S1, range(1, 501), 0) + stream(S2, range(1, 501), 500)


def test_out_of_sequence_delivery_breaks_agreement() -> None:
    run = clean()
    rec = run.nodes["node2"]
    rec.deliveries[100], rec.deliveries[101] = rec.deliveries[101], rec.deliveries[100]
    assert "1 datagrams out of sequence order" in texts(run)


def test_interleaved_sessions_need_a_split_brain_event() -> None:
    run = clean()
    two_sessions(run)
    node2 = run.nodes["node2"]
    s1_late = [d for d in node2.deliveries if d.session == S1 and d.seq > 400]
    rest = [d for d in node2.deliveries if d not in s1_late]
    node2.deliveries = rest[:400] + rest[400:450] + s1_late + rest[450:]
    assert 4 in props(run)
    assert "no split_brain event naming them" in texts(run)
    run.nodes["node1"].splits = [SplitEvent(6.0, (S1, S2))]
    assert 4 not in props(run)


def test_nodes_that_order_sessions_differently_disagree() -> None:
    run = clean()
    two_sessions(run)
    node2 = run.nodes["node2"]
    node2.deliveries = [d for d in node2.deliveries if d.session == S2] + [
        d for d in node2.deliveries if d.session == S1
    ]
    assert f"sessions [{S1}, {S2}]" in texts(run)


def test_two_masters_for_long_need_a_split_brain_event() -> None:
    run = clean()
    run.status_samples = [
        dataclasses.replace(s, state="MASTER") if 3.0 <= s.at <= 4.0 else s
        for s in run.status_samples
    ]
    assert "two MASTERs from t=3.00s" in texts(run)
    run.nodes["node2"].splits = [SplitEvent(4.2, (S1, S2))]
    assert ck.check_agreement(run) == []


def test_two_masters_for_a_moment_is_not_a_split() -> None:
    run = clean()
    run.status_samples = [
        dataclasses.replace(s, state="MASTER") if 3.0 <= s.at <= 3.1 else s
        for s in run.status_samples
    ]
    assert ck.check_agreement(run) == []


# ---------------------------------------------------------------- 5 one address, one master


def test_two_holders_outside_a_fault_break_property_5() -> None:
    run = clean()
    run.addr_samples.append(AddrSample(7.0, frozenset(MACS)))
    run.addr_samples.sort(key=lambda s: s.at)
    assert "2 nodes hold the VIP at t=7.00s" in texts(run)


def test_two_holders_during_a_fault_are_allowed() -> None:
    run = with_fault(clean(), 6.5, 7.5)
    run.addr_samples.append(AddrSample(7.0, frozenset(MACS)))
    run.addr_samples.sort(key=lambda s: s.at)
    assert ck.check_vip(run) == []


def test_an_arp_entry_pointing_at_the_wrong_node_breaks_property_5() -> None:
    run = clean()
    run.arp_samples = [ArpSample(s.at, MACS["node2"]) if s.at > 8 else s for s in run.arp_samples]
    assert "ARP entry for the VIP is 02:00:00:00:00:02" in texts(run)


def test_master_without_the_vip_for_longer_than_the_tolerance_breaks_property_5() -> None:
    run = clean()
    run.addr_samples = [
        AddrSample(s.at, frozenset()) if 2.0 <= s.at <= 2.3 else s for s in run.addr_samples
    ]
    found = [v for v in ck.check(run) if v.prop == 5]
    assert any(v.node == "node1" and "MASTER without the VIP" in v.text for v in found)


def test_backup_keeping_the_vip_briefly_is_allowed() -> None:
    run = with_fault(clean(), 1.9, 2.0, "handover")
    run.addr_samples = [
        AddrSample(s.at, frozenset(MACS)) if 2.0 <= s.at <= 2.1 else s for s in run.addr_samples
    ]
    run.status_samples = [
        StatusSample(s.at, s.node, "BACKUP") if s.node == "node1" and 2.0 <= s.at <= 2.1 else s
        for s in run.status_samples
    ]
    assert ck._state_matches_vip(run) == []


# ---------------------------------------------------------------- 6 replies once


def answered_by(run: Run, node: str, numbers: range, source: tuple[str, int] = FROM_VIP) -> Run:
    run.replies += [Reply(n, node, source, n / RATE + 0.03) for n in numbers if n % EVERY == 0]
    run.replies.sort(key=lambda r: r.at)
    return run


def test_an_answer_from_another_address_breaks_property_6() -> None:
    run = clean()
    run.replies[10] = dataclasses.replace(run.replies[10], source=("198.18.0.1", 8600))
    assert "1 answers did not come from ('198.18.0.100', 8600)" in texts(run)


def test_a_request_answered_twice_outside_a_split_breaks_property_6() -> None:
    run = answered_by(clean(), "node2", range(500, 520))
    assert "5 requests answered more than once outside a split, e.g. #500" in texts(run)


def test_answers_twice_while_two_nodes_are_master_are_the_splits() -> None:
    run = answered_by(clean(), "node2", range(300, 400))
    run.status_samples = [
        dataclasses.replace(s, state="MASTER") if 2.9 <= s.at <= 4.1 else s
        for s in run.status_samples
    ]
    run.nodes["node2"].splits = [SplitEvent(4.2, (S1, S2))]
    assert ck.check_replies(run) == []


def test_a_request_left_unanswered_in_calm_time_breaks_property_6() -> None:
    run = clean()
    run.replies = [r for r in run.replies if not 600 <= r.number < 640]
    assert "10 requests sent in calm time were never answered: #600, #604" in texts(run)


def test_requests_unanswered_during_a_fault_are_allowed() -> None:
    run = with_fault(clean(), 5.5, 6.5)
    run.replies = [r for r in run.replies if not 600 <= r.number < 640]
    assert ck.check_replies(run) == []


# ---------------------------------------------------------------- harness, helpers


def test_what_the_recorders_missed_is_reported() -> None:
    run = clean()
    run.nodes["node1"].recorder_problems = ["events recorder missed events 3..9"]
    assert props(run) == [0]


@pytest.mark.parametrize(
    ("whole", "holes", "expected"),
    [
        ((1, 10), [], [(1, 10)]),
        ((1, 10), [(1, 10)], []),
        ((1, 10), [(3, 4), (8, 20)], [(1, 2), (5, 7)]),
        ((5, 10), [(1, 5)], [(6, 10)]),
    ],
)
def test_subtract(
    whole: ck.Interval, holes: list[ck.Interval], expected: list[ck.Interval]
) -> None:
    assert ck.subtract(whole, ck.merge(holes)) == expected


def test_merge_runs_and_intersect() -> None:
    assert ck.runs([5, 1, 2, 3, 7, 8]) == [(1, 3), (5, 5), (7, 8)]
    assert ck.merge([(1, 2), (3, 5), (9, 9)]) == [(1, 5), (9, 9)]
    assert ck.intersect([(1, 5), (8, 12)], [(4, 9)]) == [(4, 5), (8, 9)]


# ---------------------------------------------------------------- 10 terms


def with_terms(run: Run, cut: int, old_end_ns: int, new_start_ns: int) -> Run:
    """Numbers below ``cut`` relayed under term 5 (ingress up to ``old_end_ns``), the rest
    under term 9 (from ``new_start_ns``)."""
    for node in run.nodes.values():
        node.deliveries = [
            dataclasses.replace(d, term=5, ingress_ns=old_end_ns - (cut - d.number))
            if d.number < cut
            else dataclasses.replace(d, term=9, ingress_ns=new_start_ns + d.number - cut)
            for d in node.deliveries
        ]
    return run


def test_terms_one_after_the_other_pass_and_an_overlap_fails() -> None:
    assert ck.check_terms(with_terms(clean(), 500, 1_000_000, 2_000_000)) == []
    found = ck.check_terms(with_terms(clean(), 500, 3_000_000, 2_000_000))
    assert [v.prop for v in found] == [10]
    assert "term 5 relayed 0.001 s into term 9" in found[0].text


def test_a_number_under_two_terms_fails() -> None:
    run = with_terms(clean(), 500, 1_000_000, 2_000_000)
    first = run.nodes["node1"].deliveries[0]
    run.nodes["node2"].deliveries.append(dataclasses.replace(first, term=9, ingress_ns=3 << 40))
    assert any("two terms" in v.text for v in ck.check_terms(run))
