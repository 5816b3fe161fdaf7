"""``vipcast handover``: planned switchover, make-before-break, from the current master."""

from __future__ import annotations

import argparse
import logging

from vipcast.cli.common import add_socket_arguments, socket_path, unreachable
from vipcast.daemon import control

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_arguments(parser)
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the peer (default 30)"
    )


def run(args: argparse.Namespace) -> int:
    path = socket_path(args)
    try:
        answer = control.request(path, "handover", timeout=args.timeout + 5, wait=args.timeout)
    except OSError as e:
        log.error("%s", unreachable(path, e))
        return 1
    if not answer.get("ok"):
        log.error("handover refused: %s", answer.get("error"))
        return 1
    print(answer.get("message", "handover done"))
    return 0
