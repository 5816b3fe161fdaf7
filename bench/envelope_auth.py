"""What a cluster key costs the relay and the receiver, per datagram, without the network.

    .venv/bin/python bench/envelope_auth.py [--datagrams 200000] [--repeat 5]

The relay's per-datagram work in Python, as ``FeedRelay._send`` does it: a record per
datagram (``RecordEncoder``), batches planned for a 1500-byte MTU (``plan_batches``),
each batch framed (``DataFramer.frame``, and with a key the auth block and the
HMAC-SHA256 tag). The receiver's: decoding and checking each envelope
(``decode_message_untrusted``, with a key the tag and the replay window). Each is
measured without and with a key, side by side, for 64-byte datagrams read one at a
time (one envelope each: the worst case, a lightly loaded relay) and in batches of
16 (a busy relay packs them). CPU time of this process (``time.process_time``), the
best of ``--repeat`` runs. Bounded: a fixed number of datagrams per run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vipcast.core import envelope as env

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datagrams", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
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
