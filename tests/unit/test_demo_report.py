"""The demo's report fits 100 columns and explains a cut-off node's extra loss."""

from __future__ import annotations

from vipcast.demo import report
from vipcast.demo.cat048 import TOD_UNITS
from vipcast.demo.cluster import DaemonEvent

T0 = 1000.0  # wall clock of the start (day 0: the time of day is the wall clock)
RATE = 100  # reports per second
CUT, BACK, HAND, END = 5.0, 10.0, 15.0, 20.0


def tods(start: float, end: float, skip: tuple[float, float] | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(int((end - start) * RATE)):
        t = T0 + start + i / RATE
        if skip and skip[0] <= t - T0 < skip[1]:
            continue
        key = str(round(t * TOD_UNITS))
        out[key] = out.get(key, 0) + 1
    return out


def app(lost: tuple[float, float], silent: tuple[float, float]) -> dict[str, object]:
    """Reports sent in ``lost`` never decoded; nothing arrived in ``silent``."""
    got = tods(0, END, lost)
    arrivals = [t for k in got if not silent[0] <= (t := int(k) / TOD_UNITS) - T0 < silent[1]]
    return {"reports": sum(got.values()), "received_by_tod": got, "arrivals": sorted(arrivals)}


def result() -> report.Result:
    actions = [
        report.Action(T0, "start", "traffic starts"),
        report.Action(T0 + CUT, "failover", "FAIL THE MASTER: node1's link cut (port down)"),
        report.Action(T0 + BACK, "return", "node1's link back"),
        report.Action(T0 + HAND, "handover", "vipcast handover on node1"),
    ]
    takeover = {"new": "MASTER"}
    events = [
        DaemonEvent(
            T0 + CUT + 0.35, "node2", "transition", "BACKUP -> MASTER (" + "x" * 90, takeover
        )
    ]
    return report.Result(
        t0=T0,
        duration=END,
        actions=actions,
        events=events,
        radar={"sent": END * RATE, "sent_by_tod": tods(0, END)},
        apps={
            "node1": app((CUT, CUT + 2.5), (CUT, BACK + 0.1)),  # cut off, caught up in part
            "node2": app((CUT, CUT + 0.35), (CUT, CUT + 0.35)),
        },
        daemons={},
        node_addresses={"node1": "198.18.0.11", "node2": "198.18.0.12"},
        retransmit_age=5.0,
    )


def test_the_report_fits_100_columns() -> None:
    text = report.render(result())
    assert "phase" in text
    too_wide = [line for line in text.splitlines() if len(line) > report.WIDTH]
    assert not too_wide


def test_it_explains_the_extra_loss_of_a_node_cut_off_longer_than_the_window() -> None:
    text = " ".join(report.render(result()).split())
    assert "node1 was cut off" in text
    assert "more than node2" in text
    assert "cluster.retransmit_age (5 s)" in text


def test_it_shows_the_keys_each_node_used_and_what_it_refused() -> None:
    keyed = {
        "auth": {"mode": "enforce", "active_key": 1, "keys": [1]},
        "rejected": {"bad_hmac": 2},
        "feeds": {
            "cluster_auth": {"active_key": 1, "keys": [1]},
            "rejected_envelopes": {"replay": 3, "stale": 1},
        },
    }
    r = result()
    r.daemons = {"node1": keyed, "node2": {"auth": None, "feeds": {}}}
    lines = report.render(r).splitlines()
    want = (
        "  node1: adverts key 1 (enforce), 2 refused; envelopes key 1, 4 refused; NACKs 0 refused"
    )
    assert want in lines
    assert "  node2: adverts unauthenticated; envelopes unauthenticated" in lines
