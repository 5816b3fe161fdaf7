"""Linux capabilities: which ones this process lacks, and one actionable message about it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["CAPABILITIES", "explain", "missing_capabilities", "require"]

# The capability numbers of <linux/capability.h> vipcast cares about.
CAPABILITIES = {
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_ADMIN": 21,
}
STATUS = Path("/proc/self/status")
SYSTEMD_HINT = "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN"


def missing_capabilities(required: Iterable[str], *, status: str | None = None) -> list[str]:
    """The capabilities of ``required`` absent from this process's effective set.

    Names are ``CAP_NET_RAW`` style (``net_raw`` is accepted too). ``status`` is the text
    of ``/proc/self/status``, read when not given.
    """
    names = [_canonical(name) for name in required]
    effective = _effective_set(STATUS.read_text() if status is None else status)
    return [name for name in names if not effective >> CAPABILITIES[name] & 1]


def require(*caps: str, what: str, status: str | None = None) -> None:
    """Raise :class:`PermissionError` naming what needs which capability, and the fix."""
    missing = missing_capabilities(caps, status=status)
    if missing:
        raise PermissionError(explain(missing, what))


def explain(caps: Iterable[str], what: str) -> str:
    """``vipcast needs CAP_X to WHAT: run as root, or grant it with ... in the systemd unit``."""
    names = " and ".join(_canonical(c) for c in caps)
    return (
        f"vipcast needs {names} to {what}: run as root, "
        f"or grant it with {SYSTEMD_HINT} in the systemd unit"
    )


def _canonical(name: str) -> str:
    upper = name.upper()
    canonical = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if canonical not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r}; known: {', '.join(CAPABILITIES)}")
    return canonical


def _effective_set(status: str) -> int:
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            return int(value.strip(), 16)
    raise ValueError("no CapEff line in the process status (is /proc mounted?)")
