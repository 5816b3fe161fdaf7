"""The fault campaign against the etcd backend: one seed, about 20 s of faults.

Three etcd members (one per node, one on a witness host, raft leader on the witness);
faults drawn from tests/lab/nemesis.py's ``ETCD_CATALOGUE`` (VRRP's advert faults
dropped, a node cut off from the etcd majority added), judged by tests/lab/checker.py
with the same properties as VRRP, except that no request may be answered twice even
while two nodes say MASTER: fencing promises one speaker at a time. The long run is
``bench/campaign.py --backend etcd``.
"""

from __future__ import annotations

import pytest

from tests.lab import nemesis
from vipcast.lab.site import Site

pytestmark = pytest.mark.root

SECONDS = 20.0
SEED = 3  # draws a node cut off from the etcd majority within the 20 s


def test_a_seeded_etcd_campaign_breaks_no_property(site: Site) -> None:
    run, done, violations = nemesis.campaign(site, SEED, SECONDS, backend="etcd")
    assert done, "no fault was applied: the harness did nothing"
    assert not run.excuse_split_replies
    faults = "\n".join(f"  t={heal - run.t0:6.2f}s {what}" for _, what, heal in done)
    assert not violations, (
        f"seed {SEED}: {len(violations)} violations\nfaults (heal times):\n{faults}\n"
        + "\n".join(str(v) for v in violations)
    )
