"""The campaign's role properties (7-9): each check catches a record that breaks it."""

from __future__ import annotations

from tests.lab.checker import RoleRun, RoleSample, check_roles


def run(**changes: object) -> RoleRun:
    base = RoleRun(
        samples=[RoleSample(1.0, {"fusion": {"node1": [10], "node2": []}})],
        splits=[],
        leftovers=[],
        takeovers=[0.0, 5.0],
        hold_time=4.0,
        span=(0.0, 8.0),
    )
    for k, v in changes.items():
        setattr(base, k, v)
    return base


def test_a_clean_run_breaks_nothing() -> None:
    assert check_roles(run()) == []


def test_two_copies_of_a_master_role_outside_a_split_are_caught() -> None:
    two = [RoleSample(2.0, {"fusion": {"node1": [10], "node2": [20]}})]
    (v,) = check_roles(run(samples=two))
    assert v.prop == 7
    assert "2 copies" in v.text
    assert check_roles(run(samples=two, splits=[(1.5, 2.5)])) == []
    assert check_roles(run(samples=two, takeovers=[2.05])) == []


def test_an_orphan_is_caught() -> None:
    (v,) = check_roles(run(leftovers=["pid 42 sleep 60 (role worker of node1)"]))
    assert v.prop == 8


def test_more_than_one_takeover_per_hold_time_is_flapping() -> None:
    (v,) = check_roles(run(takeovers=[0.0, 1.0, 2.0, 3.0, 4.0]))
    assert v.prop == 9
