"""Bounds on what an unauthenticated advert may do (docs/protocol.md, "Plausibility").

VRRPv3 trusts any advert with TTL 255 and a valid checksum. One such advert, spoofed by
any LAN host, makes a master step down; with priority 255 it needs no tie-break, and
with a 40.95 s interval the backups then wait 3 x 40.95 s before anyone takes over. An
advert that is not authenticated (no ``[election.auth]``, or a trailerless one that a
migration mode accepts) is therefore *not adopted*, and reported, when:

* its priority is 255 and its source is not one of the VIPs: RFC 9568 section 5.2.4
  reserves 255 for the address owner (whose own address is the VIP) and has every
  other router use 1..254;
* its interval is more than ``INTERVAL_FACTOR`` times ours, or less than ours over it:
  no working virtual router mixes such intervals (RFC 3768 even required them equal).

Authenticated adverts are adopted as RFC 9568 says: the key holders are trusted.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from vipcast.core.vrrp.codec import Address, Advert, BadPacket

__all__ = ["INTERVAL_FACTOR", "OWNER_PRIORITY", "PLAUSIBILITY_REASONS", "check_plausible_untrusted"]

INTERVAL_FACTOR: Final = 10
OWNER_PRIORITY: Final = 255
PLAUSIBILITY_REASONS: Final = ("implausible_priority", "implausible_interval")


def check_plausible_untrusted(
    advert: Advert, src: Address, *, interval_cs: int, owners: Collection[Address]
) -> None:
    """Raise ``BadPacket`` if an unauthenticated ``advert`` from ``src`` is out of bounds.

    ``interval_cs``: our own advert interval; ``owners``: the VIPs (an owner speaks
    from its address, which is the VIP).
    """
    if advert.priority == OWNER_PRIORITY and src not in owners:
        raise BadPacket(
            "implausible_priority",
            f"priority 255 (address owner) from {src}, which is not a VIP "
            "(RFC 9568: other routers use 1..254); not adopted",
        )
    theirs = advert.max_advert_int_cs
    if theirs > interval_cs * INTERVAL_FACTOR or theirs * INTERVAL_FACTOR < interval_cs:
        raise BadPacket(
            "implausible_interval",
            f"advert interval {theirs / 100:g} s against our {interval_cs / 100:g} s "
            f"(more than {INTERVAL_FACTOR}x apart); not adopted",
        )
