"""Helpers shared by the subcommands that talk to a running daemon."""

from __future__ import annotations

import argparse

from vipcast import config

DEFAULT_SOCKET = "/run/vipcast/control.sock"


def add_socket_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", help=f"control socket (default {DEFAULT_SOCKET})")
    where.add_argument("--config", help="take the control socket from this config file")


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        return config.load(args.config).node.control_socket
    return DEFAULT_SOCKET


def unreachable(path: str, error: OSError) -> str:
    """What a failed connect means: not allowed (say so), or no daemon there."""
    why = error.strerror or str(error)
    if isinstance(error, PermissionError):
        return (
            f"cannot reach the vipcast daemon at {path}: {why} (the socket is mode 0660: "
            "run as root or as the daemon's user or group)"
        )
    return f"cannot reach the vipcast daemon at {path}: {why} (is it running?)"
