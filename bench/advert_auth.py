"""What ``auth_hmac`` costs an advert: sending and receiving, without and with a key.

    .venv/bin/python bench/advert_auth.py [--adverts 20000] [--repeat 5]

Side by side in one run, for an IPv4 and an IPv6 virtual router (one VIP, VRRPv3):

* **send**: ``encode_advert`` (the message and its checksum); with a key also
  ``Authenticator.sign`` (the next sequence, HMAC-SHA256 over the pseudo-header, the
  message and the trailer's head) and ``with_trailer`` (IPv6: the checksum again, over
  the trailer too). The daemon encodes an advert once per priority and destination
  and reuses it, so the "cached" rows are what each advert sent costs it: nothing, or
  the signature.
* **receive**: ``decode_advert_untrusted``, or with a key ``decode_signed_untrusted``
  and ``Authenticator.verify_untrusted`` (freshness, HMAC, the sender's replay mark),
  each advert a new sequence as on the wire.

CPU time of this process (``time.process_time``), the best of ``--repeat`` runs of
``--adverts`` adverts each; microseconds per advert. Bounded: a fixed count per run.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vipcast.core.vrrp import codec
from vipcast.core.vrrp.auth import Authenticator
from vipcast.core.vrrp.codec import AUTH_TRAILER_LEN, Address, Advert

KEY = bytes(range(32))
VRID = 51
NOW = 1_796_000_000.0  # a fixed wall clock: the stamps stay inside the window
FAMILIES: dict[str, tuple[str, str, str]] = {  # src, dst (the VRRP group), VIP
    "IPv4": ("198.18.0.11", "224.0.0.18", "198.18.0.100"),
    "IPv6": ("fe80::7663:ff:fe00:b", "ff02::12", "fd00:198:18::100"),
}


class Router:
    """One sender's advert and the means to send and check it."""

    def __init__(self, family: str) -> None:
        src, dst, vip = (ipaddress.ip_address(a) for a in FAMILIES[family])
        self.src: Address = src
        self.dst: Address = dst
        self.advert = Advert(vrid=VRID, priority=150, max_advert_int_cs=100, addresses=(vip,))
        self.cached = self.encode()

    def encode(self) -> bytes:
        return codec.encode_advert(self.advert, src=self.src, dst=self.dst)

    def signed(self, auth: Authenticator, message: bytes, unix: float) -> bytes:
        trailer = auth.sign(message, src=self.src, vrid=VRID, unix=unix)
        return codec.with_trailer(message, trailer, src=self.src, dst=self.dst)

    def wire(self, count: int) -> list[bytes]:
        """``count`` signed adverts, as one sender sends them (sequences growing)."""
        auth = Authenticator({1: KEY}, 1)
        return [self.signed(auth, self.cached, NOW + i / 1e6) for i in range(count)]


def send_plain(r: Router, n: int) -> None:
    for _ in range(n):
        r.encode()


def send_keyed(r: Router, n: int) -> None:
    auth = Authenticator({1: KEY}, 1)
    for i in range(n):
        r.signed(auth, r.encode(), NOW + i / 1e6)


def send_cached_keyed(r: Router, n: int) -> None:
    auth = Authenticator({1: KEY}, 1)
    for i in range(n):
        r.signed(auth, r.cached, NOW + i / 1e6)


def receive_plain(r: Router, n: int) -> None:
    decode, src, dst, raw = codec.decode_advert_untrusted, r.src, r.dst, r.cached
    for _ in range(n):
        decode(raw, src=src, dst=dst)


def receive_keyed(r: Router, wire: list[bytes]) -> None:
    auth = Authenticator({1: KEY}, 1)
    decode, src, dst = codec.decode_signed_untrusted, r.src, r.dst
    for raw in wire:
        _, trailer = decode(raw, src=src, dst=dst)
        message = raw[:-AUTH_TRAILER_LEN]
        auth.verify_untrusted(message, trailer, src=src, vrid=VRID, unix=NOW)


def best_us(repeat: int, count: int, work: Callable[[], object]) -> float:
    """The best run's CPU time per advert, in microseconds."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times) / count * 1e6


def rows(family: str, count: int, repeat: int) -> list[tuple[str, float, float]]:
    r = Router(family)
    wire = r.wire(count)
    zero = 0.0
    return [
        (
            "send: encode (+ sign)",
            best_us(repeat, count, lambda: send_plain(r, count)),
            best_us(repeat, count, lambda: send_keyed(r, count)),
        ),
        (
            "send: cached advert (+ sign)",
            zero,
            best_us(repeat, count, lambda: send_cached_keyed(r, count)),
        ),
        (
            "receive: decode (+ verify)",
            best_us(repeat, count, lambda: receive_plain(r, count)),
            best_us(repeat, count, lambda: receive_keyed(r, wire)),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adverts", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    count, repeat = max(1, args.adverts), max(1, args.repeat)
    python = sys.version.split()[0]
    print(f"{count} adverts per run, best of {repeat}; CPU us/advert (Python {python})")
    print("| family | step | no key | key | key / no key |")
    print("|---|---|---:|---:|---:|")
    for family in FAMILIES:
        for step, plain, keyed in rows(family, count, repeat):
            ratio = f"{keyed / plain:.2f}" if plain else "-"
            print(f"| {family} | {step} | {plain:.2f} | {keyed:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
