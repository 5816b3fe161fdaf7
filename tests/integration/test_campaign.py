"""A short fault campaign: seeded random faults against a site carrying steady traffic.

Three seeds of about 12 s of faults each (every fault applied, held, healed, then given
the liveness bound to show its effect), judged by tests/lab/checker.py. The long
campaign is ``bench/campaign.py``; a failing seed here is reproduced there with
``--seeds`` and ``--first-seed``.
"""

from __future__ import annotations

import pytest

from tests.lab import nemesis
from vipcast.lab.site import Site

pytestmark = pytest.mark.root

SECONDS = 12.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_seeded_campaign_breaks_no_property(site: Site, seed: int) -> None:
    run, done, violations = nemesis.campaign(site, seed, SECONDS)
    assert done, "no fault was applied: the harness did nothing"
    faults = "\n".join(f"  t={heal - run.t0:6.2f}s {what}" for _, what, heal in done)
    assert not violations, (
        f"seed {seed}: {len(violations)} violations\nfaults (heal times):\n{faults}\n"
        + "\n".join(str(v) for v in violations)
    )
