"""The LAN envelope: how a relay carries datagrams, and control, to the receivers.

Pure codec: bytes in, records out, and back. ``decode_message_untrusted`` is the
only function that reads bytes from the network and it raises only
:class:`BadEnvelope`. Byte layouts are beside each ``struct.Struct``; the full
specification is ``docs/protocol.md``, section "Envelope (LAN protocol)".

The hot path of a relay does not build :class:`Data` records: it turns each
datagram into record bytes once with :class:`RecordEncoder` (those bytes are also
what the retransmission buffer keeps), then frames a batch of records with
:class:`DataFramer`, which holds the header bytes precomputed.

With a cluster key, a :class:`Signer` (the active key id and the sender's counter)
seals what is sent and a :class:`Verifier` (the configured keys, and the replay
state of ``core/replay.py``) checks what is received. Time is passed in (``now``:
Unix time in ns), as everywhere in the cores.

Every message carries the sender's fencing **term** (1.2): the last 8 bytes of its
header, after the auth block if any. Encoders take it from the message (``term``
field), decoders return it there; 1.0 and 1.1 messages decode with term 0.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from vipcast.core.replay import ReplayGuard

MAGIC: Final = b"VC"
VERSION_MAJOR: Final = 1
VERSION_MINOR: Final = 2  # 1.1: the auth block in authenticated headers; 1.2: the term
VERSION: Final = VERSION_MAJOR << 4 | VERSION_MINOR

FLAG_AUTH: Final = 0x01  # an auth block ends the header, a 16-byte HMAC-SHA256 tag the message
FLAG_RETRANSMISSION: Final = 0x02  # DATA resent in answer to a NACK, unicast
FLAG_CLOSING: Final = 0x04  # HEARTBEAT: a planned handover has begun, END_OF_SESSION follows

U64_MAX: Final = (1 << 64) - 1
AUTH_TAG_SIZE: Final = 16
AUTH_BLOCK_SIZE: Final = 12
AUTH_OVERHEAD: Final = AUTH_BLOCK_SIZE + AUTH_TAG_SIZE
TERM_SIZE: Final = 8  # 1.2: the fencing term ends every header
MAX_UDP_PAYLOAD_V4: Final = 65507  # 65535 - 20 (IPv4) - 8 (UDP)
MAX_UDP_PAYLOAD_V6: Final = 65527  # 65535 - 8 (UDP); the IPv6 header is not counted
_IP_UDP_OVERHEAD: Final = {False: 20 + 8, True: 40 + 8}


class MessageType(enum.IntEnum):
    """The ``type`` byte of the common header."""

    DATA = 1
    HEARTBEAT = 2
    END_OF_SESSION = 3
    NACK = 4
    UNAVAILABLE = 5


class UnavailableReason(enum.IntEnum):
    """Why a relay cannot resend a range (the UNAVAILABLE ``reason`` byte)."""

    UNSPECIFIED = 0
    EVICTED = 1  # older than the retransmission buffer holds
    NOT_SENT = 2  # beyond the last sequence number the relay sent
    UNKNOWN_SESSION = 3  # the relay is not (or no longer) the source of this session


class BadEnvelope(ValueError):  # noqa: N818 (trio's BadPacket naming)
    """Bytes from the network that are not a valid envelope; ``reason`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"bad envelope ({reason}){': ' + detail if detail else ''}")
        self.reason = reason


# Common header, 20 bytes, big-endian, at offset 0 of every message:
#   0  2  magic          b"VC"
#   2  1  version        major << 4 | minor (this is 0x12)
#   3  1  type           MessageType
#   4  1  header length  bytes from offset 0 to the first byte after the header
#   5  1  flags          FLAG_AUTH | FLAG_RETRANSMISSION | FLAG_CLOSING; others 0, ignored
#   6  2  feed id
#   8  4  node id        the sender: relay for DATA/HEARTBEAT/EOS/UNAVAILABLE, receiver for NACK
#  12  8  session id     chosen by the relay, new at each takeover, never 0
_COMMON = struct.Struct(">2sBBBBHIQ")
COMMON_HEADER_SIZE: Final = _COMMON.size

# Type-specific fixed fields, at offset 20; a newer minor version may append more
# before ``header length``, which older decoders skip. With FLAG_AUTH (version 1.1
# and later) the 1.0 fixed fields are followed by the auth block, in every type:
#   +0 1 key id (1..255) | +1 3 reserved | +4 8 counter (the sender's, see Signer)
# and fields later minors append come after it. The tag (HMAC-SHA256 with the key
# named, over every byte before it, first 16 bytes) ends the message.
# 1.2 appends the term to every type's header, after the auth block if any:
#   +0 8 term (the relay's fencing term; 0: unfenced)
# so 1.2 headers are DATA 40, HEARTBEAT 36, END_OF_SESSION 44, NACK 40, UNAVAILABLE 44
# (+12 with AUTH). The sizes below are the 1.0 fixed fields.
# DATA, header 32:        20 8 first sequence number | 28 2 count (1..65535) | 30 2 reserved
_DATA_FIXED = struct.Struct(">QH2x")
# HEARTBEAT, header 28:   20 8 last sequence number sent in the session (0: none yet)
_HEARTBEAT_FIXED = struct.Struct(">Q")
# END_OF_SESSION, 36:     20 8 last sequence number of the session | 28 8 next session (0: unknown)
_END_FIXED = struct.Struct(">QQ")
# NACK, header 32:        20 8 first sequence number wanted | 28 4 count (>= 1)
_NACK_FIXED = struct.Struct(">QI")
# UNAVAILABLE, 36:        20 8 first | 28 4 count (>= 1) | 32 1 reason | 33 3 reserved
_UNAVAILABLE_FIXED = struct.Struct(">QIB3x")

_AUTH_BLOCK = struct.Struct(">B3xQ")
_TERM = struct.Struct(">Q")
_DATA_FIXED_END: Final = COMMON_HEADER_SIZE + _DATA_FIXED.size  # 32, where 1.0's header ended
DATA_HEADER_SIZE: Final = _DATA_FIXED_END + TERM_SIZE  # 40: a 1.2 DATA header without AUTH

# DATA record, one per datagram, after the header (offsets within the record):
#   0  8  ingress time   Unix time in ns when the relay received the datagram
#   8  2  payload length
#  10  1  family         4: addresses are 4 bytes; 6: 16 bytes
#  11  1  reserved       0, ignored
#  12  2  source port
#  14  2  destination port
#  16  4|16  source address (the original sender)
#  20|32 4|16  destination address (the address the sender used: the VIP)
#  24|48 n  payload
_REC4 = struct.Struct(">QHBxHH4s4s")
_REC6 = struct.Struct(">QHBxHH16s16s")
_RECORD_LAYOUTS: Final = {4: (_REC4.unpack_from, _REC4.size), 6: (_REC6.unpack_from, _REC6.size)}
RECORD_HEADER_V4: Final = _REC4.size
RECORD_HEADER_V6: Final = _REC6.size
_REC_FIXED_SIZE: Final = 16
_REC_LEAD = struct.Struct(">QH")  # the fields that differ between datagrams of one sender

Address = tuple[str, int]
"""An IP address as text and a port, as the socket module spells them."""
SockAddr = tuple[str, int] | tuple[str, int, int, int]
"""What ``recvfrom`` returns: IPv6 adds flow info and scope id, which are ignored."""


class Datagram(NamedTuple):
    """One original datagram: who sent it, to where, what, and when it arrived.

    A named tuple rather than a frozen dataclass: receivers build one per
    datagram and a tuple is built in half the time.
    """

    src: Address
    dst: Address
    payload: bytes
    ingress_ns: int

    def __repr__(self) -> str:
        shown = self.payload[:32].hex() + ("..." if len(self.payload) > 32 else "")
        return (
            f"Datagram(src={self.src!r}, dst={self.dst!r}, "
            f"payload[{len(self.payload)}]={shown}, ingress_ns={self.ingress_ns})"
        )


@dataclass(frozen=True, slots=True)
class Data:
    """DATA: datagrams numbered ``first_seq``, ``first_seq + 1``, ..."""

    feed: int
    node: int
    session: int
    first_seq: int
    datagrams: tuple[Datagram, ...]
    retransmission: bool = False
    term: int = 0  # the relay's fencing term (0: unfenced, VRRP)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """HEARTBEAT: an idle relay's statement of the last sequence number it sent."""

    feed: int
    node: int
    session: int
    last_seq: int
    closing: bool = False  # a planned handover began: hold successors until the end
    term: int = 0


@dataclass(frozen=True, slots=True)
class EndOfSession:
    """END_OF_SESSION: the session ends at ``last_seq``; ``next_session`` follows (0: unknown)."""

    feed: int
    node: int
    session: int
    last_seq: int
    next_session: int = 0
    term: int = 0


@dataclass(frozen=True, slots=True)
class Nack:
    """NACK: receiver ``node`` asks the relay to resend ``count`` datagrams from ``first_seq``."""

    feed: int
    node: int
    session: int
    first_seq: int
    count: int
    term: int = 0  # the term of the session asked about, as the receiver knows it


@dataclass(frozen=True, slots=True)
class Unavailable:
    """UNAVAILABLE: the relay cannot resend this range; the receiver gives it up at once."""

    feed: int
    node: int
    session: int
    first_seq: int
    count: int
    reason: UnavailableReason = UnavailableReason.UNSPECIFIED
    term: int = 0


Message = Data | Heartbeat | EndOfSession | Nack | Unavailable


# ---------------------------------------------------------------- addresses

_CACHE_LIMIT: Final = 4096
_packed_cache: dict[str, tuple[int, bytes]] = {}
_text_cache: dict[bytes, str] = {}


def _pack_host(host: str) -> tuple[int, bytes]:
    """(family, packed) for an address in text; IPv4-mapped IPv6 becomes IPv4."""
    hit = _packed_cache.get(host)
    if hit is not None:
        return hit
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if len(_packed_cache) >= _CACHE_LIMIT:
        _packed_cache.clear()
    hit = _packed_cache[host] = (ip.version, ip.packed)
    return hit


def _host_text(packed: bytes) -> str:
    """The text form of a 4- or 16-byte packed address."""
    hit = _text_cache.get(packed)
    if hit is None:
        if len(_text_cache) >= _CACHE_LIMIT:
            _text_cache.clear()
        hit = _text_cache[packed] = str(ipaddress.ip_address(packed))
    return hit


def _widen(family: int, packed: bytes) -> bytes:
    """A packed address as 16 bytes (IPv4 becomes IPv4-mapped IPv6)."""
    return b"\0" * 10 + b"\xff\xff" + packed if family == 4 else packed


def _pack_pair(src_host: str, dst_host: str) -> tuple[struct.Struct, bytes, bytes]:
    """The record layout and packed addresses for a source/destination pair."""
    sfam, sbytes = _pack_host(src_host)
    dfam, dbytes = _pack_host(dst_host)
    if sfam == dfam == 4:
        return _REC4, sbytes, dbytes
    return _REC6, _widen(sfam, sbytes), _widen(dfam, dbytes)


# ---------------------------------------------------------------- encoding


class _Origin(Protocol):
    """What the common header says about a message's origin."""

    @property
    def feed(self) -> int: ...
    @property
    def node(self) -> int: ...
    @property
    def session(self) -> int: ...
    @property
    def term(self) -> int: ...


def _common(mtype: MessageType, hlen: int, flags: int, origin: _Origin) -> bytes:
    """The 20 common header bytes."""
    if origin.session == 0:
        raise ValueError("session id 0 is reserved")
    try:
        return _COMMON.pack(
            MAGIC, VERSION, mtype, hlen, flags, origin.feed, origin.node, origin.session
        )
    except struct.error as exc:
        raise ValueError(f"header field out of range: {exc}") from exc


class Signer:
    """The sending side of the cluster key: the active key and this sender's counter.

    The counter is the sender's Unix time in ns (``now``), or one more than the last
    one when the clock has not moved on, so it grows across restarts of the sender
    without state on disk (unless the clock is stepped back by more than the run
    before the restart lasted). One signer per sending process: its relays and its
    NACKs draw from the same counter. ``window_ns`` (time mode) restarts the counter
    from the clock when it has run that far ahead of it (a clock stepped back
    meanwhile), as receivers would refuse it as stale.
    """

    __slots__ = ("_mac", "counter", "key_id", "window_ns")

    def __init__(self, key_id: int, secret: bytes, *, window_ns: int = 0, counter: int = 0) -> None:
        self.counter = counter
        self.rotate(key_id, secret, window_ns=window_ns)

    def rotate(self, key_id: int, secret: bytes, *, window_ns: int = 0) -> None:
        """Sign with another key from now on; the counter goes on."""
        if not 1 <= key_id <= 255:
            raise ValueError(f"key id {key_id} not in 1..255")
        self.key_id, self._mac, self.window_ns = key_id, _mac(secret), window_ns

    def next_counter(self, now: int) -> int:
        last = self.counter
        counter = (
            now if now > last or (self.window_ns and last - now > self.window_ns) else last + 1
        )
        self.counter = counter & U64_MAX
        return self.counter

    def block(self, now: int) -> bytes:
        """The auth block of the next message: key id, reserved, counter."""
        return _AUTH_BLOCK.pack(self.key_id, self.next_counter(now))

    def tag(self, message: bytes) -> bytes:
        """The tag that follows ``message`` (which ends with its records or fixed fields)."""
        return self._mac.tag(message)


_SHA256_BLOCK: Final = 64
_IPAD: Final = bytes(b ^ 0x36 for b in range(256))  # translate() tables, RFC 2104's pads
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


class _Mac:
    """HMAC-SHA256 under one key (RFC 2104), the padded key's two blocks hashed once.

    A tag copies the two SHA-256 states and hashes the message into the inner one:
    the same bytes as ``hmac.digest(secret, message, "sha256")``, which keys anew each
    call, for a third of the cost of ``hmac.HMAC.copy()`` (bench/envelope_auth.py).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: bytes) -> None:
        if len(secret) > _SHA256_BLOCK:
            secret = hashlib.sha256(secret).digest()
        padded = secret.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(padded.translate(_IPAD))
        self._outer = hashlib.sha256(padded.translate(_OPAD))

    def tag(self, message: bytes | memoryview) -> bytes:
        """The truncated HMAC of ``message``."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:AUTH_TAG_SIZE]


def _mac(secret: bytes) -> _Mac:
    """HMAC-SHA256 keyed with ``secret``, ready for each message (cheaper than keying anew)."""
    return _Mac(secret)


class Verifier:
    """The receiving side: the keys this node accepts, by id, and the senders' replay state.

    One verifier per kind of traffic a socket takes (the receiver's envelopes, the
    relay's NACKs): each sees its own part of a sender's counters. ``own``: this
    node's id, when its own envelopes never reach this socket over the network (the
    receiver takes them in-process): one that does is a replay.
    """

    __slots__ = ("macs", "own", "replay")

    def __init__(
        self, keys: dict[int, bytes], *, window_ns: int = 0, own: int | None = None
    ) -> None:
        self.macs = {key_id: _mac(secret) for key_id, secret in keys.items()}
        self.replay = ReplayGuard(window_ns)
        self.own = own

    def set_keys(self, keys: dict[int, bytes], *, window_ns: int = 0) -> None:
        """Accept these keys from now on (a reload); the replay state is kept."""
        self.macs = {key_id: _mac(secret) for key_id, secret in keys.items()}
        self.replay.window_ns = window_ns


def _auth_flag(auth: Signer | None) -> int:
    return 0 if auth is None else FLAG_AUTH


def _term(term: int) -> bytes:
    """The 8 term bytes that end a 1.2 header."""
    try:
        return _TERM.pack(term)
    except struct.error as exc:
        raise ValueError(f"term out of range: {exc}") from exc


def _check_range(first: int, count: int, max_count: int) -> None:
    """Raise ValueError unless ``first..first+count-1`` is a valid sequence range."""
    if not 1 <= count <= max_count:
        raise ValueError(f"count {count} not in 1..{max_count}")
    if first < 1 or first + count - 1 > U64_MAX:
        raise ValueError(f"sequence range {first}+{count} outside 1..2**64-1")


def _record(payload: bytes, src: SockAddr, dst: SockAddr, ingress_ns: int) -> bytes:
    """The record bytes of one datagram."""
    layout, s, d = _pack_pair(src[0], dst[0])
    family = 4 if layout is _REC4 else 6
    try:
        head = layout.pack(ingress_ns, len(payload), family, src[1], dst[1], s, d)
    except struct.error as exc:
        raise ValueError(f"record field out of range: {exc}") from exc
    return head + payload


def encode_record(datagram: Datagram) -> bytes:
    """The record bytes of one datagram (what DATA carries and the relay buffers)."""
    return _record(datagram.payload, datagram.src, datagram.dst, datagram.ingress_ns)


class RecordEncoder:
    """Turns datagrams sent to one destination (a feed's VIP and port) into record bytes.

    ``src`` may be the tuple ``recvfrom`` returns (IPv6 flow info and scope are
    ignored). Everything after the ingress time and the length (family, ports,
    addresses) is the same for every datagram of one sender: it is packed once per
    sender and cached, so a record costs one small pack and one join, and the
    payload (any bytes-like object, a memoryview of a receive buffer too) is
    copied once.
    """

    __slots__ = ("_dst", "_tails")

    def __init__(self, dst: Address) -> None:
        _pack_host(dst[0])  # fail early on a bad address
        self._dst = dst
        self._tails: dict[SockAddr, bytes] = {}

    def encode(
        self, payload: bytes | bytearray | memoryview, src: SockAddr, ingress_ns: int
    ) -> bytes:
        """The record for ``payload`` received from ``src`` at ``ingress_ns``."""
        tail = self._tails.get(src) or self._tail(src)
        try:
            lead = _REC_LEAD.pack(ingress_ns, len(payload))
        except struct.error as exc:
            raise ValueError(f"record field out of range: {exc}") from exc
        return b"".join((lead, tail, payload))

    def _tail(self, src: SockAddr) -> bytes:
        if len(self._tails) >= _CACHE_LIMIT:
            self._tails.clear()
        tail = self._tails[src] = _record(b"", src, self._dst, 0)[_REC_LEAD.size :]
        return tail


class DataFramer:
    """Frames batches of records as DATA envelopes for one (feed, node, session, term).

    With a :class:`Signer` (shared: a key rotation reaches every framer at once) each
    envelope gets the auth block after its fixed fields and the tag at its end; the
    term follows the fixed fields (and the auth block).
    """

    __slots__ = ("_auth", "_prefix", "_term", "feed", "node", "session", "term")

    def __init__(
        self, feed: int, node: int, session: int, *, auth: Signer | None = None, term: int = 0
    ) -> None:
        self.feed, self.node, self.session, self._auth = feed, node, session, auth
        self.term, self._term = term, _term(term)
        flags = _auth_flag(auth)
        hlen = DATA_HEADER_SIZE + (0 if auth is None else AUTH_BLOCK_SIZE)
        self._prefix = {
            False: _common(MessageType.DATA, hlen, flags, self),
            True: _common(MessageType.DATA, hlen, flags | FLAG_RETRANSMISSION, self),
        }

    def frame(
        self,
        first_seq: int,
        records: Sequence[bytes],
        *,
        retransmission: bool = False,
        now: int = 0,
    ) -> bytes:
        """One DATA envelope carrying ``records`` numbered from ``first_seq``.

        ``now`` (Unix ns) feeds the signer's counter; unused without a key.
        """
        _check_range(first_seq, len(records), 0xFFFF)
        fixed = _DATA_FIXED.pack(first_seq, len(records))
        auth = self._auth
        if auth is None:
            return b"".join((self._prefix[retransmission], fixed, self._term, *records))
        head = (self._prefix[retransmission], fixed, auth.block(now), self._term)
        message = b"".join((*head, *records))
        return message + auth.tag(message)


def encode_data(msg: Data, *, auth: Signer | None = None, now: int = 0) -> bytes:
    """Encode a DATA message (the convenient, slower path; see :class:`DataFramer`)."""
    framer = DataFramer(msg.feed, msg.node, msg.session, auth=auth, term=msg.term)
    records = [encode_record(d) for d in msg.datagrams]
    return framer.frame(msg.first_seq, records, retransmission=msg.retransmission, now=now)


def _encode_control(
    mtype: MessageType,
    layout: struct.Struct,
    msg: _Origin,
    values: tuple[int, ...],
    auth: Signer | None,
    now: int,
    flags: int = 0,
) -> bytes:
    """A message made of the common header and fixed fields only (auth block, term)."""
    hlen = COMMON_HEADER_SIZE + layout.size + TERM_SIZE
    hlen += 0 if auth is None else AUTH_BLOCK_SIZE
    head = _common(mtype, hlen, _auth_flag(auth) | flags, msg)
    try:
        fixed = layout.pack(*values)
    except struct.error as exc:
        raise ValueError(f"field out of range: {exc}") from exc
    if auth is None:
        return head + fixed + _term(msg.term)
    message = head + fixed + auth.block(now) + _term(msg.term)
    return message + auth.tag(message)


def encode_heartbeat(msg: Heartbeat, *, auth: Signer | None = None, now: int = 0) -> bytes:
    """Encode a HEARTBEAT message."""
    flags = FLAG_CLOSING if msg.closing else 0
    return _encode_control(
        MessageType.HEARTBEAT, _HEARTBEAT_FIXED, msg, (msg.last_seq,), auth, now, flags
    )


def encode_end_of_session(msg: EndOfSession, *, auth: Signer | None = None, now: int = 0) -> bytes:
    """Encode an END_OF_SESSION message."""
    values = (msg.last_seq, msg.next_session)
    return _encode_control(MessageType.END_OF_SESSION, _END_FIXED, msg, values, auth, now)


def encode_nack(msg: Nack, *, auth: Signer | None = None, now: int = 0) -> bytes:
    """Encode a NACK (retransmission request)."""
    _check_range(msg.first_seq, msg.count, 0xFFFFFFFF)
    values = (msg.first_seq, msg.count)
    return _encode_control(MessageType.NACK, _NACK_FIXED, msg, values, auth, now)


def encode_unavailable(msg: Unavailable, *, auth: Signer | None = None, now: int = 0) -> bytes:
    """Encode an UNAVAILABLE answer."""
    _check_range(msg.first_seq, msg.count, 0xFFFFFFFF)
    values = (msg.first_seq, msg.count, int(msg.reason))
    return _encode_control(MessageType.UNAVAILABLE, _UNAVAILABLE_FIXED, msg, values, auth, now)


def encode_message(msg: Message, *, auth: Signer | None = None, now: int = 0) -> bytes:
    """Encode any message (``now``, Unix ns, feeds the signer's counter)."""
    if isinstance(msg, Data):
        return encode_data(msg, auth=auth, now=now)
    if isinstance(msg, Heartbeat):
        return encode_heartbeat(msg, auth=auth, now=now)
    if isinstance(msg, EndOfSession):
        return encode_end_of_session(msg, auth=auth, now=now)
    if isinstance(msg, Nack):
        return encode_nack(msg, auth=auth, now=now)
    return encode_unavailable(msg, auth=auth, now=now)


# ---------------------------------------------------------------- decoding


class _Header(NamedTuple):
    mtype: int
    hlen: int
    flags: int
    feed: int
    node: int
    session: int
    end: int  # offset of the authentication tag, or the length of the message
    auth_at: int  # offset of the auth block; 0: none (no AUTH flag, or a 1.0 sender)
    term: int  # 0 from a 1.0 or 1.1 sender


def decode_message_untrusted(
    data: bytes | bytearray | memoryview, *, auth: Verifier | None = None, now: int = 0
) -> Message:
    """Decode one envelope from the network; raises only :class:`BadEnvelope`.

    With a :class:`Verifier` (this node has cluster keys) the message must carry an
    auth block naming a configured key, a valid tag, and a counter that is fresh
    (``now``: this node's Unix time in ns) and not seen before from its sender;
    only a message that passes every check, and decodes, is recorded as seen.
    Without one, the auth block and tag are skipped unchecked (this node does not
    authenticate).
    """
    raw = bytes(data)
    head = _decode_header(raw)
    if auth is None:
        return _DECODERS[head.mtype](raw, head)
    counter = _authenticate(raw, head, auth, now)
    msg = _DECODERS[head.mtype](raw, head)
    auth.replay.record(head.node, counter, now)
    return msg


def _decode_header(raw: bytes) -> _Header:
    """Check and unpack the common header."""
    if not MAGIC.startswith(raw[:2]):
        raise BadEnvelope("magic", raw[:2].hex())
    if len(raw) < COMMON_HEADER_SIZE:
        raise BadEnvelope("truncated", f"{len(raw)} bytes")
    _, version, mtype, hlen, flags, feed, node, session = _COMMON.unpack_from(raw)
    if version >> 4 != VERSION_MAJOR:
        raise BadEnvelope("version", f"0x{version:02x}")
    if mtype not in _FIXED_SIZE:
        raise BadEnvelope("type", str(mtype))
    fixed, minor = _FIXED_SIZE[mtype], version & 0x0F
    auth_at = fixed if flags & FLAG_AUTH and minor >= 1 else 0
    term_at = fixed + (AUTH_BLOCK_SIZE if auth_at else 0)
    if hlen < term_at + (TERM_SIZE if minor >= 2 else 0):
        raise BadEnvelope("length", f"header length {hlen}")
    end = len(raw) - (AUTH_TAG_SIZE if flags & FLAG_AUTH else 0)
    if end < hlen:
        raise BadEnvelope("truncated", f"{len(raw)} bytes, header length {hlen}")
    if session == 0:
        raise BadEnvelope("session", "0")
    term = _TERM.unpack_from(raw, term_at)[0] if minor >= 2 else 0
    return _Header(mtype, hlen, flags, feed, node, session, end, auth_at, term)


def _authenticate(raw: bytes, head: _Header, auth: Verifier, now: int) -> int:
    """Check the auth block and the tag; the message's counter (not yet recorded)."""
    if not head.flags & FLAG_AUTH:
        raise BadEnvelope("no_tag", "no tag")
    if not head.auth_at:
        raise BadEnvelope(
            "no_tag", "a version 1.0 tag, without key id or counter: upgrade the sender"
        )
    key_id, counter = _AUTH_BLOCK.unpack_from(raw, head.auth_at)
    counter = int(counter)
    replay = auth.replay
    if not replay.fresh(counter, now):  # before the HMAC: it only rejects, never trusts
        skew = (counter - now) / 1e9
        raise BadEnvelope("stale", f"counter {skew:+.3f} s from this node's clock (NTP?)")
    keyed = auth.macs.get(key_id)
    if keyed is None:
        raise BadEnvelope("unknown_key", f"key id {key_id}")
    if not hmac.compare_digest(keyed.tag(memoryview(raw)[: head.end]), raw[head.end :]):
        raise BadEnvelope("bad_tag", f"tag does not match key {key_id}")
    if head.node == auth.own:
        raise BadEnvelope("replay", f"node {head.node} is this node: its envelopes stay local")
    if not replay.new(head.node, counter, now):
        raise BadEnvelope("replay", f"node {head.node} counter {counter} already taken or too old")
    return counter


def _untrusted_range(first: int, count: int) -> None:
    if count == 0:
        raise BadEnvelope("count", "0")
    if first == 0 or first + count - 1 > U64_MAX:
        raise BadEnvelope("sequence", f"{first}+{count}")


def _no_body(head: _Header) -> None:
    if head.end != head.hlen:
        raise BadEnvelope("length", f"{head.end - head.hlen} unexpected body bytes")


def _decode_data(raw: bytes, head: _Header) -> Data:
    first, count = _DATA_FIXED.unpack_from(raw, COMMON_HEADER_SIZE)
    _untrusted_range(first, count)
    datagrams = _decode_records(raw, head.hlen, head.end, count)
    retrans = bool(head.flags & FLAG_RETRANSMISSION)
    return Data(head.feed, head.node, head.session, first, datagrams, retrans, head.term)


def _decode_records(raw: bytes, off: int, end: int, count: int) -> tuple[Datagram, ...]:
    """``count`` records from ``raw[off:end]``, which they must fill exactly."""
    out = []
    cache, text, layouts, new = _text_cache, _host_text, _RECORD_LAYOUTS, tuple.__new__
    for _ in range(count):
        if off + _REC_FIXED_SIZE > end:
            raise BadEnvelope("truncated", f"record at {off}")
        layout = layouts.get(raw[off + 10])
        if layout is None:
            raise BadEnvelope("address", f"family {raw[off + 10]}")
        unpack, size = layout
        start = off + size
        if start > end:
            raise BadEnvelope("truncated", f"addresses at {off + _REC_FIXED_SIZE}")
        ingress, length, _, sport, dport, src, dst = unpack(raw, off)
        off = start + length
        if off > end:
            raise BadEnvelope("truncated", f"payload at {start}")
        src_addr = (cache.get(src) or text(src), sport)
        dst_addr = (cache.get(dst) or text(dst), dport)
        # tuple.__new__ is what Datagram(...) runs, minus a Python frame per record
        out.append(new(Datagram, (src_addr, dst_addr, raw[start:off], ingress)))
    if off != end:
        raise BadEnvelope("length", f"{end - off} bytes after the last record")
    return tuple(out)


def _decode_heartbeat(raw: bytes, head: _Header) -> Heartbeat:
    _no_body(head)
    (last,) = _HEARTBEAT_FIXED.unpack_from(raw, COMMON_HEADER_SIZE)
    closing = bool(head.flags & FLAG_CLOSING)
    return Heartbeat(head.feed, head.node, head.session, last, closing, head.term)


def _decode_end(raw: bytes, head: _Header) -> EndOfSession:
    _no_body(head)
    last, nxt = _END_FIXED.unpack_from(raw, COMMON_HEADER_SIZE)
    return EndOfSession(head.feed, head.node, head.session, last, nxt, head.term)


def _decode_nack(raw: bytes, head: _Header) -> Nack:
    _no_body(head)
    first, count = _NACK_FIXED.unpack_from(raw, COMMON_HEADER_SIZE)
    _untrusted_range(first, count)
    return Nack(head.feed, head.node, head.session, first, count, head.term)


def _decode_unavailable(raw: bytes, head: _Header) -> Unavailable:
    _no_body(head)
    first, count, code = _UNAVAILABLE_FIXED.unpack_from(raw, COMMON_HEADER_SIZE)
    _untrusted_range(first, count)
    try:
        reason = UnavailableReason(code)
    except ValueError:
        reason = UnavailableReason.UNSPECIFIED  # a newer relay's reason: still unavailable
    return Unavailable(head.feed, head.node, head.session, first, count, reason, head.term)


_FIXED_SIZE: Final[dict[int, int]] = {
    MessageType.DATA: _DATA_FIXED_END,
    MessageType.HEARTBEAT: COMMON_HEADER_SIZE + _HEARTBEAT_FIXED.size,
    MessageType.END_OF_SESSION: COMMON_HEADER_SIZE + _END_FIXED.size,
    MessageType.NACK: COMMON_HEADER_SIZE + _NACK_FIXED.size,
    MessageType.UNAVAILABLE: COMMON_HEADER_SIZE + _UNAVAILABLE_FIXED.size,
}
_DECODERS: Final[dict[int, Callable[[bytes, _Header], Message]]] = {
    MessageType.DATA: _decode_data,
    MessageType.HEARTBEAT: _decode_heartbeat,
    MessageType.END_OF_SESSION: _decode_end,
    MessageType.NACK: _decode_nack,
    MessageType.UNAVAILABLE: _decode_unavailable,
}


# ---------------------------------------------------------------- sizes and sessions


def envelope_budget(mtu: int, *, lan_ipv6: bool = False) -> int:
    """Bytes of envelope that fit one unfragmented LAN packet of ``mtu`` bytes."""
    return mtu - _IP_UDP_OVERHEAD[lan_ipv6]


def max_payload(
    mtu: int, *, lan_ipv6: bool = False, addr_v6: bool = False, auth: bool = False
) -> int:
    """The largest original payload that fits alone in one unfragmented envelope.

    Bigger datagrams are still relayed, alone in an envelope the kernel
    fragments, up to :func:`max_relayable_payload`.
    """
    record = RECORD_HEADER_V6 if addr_v6 else RECORD_HEADER_V4
    overhead = DATA_HEADER_SIZE + record + (AUTH_OVERHEAD if auth else 0)
    return envelope_budget(mtu, lan_ipv6=lan_ipv6) - overhead


def max_relayable_payload(
    *, lan_ipv6: bool = False, addr_v6: bool = False, auth: bool = False
) -> int:
    """The largest original payload an envelope can carry at all (fragmented)."""
    limit = MAX_UDP_PAYLOAD_V6 if lan_ipv6 else MAX_UDP_PAYLOAD_V4
    return max_payload(
        limit + _IP_UDP_OVERHEAD[lan_ipv6], lan_ipv6=lan_ipv6, addr_v6=addr_v6, auth=auth
    )


def plan_batches(sizes: Sequence[int], budget: int, *, auth: bool = False) -> list[int]:
    """Split records of ``sizes`` bytes, in order, into DATA envelopes of <= ``budget`` bytes.

    Returns the number of records in each envelope. A record too big for any
    envelope travels alone (the kernel fragments it).
    """
    room = budget - DATA_HEADER_SIZE - (AUTH_OVERHEAD if auth else 0)
    counts: list[int] = []
    used = count = 0
    for size in sizes:
        if count and (used + size > room or count == 0xFFFF):
            counts.append(count)
            used = count = 0
        used += size
        count += 1
    if count:
        counts.append(count)
    return counts


def new_session_id(node: int, unix_ns: int, previous: int = 0) -> int:
    """A session id for ``node`` starting now: ms since 1970 << 16 | low 16 bits of node.

    Ids order by time and never repeat for one node. ``previous`` is the highest
    session id seen on the feed: the result is always greater, so a clock
    behind the old master's cannot make the new session look stale.
    """
    ms = max(unix_ns // 1_000_000, (previous >> 16) + 1)
    return (ms << 16 | node & 0xFFFF) & U64_MAX or 1
