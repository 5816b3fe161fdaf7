"""``vipcast release --config FILE``: take this config's VIPs off its interface.

In route mode (``[vip] announce = "route"``) it withdraws their host routes and removes
the local addresses.

For the systemd unit's ``ExecStopPost=``, and by hand after a crash: whatever killed
the daemon, its VIPs are gone afterwards. Idempotent. Refused (exit 5) while a live
daemon holds the config's lock, so it never takes the VIP from a running master.
"""

from __future__ import annotations

import argparse
import logging

from vipcast import config
from vipcast.daemon.guard import daemon_lock
from vipcast.daemon.vips import for_config, held_where
from vipcast.linux.lock import AlreadyRunningError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    lock = daemon_lock(cfg)
    try:
        lock.acquire(create=False)
    except AlreadyRunningError as e:
        hint = "a running daemon removes its VIPs itself when it stops"
        raise AlreadyRunningError(f"release refused: {e}; {hint}") from None
    try:
        with for_config(cfg) as vips:
            removed = vips.remove()
    except LookupError as e:  # no interface, so no address on it either
        log.warning("%s; nothing to release", e.args[0] if e.args else e)
        return 0
    finally:
        lock.release()
    where = held_where(cfg)
    if removed:
        print(f"released {', '.join(str(v) for v in removed)} from {where}")
    else:
        print(f"no VIP of this config on {where}; nothing to release")
    return 0
