"""The processes ``bench/relay.py`` runs inside the site's namespaces, one role each.

    python bench/relay_peers.py send --dst 198.18.0.100:8600 --rate 50000 --seconds 3 --step 4
    python bench/relay_peers.py app --port 9600
    python bench/relay_peers.py plain --listen 198.18.0.100:8600 --to 127.0.0.1:9600 ...

``send`` (remote centre): 64-byte datagrams at a steady rate, numbered, stamped with
CLOCK_MONOTONIC (shared by every namespace of the machine); paced every few tens of
microseconds and sent with UDP GSO (one ``sendmsg`` per burst, the kernel cuts it
into datagrams). Prints what it achieved as one JSON line, then exits.

``app`` (a local application on a node): a plain UDP socket, read by blocking
``recvmmsg`` calls (MSG_WAITFORONE: one call per wakeup), counting datagrams per
step (unique and repeated) and, for steps flagged so, the latency from the send
stamp (taken once per read). Answers ``report STEP`` on
stdin with a JSON line; exits on ``exit`` or EOF.

``plain`` (the reference relay, the samplicator model): one blocking ``recvfrom``,
then one ``sendto`` per receiver. Stops by SIGALRM after ``--max-seconds``.

Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import ctypes.util
import errno
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vipcast.linux.mmsg import MmsgSender

SIZE = 64
# payload: magic | step | flags | sequence number | send time (CLOCK_MONOTONIC ns) | zeros
HEADER = struct.Struct(">4sHHIQ")
MAGIC = b"VCBR"
FLAG_LATENCY = 1
BURST = 64  # datagrams per GSO send at most (UDP_MAX_SEGMENTS)
UDP_SEGMENT = 103
PR_SET_TIMERSLACK = 29
BUFFER = 32 << 20
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
MSG_WAITFORONE = 0x10000  # recvmmsg: block for the first datagram only
SLOT = 2048  # bytes per datagram slot of the app's reads
MIXED_PERIOD = 361  # the pattern of mixed sizes repeats every this many datagrams


def endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# ---------------------------------------------------------------- sender


def fine_timer_slack() -> None:
    """Ask for 1 us timer slack (default 50 us), so short sleeps pace well."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def send(args: argparse.Namespace) -> int:
    """Send ``rate * seconds`` datagrams; bounded by count and by ``seconds + 2``."""
    fine_timer_slack()
    dst = endpoint(args.dst)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
    if args.src_port:
        sock.bind(("0.0.0.0", args.src_port))
    total = int(args.rate * args.seconds)
    flags = FLAG_LATENCY if args.latency else 0
    emit = mixed_sizes(sock, dst) if args.mixed else equal_sizes(sock, dst)
    clock, sleep = time.monotonic_ns, time.sleep
    ns_per = 1e9 / args.rate
    sent = calls = 0
    start = clock()
    deadline = start + int((args.seconds + 2) * 1e9)
    while sent < total:
        now = clock()
        if now > deadline:
            break
        n = min(total, int((now - start) / ns_per) + 1) - sent
        if n <= 0:
            sleep((start + sent * ns_per - now) / 1e9)
            continue
        n = min(n, BURST)
        emit(args.step, flags, sent, n, now)
        sent += n
        calls += 1
    elapsed = (clock() - start) / 1e9
    sock.close()
    result = {"sent": sent, "wanted": total, "seconds": elapsed, "calls": calls}
    result["rate"] = sent / elapsed if elapsed else 0.0
    print(json.dumps(result), flush=True)
    return 0


Emit = Callable[[int, int, int, int, int], None]
"""emit(step, flags, first sequence number, count, send time): one burst."""


def equal_sizes(sock: socket.socket, dst: tuple[str, int]) -> Emit:
    """64-byte datagrams, a burst as one UDP GSO send."""
    burst = bytearray(SIZE * BURST)
    view = memoryview(burst)
    gso = [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("@H", SIZE))]
    pack_into = HEADER.pack_into

    def emit(step: int, flags: int, first: int, n: int, now: int) -> None:
        for i in range(n):
            pack_into(burst, i * SIZE, MAGIC, step, flags, first + i, now)
        if n == 1:
            sock.sendto(view[:SIZE], dst)
        else:
            sock.sendmsg([view[: n * SIZE]], gso, 0, dst)

    return emit


def mixed_sizes(sock: socket.socket, dst: tuple[str, int]) -> Emit:
    """Datagrams of 40..400 bytes (a fixed pattern, 220 on average), a burst by sendmmsg.

    Nothing downstream can coalesce them: the cost of real feeds, whose sizes vary.
    """
    sender = MmsgSender(sock, capacity=BURST, arena=1 << 17)
    pads = [bytes(mixed_size(seq) - HEADER.size) for seq in range(MIXED_PERIOD)]
    pack = HEADER.pack

    def emit(step: int, flags: int, first: int, n: int, now: int) -> None:
        out = [
            (pack(MAGIC, step, flags, seq, now) + pads[seq % MIXED_PERIOD], dst)
            for seq in range(first, first + n)
        ]
        result = sender.send(out)
        if result.sent != n:
            raise OSError(f"sendmmsg sent {result.sent} of {n}")

    return emit


def mixed_size(seq: int) -> int:
    return 40 + (seq * 37) % 361


# ---------------------------------------------------------------- app


class Counts:
    """Per step: which sequence numbers arrived (a byte each), repeats, latencies."""

    def __init__(self) -> None:
        self.seen: dict[int, bytearray] = {}
        self.repeats: dict[int, int] = {}
        self.latency: dict[int, array.array[int]] = {}
        self.foreign = 0

    def grow(self, step: int, seq: int) -> bytearray:
        seen = self.seen.setdefault(step, bytearray())
        seen.extend(bytes(max(seq + 1 - len(seen), len(seen))))
        return seen

    def report(self, step: int) -> dict[str, Any]:
        seen = self.seen.get(step, bytearray())
        lat = sorted(self.latency.get(step, ()))
        out: dict[str, Any] = {
            "received": seen.count(1),
            "repeats": self.repeats.get(step, 0),
            "foreign": self.foreign,
        }
        if lat:
            n = len(lat)
            out["latency_us"] = {
                q: lat[min(n - 1, int(n * f))] / 1e3
                for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))
            }
            out["latency_us"]["max"] = lat[-1] / 1e3
            out["stalls"] = stalls(self.latency[step])
        return out


def stalls(latencies: array.array[int], over_ns: int = 5_000_000) -> list[list[int]]:
    """Runs of arrivals later than ``over_ns``: [first arrival index, count, worst us]."""
    out: list[list[int]] = []
    for i, ns in enumerate(latencies):
        if ns <= over_ns:
            continue
        if out and out[-1][0] + out[-1][1] == i:
            out[-1][1] += 1
            out[-1][2] = max(out[-1][2], ns // 1000)
        elif len(out) < 50:
            out.append([i, 1, ns // 1000])
    return out


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("hdr", _MsgHdr), ("len", ctypes.c_uint))


class BatchReader:
    """``recvmmsg`` into fixed slots: with MSG_WAITFORONE, one call per wakeup, however
    many datagrams wait (the app must cost little, or it, not the relay, is measured)."""

    def __init__(self, sock: socket.socket, batch: int = 64) -> None:
        self.fd, self.batch = sock.fileno(), batch
        self.buffer = ctypes.create_string_buffer(batch * SLOT)
        self.iovs = (_IoVec * batch)()
        self.headers = (_MMsgHdr * batch)()
        base = ctypes.addressof(self.buffer)
        for i in range(batch):
            self.iovs[i].base, self.iovs[i].len = base + i * SLOT, SLOT
            hdr = self.headers[i].hdr
            hdr.iov, hdr.iovlen = ctypes.addressof(self.iovs[i]), 1
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.recvmmsg = libc.recvmmsg
        self.recvmmsg.argtypes = (
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        )

    def read(self, flags: int) -> int:
        """Datagrams read into slots 0..n-1 (0: none came)."""
        n: int = self.recvmmsg(self.fd, self.headers, self.batch, flags, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        return n


def count(reader: BatchReader, counts: Counts, flags: int, stop: deque[str]) -> None:
    """Count datagrams until none comes (timeout, or at once with MSG_DONTWAIT) or a command."""
    unpack, clock = HEADER.unpack_from, time.monotonic_ns
    seen, repeats, latency = counts.seen, counts.repeats, counts.latency
    buffer, headers = reader.buffer, reader.headers
    while not stop:
        n = reader.read(flags)
        if not n:
            return
        now = clock()
        for i in range(n):
            if headers[i].len < HEADER.size:
                counts.foreign += 1
                continue
            magic, step, mark, seq, sent_ns = unpack(buffer, i * SLOT)
            if magic != MAGIC:
                counts.foreign += 1
                continue
            if mark & FLAG_LATENCY:
                latency.setdefault(step, array.array("q")).append(now - sent_ns)
            bits = seen.get(step)
            if bits is None or seq >= len(bits):
                bits = counts.grow(step, seq)
            if bits[seq]:
                repeats[step] = repeats.get(step, 0) + 1
            else:
                bits[seq] = 1


def app(args: argparse.Namespace) -> int:
    """Blocking batched reads; commands come from stdin, through a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 200_000))
    sock.bind(("0.0.0.0", args.port))
    counts, reader = Counts(), BatchReader(sock)
    commands: deque[str] = deque()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    deadline = time.monotonic() + args.max_seconds
    print(json.dumps({"ready": True}), flush=True)
    while time.monotonic() < deadline:
        count(reader, counts, MSG_WAITFORONE, commands)
        while commands:
            words = commands.popleft().split()
            if not words or words[0] == "exit":
                return 0
            count(reader, counts, socket.MSG_DONTWAIT, deque())  # what is queued now
            print(json.dumps(counts.report(int(words[1]))), flush=True)
    return 0


def read_commands(commands: deque[str]) -> None:
    """``report STEP`` or ``exit`` lines from stdin; EOF is ``exit``."""
    for line in sys.stdin:
        commands.append(line)
    commands.append("exit")


# ---------------------------------------------------------------- plain relay


def plain(args: argparse.Namespace) -> int:
    """recvfrom, then sendto each receiver: what samplicator does, in Python."""
    signal.alarm(args.max_seconds)  # default action: terminate; the relay is bounded
    listen = endpoint(args.listen)
    receivers = [endpoint(t) for t in args.to]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, BUFFER)
    sock.bind(listen)
    print(json.dumps({"ready": True}), flush=True)
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, _ = recvfrom(65535)
        for receiver in receivers:
            sendto(data, receiver)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role", required=True)
    s = roles.add_parser("send")
    s.add_argument("--dst", required=True)
    s.add_argument("--rate", type=float, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--step", type=int, required=True)
    s.add_argument("--latency", action="store_true", help="the app measures latency")
    s.add_argument("--src-port", type=int, default=0)
    s.add_argument("--mixed", action="store_true", help="sizes 40..400, not 64")
    a = roles.add_parser("app")
    a.add_argument("--port", type=int, default=9600)
    a.add_argument("--max-seconds", type=float, default=900)
    p = roles.add_parser("plain")
    p.add_argument("--listen", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--max-seconds", type=int, default=900)
    args = parser.parse_args(argv)
    return {"send": send, "app": app, "plain": plain}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
