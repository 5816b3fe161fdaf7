"""``vipcast keygen PATH``: write a new random key file (``hex:...``, mode 0600).

The file is what ``[election.auth] keys`` (and keepalived's ``auth_hmac key N file:``)
read. An existing file is never overwritten: rotate by writing a new one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vipcast import keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="the key file to create")
    parser.add_argument(
        "--bytes",
        type=int,
        default=keys.KEY_MIN,
        help=f"key length, {keys.KEY_MIN}..{keys.KEY_MAX} (default {keys.KEY_MIN})",
    )


def run(args: argparse.Namespace) -> int:
    try:
        secret = keys.new_key(args.bytes)
    except keys.BadKey as e:
        raise RuntimeError(str(e)) from None
    try:
        keys.write_key_file(args.path, secret)
    except FileExistsError:
        raise RuntimeError(f"{args.path} exists: keygen never overwrites a key") from None
    print(f"{args.path}: new {len(secret)}-byte key, mode 0600")
    print(f'  use it as: keys = {{ 1 = "file:{args.path}" }}')
    return 0
