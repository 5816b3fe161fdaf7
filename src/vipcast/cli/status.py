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
        message = unreachable(path, e)
        log.error("%s", message)
        if args.json:  # a script reading stdout gets an answer of the same shape
            print(json.dumps({"ok": False, "error": message}, indent=2, sort_keys=True))
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


# keys whose integer values are relay session ids, shown in hex as logs and docs do
SESSION_KEYS = frozenset({"session", "delivering", "sessions"})


def _rows(obj: dict[str, Any], prefix: str = "") -> Any:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if key == "ok":
            continue
        if isinstance(value, dict) and value:
            yield from _rows(value, name + ".")
        elif key.endswith("time") and isinstance(value, int | float) and value > 1e9:
            yield name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        else:
            yield name, _text(value, key in SESSION_KEYS)


def _text(value: Any, session: bool = False) -> str:
    """One value as a person reads it: no Python reprs, session ids in hex."""
    if value is None or value in ({}, []):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if session and isinstance(value, int):
        return f"{value:x}" if value else "-"
    if isinstance(value, list):
        return ", ".join(_text(v, session) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v, session)}" for k, v in value.items())
    return str(value)
