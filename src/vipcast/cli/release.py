"""``vipcast release --config FILE``: take this config's VIPs off its interface.

For the systemd unit's ``ExecStopPost=``, and by hand after a crash: whatever killed
the daemon, its VIPs are gone afterwards. Idempotent. Refused (exit 5) while a live
daemon holds the config's lock, so it never takes the VIP from a running master.
"""

from __future__ import annotations

import argparse
import logging

from vipcast import config
from vipcast.daemon.guard import daemon_lock
from vipcast.linux.lock import AlreadyRunningError
from vipcast.linux.vip import VipManager

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    ifname = cfg.node.interface
    lock = daemon_lock(cfg)
    try:
        lock.acquire(create=False)
    except AlreadyRunningError as e:
        hint = "a running daemon removes its VIPs itself when it stops"
        raise AlreadyRunningError(f"release refused: {e}; {hint}") from None
    try:
        with VipManager(ifname, cfg.vip.addresses) as vips:
            removed = vips.remove()
    except LookupError as e:  # no interface, so no address on it either
        log.warning("%s; nothing to release", e.args[0] if e.args else e)
        return 0
    finally:
        lock.release()
    if removed:
        print(f"released {', '.join(str(v) for v in removed)} from {ifname}")
    else:
        print(f"no VIP of this config on {ifname}; nothing to release")
    return 0
