"""VRRPv3 timer arithmetic (RFC 9568 section 6.1), in seconds from centiseconds.

Each result is one division of exact integers, so it is the float nearest to
the RFC's value and two routers computing it agree to the last bit.
"""

from __future__ import annotations

__all__ = ["skew_time", "master_down_interval"]


def skew_time(priority: int, master_adver_interval_cs: int) -> float:
    """Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256, in seconds."""
    return (256 - priority) * master_adver_interval_cs / 25600


def master_down_interval(priority: int, master_adver_interval_cs: int) -> float:
    """Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time, in seconds."""
    return (3 * 256 + 256 - priority) * master_adver_interval_cs / 25600
