"""Traffic tools run as their own processes inside namespaces (no GIL shared with the test).

    python -m tests.lab.traffic send HOST PORT --count N --rate R
    python -m tests.lab.traffic sink HOST PORT --out FILE

Datagrams carry their number as 8 bytes, padded to 64. The sink writes what it
received, in order, as JSON when it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time
from pathlib import Path

SEQ = struct.Struct("!Q")
SIZE = 64
BATCH_INTERVAL = 0.001


def send(host: str, port: int, count: int, rate: float) -> None:
    """Send datagrams 0..count-1 at ``rate``/s, paced per millisecond; bounded in count."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad = bytes(SIZE - SEQ.size)
    start, i = time.monotonic(), 0
    while i < count:
        due = min(count, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            try:
                sock.sendto(SEQ.pack(i) + pad, (host, port))
            except BlockingIOError:
                break
            i += 1
        time.sleep(BATCH_INTERVAL)
    print(json.dumps({"sent": count, "seconds": time.monotonic() - start}), flush=True)


def _number(data: bytes, envelope: bool) -> object:
    """The datagram's number; with ``envelope``, [session, sequence, number] per record."""
    if not envelope:
        return SEQ.unpack_from(data)[0] if len(data) >= SEQ.size else -1
    from vipcast.core import envelope as env

    msg = env.decode_message_untrusted(data)
    assert isinstance(msg, env.Data)
    return [
        [msg.session, msg.first_seq + i, SEQ.unpack_from(d.payload)[0]]
        for i, d in enumerate(msg.datagrams)
    ]


def sink(host: str, port: int, out: Path, envelope: bool = False) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    sock.bind((host, port))
    received: list[object] = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sock.settimeout(0.05)
    ready = out.with_suffix(".ready")
    ready.write_text("ready")
    while not stop:
        try:
            data = sock.recv(2048)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        received.append(_number(data, envelope))
    out.write_text(json.dumps(received))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["send", "sink"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--envelope", action="store_true", help="decode vipcast envelopes")
    args = parser.parse_args()
    if args.mode == "send":
        send(args.host, args.port, args.count, args.rate)
    else:
        sink(args.host, args.port, args.out, args.envelope)
    return 0


if __name__ == "__main__":
    sys.exit(main())
