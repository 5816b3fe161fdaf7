"""``vipcast status [--json]``: the local daemon's state, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from vipcast.cli.common import add_socket_arguments, socket_path, unreachable
from vipcast.daemon import control

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_arguments(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    path = socket_path(args)
    try:
        answer = control.request(path, "status")
    except OSError as e:
        log.error("%s", unreachable(path, e))
        return 1
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True, default=str))
    else:
        print(render(answer))
    return 0 if answer.get("ok") else 1


def render(status: dict[str, Any]) -> str:
    """A readable table: one ``key  value`` row per line, nested keys dotted."""
    rows = list(_rows(status.get("status", status)))
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _rows(obj: dict[str, Any], prefix: str = "") -> Any:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if key == "ok":
            continue
        if isinstance(value, dict) and value:
            yield from _rows(value, name + ".")
        elif isinstance(value, list):
            yield name, ", ".join(str(v) for v in value) or "-"
        elif key.endswith("time") and isinstance(value, int | float) and value > 1e9:
            yield name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        else:
            yield name, "-" if value is None else value
