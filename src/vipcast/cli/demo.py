"""`vipcast demo`: a virtual ATC site in network namespaces, radar data, a failover, a handover.

Builds a remote centre, a router, a switch and two vipcast nodes in namespaces
(addresses in 198.18.0.0/15 only), sends simulated ASTERIX CAT048 radar reports
to the VIP, shows live which node is master and what each node's application
decoded, fails the master, brings it back, hands over, and prints a timeline with
the measured outage and loss. Everything is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

NEEDS_ROOT = "vipcast demo builds network namespaces and needs root: sudo make demo"
EXIT_PRIVILEGE = 4  # vipcast.cli.main.EXIT_PRIVILEGE
MIN_DURATION, MAX_DURATION = 12.0, 900.0
MAX_RATE = 2000.0  # the radar's libasterix encoding costs ~0.35 ms a report


def _duration(text: str) -> float:
    value = float(text)
    if not MIN_DURATION <= value <= MAX_DURATION:
        raise argparse.ArgumentTypeError(
            f"must be {MIN_DURATION:g} to {MAX_DURATION:g} seconds, not {text}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=_duration,
        default=60.0,
        metavar="SECONDS",
        help="seconds of radar traffic; the failover, return and handover are spread "
        "over it (default 60, at least 12)",
    )
    parser.add_argument(
        "--rate", type=float, default=300.0, help="radar reports per second (default 300)"
    )
    parser.add_argument(
        "--aircraft", type=int, default=12, choices=range(1, 17), metavar="1..16",
        help="simulated aircraft (default 12)",
    )  # fmt: skip
    parser.add_argument(
        "--logs", type=Path, metavar="DIR", help="keep configs, status files and logs in DIR"
    )


class _Interrupt:
    """SIGINT/SIGTERM handler: KeyboardInterrupt in the demo's own process only.

    pyroute2 forks a short-lived child to open a netlink socket in a namespace, and
    stops it with SIGTERM; the child inherits this handler. Raising there would unwind
    the demo's stack in the child, running its teardown twice. A child just exits.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:
            os._exit(128 + signum)
        raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print(NEEDS_ROOT, file=sys.stderr)
        return EXIT_PRIVILEGE
    if shutil.which("nsenter") is None:
        log.error("vipcast demo needs nsenter (Debian package util-linux)")
        return 1
    if not 1 <= args.rate <= MAX_RATE or args.rate / args.aircraft > 64:
        log.error("--rate must be 1..%g and at most 64 reports/s per aircraft", MAX_RATE)
        return 2
    from vipcast.demo.script import Demo  # noqa: PLC0415 (keeps the other commands light)

    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    handler = _Interrupt()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return Demo(args.duration, args.rate, args.aircraft, sys.stdout, args.logs).run()
    except PermissionError:
        print(NEEDS_ROOT, file=sys.stderr)
        return EXIT_PRIVILEGE
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo made has been removed", file=sys.stderr)
        return 130
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
