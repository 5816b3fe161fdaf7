"""Shared fixtures: the namespace lab, and the policy for tests that need root.

Outside CI, a test marked ``root`` skips with a message when it cannot make network
namespaces; with ``CI=true`` it fails instead, so CI never passes by skipping.
"""

from __future__ import annotations

import atexit
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from vipcast.lab import site as lab_site
from vipcast.lab.site import Lab, Site, build_site

# Under CI load a Hypothesis example may take long; correctness, not speed, is tested here.
settings.register_profile("vipcast", deadline=None, print_blob=True)
settings.load_profile("vipcast")

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_open_labs: list[Lab] = []


def _root_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root to build network namespaces (run as root, or in CI)"
    for tool in ("ip", "nsenter", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (make test installs it)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs = [m.name for m in item.iter_markers() if m.name in {"root", "keepalived"}]
    problem = _root_problem() if needs else None
    if "keepalived" in needs and problem is None and shutil.which("keepalived") is None:
        problem = "needs the keepalived binary (Debian package keepalived)"
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true and this test {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers() -> None:
    """Remove namespaces left by crashed runs (their pid is gone)."""
    if os.geteuid() == 0 and shutil.which("ip"):
        lab_site.sweep()


def _close_open_labs() -> None:
    for lab in list(_open_labs):
        lab.close()


atexit.register(_close_open_labs)  # Ctrl-C or an internal error: still tear down


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """A fresh lab; its processes' logs are attached to the report of a failed test."""
    the_lab = Lab(workdir=tmp_path)
    _open_labs.append(the_lab)
    request.node.vipcast_lab = the_lab
    try:
        yield the_lab
    finally:
        the_lab.close()
        _open_labs.remove(the_lab)


@pytest.fixture
def site(lab: Lab) -> Site:
    """The standard site: remote centre, router, switch, two nodes."""
    return build_site(lab, nodes=2)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    the_lab = getattr(item, "vipcast_lab", None)
    if the_lab is not None and report.failed and call.when in {"call", "setup"}:
        for proc in the_lab.processes:
            try:
                text = proc.output()[-20000:]
            except (OSError, ValueError):
                continue
            report.sections.append((f"{proc.ns} {' '.join(proc.args)[:80]}", text))
    return report
