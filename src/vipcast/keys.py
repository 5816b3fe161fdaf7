"""Shared keys: the value syntax keepalived's ``auth_hmac`` uses, key files, new keys.

A key value is ``hex:`` and raw bytes in hex, ``file:PATH`` (the file holds what the
inline value would, one trailing line end dropped), or else the ASCII string itself.
Keys are 32 to 64 bytes and have ids 1..255, so several can be configured at once and
rotated without a flap. Used for VRRP adverts (``[election.auth]``) and for the LAN
envelopes (``[cluster.auth]``).
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

KEY_MIN: Final = 32
KEY_MAX: Final = 64
KEY_ID_MAX: Final = 255
_FILE_MAX: Final = 4 + KEY_MAX * 2 + 8  # a hex: prefix, its digits, some slack


class BadKey(ValueError):  # noqa: N818 (like BadPacket, BadEnvelope)
    """A key value that cannot be used; the message says why."""


@dataclass(frozen=True)
class Key:
    """One key: its id, its bytes, and the file it came from (for permission checks)."""

    id: int
    secret: bytes
    path: Path | None = None

    def __repr__(self) -> str:  # never print the secret
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Key(id={self.id}, {len(self.secret)} bytes{where})"


def decode_value(text: str) -> bytes:
    """An inline value: ``hex:...`` or an ASCII string."""
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError as e:
            raise BadKey(f"not hex after 'hex:' ({e})") from None
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise BadKey("a key string must be ASCII (or use hex:)") from None


def read_key_file(path: Path) -> bytes:
    """The key a file holds (as an inline value: hex: or ASCII, a trailing line end dropped)."""
    try:
        with path.open("rb") as f:
            raw = f.read(_FILE_MAX + 1)
    except OSError as e:
        raise BadKey(f"key file {path}: {e.strerror or e}") from None
    if len(raw) > _FILE_MAX:
        raise BadKey(f"key file {path} is too large for a key")
    try:
        text = raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise BadKey(f"key file {path} is not ASCII (write hex:...)") from None
    return decode_value(text)


def parse_key(key_id: int, value: str, *, base: Path | None = None) -> Key:
    """A key from its configured id and value (``file:`` paths relative to ``base``)."""
    if not 1 <= key_id <= KEY_ID_MAX:
        raise BadKey(f"key id {key_id} not in 1..{KEY_ID_MAX}")
    path = None
    if value.startswith("file:"):
        path = Path(value[5:])
        if base is not None and not path.is_absolute():
            path = base / path
        secret = read_key_file(path)
    else:
        secret = decode_value(value)
    if not KEY_MIN <= len(secret) <= KEY_MAX:
        raise BadKey(f"key {key_id} is {len(secret)} bytes, not {KEY_MIN}..{KEY_MAX}")
    return Key(key_id, secret, path)


def readable_by_others(path: Path) -> bool:
    """Whether group or others may read (or write, or run) a key file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def new_key(size: int = KEY_MIN) -> bytes:
    """Fresh random key bytes."""
    if not KEY_MIN <= size <= KEY_MAX:
        raise BadKey(f"a key is {KEY_MIN}..{KEY_MAX} bytes")
    return secrets.token_bytes(size)


def write_key_file(path: Path, secret: bytes) -> None:
    """Write ``secret`` as ``hex:...`` to a new file, mode 0600; never over an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("hex:" + secret.hex() + "\n")
