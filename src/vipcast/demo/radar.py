"""A simulated radar: aircraft on plausible tracks, sent as ASTERIX CAT048 over UDP.

``python -m vipcast.demo.radar --to 198.18.0.100:8600 --rate 300 --duration 20
--status FILE`` runs in the demo's "remote" namespace. One target report per
datagram; the aircraft are reported in turn, so ``--rate`` reports per second
cover the whole traffic picture many times a second (a real radar turns once in
4 to 12 s; the demo compresses the scan to make loss measurable to the report).

It counts every report it sends by its I048/140 time of day (``sent_by_tod``), so
the demo can tell, window by window, how many reports each application missed.
The loop is bounded by ``--duration`` and by ``rate x duration`` reports.
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from vipcast.demo import cat048, statusfile

KNOT = 1 / 3600  # NM/s
SAC, SIC = 25, 201  # data source identifier of the simulated radar
MAX_RANGE = 200.0  # NM: aircraft leaving it turn back
MIN_RANGE = 8.0
# ICAO airline designators with made-up flight numbers; squawks in octal
CALLSIGNS = [
    "DLH4AB", "BAW117", "AFR1845", "KLM1394", "EZY93QN", "RYR2PZ", "SWR7KN", "AUA63J",
    "THY1FC", "LOT3TC", "SAS4721", "IBE3164", "TAP531", "CTN458", "ADR806", "ACA849",
]  # fmt: skip


@dataclass
class Aircraft:
    """A target flying over a flat earth around the radar (x east, y north, in NM)."""

    callsign: str
    address: int
    squawk: str
    track_number: int
    x: float
    y: float
    heading: float  # degrees, true
    speed: float  # knots
    flight_level: float
    climb: float  # FL per second (about 1,500 ft/min is 0.25)
    turn: float  # degrees per second (a standard-rate turn is 3)

    def advance(self, dt: float) -> None:
        self.heading = (self.heading + self.turn * dt) % 360.0
        step = self.speed * KNOT * dt
        self.x += step * math.sin(math.radians(self.heading))
        self.y += step * math.cos(math.radians(self.heading))
        self.flight_level = min(410.0, max(50.0, self.flight_level + self.climb * dt))
        rho = math.hypot(self.x, self.y)
        if rho > MAX_RANGE or rho < MIN_RANGE:  # turn towards (or away from) the radar
            inward = math.degrees(math.atan2(-self.x, -self.y)) % 360.0
            self.heading = inward if rho > MAX_RANGE else (inward + 180.0) % 360.0

    def report(self, wall: float) -> cat048.Report:
        return cat048.Report(
            sac=SAC,
            sic=SIC,
            tod_raw=cat048.tod_raw(wall),
            rho_nm=math.hypot(self.x, self.y),
            theta_deg=math.degrees(math.atan2(self.x, self.y)) % 360.0,
            mode3a=self.squawk,
            flight_level=self.flight_level,
            address=self.address,
            callsign=self.callsign,
            track_number=self.track_number,
            speed_nm_s=self.speed * KNOT,
            heading_deg=self.heading,
        )


def fleet(count: int, seed: int = 48) -> list[Aircraft]:
    """``count`` aircraft (at most 16) spread over the radar's coverage, reproducibly."""
    rnd = random.Random(seed)
    planes = []
    for i, callsign in enumerate(CALLSIGNS[: max(1, min(count, len(CALLSIGNS)))]):
        rho, theta = rnd.uniform(30, 160), rnd.uniform(0, 360)
        cruise = rnd.random() < 0.6
        planes.append(
            Aircraft(
                callsign=callsign,
                address=rnd.randrange(0x300000, 0x4FFFFF),  # European ICAO blocks
                squawk="".join(str(rnd.randrange(8)) for _ in range(4)),
                track_number=100 + i,
                x=rho * math.sin(math.radians(theta)),
                y=rho * math.cos(math.radians(theta)),
                heading=rnd.uniform(0, 360),
                speed=rnd.uniform(420, 480) if cruise else rnd.uniform(240, 320),
                flight_level=rnd.choice([330, 350, 370, 390]) if cruise else rnd.uniform(80, 240),
                climb=0.0 if cruise else rnd.choice([-0.25, 0.25]),
                turn=0.0 if rnd.random() < 0.7 else rnd.choice([-1.5, 1.5]),
            )
        )
    return planes


class Radar:
    """Paces reports at ``rate`` per second, aircraft in turn, and counts what it sent."""

    def __init__(self, planes: list[Aircraft], rate: float) -> None:
        self.planes = planes
        self.rate = rate
        self.sent = 0
        self.errors = 0
        self.sent_by_tod: Counter[int] = Counter()
        self.started = time.time()
        self._last_move: float | None = None
        self._last_tod: dict[int, int] = {}

    def due(self, elapsed: float) -> int:
        """Reports owed at ``elapsed`` seconds after the start."""
        return int(elapsed * self.rate) - self.sent

    def next_datagram(self, wall: float) -> tuple[bytes, int] | None:
        """The next aircraft's report; None if it was already reported in this 1/128 s.

        A report is known by its aircraft and its time of day, as a receiver would
        know it: catching up after a stall must not repeat one (it would look like a
        duplicate), so a burst is at most one report per aircraft per tick.
        """
        plane = self.planes[self.sent % len(self.planes)]
        tod = cat048.tod_raw(wall)
        if self._last_tod.get(plane.address) == tod:
            return None
        if self._last_move is not None:
            for p in self.planes:
                p.advance(wall - self._last_move)
        self._last_move = wall
        self._last_tod[plane.address] = tod
        report = plane.report(wall)
        return cat048.encode([report]), report.tod_raw

    def status(self, *, final: bool = False) -> dict[str, object]:
        status: dict[str, object] = {
            "started": self.started,
            "sent": self.sent,
            "errors": self.errors,
            "rate": self.rate,
            "aircraft": len(self.planes),
            "final": final,
        }
        if final:
            status["sent_by_tod"] = {str(k): v for k, v in sorted(self.sent_by_tod.items())}
        return status


class _StopFlag:
    """Set by SIGTERM; the send loop checks it every few milliseconds."""

    def __init__(self) -> None:
        self.set = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set = True


def run(
    destination: tuple[str, int],
    rate: float,
    duration: float,
    status_path: str,
    *,
    aircraft: int = 12,
    source_port: int = 0,
) -> int:
    radar = Radar(fleet(aircraft), rate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", source_port))
    stop = _StopFlag()
    start, radar.started = time.monotonic(), time.time()
    limit = int(rate * duration)
    next_status = 0.0
    try:
        while (elapsed := time.monotonic() - start) < duration and radar.sent < limit:
            if stop.set:
                break
            for _ in range(min(radar.due(elapsed), limit - radar.sent, 100)):
                if (next_one := radar.next_datagram(time.time())) is None:
                    break  # every aircraft already reported in this tick
                datagram, tod = next_one
                try:
                    sock.sendto(datagram, destination)
                except OSError:
                    radar.errors += 1  # e.g. no route while a link is down: still "sent"
                radar.sent += 1
                radar.sent_by_tod[tod] += 1
            if elapsed >= next_status:
                statusfile.write(status_path, radar.status())
                next_status = elapsed + 0.1
            time.sleep(0.002)
    finally:
        sock.close()
        statusfile.write(status_path, radar.status(final=True))
    return 0


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vipcast.demo.radar", description=__doc__)
    parser.add_argument("--to", type=_endpoint, required=True, help="ADDRESS:PORT")
    parser.add_argument("--rate", type=float, default=300.0, help="reports per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--aircraft", type=int, default=12)
    parser.add_argument("--source-port", type=int, default=0)
    parser.add_argument("--status", required=True, help="JSON status file (rewritten)")
    args = parser.parse_args(argv)
    return run(
        args.to,
        args.rate,
        args.duration,
        args.status,
        aircraft=args.aircraft,
        source_port=args.source_port,
    )


if __name__ == "__main__":
    sys.exit(main())
