"""The demo's radar application: one per node, fed by vipcast, decoding CAT048.

``python -m vipcast.demo.app --node node1 --port 9600 --status FILE`` runs in a
node's namespace, where that node's vipcast delivers the feed in ``envelope``
mode. It receives with :class:`vipcast.Receiver`, decodes every record with
libasterix and counts reports and distinct aircraft (by I048/220 address).

Every 0.1 s it rewrites its status file (counts, session, sequence); on SIGTERM
it writes a final one that adds the receive time of every datagram
(``arrivals``, seconds since 1970) and the reports received per I048/140 time of
day (``received_by_tod``), from which the demo measures outages and loss.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from types import FrameType
from typing import Any

from vipcast.api import Message, Receiver
from vipcast.demo import cat048, statusfile

MAX_ARRIVALS = 2_000_000  # bounds memory: about two hours at the demo's rate


class Picture:
    """What one application has seen: reports, aircraft, sessions, arrival times."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.datagrams = 0
        self.reports = 0
        self.undecodable = 0
        self.duplicates = 0
        self.sequence_gaps = 0
        self.source = ""
        self.session = 0
        self.sequence = 0
        self.sessions: dict[int, dict[str, Any]] = {}
        self.aircraft: dict[int, cat048.Report] = {}
        self.arrivals: array[float] = array("d")
        self.received_by_tod: Counter[int] = Counter()
        self._seen: set[tuple[int, int, int]] = set()

    def add(self, msg: Message, now: float) -> None:
        self.datagrams += 1
        if len(self.arrivals) < MAX_ARRIVALS:
            self.arrivals.append(now)
        self._follow(msg, now)
        try:
            reports = cat048.decode(msg.payload)
        except cat048.DecodeError:
            self.undecodable += 1
            return
        for report in reports:
            key = (report.address, report.tod_raw, report.track_number)
            if key in self._seen:
                self.duplicates += 1
                continue
            if len(self._seen) < MAX_ARRIVALS:
                self._seen.add(key)
            self.reports += 1
            self.received_by_tod[report.tod_raw] += 1
            self.aircraft[report.address] = report

    def _follow(self, msg: Message, now: float) -> None:
        self.source = f"{msg.source[0]}:{msg.source[1]}"
        info = self.sessions.get(msg.session)
        if info is None:
            info = {"first_seen": now, "first_seq": msg.sequence, "count": 0}
            self.sessions[msg.session] = info
        elif msg.session == self.session and msg.sequence != self.sequence + 1:
            self.sequence_gaps += 1
        info["last_seen"], info["last_seq"] = now, msg.sequence
        info["count"] += 1
        self.session, self.sequence = msg.session, msg.sequence

    def status(self, *, final: bool = False) -> dict[str, Any]:
        latest = max(self.aircraft.values(), key=lambda r: r.tod_raw, default=None)
        status: dict[str, Any] = {
            "node": self.node,
            "time": time.time(),
            "datagrams": self.datagrams,
            "reports": self.reports,
            "undecodable": self.undecodable,
            "duplicates": self.duplicates,
            "sequence_gaps": self.sequence_gaps,
            "aircraft": len(self.aircraft),
            "source": self.source,
            "session": self.session,
            "sequence": self.sequence,
            "sessions": {str(s): info for s, info in self.sessions.items()},
            "latest": None if latest is None else _describe(latest),
            "last_arrival": self.arrivals[-1] if self.arrivals else None,
            "final": final,
        }
        if final:
            status["arrivals"] = [round(t, 4) for t in self.arrivals]
            status["received_by_tod"] = {str(k): v for k, v in sorted(self.received_by_tod.items())}
        return status


def _describe(r: cat048.Report) -> str:
    """One decoded report the way a controller's label would show it."""
    return (
        f"{r.callsign or '?':<7} {r.mode3a} FL{r.flight_level:03.0f} "
        f"{r.rho_nm:5.1f}NM {r.theta_deg:5.1f}\N{DEGREE SIGN} "
        f"{r.speed_nm_s * 3600:3.0f}kt"
    )


class _StopFlag:
    def __init__(self) -> None:
        self.set = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set = True


def run(node: str, address: str, port: int, status_path: str, max_seconds: float) -> int:
    picture = Picture(node)
    stop = _StopFlag()
    deadline = time.monotonic() + max_seconds
    next_status = 0.0
    with Receiver(address, port) as rx:
        statusfile.write(status_path, picture.status())
        while not stop.set and (mono := time.monotonic()) < deadline:
            msg = rx.receive(timeout=0.05)
            if msg is not None:
                picture.add(msg, time.time())
            if mono >= next_status:
                statusfile.write(status_path, picture.status())
                next_status = mono + 0.1
    statusfile.write(status_path, picture.status(final=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vipcast.demo.app", description=__doc__)
    parser.add_argument("--node", required=True, help="name shown in the status")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9600)
    parser.add_argument("--status", required=True, help="JSON status file (rewritten)")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this")
    args = parser.parse_args(argv)
    return run(args.node, args.address, args.port, args.status, args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
