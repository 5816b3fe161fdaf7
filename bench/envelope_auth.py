"""What a cluster key costs the relay and the receiver, per datagram, without the network.

    .venv/bin/python bench/envelope_auth.py [--datagrams 200000] [--repeat 5]
    .venv/bin/python bench/envelope_auth.py --sockets [--datagrams 50000] [--rounds 5]

The relay's per-datagram work in Python, as ``FeedRelay._send`` does it: a record per
datagram (``RecordEncoder``), batches planned for a 1500-byte MTU (``plan_batches``),
each batch framed (``DataFramer.frame``, and with a key the auth block and the
HMAC-SHA256 tag). The receiver's: decoding and checking each envelope
(``decode_message_untrusted``, with a key the tag and the replay window). Each is
measured without and with a key, side by side, for 64-byte datagrams read one at a
time (one envelope each: the worst case, a lightly loaded relay) and in batches of
16 (a busy relay packs them). CPU time of this process (``time.process_time``), the
best of ``--repeat`` runs. Bounded: a fixed number of datagrams per run.

``--sockets``: the data plane's own relay (``FeedRelay`` and its ``Fanout``) on real
UDP sockets over loopback, in this process: a sender puts a burst of datagrams on
the relay's socket, ``FeedRelay.on_readable`` relays them (``recvmmsg``, records,
framing, sealing, the retransmission buffer, ``sendmmsg`` / UDP GSO to one
receiver), and only that call is timed (CPU time, the kernel's work for it included).
Bursts of 1 (each datagram alone, the worst case) and 16; without and with a key in
A B B A order for ``--rounds`` rounds, the median of each. No lab and no other
process: the batching is fixed, so the figures do not move with the machine's load
as the lab's (``bench/relay.py --keyed``) do.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vipcast.config import ClusterAuth, ClusterConfig, FeedConfig
from vipcast.core import envelope as env
from vipcast.daemon.dataplane.relay import Fanout, FeedRelay
from vipcast.daemon.dataplane.stats import FeedStats
from vipcast.keys import Key

KEY = bytes(range(32))
SRC, VIP = ("198.19.0.2", 40000), ("198.18.0.100", 8600)
BUDGET = env.envelope_budget(1500)
PAYLOAD = bytes(64)


def relay_run(batch: int, total: int, signer: env.Signer | None) -> list[bytes]:
    """Frame ``total`` datagrams read ``batch`` at a time; the envelopes."""
    encoder, framer = env.RecordEncoder(VIP), env.DataFramer(1, 7, 99, auth=signer)
    out, seq, auth = [], 1, signer is not None
    for _ in range(total // batch):
        now = time.time_ns()
        records = [encoder.encode(PAYLOAD, SRC, now) for _ in range(batch)]
        at = 0
        for count in env.plan_batches([len(r) for r in records], BUDGET, auth=auth):
            out.append(framer.frame(seq + at, records[at : at + count], now=now))
            at += count
        seq += batch
    return out


def receive_run(envelopes: list[bytes], verifier: env.Verifier | None) -> int:
    decode, got = env.decode_message_untrusted, 0
    for wire in envelopes:
        now = time.time_ns()
        msg = decode(wire, auth=verifier, now=now)
        got += len(msg.datagrams) if isinstance(msg, env.Data) else 0
    return got


def best(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def measure(batch: int, total: int, repeat: int) -> dict[str, float]:
    """Microseconds per datagram: relay and receiver, without and with a key."""
    us = 1e6 / total
    plain = relay_run(batch, total, None)
    keyed = relay_run(batch, total, env.Signer(1, KEY))
    return {
        "relay": best(repeat, lambda: relay_run(batch, total, None)) * us,
        "relay_key": best(repeat, lambda: relay_run(batch, total, env.Signer(1, KEY))) * us,
        "receive": best(repeat, lambda: receive_run(plain, None)) * us,
        "receive_key": best(
            repeat,
            lambda: receive_run(keyed, env.Verifier({1: KEY}, window_ns=300_000_000_000)),
        )
        * us,
    }


class LoopbackRelay:
    """A FeedRelay on 127.0.0.1, its sender and the receiver its envelopes go to."""

    def __init__(self, keyed: bool) -> None:
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.setblocking(False)
        auth = ClusterAuth((Key(1, KEY),), 1) if keyed else None
        cluster = ClusterConfig(receivers=(self.sink.getsockname(),), auth=auth)
        self.fanout = Fanout(cluster, "lo", "127.0.0.1")
        signer = env.Signer(1, KEY) if keyed else None
        feed = FeedConfig("bench", 0, feed_id=1)
        self.relay = FeedRelay(feed, "127.0.0.1", cluster, 7, self.fanout, FeedStats(), signer)
        self.relay.start()
        self.to = self.relay.sock.getsockname()
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.bind(("127.0.0.1", 0))

    def run(self, total: int, burst: int) -> float:
        """CPU seconds ``on_readable`` spent relaying ``total`` datagrams."""
        spent, clock = 0.0, time.process_time
        for _ in range(total // burst):
            for _ in range(burst):
                self.sender.sendto(PAYLOAD, self.to)
            start = clock()
            self.relay.on_readable()
            spent += clock() - start
            self.drain()
        if self.relay.stats.relayed < total // burst * burst:
            raise RuntimeError(f"relayed {self.relay.stats.relayed} of {total}")
        return spent

    def drain(self) -> None:
        while True:
            try:
                self.sink.recv(65536)
            except BlockingIOError:
                return

    def close(self) -> None:
        for sock in (self.relay.sock, self.fanout.sock, self.sender, self.sink):
            sock.close()


def sockets_us(keyed: bool, total: int, burst: int) -> float:
    relay = LoopbackRelay(keyed)
    try:
        relay.run(min(total, 2000), burst)  # warm: caches, the first session's state
        return relay.run(total, burst) / total * 1e6
    finally:
        relay.close()


def sockets_main(total: int, rounds: int) -> None:
    print(
        f"FeedRelay on loopback: {total} datagrams of {len(PAYLOAD)} bytes per run, "
        f"{rounds} rounds A B B A, medians; CPU us/datagram in on_readable"
    )
    print("| burst | no key | key | key / no key | runs, no key | runs, key |")
    print("|---:|---:|---:|---:|---|---|")
    for burst in (1, 16):
        runs: dict[bool, list[float]] = {False: [], True: []}
        for r in range(rounds):
            for keyed in (False, True) if r % 2 == 0 else (True, False):
                runs[keyed].append(sockets_us(keyed, total, burst))
        plain, signed = statistics.median(runs[False]), statistics.median(runs[True])
        spread = {k: " ".join(f"{v:.2f}" for v in vs) for k, vs in runs.items()}
        print(
            f"| {burst} | {plain:.2f} | {signed:.2f} | {signed / plain:.3f} "
            f"| {spread[False]} | {spread[True]} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datagrams", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sockets", action="store_true", help="FeedRelay on loopback sockets")
    parser.add_argument("--rounds", type=int, default=5, help="--sockets: A B B A rounds")
    args = parser.parse_args(argv)
    if args.sockets:
        sockets_main(max(16, args.datagrams), max(1, args.rounds))
        return 0
    print(f"{args.datagrams} datagrams of {len(PAYLOAD)} bytes, best of {args.repeat}; us/datagram")
    print("| read at once | relay | relay, key | + | receiver | receiver, key | + |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch in (1, 16):
        r = measure(batch, args.datagrams, args.repeat)
        relay_up = r["relay_key"] / r["relay"] - 1
        recv_up = r["receive_key"] / r["receive"] - 1
        print(
            f"| {batch} | {r['relay']:.2f} | {r['relay_key']:.2f} | {relay_up:+.0%} "
            f"| {r['receive']:.2f} | {r['receive_key']:.2f} | {recv_up:+.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
