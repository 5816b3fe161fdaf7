"""Entry point: ``main(argv) -> int``; exceptions become exit codes here, in one place."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

from vipcast import __version__
from vipcast.config import ConfigError
from vipcast.daemon.quietlog import setup_logging
from vipcast.linux.lock import AlreadyRunningError

# subcommand -> module under vipcast.cli with add_arguments(parser) and run(args) -> int
COMMANDS = {
    "run": ("run", "run the node daemon in the foreground"),
    "check-config": ("check_config", "validate a configuration file"),
    "status": ("status", "show the local daemon's state"),
    "events": ("events", "stream the local daemon's transitions as they happen"),
    "handover": ("handover", "planned switchover: make the peer master without loss"),
    "release": ("release", "remove this config's VIPs from its interface (no daemon running)"),
    "keygen": ("keygen", "write a new key file (mode 0600) for [election.auth] keys"),
    "demo": ("demo", "build a virtual site in namespaces and show a failover"),
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG, EXIT_PRIVILEGE, EXIT_RUNNING = 0, 1, 2, 3, 4, 5

log = logging.getLogger("vipcast")

DESCRIPTION = (
    "vipcast: a hot-standby cluster as one address. VRRPv3 moves a virtual IP; the "
    "master tees every UDP datagram sent to it to every node, which delivers it in "
    "order, gap-free, to local applications. Start with check-config, then run "
    "(or the systemd unit); status and events show a running node."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vipcast", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"vipcast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        import_module(f"vipcast.cli.{module}").add_arguments(cmd)
        cmd.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(import_module(f"vipcast.cli.{args.module}").run(args))
    except (ConfigError, OSError, LookupError, RuntimeError) as e:
        return failed(e)
    except KeyboardInterrupt:
        return 130


# the expected failures, first match wins: (exception, exit code, what the log line says first)
FAILURES: tuple[tuple[type[Exception], int, str], ...] = (
    (ConfigError, EXIT_CONFIG, "invalid configuration: "),
    (PermissionError, EXIT_PRIVILEGE, ""),
    (LookupError, EXIT_CONFIG, ""),  # an interface or address that is not there
    (AlreadyRunningError, EXIT_RUNNING, ""),  # another daemon holds the lock: nothing touched
    (OSError, EXIT_FAILURE, ""),
    (RuntimeError, EXIT_FAILURE, ""),
)


def failed(error: Exception) -> int:
    """One log line for an expected failure; its exit code."""
    for kind, code, prefix in FAILURES:
        if isinstance(error, kind):
            text = error.args[0] if isinstance(error, LookupError) and error.args else error
            log.error("%s%s", prefix, text)
            return code
    raise error


if __name__ == "__main__":
    sys.exit(main())
