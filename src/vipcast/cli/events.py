"""``vipcast events [--json]``: the daemon's transitions and incidents, live and ordered."""

from __future__ import annotations

import argparse
import json
import logging
import time

from vipcast.cli.common import add_socket_arguments, socket_path, unreachable
from vipcast.daemon import control

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    path = socket_path(args)
    try:
        for event in control.stream(path, "events"):
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
                print(
                    f"{stamp}.{int(event['time'] * 1000) % 1000:03d} #{event['seq']} "
                    f"{event['kind']}: {event['message']}",
                    flush=True,
                )
    except OSError as e:
        log.error("%s", unreachable(path, e))
        return 1
    return 0
