"""One address family per node, and IPv6 scopes that ``run`` can start with.

The relay sends from the node's VRRP address and replies leave from the VIP, so the
VIPs' family rules the cluster, the members, the peers and every ``send_to``; with
IPv6, multicast VRRP speaks from the link-local address, unicast VRRP from the
peers' scope, and the cluster must be reachable from that address.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from vipcast import config
from vipcast.config import ConfigError

EXAMPLE6 = Path(__file__).parents[2] / "examples" / "node-ipv6.toml"
FEED = {"name": "radar", "port": 8600, "deliver": ["127.0.0.1:9600"]}
V4: dict[str, Any] = {
    "node": {"name": "n1", "interface": "eth0"},
    "election": {"vrid": 51},
    "vip": {"addresses": ["198.18.0.100/24"]},
    "cluster": {"group": "239.255.86.1:8601"},
    "feed": [FEED],
}
V6: dict[str, Any] = {
    **V4,
    "vip": {"addresses": ["fd00:198:18::100/64"]},
    "cluster": {"group": "[ff12::86:1]:8601"},
}
V6_UNICAST: dict[str, Any] = {
    **V6,
    "election": {"vrid": 51, "unicast_peers": ["fd00:198:18::c"]},
    "cluster": {"receivers": ["[fd00:198:18::b]:8601", "[fd00:198:18::c]:8601"]},
}


def changed(base: dict[str, Any], **tables: dict[str, Any]) -> dict[str, Any]:
    """``base`` with keys of some tables replaced (``feed`` updates the one feed)."""
    data = copy.deepcopy(base)
    for name, values in tables.items():
        if name == "feed":
            data["feed"][0].update(values)
        else:
            data[name] = {**data.get(name, {}), **values}
    return data


def test_the_ipv6_example_loads_and_speaks_from_the_link_local_address() -> None:
    cfg = config.load(EXAMPLE6)
    assert cfg.cluster.group == ("ff12::86:1", 8601)
    assert cfg.feeds[0].send_to == (("fd00:198:18:1::2", 8600),)
    assert config.vrrp_link_local(cfg)


@pytest.mark.parametrize(
    ("data", "link_local"),
    [
        pytest.param(V4, False, id="ipv4"),
        pytest.param(V6, True, id="ipv6-multicast-vrrp"),
        pytest.param(V6_UNICAST, False, id="ipv6-unicast-vrrp-global-peers"),
        pytest.param(
            changed(V6, election={"unicast_peers": ["fe80::c"]}), True, id="link-local-peers"
        ),
        pytest.param(changed(V6, node={"address": "fe80::b"}), True, id="link-local-address"),
        pytest.param(
            changed(V4, feed={"deliver": ["[::1]:9600"]}), False, id="apps-of-either-family"
        ),
        pytest.param(changed(V6, cluster={"group": "[ff05::86:1]:8601"}), True, id="site-group"),
    ],
)
def test_what_run_can_start_is_accepted(data: dict[str, Any], link_local: bool) -> None:
    assert config.vrrp_link_local(config.parse(data)) is link_local


REJECTED = [
    pytest.param(
        changed(V6, cluster={"group": "239.255.86.1:8601"}),
        "cluster.group: 239.255.86.1 is not the VIPs' family (IPv6)",
        id="v6-vip-v4-group",
    ),
    pytest.param(
        changed(V4, cluster={"group": "[ff12::86:1]:8601"}),
        "cluster.group: ff12::86:1 is not the VIPs' family (IPv4)",
        id="v4-vip-v6-group",
    ),
    pytest.param(
        changed(V4, cluster={"group": None, "receivers": ["[fd00:198:18::b]:8601"]}),
        "cluster.receivers: fd00:198:18::b is not the VIPs' family (IPv4)",
        id="v4-vip-v6-receivers",
    ),
    pytest.param(
        changed(V6_UNICAST, cluster={"receivers": ["[fd00:198:18::b]:8601", "198.18.0.12:8601"]}),
        "cluster.receivers: 198.18.0.12 is not the VIPs' family (IPv6)",
        id="mixed-receivers",
    ),
    pytest.param(
        changed(V4, node={"address": "fd00:198:18::b"}),
        "node.address: fd00:198:18::b is not the VIPs' family (IPv4)",
        id="node-address-family",
    ),
    pytest.param(
        changed(V6, cluster={"members": ["198.18.0.11"]}),
        "cluster.members: 198.18.0.11 is not the VIPs' family (IPv6)",
        id="members-family",
    ),
    pytest.param(
        changed(V6, feed={"send_to": ["198.19.0.2:8600"]}),
        "feed[0].send_to: 198.19.0.2 is not the VIPs' family (IPv6)",
        id="replies-leave-from-the-vip",
    ),
    pytest.param(
        changed(V6, election={"unicast_peers": ["198.18.0.12"]}),
        "election.unicast_peers: 198.18.0.12 is not the VIPs' family (IPv6)",
        id="peer-family",
    ),
    pytest.param(
        changed(V6_UNICAST, election={"unicast_peers": []}),
        "cluster.receivers: IPv6 unicast receivers need election.unicast_peers",
        id="v6-receivers-with-multicast-vrrp",
    ),
    pytest.param(
        changed(V6_UNICAST, election={"unicast_peers": ["fe80::c"]}),
        "cluster.receivers: IPv6 unicast receivers need election.unicast_peers",
        id="v6-receivers-with-link-local-peers",
    ),
    pytest.param(
        changed(V6_UNICAST, cluster={"receivers": ["[fe80::b]:8601"]}),
        "cluster.receivers: fe80::b: give the nodes' global addresses",
        id="link-local-receivers",
    ),
    pytest.param(
        changed(V6, election={"unicast_peers": ["fe80::c", "fd00:198:18::d"]}),
        "election.unicast_peers: all link-local (fe80::) or all global",
        id="mixed-scope-peers",
    ),
    pytest.param(
        changed(V6, node={"address": "fd00:198:18::b"}),
        "node.address: fd00:198:18::b: IPv6 multicast VRRP needs this node's link-local address",
        id="global-address-multicast-vrrp",
    ),
    pytest.param(
        changed(V6_UNICAST, node={"address": "fe80::b"}),
        "node.address: fe80::b: election.unicast_peers needs this node's global address",
        id="link-local-address-global-peers",
    ),
    pytest.param(
        changed(V6, cluster={"group": "[ff11::86:1]:8601"}),
        "cluster.group: ff11::86:1: use a link-local (ff12::) or wider group",
        id="interface-local-group",
    ),
    pytest.param(
        changed(V6, cluster={"members": ["fd00:198:18::b"]}),
        "cluster.members: fd00:198:18::b: envelopes come from the nodes' link-local addresses",
        id="global-members-multicast-vrrp",
    ),
]


@pytest.mark.parametrize(("data", "message"), REJECTED)
def test_what_run_cannot_start_is_rejected_naming_the_key(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(_without_none(data))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: a key set to None is left out."""
    return {
        k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
        for k, v in data.items()
    }
