"""Loss, rate limits and stalls (this kernel has no netem)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

from vipcast.lab.process import NsProcess
from vipcast.lab.site import Host


def _nsrun(host: Host, *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.ns}", "--", *args],
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
    )


def nft(host: Host, rules: str) -> None:
    """Load nftables ``rules`` inside ``host``."""
    _nsrun(host, "nft", "-f", "-", stdin=rules)


def nft_delete(host: Host, table: str) -> None:
    _nsrun(host, "nft", "delete", "table", "inet", table)


def random_loss(host: Host, percent: int, *, udp_dport: int | None = None) -> None:
    """Drop ``percent`` % of the packets entering ``host`` (optionally one UDP port only)."""
    match = f"udp dport {udp_dport} " if udp_dport else ""
    rules = f"""
table inet vipcast_loss {{
  chain input {{
    type filter hook input priority -300; policy accept;
    {match}numgen random mod 100 < {percent} counter drop
  }}
}}
"""
    _nsrun(host, "nft", "-f", "-", stdin=rules)


def clear_loss(host: Host) -> None:
    _nsrun(host, "nft", "delete", "table", "inet", "vipcast_loss")


def dropped_by_loss(host: Host) -> int:
    out = subprocess.run(
        [
            "nsenter",
            f"--net=/run/netns/{host.ns}",
            "--",
            "nft",
            "list",
            "table",
            "inet",
            "vipcast_loss",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for word, nxt in zip(out.split(), out.split()[1:], strict=False):
        if word == "packets":
            return int(nxt)
    return 0


def rate_limit(host: Host, ifname: str, rate: str = "10mbit") -> None:
    """Shape egress of ``ifname`` with a token bucket filter."""
    _nsrun(
        host,
        "tc",
        "qdisc",
        "replace",
        "dev",
        ifname,
        "root",
        "tbf",
        "rate",
        rate,
        "burst",
        "32kbit",
        "latency",
        "50ms",
    )


@contextlib.contextmanager
def stalled_group(pid: int) -> Iterator[None]:
    """Freeze a process and all its children (SIGSTOP to the group) for the block."""
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


@contextlib.contextmanager
def stalled(target: NsProcess | int) -> Iterator[None]:
    """Freeze a process (SIGSTOP) for the block, then let it run again."""
    pid = target if isinstance(target, int) else target.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
