"""The processes ``bench/relay.py`` runs inside the site's namespaces, one role each.

    python bench/relay_peers.py send --dst 198.18.0.100:8600 --rate 50000 --seconds 3 --step 4
    python bench/relay_peers.py app --port 9600
    python bench/relay_peers.py plain --listen 198.18.0.100:8600 --to 127.0.0.1:9600 ...

``send`` (remote centre): 64-byte datagrams at a steady rate, numbered, stamped with
CLOCK_MONOTONIC (shared by every namespace of the machine); paced every few tens of
microseconds and sent with UDP GSO (one ``sendmsg`` per burst, the kernel cuts it
into datagrams). Prints what it achieved as one JSON line, then exits.

``app`` (a local application on a node): a plain UDP socket counting datagrams per
step (unique and repeated) and, for steps flagged so, the latency from the send
stamp. Answers ``report STEP`` on stdin with a JSON line; exits on ``exit`` or EOF.

``plain`` (the reference relay, the samplicator model): one blocking ``recvfrom``,
then one ``sendto`` per receiver. Stops by SIGALRM after ``--max-seconds``.

Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import ctypes.util
import json
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

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
    burst = bytearray(SIZE * BURST)
    view = memoryview(burst)
    gso = [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("@H", SIZE))]
    pack_into, clock, sleep = HEADER.pack_into, time.monotonic_ns, time.sleep
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
        for i in range(n):
            pack_into(burst, i * SIZE, MAGIC, args.step, flags, sent + i, now)
        if n == 1:
            sock.sendto(view[:SIZE], dst)
        else:
            sock.sendmsg([view[: n * SIZE]], gso, 0, dst)
        sent += n
        calls += 1
    elapsed = (clock() - start) / 1e9
    sock.close()
    result = {"sent": sent, "wanted": total, "seconds": elapsed, "calls": calls}
    result["rate"] = sent / elapsed if elapsed else 0.0
    print(json.dumps(result), flush=True)
    return 0


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
        return out


def drain(sock: socket.socket, buf: bytearray, counts: Counts, limit: int) -> None:
    """Read what waits, up to ``limit`` datagrams."""
    unpack, clock = HEADER.unpack_from, time.monotonic_ns
    seen, repeats, latency = counts.seen, counts.repeats, counts.latency
    recv_into = sock.recv_into
    for _ in range(limit):
        try:
            size = recv_into(buf)
        except BlockingIOError:
            return
        if size < HEADER.size:
            counts.foreign += 1
            continue
        magic, step, flags, seq, sent_ns = unpack(buf)
        if magic != MAGIC:
            counts.foreign += 1
            continue
        if flags & FLAG_LATENCY:
            latency.setdefault(step, array.array("q")).append(clock() - sent_ns)
        bits = seen.get(step)
        if bits is None or seq >= len(bits):
            bits = counts.grow(step, seq)
        if bits[seq]:
            repeats[step] = repeats.get(step, 0) + 1
        else:
            bits[seq] = 1


def app(args: argparse.Namespace) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
    sock.bind(("0.0.0.0", args.port))
    sock.setblocking(False)
    counts, buf = Counts(), bytearray(2048)
    stdin = sys.stdin.fileno()
    deadline = time.monotonic() + args.max_seconds
    print(json.dumps({"ready": True}), flush=True)
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock, stdin], [], [], 1.0)
        if sock in readable:
            drain(sock, buf, counts, 4096)
        if stdin in readable and not command(sys.stdin.readline(), sock, buf, counts):
            break
    sock.close()
    return 0


def command(line: str, sock: socket.socket, buf: bytearray, counts: Counts) -> bool:
    """Answer one command line; False to exit."""
    words = line.split()
    if not words or words[0] == "exit":
        return False
    if words[0] == "report":
        drain(sock, buf, counts, 1 << 20)
        print(json.dumps(counts.report(int(words[1]))), flush=True)
    return True


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
