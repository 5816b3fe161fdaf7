"""Capability checks read CapEff and say how to fix what is missing."""

from __future__ import annotations

import pytest

from vipcast.linux.privileges import missing_capabilities, require

ROOT = "Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n"
NET_RAW_ONLY = "CapEff:\t0000000000002000\n"  # bit 13
NOTHING = "CapEff:\t0000000000000000\n"


def test_root_lacks_nothing() -> None:
    assert missing_capabilities(["CAP_NET_RAW", "CAP_NET_ADMIN"], status=ROOT) == []


def test_missing_capabilities_are_named_in_the_order_asked() -> None:
    assert missing_capabilities(["CAP_NET_ADMIN", "net_raw"], status=NET_RAW_ONLY) == [
        "CAP_NET_ADMIN"
    ]
    assert missing_capabilities(["CAP_NET_RAW", "CAP_NET_ADMIN"], status=NOTHING) == [
        "CAP_NET_RAW",
        "CAP_NET_ADMIN",
    ]


def test_require_says_what_needs_it_and_how_to_grant_it() -> None:
    with pytest.raises(PermissionError) as err:
        require("CAP_NET_RAW", what="open the VRRP socket on eth0", status=NOTHING)
    message = str(err.value)
    assert message.startswith("vipcast needs CAP_NET_RAW to open the VRRP socket on eth0: ")
    assert "run as root" in message
    assert "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN" in message


def test_require_passes_quietly_when_granted() -> None:
    require("CAP_NET_RAW", what="send ARP", status=NET_RAW_ONLY)


def test_unknown_capability_names_are_refused() -> None:
    with pytest.raises(ValueError, match="CAP_NET_RAWW"):
        missing_capabilities(["CAP_NET_RAWW"], status=ROOT)


def test_this_process_status_is_readable() -> None:
    assert isinstance(missing_capabilities(["CAP_NET_RAW"]), list)
