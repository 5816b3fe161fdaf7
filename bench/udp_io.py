"""Micro-benchmark of the UDP fast paths on loopback: datagrams/s and CPU per datagram.

    .venv/bin/python bench/udp_io.py [--count 200000] [--size 64]

Receiving: a socket is filled with ``ROUND`` datagrams (not timed), then drained
(timed) by a plain ``recvfrom`` loop, by ``recvmmsg`` batches, and by the
fallback receiver. Sending: ``ROUND`` datagrams are sent (timed) to a sink that
is drained between rounds (not timed), by a ``sendto`` loop, by ``sendmmsg``
batches, and with UDP GSO. As root, two more: multicast to 239.255.86.1 with one
member, on the loopback of a namespace the benchmark makes (the relay's fan-out);
and spoofed delivery (transparent sockets and the raw fallback, from 198.19.0.2
to 127.0.0.1: it never leaves lo).

Bounded: every measurement stops at ``--count`` datagrams or ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from vipcast.linux import mmsg, udp
from vipcast.linux.spoof import RawUdpSender, SpoofingSender

ROUND = 20_000  # datagrams per fill/drain round; fits a 64 MiB receive buffer
BUFFER = 64 << 20
BATCH = 64
GROUP = "239.255.86.1"


@dataclass
class Figure:
    name: str
    datagrams: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.datagrams / self.wall if self.wall else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.datagrams * 1e6 if self.datagrams else 0.0


def make_pair() -> tuple[socket.socket, socket.socket]:
    """A sink and a source on 127.0.0.1 with large buffers."""
    sink = udp.udp_socket(socket.AF_INET, rcvbuf=BUFFER, sndbuf=BUFFER)
    sink.bind(("127.0.0.1", 0))
    source = udp.udp_socket(socket.AF_INET, rcvbuf=BUFFER, sndbuf=BUFFER)
    source.bind(("127.0.0.1", 0))
    return sink, source


def fill(source: socket.socket, sink: socket.socket, n: int, payload: bytes) -> None:
    dst = sink.getsockname()
    sender = mmsg.MmsgSender(source)
    for first in range(0, n, BATCH):
        sender.send((payload, dst) for _ in range(min(BATCH, n - first)))


def drain_all(sink: socket.socket) -> int:
    n = 0
    while True:
        try:
            sink.recv(65535)
        except BlockingIOError:
            return n
        n += 1


def timed_rounds(
    name: str, count: int, seconds: float, setup: Callable[[], None], run: Callable[[], int]
) -> Figure:
    """Repeat setup (not timed) and run (timed) until count datagrams or seconds pass."""
    done, wall, cpu = 0, 0.0, 0.0
    deadline = time.monotonic() + seconds
    while done < count and time.monotonic() < deadline:
        setup()
        w0, c0 = time.perf_counter(), time.process_time()
        done += run()
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
    return Figure(name, done, wall, cpu)


# ---------------------------------------------------------------- receiving


def bench_receive(count: int, seconds: float, size: int) -> list[Figure]:
    sink, source = make_pair()
    payload = bytes(size)
    figures = []
    try:

        def setup() -> None:
            fill(source, sink, ROUND, payload)

        def recvfrom_loop() -> int:
            n = 0
            recvfrom = sink.recvfrom
            while True:
                try:
                    recvfrom(2048)
                except BlockingIOError:
                    return n
                n += 1

        def batched(receiver: mmsg.Receiver) -> Callable[[], int]:
            def run() -> int:
                n = 0
                while got := receiver.receive():
                    n += len(got)
                return n

            return run

        figures.append(timed_rounds("recvfrom loop", count, seconds, setup, recvfrom_loop))
        mm = mmsg.MmsgReceiver(sink, batch=BATCH, bufsize=2048)
        figures.append(timed_rounds("recvmmsg x64", count, seconds, setup, batched(mm)))
        udp.enable_pktinfo(sink)
        mm_info = mmsg.MmsgReceiver(sink, batch=BATCH, bufsize=2048, pktinfo=True)
        figures.append(
            timed_rounds("recvmmsg x64 +pktinfo", count, seconds, setup, batched(mm_info))
        )
        fb = mmsg.RecvfromReceiver(sink, batch=BATCH, bufsize=2048, pktinfo=True)
        figures.append(timed_rounds("fallback +pktinfo", count, seconds, setup, batched(fb)))
    finally:
        sink.close()
        source.close()
    return figures


# ---------------------------------------------------------------- sending


def bench_send(
    count: int,
    seconds: float,
    size: int,
    *,
    pair: tuple[socket.socket, socket.socket] | None = None,
    dst: tuple[str, int] | None = None,
) -> list[Figure]:
    sink, source = pair or make_pair()
    dst = dst or sink.getsockname()
    payload = bytes(size)
    figures = []

    def setup() -> None:
        drain_all(sink)

    def sendto_loop() -> int:
        sendto = source.sendto
        for _ in range(ROUND):
            sendto(payload, dst)
        return ROUND

    sender = mmsg.MmsgSender(source, capacity=BATCH)
    messages = [(payload, dst)] * BATCH

    def sendmmsg_batches() -> int:
        n = 0
        for _ in range(ROUND // BATCH):
            n += sender.send(messages).sent
        return n

    per_gso = min(mmsg.GSO_MAX_SEGMENTS, 65000 // size)
    segments = [payload] * per_gso

    def gso_sends() -> int:
        n = 0
        for _ in range(ROUND // per_gso):
            n += mmsg.send_segments(source, segments, dst).sent
        return n

    try:
        for name, run in (
            ("sendto loop", sendto_loop),
            ("sendmmsg x64", sendmmsg_batches),
            (f"GSO x{per_gso}", gso_sends),
        ):
            figure = timed_rounds(name, count, seconds, setup, run)
            figures.append(figure)
        drain_all(sink)
    finally:
        if pair is None:
            sink.close()
            source.close()
    return figures


def bench_multicast(count: int, seconds: float, size: int) -> list[Figure]:
    """The relay's fan-out: to a group, loop on, one member (root: a namespace)."""
    import subprocess

    from vipcast.lab.site import Lab

    with Lab() as lab:
        host = lab.host("bench")
        subprocess.run(["ip", "-n", host.ns, "link", "set", "lo", "multicast", "on"], check=True)
        with host.entered():
            member = udp.udp_socket(socket.AF_INET, rcvbuf=BUFFER, sndbuf=0)
            member.bind(("0.0.0.0", 9700))
            udp.join_group(member, GROUP, "lo")
            source = udp.udp_socket(socket.AF_INET, rcvbuf=0, sndbuf=BUFFER)
            udp.multicast_sender(source, "lo", ttl=1, loop=True)
        try:
            return bench_send(count, seconds, size, pair=(member, source), dst=(GROUP, 9700))
        finally:
            member.close()
            source.close()


def bench_spoof(count: int, seconds: float, size: int) -> list[Figure]:
    """Delivery from a foreign source to an app on 127.0.0.1 (root only)."""
    app = udp.udp_socket(socket.AF_INET, rcvbuf=BUFFER, sndbuf=0)
    app.bind(("127.0.0.1", 0))
    dst = ("127.0.0.1", app.getsockname()[1])
    plain = udp.udp_socket(socket.AF_INET, rcvbuf=0, sndbuf=BUFFER)
    payload = bytes(size)
    spoofer, raw = SpoofingSender(), RawUdpSender()
    source = ("198.19.0.2", 40000)

    def setup() -> None:
        drain_all(app)

    def loop(send: Callable[[], object]) -> Callable[[], int]:
        def run() -> int:
            for _ in range(ROUND):
                send()
            return ROUND

        return run

    try:
        return [
            timed_rounds(
                "plain sendto", count, seconds, setup, loop(lambda: plain.sendto(payload, dst))
            ),
            timed_rounds(
                "transparent socket",
                count,
                seconds,
                setup,
                loop(lambda: spoofer.send(payload, source, dst)),
            ),
            timed_rounds(
                "raw socket", count, seconds, setup, loop(lambda: raw.send(payload, source, dst))
            ),
        ]
    finally:
        spoofer.close()
        raw.close()
        app.close()
        plain.close()


# ---------------------------------------------------------------- report


def report(title: str, figures: list[Figure]) -> None:
    base = figures[0]
    print(f"\n{title}")
    print(f"  {'path':24} {'datagrams/s':>12} {'CPU us/dgram':>13} {'speed x':>8} {'CPU x':>6}")
    for f in figures:
        speed = f.rate / base.rate if base.rate else 0.0
        cpu = f.cpu_us / base.cpu_us if base.cpu_us else 0.0
        print(f"  {f.name:24} {f.rate:12,.0f} {f.cpu_us:13.2f} {speed:8.2f} {cpu:6.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="datagrams per path")
    parser.add_argument("--seconds", type=float, default=5.0, help="time limit per path")
    parser.add_argument("--size", type=int, action="append", help="payload bytes (repeatable)")
    args = parser.parse_args(argv)
    sizes = args.size or [64, 1400]
    print(f"loopback, {os.cpu_count()} CPUs, batch {BATCH}, {args.count} datagrams per path")
    for size in sizes:
        report(f"receive, {size}-byte datagrams", bench_receive(args.count, args.seconds, size))
        report(f"send, {size}-byte datagrams", bench_send(args.count, args.seconds, size))
        if os.geteuid() == 0:
            report(
                f"send to a multicast group, {size}-byte datagrams",
                bench_multicast(args.count, args.seconds, size),
            )
            report(
                f"spoofed delivery, {size}-byte datagrams",
                bench_spoof(args.count, args.seconds, size),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
