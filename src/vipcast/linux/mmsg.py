"""Batched datagram I/O: ``recvmmsg`` and ``sendmmsg`` through ctypes, and UDP GSO.

One system call moves up to a batch of datagrams. Every buffer is allocated once,
in the constructor; a call allocates only what it hands back (a memoryview and a
small tuple per received datagram). All calls are non-blocking (MSG_DONTWAIT):
they take what is there and return at once.

When libc lacks the calls, :func:`make_receiver` and :func:`make_sender` return the
plain-socket equivalents, with the same methods and counters.

Sending never stops at one bad destination (samplicator issue #82). ``sendmmsg``
stops at the first message that fails: the call is made again from that message.
If it fails again, as the first of a call, its errno is counted and sending goes
on with the next one. A pending asynchronous error (an ICMP error of an earlier
datagram, kept only by connected sockets or with IP_RECVERR) fails whatever
message comes next and is then cleared, so that message is sent on the retry.
The kernel does not say which errno stopped a call short; those stops are counted
in ``MmsgSender.stops``. Our sockets are unconnected and leave IP_RECVERR off,
so ICMP errors from a dead receiver never reach them at all. ENOBUFS (a full
device queue) fails one message, counted; EAGAIN (a full socket buffer) ends the
send and the rest is reported as ``unsent``, for the caller to retry or drop.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol

from vipcast.linux.udp import IP_PKTINFO, IPV6_PKTINFO, UDP_SEGMENT

log = logging.getLogger(__name__)

__all__ = [
    "Address",
    "Bytes",
    "Received",
    "SendResult",
    "Receiver",
    "Sender",
    "MmsgReceiver",
    "RecvfromReceiver",
    "MmsgSender",
    "SendtoSender",
    "make_receiver",
    "make_sender",
    "send_segments",
    "RunSender",
    "batched_io_available",
    "endpoint",
]

Address = tuple[str, int]
Bytes = bytes | bytearray | memoryview

MSG_TRUNC: Final = 0x20
GSO_MAX_SEGMENTS: Final = 64  # UDP_MAX_SEGMENTS; newer kernels take 128
MAX_DATAGRAM: Final = 65535
_NAME_SIZE: Final = 128  # sizeof(struct sockaddr_storage)
_CONTROL_SIZE: Final = 64  # one IP_PKTINFO or IPV6_PKTINFO control message, aligned
_C_STRIDE: Final = _CONTROL_SIZE // 4
_MAX_RETRIES: Final = 8  # EINTR and pending errors in a row before giving up a call
_CACHE_LIMIT: Final = 4096

# errors that may belong to an earlier datagram rather than the one that failed
_ASYNC_ERRORS: Final = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
)
_AGAIN: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})


class Received(NamedTuple):
    """One datagram; ``payload`` is valid until the receiver's next ``receive()``."""

    payload: memoryview
    source: Address
    destination: Address | None  # (address the sender used, our port); needs pktinfo


# Received(...) runs a Python __new__; this C call builds the same in half the time
_new_tuple: Final = tuple.__new__


class SendResult(NamedTuple):
    """What a send did: ``unsent`` messages met a full socket buffer (EAGAIN)."""

    sent: int = 0
    failed: int = 0
    unsent: int = 0

    def __add__(self, other: object) -> SendResult:
        if not isinstance(other, SendResult):
            return NotImplemented
        return SendResult(
            self.sent + other.sent, self.failed + other.failed, self.unsent + other.unsent
        )


class Receiver(Protocol):
    """Drains a socket: up to a batch of datagrams per call, empty when none wait."""

    truncated: int
    errors: collections.Counter[int]

    def receive(self) -> list[Received]: ...


class Sender(Protocol):
    """Sends datagrams; failures are counted by errno in ``errors``."""

    errors: collections.Counter[int]

    def send(self, messages: Iterable[tuple[Bytes, Address]]) -> SendResult: ...

    def send_to_all(self, payload: Bytes, destinations: Sequence[Address]) -> SendResult: ...


# ---------------------------------------------------------------- libc


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


_HDR_SIZE: Final = ctypes.sizeof(_MMsgHdr)
_IOV_SIZE: Final = ctypes.sizeof(_IoVec)
# 32-bit word indexes of the fields read after each call
_W_FLAGS: Final = _MsgHdr.msg_flags.offset // 4
_W_LEN: Final = _MMsgHdr.msg_len.offset // 4
_W_STRIDE: Final = _HDR_SIZE // 4
# msg_controllen is a size_t, which is an unsigned long on Linux
_N_CONTROLLEN: Final = _MsgHdr.msg_controllen.offset // ctypes.sizeof(ctypes.c_ulong)
_N_STRIDE: Final = _HDR_SIZE // ctypes.sizeof(ctypes.c_ulong)
# a sender writes msg_name, msg_namelen (words 0, 1) and iov_base, iov_len as words
assert _MsgHdr.msg_name.offset == 0
assert _MsgHdr.msg_namelen.offset == ctypes.sizeof(ctypes.c_ulong)
assert ctypes.sizeof(_IoVec) == 2 * ctypes.sizeof(ctypes.c_ulong)

# struct cmsghdr: length (size_t), level, type; data at CMSG_LEN(0)
_CMSG: Final = struct.Struct("@Nii")
_CMSG_ALIGN: Final = ctypes.sizeof(ctypes.c_size_t)
# 32-bit word indexes of cmsg_level and cmsg_type, and words per control slot
_C_LEVEL: Final = ctypes.sizeof(ctypes.c_size_t) // 4
_C_TYPE: Final = _C_LEVEL + 1
_SA_FAMILY: Final = struct.Struct("@H")
_SA_IN: Final = struct.Struct("!H4s")  # after the family: port, address
_SA_IN6: Final = struct.Struct("!HI16s")  # after the family: port, flow info, address
_SCOPE: Final = struct.Struct("@I")


def _load_libc() -> tuple[Callable[..., int], Callable[..., int]] | None:
    """recvmmsg and sendmmsg from libc, or None when ctypes or libc lacks them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError) as exc:
        log.info("batched datagram I/O unavailable (%s); using one call per datagram", exc)
        return None
    recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    send.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    recv.restype = send.restype = ctypes.c_int
    return recv, send


_CALLS: Final = _load_libc()


def batched_io_available() -> bool:
    """True when recvmmsg and sendmmsg can be called."""
    return _CALLS is not None


def _address(raw: ctypes.Array[ctypes.c_char] | bytearray) -> int:
    """The address in memory of a ctypes array or a bytearray (kept alive by the caller)."""
    if isinstance(raw, bytearray):
        return ctypes.addressof((ctypes.c_char * len(raw)).from_buffer(raw))
    return ctypes.addressof(raw)


# ---------------------------------------------------------------- addresses


def decode_sockaddr(raw: bytes) -> Address:
    """(address, port) from a struct sockaddr_in or sockaddr_in6.

    A scoped IPv6 address keeps its scope as Python writes it: ``fe80::1%eth0``
    (the interface's index when it has no name here).
    """
    (family,) = _SA_FAMILY.unpack_from(raw)
    if family == socket.AF_INET:
        port, packed = _SA_IN.unpack_from(raw, 2)
        return socket.inet_ntop(socket.AF_INET, packed), port
    if family == socket.AF_INET6:
        port, _flow, packed = _SA_IN6.unpack_from(raw, 2)
        host = socket.inet_ntop(socket.AF_INET6, packed)
        scope_id = _SCOPE.unpack_from(raw, 24)[0] if len(raw) >= 28 else 0
        return (f"{host}%{_interface_name(scope_id)}" if scope_id else host), port
    raise ValueError(f"not an IP socket address (family {family})")


def endpoint(name: tuple[Any, ...]) -> Address:
    """(address, port) from what Python's socket calls return, a scope as ``%eth0``."""
    if len(name) == 4 and name[3]:
        return f"{name[0]}%{_interface_name(name[3])}", name[1]
    return name[0], name[1]


def _interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


def encode_sockaddr(family: int, address: Address) -> bytes:
    """A struct sockaddr for ``address``; an IPv6 socket gets IPv4 as ::ffff:a.b.c.d.

    A ``%scope`` suffix (``fe80::1%eth0``) sets the IPv6 scope id.
    """
    host, port = address
    if family == socket.AF_INET:
        return _SA_FAMILY.pack(family) + _SA_IN.pack(port, socket.inet_aton(host)) + bytes(8)
    host, _, scope = host.partition("%")
    if ":" not in host:
        host = "::ffff:" + host
    packed = socket.inet_pton(socket.AF_INET6, host)
    scope_id = (int(scope) if scope.isdigit() else socket.if_nametoindex(scope)) if scope else 0
    return _SA_FAMILY.pack(family) + _SA_IN6.pack(port, 0, packed) + _SCOPE.pack(scope_id)


# ---------------------------------------------------------------- receiving


class MmsgReceiver:
    """Receives up to ``batch`` datagrams per ``recvmmsg`` call into fixed buffers.

    Datagrams longer than ``bufsize`` are dropped and counted in ``truncated``.
    With ``pktinfo`` (see :func:`vipcast.linux.udp.enable_pktinfo`) each datagram's
    destination address is reported too.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        batch: int = 64,
        bufsize: int = MAX_DATAGRAM,
        pktinfo: bool = False,
    ) -> None:
        if _CALLS is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available")
        self._recvmmsg = _CALLS[0]
        sock.setblocking(False)
        self.sock, self.batch, self.bufsize, self.pktinfo = sock, batch, bufsize, pktinfo
        self.truncated = 0
        self.errors: collections.Counter[int] = collections.Counter()
        self._data = bytearray(batch * bufsize)
        self._names = bytearray(batch * _NAME_SIZE)
        self._control = bytearray(batch * _CONTROL_SIZE if pktinfo else 0)
        self._iovs = (_IoVec * batch)()
        self._header_bytes = bytearray(batch * _HDR_SIZE)
        self._headers = (_MMsgHdr * batch).from_buffer(self._header_bytes)
        self._fill_headers()
        self._pristine = memoryview(bytes(self._header_bytes))
        self._used = batch  # headers the last call may have changed
        self._words = memoryview(self._header_bytes).cast("I")
        self._sizes = memoryview(self._header_bytes).cast("L")
        self._data_view, self._name_view = memoryview(self._data), memoryview(self._names)
        self._control_view = memoryview(self._control)
        self._control_words = self._control_view.cast("I")
        self._sources: dict[bytes, Address] = {}
        self._destinations: dict[bytes, Address] = {}
        self._port: int | None = None
        # the part of a sockaddr that names the sender: family, port, (flow,) address, scope
        self._name_key = 28 if sock.family == socket.AF_INET6 else 8
        # the one control message expected: (level, type, address offset, length)
        self._expected = (
            (socket.IPPROTO_IPV6, IPV6_PKTINFO, _CMSG.size, 16)
            if sock.family == socket.AF_INET6
            else (socket.IPPROTO_IP, IP_PKTINFO, _CMSG.size + 8, 4)
        )

    def _fill_headers(self) -> None:
        data, names = _address(self._data), _address(self._names)
        control = _address(self._control) if self.pktinfo else 0
        for i in range(self.batch):
            self._iovs[i].iov_base = data + i * self.bufsize
            self._iovs[i].iov_len = self.bufsize
            hdr = self._headers[i].msg_hdr
            hdr.msg_iov = ctypes.addressof(self._iovs[i])
            hdr.msg_iovlen = 1
            hdr.msg_name = names + i * _NAME_SIZE
            hdr.msg_namelen = _NAME_SIZE
            if control:
                hdr.msg_control = control + i * _CONTROL_SIZE
                hdr.msg_controllen = _CONTROL_SIZE

    def receive(self) -> list[Received]:
        """The datagrams waiting now, at most ``batch``; empty when there are none."""
        count = self._call()
        return self._parse(count) if count > 0 else []

    def _parse(self, count: int) -> list[Received]:
        """Datagrams 0..count-1 of the last call (the hot loop: locals only)."""
        words, data, names = self._words, self._data_view, self._name_view
        sources, key_size, size = self._sources, self._name_key, self.bufsize
        pktinfo, destination = self.pktinfo, None
        out: list[Received] = []
        for i in range(count):
            w = i * _W_STRIDE
            if words[w + _W_FLAGS] & MSG_TRUNC:
                self.truncated += 1
                continue
            n = i * _NAME_SIZE
            key = names[n : n + key_size].tobytes()
            source = sources.get(key) or self._learn_source(key)
            if pktinfo:
                destination = self._destination(i)
            at = i * size
            payload = data[at : at + words[w + _W_LEN]]
            out.append(_new_tuple(Received, (payload, source, destination)))
        return out

    def _call(self) -> int:
        """One recvmmsg; EINTR and pending errors retried, EAGAIN is 0 datagrams."""
        reset = self._used * _HDR_SIZE  # the kernel wrote lengths into these headers
        self._header_bytes[:reset] = self._pristine[:reset]
        for _ in range(_MAX_RETRIES):
            count: int = self._recvmmsg(
                self.sock.fileno(), self._headers, self.batch, socket.MSG_DONTWAIT, None
            )
            if count >= 0:
                self._used = count
                return count
            err = ctypes.get_errno()
            if err in _AGAIN:
                self._used = 0
                return 0
            if err != errno.EINTR:
                self.errors[err] += 1
                if err not in _ASYNC_ERRORS:
                    raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
        return 0

    def _learn_source(self, key: bytes) -> Address:
        if len(self._sources) >= _CACHE_LIMIT:
            self._sources.clear()
        source = self._sources[key] = decode_sockaddr(key)
        return source

    def _destination(self, i: int) -> Address | None:
        """Datagram ``i``'s destination, from its pktinfo control message."""
        c = i * _C_STRIDE
        words = self._control_words
        level, kind, offset, size = self._expected
        if (
            words[c + _C_LEVEL] != level
            or words[c + _C_TYPE] != kind
            or self._sizes[i * _N_STRIDE + _N_CONTROLLEN] < offset + size
        ):
            return self._destination_elsewhere(i)
        at = i * _CONTROL_SIZE + offset
        key = self._control_view[at : at + size].tobytes()
        return self._destinations.get(key) or self._learn_destination(key)

    def _destination_elsewhere(self, i: int) -> Address | None:
        """Walk every control message of datagram ``i`` (not the usual one first)."""
        length = self._sizes[i * _N_STRIDE + _N_CONTROLLEN]
        at, end = i * _CONTROL_SIZE, i * _CONTROL_SIZE + length
        while at + _CMSG.size <= end:
            cmsg_len, level, kind = _CMSG.unpack_from(self._control, at)
            packed = _pktinfo_address(self._control, at + _CMSG.size, level, kind)
            if packed is not None:
                return self._destinations.get(packed) or self._learn_destination(packed)
            if cmsg_len < _CMSG.size:
                break
            at += (cmsg_len + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)
        return None

    def _learn_destination(self, packed: bytes) -> Address:
        if self._port is None:
            self._port = int(self.sock.getsockname()[1])
        if len(self._destinations) >= _CACHE_LIMIT:
            self._destinations.clear()
        family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
        found = self._destinations[packed] = (socket.inet_ntop(family, packed), self._port)
        return found


def _pktinfo_address(control: bytearray, data_at: int, level: int, kind: int) -> bytes | None:
    """The packed destination address of a pktinfo control message, else None.

    struct in_pktinfo: ifindex (4), spec_dst (4), addr (4): the header's destination.
    struct in6_pktinfo: addr (16), ifindex (4).
    """
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
        return bytes(control[data_at + 8 : data_at + 12])
    if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
        return bytes(control[data_at : data_at + 16])
    return None


class RecvfromReceiver:
    """The fallback receiver: one ``recvmsg_into`` per datagram, same results."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        batch: int = 64,
        bufsize: int = MAX_DATAGRAM,
        pktinfo: bool = False,
    ) -> None:
        sock.setblocking(False)
        self.sock, self.batch, self.bufsize, self.pktinfo = sock, batch, bufsize, pktinfo
        self.truncated = 0
        self.errors: collections.Counter[int] = collections.Counter()
        self._data = memoryview(bytearray(batch * bufsize))
        self._port: int | None = None

    def receive(self) -> list[Received]:
        out: list[Received] = []
        ancillary = _CONTROL_SIZE if self.pktinfo else 0
        for i in range(self.batch):
            slot = self._data[i * self.bufsize : (i + 1) * self.bufsize]
            try:
                size, control, flags, source = self.sock.recvmsg_into([slot], ancillary)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.errors[exc.errno or 0] += 1
                if exc.errno not in _ASYNC_ERRORS:
                    raise
                continue
            if flags & MSG_TRUNC:
                self.truncated += 1
                continue
            destination = self._destination(control) if self.pktinfo else None
            out.append(Received(slot[:size], endpoint(source), destination))
        return out

    def _destination(self, control: list[tuple[int, int, bytes]]) -> Address | None:
        for level, kind, data in control:
            packed = _pktinfo_address(bytearray(data), 0, level, kind)
            if packed is not None:
                if self._port is None:
                    self._port = int(self.sock.getsockname()[1])
                family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
                return socket.inet_ntop(family, packed), self._port
        return None


def make_receiver(
    sock: socket.socket, *, batch: int = 64, bufsize: int = MAX_DATAGRAM, pktinfo: bool = False
) -> MmsgReceiver | RecvfromReceiver:
    """The batched receiver when recvmmsg is there, else the one-call-per-datagram one."""
    if _CALLS is None:
        return RecvfromReceiver(sock, batch=batch, bufsize=bufsize, pktinfo=pktinfo)
    return MmsgReceiver(sock, batch=batch, bufsize=bufsize, pktinfo=pktinfo)


# ---------------------------------------------------------------- sending


class MmsgSender:
    """Sends many datagrams, to one or several destinations, per ``sendmmsg`` call.

    Payloads are copied into a preallocated arena (``arena`` bytes), so callers may
    pass any bytes-like object and reuse it at once.
    """

    def __init__(self, sock: socket.socket, *, capacity: int = 64, arena: int = 1 << 20) -> None:
        if _CALLS is None:
            raise OSError(errno.ENOSYS, "sendmmsg is not available")
        if arena < MAX_DATAGRAM:
            raise ValueError(f"arena must hold one datagram of {MAX_DATAGRAM} bytes")
        self._sendmmsg = _CALLS[1]
        self.sock, self.capacity = sock, capacity
        self.errors: collections.Counter[int] = collections.Counter()
        self.stops = 0  # calls that ended before their last message (errno unknown)
        self._arena = bytearray(arena)
        self._arena_at = _address(self._arena)
        header_bytes = bytearray(capacity * _HDR_SIZE)
        self._headers = (_MMsgHdr * capacity).from_buffer(header_bytes)
        self._iovs = (_IoVec * capacity)()
        for i in range(capacity):
            self._headers[i].msg_hdr.msg_iov = ctypes.addressof(self._iovs[i])
            self._headers[i].msg_hdr.msg_iovlen = 1
        self._headers_at = ctypes.addressof(self._headers)
        # the fields written per message, as machine words: msg_name, msg_namelen,
        # and iov_base, iov_len
        self._header_words = memoryview(header_bytes).cast("L")
        self._iov_words = memoryview(self._iovs).cast("B").cast("L")
        self._names: dict[Address, tuple[int, int]] = {}
        self._name_buffers: list[ctypes.Array[ctypes.c_char]] = []

    def send(self, messages: Iterable[tuple[Bytes, Address]]) -> SendResult:
        """Send each (payload, destination), in order, in as few calls as fit."""
        self._trim_names()
        arena, arena_at, limit = self._arena, self._arena_at, len(self._arena)
        headers, iovs, names = self._header_words, self._iov_words, self._names
        total, count, used = SendResult(), 0, 0
        for payload, destination in messages:
            end = used + len(payload)
            if end - used > limit:
                total += self._too_big()
                continue
            if count == self.capacity or end > limit:
                total += self._flush(count)
                count, used, end = 0, 0, len(payload)
            arena[used:end] = payload
            h, v = count * _N_STRIDE, count * 2
            headers[h], headers[h + 1] = names.get(destination) or self._learn_name(destination)
            iovs[v], iovs[v + 1] = arena_at + used, end - used
            count, used = count + 1, end
        return total + self._flush(count)

    def send_to_all(self, payload: Bytes, destinations: Sequence[Address]) -> SendResult:
        """Send one payload to every destination (copied once)."""
        self._trim_names()
        size = len(payload)
        if size > len(self._arena):
            self.errors[errno.EMSGSIZE] += len(destinations)
            return SendResult(failed=len(destinations))
        self._arena[:size] = payload
        headers, iovs, names = self._header_words, self._iov_words, self._names
        total, count = SendResult(), 0
        for destination in destinations:
            if count == self.capacity:
                total += self._flush(count)
                count = 0
            h, v = count * _N_STRIDE, count * 2
            headers[h], headers[h + 1] = names.get(destination) or self._learn_name(destination)
            iovs[v], iovs[v + 1] = self._arena_at, size
            count += 1
        return total + self._flush(count)

    def _too_big(self) -> SendResult:
        """A payload larger than the arena: no UDP datagram is that large anyway."""
        self.errors[errno.EMSGSIZE] += 1
        return SendResult(failed=1)

    def _learn_name(self, destination: Address) -> tuple[int, int]:
        """(msg_name, msg_namelen) for a destination, its sockaddr kept alive here."""
        raw = encode_sockaddr(self.sock.family, destination)
        buffer = ctypes.create_string_buffer(raw, len(raw))
        self._name_buffers.append(buffer)
        name = self._names[destination] = (ctypes.addressof(buffer), len(raw))
        return name

    def _trim_names(self) -> None:
        """Forget cached destinations, between batches only (headers point at them)."""
        if len(self._names) >= _CACHE_LIMIT:
            self._names.clear()
            self._name_buffers.clear()

    def _flush(self, count: int) -> SendResult:
        """Send messages 0..count-1; past a failed message, go on with the next."""
        sent = failed = start = 0
        retried_at, interrupted = -1, 0
        fd = self.sock.fileno()
        while start < count:
            done: int = self._sendmmsg(
                fd, self._headers_at + start * _HDR_SIZE, count - start, socket.MSG_DONTWAIT
            )
            if done > 0:
                if done < count - start:
                    self.stops += 1  # message start+done failed; the kernel kept no errno
                sent, start = sent + done, start + done
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR and interrupted < _MAX_RETRIES:
                interrupted += 1
                continue
            if err in _AGAIN:
                return SendResult(sent, failed, count - start)
            self.errors[err] += 1
            if err in _ASYNC_ERRORS and retried_at != start:
                retried_at = start  # the error may be an earlier datagram's: once more
                continue
            failed, start = failed + 1, start + 1
        return SendResult(sent, failed, 0)


class SendtoSender:
    """The fallback sender: one ``sendto`` per datagram, same results and counters."""

    def __init__(self, sock: socket.socket, **_: int) -> None:
        self.sock = sock
        self.errors: collections.Counter[int] = collections.Counter()

    def send(self, messages: Iterable[tuple[Bytes, Address]]) -> SendResult:
        total = SendResult()
        for payload, destination in messages:
            total += self._send_one(payload, destination)
        return total

    def send_to_all(self, payload: Bytes, destinations: Sequence[Address]) -> SendResult:
        return self.send((payload, d) for d in destinations)

    def _send_one(self, payload: Bytes, destination: Address) -> SendResult:
        for attempt in range(2):
            try:
                self.sock.sendto(payload, socket.MSG_DONTWAIT, destination)
            except (BlockingIOError, InterruptedError):
                return SendResult(unsent=1)
            except OSError as exc:
                self.errors[exc.errno or 0] += 1
                if exc.errno in _ASYNC_ERRORS and attempt == 0:
                    continue
                return SendResult(failed=1)
            return SendResult(sent=1)
        return SendResult(failed=1)


def make_sender(
    sock: socket.socket, *, capacity: int = 64, arena: int = 1 << 20
) -> MmsgSender | SendtoSender:
    """The batched sender when sendmmsg is there, else the one-call-per-datagram one."""
    if _CALLS is None:
        return SendtoSender(sock)
    return MmsgSender(sock, capacity=capacity, arena=arena)


# ---------------------------------------------------------------- segmentation offload


def send_segments(
    sock: socket.socket, segments: Sequence[Bytes], destination: Address
) -> SendResult:
    """Send equal-sized datagrams to one destination with UDP GSO (Linux 4.18+).

    Every segment but the last must have the size of the first; the kernel cuts one
    large send into datagrams. Works with multicast, loop included.
    """
    if not segments:
        return SendResult()
    size = len(segments[0])
    if size == 0 or any(len(s) != size for s in segments[:-1]) or len(segments[-1]) > size:
        raise ValueError("GSO needs segments of one size (the last may be shorter)")
    per_call = max(1, min(GSO_MAX_SEGMENTS, (MAX_DATAGRAM - 48) // size))
    total = SendResult()
    for first in range(0, len(segments), per_call):
        chunk = segments[first : first + per_call]
        total += _send_gso_chunk(sock, chunk, size, destination)
    return total


def _send_gso_chunk(
    sock: socket.socket, chunk: Sequence[Bytes], size: int, destination: Address
) -> SendResult:
    control = [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("@H", size))]
    for _ in range(_MAX_RETRIES):
        try:
            sock.sendmsg([b"".join(chunk)], control, socket.MSG_DONTWAIT, destination)
        except InterruptedError:
            continue
        except BlockingIOError:
            return SendResult(unsent=len(chunk))
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT):
                raise  # GSO refused: a programming or kernel problem, not a bad receiver
            return SendResult(failed=len(chunk))
        return SendResult(sent=len(chunk))
    return SendResult(failed=len(chunk))


# ---------------------------------------------------------------- runs


class RunSender:
    """Sends a list of datagrams to one destination, in order, at the least kernel cost.

    The kernel's work per datagram sent costs more than Python's. Runs of at least
    ``min_run`` equal-sized datagrams (the last of a run may be shorter) go as UDP
    GSO sends: one packet through the stack, cut into the very same datagrams at
    the end. The rest go by ``sendmmsg``, a lone datagram by one ``sendto``. If the
    kernel refuses segmentation (before Linux 4.18, or a route that cannot take
    it), ``gso`` turns False and everything goes by ``sendmmsg`` from then on.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        capacity: int = 256,
        arena: int = 4 << 20,
        max_segment: int = 1472,
        min_run: int = 4,
    ) -> None:
        self.sock, self.max_segment, self.min_run = sock, max_segment, max(2, min_run)
        self.batch = make_sender(sock, capacity=capacity, arena=arena)
        self.errors = self.batch.errors
        self.gso = True

    def send(self, payloads: Sequence[Bytes], destination: Address) -> SendResult:
        """Send every payload to ``destination``, in order."""
        count = len(payloads)
        if count == 1:
            return self._send_one(payloads[0], destination)
        if not self.gso or count < self.min_run:
            return self.batch.send([(p, destination) for p in payloads])
        total, pending, i = SendResult(), 0, 0
        while i < count:
            size, j = len(payloads[i]), i + 1
            while j < count and len(payloads[j]) == size:
                j += 1
            if j < count and len(payloads[j]) < size:
                j += 1  # a shorter datagram may end a run
            if j - i >= self.min_run and 0 < size <= self.max_segment and self.gso:
                if pending < i:
                    total += self.batch.send([(p, destination) for p in payloads[pending:i]])
                total += self._send_run(payloads[i:j], size, destination)
                pending = j
            i = j
        if pending < count:
            total += self.batch.send([(p, destination) for p in payloads[pending:]])
        return total

    def _send_run(self, run: Sequence[Bytes], size: int, destination: Address) -> SendResult:
        per_call = max(1, min(GSO_MAX_SEGMENTS, (MAX_DATAGRAM - 48) // size))
        total = SendResult()
        for first in range(0, len(run), per_call):
            chunk = run[first : first + per_call]
            try:
                total += _send_gso_chunk(self.sock, chunk, size, destination)
            except OSError as exc:
                log.info("UDP segmentation refused (%s); sending datagram by datagram", exc)
                self.gso = False
                rest = run[first:]
                return total + self.batch.send([(p, destination) for p in rest])
        return total

    def _send_one(self, payload: Bytes, destination: Address) -> SendResult:
        """One datagram: one ``sendto``, half the cost of a ``sendmmsg`` of one."""
        try:
            self.sock.sendto(payload, socket.MSG_DONTWAIT, destination)
        except (BlockingIOError, InterruptedError):
            return SendResult(unsent=1)
        except OSError as exc:
            self.errors[exc.errno or 0] += 1
            return SendResult(failed=1)
        return SendResult(sent=1)
