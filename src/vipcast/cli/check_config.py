"""``vipcast check-config FILE``: validate and summarise a configuration."""

from __future__ import annotations

import argparse

from vipcast import config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.file)
    vips = ", ".join(str(a) for a in cfg.vip.addresses)
    mode = "unicast" if cfg.election.unicast_peers else "multicast"
    print(f"{args.file}: OK")
    print(f"  node {cfg.node.name} on {cfg.node.interface}")
    print(
        f"  vrid {cfg.election.vrid}, priority {cfg.election.priority}, "
        f"advert {cfg.election.advert_interval:g}s, {mode}, VIPs {vips}"
    )
    for feed in cfg.feeds:
        print(f"  feed {feed.name}: port {feed.port} -> {feed.mode} {list(feed.deliver)}")
    return 0
