"""keepalived 2.4's ``auth_hmac`` advert trailer: signing, verifying, anti-replay.

Wire-compatible with keepalived 2.4.3 (``keepalived/vrrp/vrrp_auth_hmac.c``), learnt from
its source and pinned by its fixed vectors (``tests/unit/test_vrrp_auth.py``). After the
VRRP message's addresses comes a 28-byte trailer:

    0      ext_type     1 = HMAC-SHA256 truncated to 128 bits
    1      key_id       1..255, selects the verifying key
    2..3   reserved     zero
    4..7   seconds      UTC seconds since the Unix epoch (low 32 bits)
    8..9   subseconds   binary fraction of the second, 1/65536 s
    10..11 counter      tie breaker within one stamp
    12..27 hmac         the first 16 bytes of HMAC-SHA256

Bytes 4..11 read as one 64-bit sequence. The HMAC covers a 20-byte pseudo-header
(family 4 or 6, version, VRID, zero, the source address zero-padded to 16 bytes), then
the message with its checksum read as zero, then the trailer's first 12 bytes and 16
zero bytes: the checksum may be filled in before or after signing (IPv6's covers the
trailer), and the IP header, destination included, is not bound (one signed advert goes
to every unicast peer).

Receivers drop a trailer whose stamp is more than ``time_window`` seconds from their
clock (``anti_replay = "time"``) before the HMAC is computed; after the HMAC, a
sequence not above the sender's last accepted one is a replay. The replay state lives
per sender: a few slots, least recently used replaced, filled only by verified adverts.

Nothing here reads a clock: callers pass ``unix``, the wall clock in seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from vipcast.core.vrrp.codec import AUTH_TRAILER_LEN, Address, BadPacket

__all__ = [
    "AUTH_REASONS",
    "AntiReplay",
    "AuthMode",
    "Authenticator",
    "Checked",
    "Trailer",
    "default_time_window",
    "encode_trailer",
    "parse_trailer",
    "pseudo_header",
    "sequence_of",
]

AuthMode = Literal["enforce", "permissive", "receive-only"]
AntiReplay = Literal["time", "monotonic"]
AUTH_MODES: Final[tuple[AuthMode, ...]] = get_args(AuthMode)
ANTI_REPLAY: Final[tuple[AntiReplay, ...]] = get_args(AntiReplay)
# the BadPacket reasons this module raises (also the metric's labels)
AUTH_REASONS: Final = (
    "no_trailer",
    "malformed_trailer",
    "unknown_key",
    "bad_hmac",
    "stale",
    "replay",
)

EXT_HMAC_SHA256: Final = 1
HMAC_LEN: Final = 16
PSEUDO_LEN: Final = 20
WINDOW_MIN: Final = 1  # seconds, keepalived's bounds for time_window
WINDOW_MAX: Final = 300
WINDOW_FLOOR: Final = 5  # the least window derived from the advert interval
SENDERS: Final = 4  # replay slots for multicast senders (keepalived's)
_TRAILER: Final = struct.Struct("!BBHQ16s")  # ext_type, key_id, reserved, sequence, hmac
_PREFIX_LEN: Final = 12  # what precedes the hmac field
_ZERO_HMAC: Final = bytes(HMAC_LEN)
_U32: Final = 1 << 32
_U64: Final = (1 << 64) - 1


def default_time_window(advert_interval: float) -> int:
    """keepalived's window when none is given: 3 whole advert intervals, 5..300 s."""
    return max(WINDOW_FLOOR, min(WINDOW_MAX, 3 * int(advert_interval)))


@dataclass(frozen=True, slots=True)
class Trailer:
    ext_type: int
    key_id: int
    reserved: int
    sequence: int
    mac: bytes

    @property
    def seconds(self) -> int:
        return self.sequence >> 32


def parse_trailer(raw: bytes) -> Trailer:
    """The 28 bytes after an advert's addresses, as fields (no check made)."""
    if len(raw) != AUTH_TRAILER_LEN:
        raise BadPacket("malformed_trailer", f"{len(raw)} bytes, not {AUTH_TRAILER_LEN}")
    return Trailer(*_TRAILER.unpack(raw))


def sequence_of(unix: float) -> int:
    """The 64-bit sequence of a wall-clock reading: seconds, 1/65536 s, counter zero."""
    seconds = int(unix)
    fraction = int((unix - seconds) * 65536) & 0xFFFF
    return (seconds % _U32) << 32 | fraction << 16


def _after(a: int, b: int) -> bool:
    """RFC 1982 serial order of 64-bit sequences: ``a`` comes after ``b``."""
    d = (a - b) & _U64
    return 0 < d < 1 << 63


def _signed32(value: int) -> int:
    value &= _U32 - 1
    return value - _U32 if value >= 1 << 31 else value


def pseudo_header(src: Address, version: int, vrid: int) -> bytes:
    """The 20 bytes bound into the HMAC: family, version, VRID, zero, source address."""
    family = 6 if src.version == 6 else 4
    return bytes((family, version, vrid, 0)) + src.packed.ljust(16, b"\0")


def _mac(secret: bytes, pseudo: bytes, message: bytes, prefix: bytes) -> bytes:
    h = hmac.new(secret, pseudo, hashlib.sha256)
    h.update(message[:6])
    h.update(b"\0\0")  # the checksum, read as zero
    h.update(message[8:])
    h.update(prefix)
    h.update(_ZERO_HMAC)
    return h.digest()[:HMAC_LEN]


def encode_trailer(
    secret: bytes, key_id: int, sequence: int, message: bytes, *, src: Address, vrid: int
) -> bytes:
    """The trailer for ``message`` (the VRRP message, checksum filled in or not)."""
    prefix = _TRAILER.pack(EXT_HMAC_SHA256, key_id, 0, sequence, _ZERO_HMAC)[:_PREFIX_LEN]
    version = message[0] >> 4
    return prefix + _mac(secret, pseudo_header(src, version, vrid), message, prefix)


@dataclass(frozen=True, slots=True)
class Checked:
    """What ``verify_untrusted`` accepted: signed (with the sender's clock skew) or not."""

    authenticated: bool
    key_id: int = 0
    skew: int = 0  # seconds, our clock minus the sender's stamp (time mode)


class Authenticator:
    """One virtual router's keys, mode, send sequence and per-sender replay state.

    ``enforce``: sign, and accept only adverts with a valid trailer. ``permissive``:
    sign, and accept adverts without a trailer too. ``receive-only``: sign nothing,
    accept adverts without a trailer; a trailer that is there is verified in every mode.
    ``configure`` changes keys and settings live and keeps the sequence and replay state
    (a key rotation by SIGHUP neither resets nor replays anything).
    """

    def __init__(
        self,
        keys: Mapping[int, bytes],
        active_key: int,
        mode: AuthMode = "enforce",
        *,
        anti_replay: AntiReplay = "time",
        time_window: int = WINDOW_FLOOR,
        senders: int = SENDERS,
    ) -> None:
        self._send_seq = 0
        self._marks: OrderedDict[Address, int] = OrderedDict()  # sender -> last sequence
        self.senders = max(1, senders)
        self.configure(keys, active_key, mode, anti_replay=anti_replay, time_window=time_window)

    def configure(
        self,
        keys: Mapping[int, bytes],
        active_key: int,
        mode: AuthMode,
        *,
        anti_replay: AntiReplay = "time",
        time_window: int = WINDOW_FLOOR,
    ) -> None:
        if active_key not in keys:
            raise ValueError(f"active key {active_key} is not one of the keys {sorted(keys)}")
        if not WINDOW_MIN <= time_window <= WINDOW_MAX:
            raise ValueError(f"time_window: {WINDOW_MIN}..{WINDOW_MAX} s, got {time_window}")
        self.keys = dict(keys)
        self.active_key = active_key
        self.mode: AuthMode = mode
        self.anti_replay: AntiReplay = anti_replay
        self.time_window = time_window

    @property
    def signs(self) -> bool:
        return self.mode != "receive-only"

    # --- sending -------------------------------------------------------------------

    def next_sequence(self, unix: float) -> int:
        """The clock's sequence, or the last one plus one if the clock has not moved on.

        In time mode a last sequence stranded more than the window ahead of the clock
        (a clock stepped back) restarts from the clock; monotonic mode keeps growing.
        """
        clock = sequence_of(unix)
        if _after(clock, self._send_seq):
            self._send_seq = clock
            return clock
        ahead = _signed32((self._send_seq >> 32) - (clock >> 32))
        if self.anti_replay == "time" and ahead > self.time_window:
            self._send_seq = clock
        else:
            self._send_seq = (self._send_seq + 1) & _U64
        return self._send_seq

    def sign(self, message: bytes, *, src: Address, vrid: int, unix: float) -> bytes:
        """The trailer for one advert sent now (b"" in receive-only mode)."""
        if not self.signs:
            return b""
        sequence = self.next_sequence(unix)
        secret = self.keys[self.active_key]
        return encode_trailer(secret, self.active_key, sequence, message, src=src, vrid=vrid)

    # --- receiving -----------------------------------------------------------------

    def verify_untrusted(
        self, message: bytes, trailer: bytes | None, *, src: Address, vrid: int, unix: float
    ) -> Checked:
        """Accept or reject one advert from ``src`` (``message`` without the trailer).

        Raises ``BadPacket`` with reason ``no_trailer`` (enforce mode),
        ``malformed_trailer``, ``stale`` (time mode, before the HMAC is computed),
        ``unknown_key``, ``bad_hmac`` or ``replay``. Only an advert that passes moves the
        sender's replay mark.
        """
        if trailer is None:
            if self.mode == "enforce":
                raise BadPacket("no_trailer", "no authentication trailer (mode enforce)")
            return Checked(authenticated=False)
        t = parse_trailer(trailer)
        if t.ext_type != EXT_HMAC_SHA256 or t.reserved != 0:
            raise BadPacket("malformed_trailer", f"ext_type {t.ext_type}, reserved {t.reserved}")
        skew = self._check_fresh(t, unix)
        secret = self.keys.get(t.key_id)
        if secret is None:
            raise BadPacket("unknown_key", f"key id {t.key_id} is not configured")
        want = _mac(secret, pseudo_header(src, message[0] >> 4, vrid), message, trailer[:12])
        if not hmac.compare_digest(want, t.mac):
            raise BadPacket("bad_hmac", f"HMAC does not match key {t.key_id}")
        self._check_replay(src, t.sequence, unix)
        return Checked(authenticated=True, key_id=t.key_id, skew=skew)

    def _check_fresh(self, t: Trailer, unix: float) -> int:
        if self.anti_replay != "time":
            return 0
        skew = _signed32(int(unix) - t.seconds)
        if abs(skew) > self.time_window:
            raise BadPacket(
                "stale", f"stamp {skew:+d} s from our clock, window {self.time_window} s"
            )
        return skew

    def _check_replay(self, src: Address, sequence: int, unix: float) -> None:
        mark = self._marks.get(src)
        if mark is not None and self.anti_replay == "time":
            age = _signed32(int(unix) - (mark >> 32))
            if abs(age) > self.time_window:
                mark = None  # outside the window it orders nothing: a sender reset
        if mark is not None and not _after(sequence, mark):
            raise BadPacket("replay", f"sequence {sequence:#x} not after {mark:#x}")
        self._marks[src] = sequence
        self._marks.move_to_end(src)
        while len(self._marks) > self.senders:
            self._marks.popitem(last=False)

    def mark_of(self, src: Address) -> int | None:
        """The last sequence accepted from ``src`` (tests and status)."""
        return self._marks.get(src)

    def set_mark(self, src: Address, sequence: int) -> None:
        """Set the replay mark for ``src`` (tests replaying keepalived's cases)."""
        self._marks[src] = sequence

    def set_send_sequence(self, sequence: int) -> None:
        """Set the last sequence sent (tests replaying keepalived's cases)."""
        self._send_seq = sequence & _U64
