"""``vipcast check-config FILE``: validate and summarise a configuration.

The file's own rules first (:func:`vipcast.config.load`); then, on the node itself,
its interface and the address ``run`` would speak VRRP and relay from, found the way
``run`` finds it: a file that passes here starts there. An interface that is not on
this host is an error (exit 3), since ``run`` would fail on it; ``--offline`` checks a
file meant for another machine (the file's own rules only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vipcast import config, keys
from vipcast.config import Config
from vipcast.daemon.election import vrrp_source
from vipcast.linux import interfaces


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="TOML configuration file")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="check a file for another machine: skip the interface and its addresses",
    )


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.file)
    source = OFFLINE if args.offline else _host_source(cfg)  # LookupError: run fails too
    vips = ", ".join(str(a) for a in cfg.vip.addresses)
    mode = "unicast" if cfg.election.unicast_peers else "multicast"
    print(f"{args.file}: OK")
    print(f"  node {cfg.node.name} on {cfg.node.interface}, {source}")
    print(
        f"  vrid {cfg.election.vrid}, priority {cfg.election.priority}, "
        f"advert {cfg.election.advert_interval:g}s, {mode}, VIPs {vips}"
    )
    print(f"  announce {_announce(cfg)}")
    if cfg.cluster.group or cfg.cluster.receivers:
        print(f"  cluster {_cluster(cfg)}")
    for feed in cfg.feeds:
        print(f"  feed {feed.name}: port {feed.port} -> {feed.mode} {list(feed.deliver)}")
    if cfg.etcd is not None:
        print(f"  etcd {_etcd(cfg.etcd)}")
    for line in warnings(cfg, Path(args.file)):
        print(f"  WARNING: {line}")
    return 0


def warnings(cfg: Config, path: Path | None = None) -> list[str]:
    """One line per thing that works but leaves the cluster open to a LAN host."""
    found = _etcd_warnings(cfg.etcd, path) if cfg.etcd is not None else _advert_warnings(cfg)
    if cfg.feeds and not _envelopes_keyed(cfg):
        found.append(
            "envelopes are unauthenticated: any LAN host can inject datagrams "
            "(set [cluster.auth] keys)"
        )
    found += [f"key file {p} is readable by others (chmod 600 {p})" for p in _open_key_files(cfg)]
    return found


def _advert_warnings(cfg: Config) -> list[str]:
    found = []
    a = cfg.election.auth
    if a is None:
        found.append(
            "adverts are unauthenticated: any LAN host can take or stop the VIP "
            "(add [election.auth], docs/operations.md)"
        )
    elif a.mode != "enforce":
        found.append(f"election.auth.mode is {a.mode!r}: unsigned adverts are still accepted")
    if cfg.election.priority == 255 and a is None:
        found.append(
            "election.priority 255 without [election.auth]: peers ignore an unsigned "
            "priority-255 advert from a non-owner (use 254)"
        )
    return found


def _etcd(e: config.EtcdConfig) -> str:
    tls = "TLS" + (" with a client certificate" if e.cert_file else "")
    secure = tls if e.endpoints[0].startswith("https://") else "plain http"
    auth = f"user {e.user}" if e.user else "no authentication"
    return f"{', '.join(e.endpoints)}; key {e.election}, lease_ttl {e.lease_ttl}s; {secure}, {auth}"


def _etcd_warnings(e: config.EtcdConfig, path: Path | None) -> list[str]:
    found = []
    if e.user is None and e.cert_file is None:
        found.append(
            "etcd without authentication (user or a client certificate): any host that "
            "reaches etcd can take the election key"
        )
    if any(u.startswith("http://") for u in e.endpoints):
        found.append("etcd endpoints over plain http: requests and tokens travel in clear")
    secrets = [Path(p) for p in (e.key_file, e.password_file) if p is not None]
    if e.password is not None and path is not None:
        secrets.append(path)  # the password is in the configuration file itself
    found += [
        f"{p} is readable by others (chmod 600 {p})" for p in secrets if keys.readable_by_others(p)
    ]
    return found


def _envelopes_keyed(cfg: Config) -> bool:
    return cfg.cluster.auth is not None


def _open_key_files(cfg: Config) -> list[Path]:
    rings = [a.keys for a in (cfg.election.auth, cfg.cluster.auth) if a is not None]
    paths = {k.path for ring in rings for k in ring if k.path is not None}
    return sorted(p for p in paths if keys.readable_by_others(p))


OFFLINE = "interface and addresses not checked (--offline)"


def _host_source(cfg: Config) -> str:
    """Where VRRP and the relay speak from; LookupError when the interface is not here."""
    try:
        interfaces.ifindex(cfg.node.interface)
    except LookupError as e:
        why = e.args[0] if e.args else f"no interface {cfg.node.interface!r}"
        raise LookupError(
            f"node.interface: {why}; not on this host, so run would fail here "
            "(check a file for another machine with --offline)"
        ) from None
    if cfg.vip.announce == "route":
        try:
            interfaces.ifindex(cfg.vip.local_interface)
        except LookupError as e:
            raise LookupError(f"vip.local_interface: {e.args[0] if e.args else e}") from None
    return f"VRRP and relay from {vrrp_source(cfg)}"


def _announce(cfg: Config) -> str:
    v = cfg.vip
    if v.announce == "arp":
        return f"by ARP/NA on {cfg.node.interface} ({v.garp_count} at takeover)"
    return (
        f"by host routes in table {v.route_table}, protocol {v.route_protocol} "
        f"(for the node's BGP daemon), addresses on {v.local_interface}"
    )


def _cluster(cfg: Config) -> str:
    c = cfg.cluster
    if c.group:
        return f"group {_endpoint(c.group)}, receiver port {c.port}"
    return "receivers " + ", ".join(_endpoint(r) for r in c.receivers)


def _endpoint(endpoint: config.Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
