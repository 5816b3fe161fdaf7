"""``vipcast run --config FILE``: the node daemon, in the foreground, logging to stderr."""

from __future__ import annotations

import argparse
from pathlib import Path

from vipcast import config
from vipcast.daemon import node


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    path = Path(args.config)
    return node.run(config.load(path), path)
