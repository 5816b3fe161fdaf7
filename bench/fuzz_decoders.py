"""Coverage-guided fuzzing (atheris, libFuzzer) of the untrusted parsers, for a fixed budget.

    .venv/bin/pip install atheris      # not a dependency: only this script needs it
    .venv/bin/python bench/fuzz_decoders.py envelope [--runs 300000] [--seconds 120]
    .venv/bin/python bench/fuzz_decoders.py control  [--runs 300000] [--seconds 120]
    .venv/bin/python bench/fuzz_decoders.py advert   [--runs 300000] [--seconds 120]

``envelope``: ``decode_message_untrusted`` without a key and with a verifier (time
mode, keys 1 and 2, the clock taken from the input) must raise nothing but
``BadEnvelope``. ``control``: the control socket's request parser
(``daemon/control.py`` ``_parse``) must return a dict for any line, never raise.
``advert``: a VRRP advert as the election receives it, IPv4 and IPv6
(``decode_signed_untrusted``, then, with a trailer or none, keepalived-2.4 ``auth_hmac``
verification in enforce and permissive modes) must raise nothing but ``BadPacket``.
The corpus starts from valid envelopes (keyed and not) and requests, written to a
temporary folder. libFuzzer prints the executions run ("Done N runs in T s").
Bounded: ``--runs`` executions or ``--seconds``, whichever comes first.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from ipaddress import ip_address
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

with atheris.instrument_imports():
    from vipcast.core import envelope as env
    from vipcast.core.vrrp import auth as vrrp_auth
    from vipcast.core.vrrp import codec
    from vipcast.daemon import control


KEYS = {1: bytes(range(32)), 2: b"the second cluster key, 32 bytes"}
NOW = 0x17979CFE3D85CD15


def seeds() -> list[bytes]:
    gram = env.Datagram(("198.19.0.2", 40000), ("198.18.0.100", 8600), b"payload", NOW)
    messages: list[env.Message] = [
        env.Data(1, 7, 42, 1, (gram, gram)),
        env.Heartbeat(1, 7, 42, 9, closing=True),
        env.EndOfSession(1, 7, 42, 9, 43),
        env.Nack(1, 12, 42, 3, 4),
        env.Unavailable(1, 7, 42, 3, 4, env.UnavailableReason.EVICTED),
    ]
    signer = env.Signer(1, KEYS[1])
    out = [env.encode_message(m) for m in messages]
    out += [env.encode_message(m, auth=signer, now=NOW) for m in messages]
    return out


def envelope_target(data: bytes) -> None:
    for auth in (None, env.Verifier(KEYS, window_ns=5_000_000_000)):
        with contextlib.suppress(env.BadEnvelope):
            env.decode_message_untrusted(data, auth=auth, now=NOW)


ADVERT_ENDS = (
    (ip_address("198.18.0.11"), ip_address("224.0.0.18")),
    (ip_address("fe80::11"), ip_address("ff02::12")),
)
ADVERT_NOW = 1_796_000_000.0


def advert_seeds() -> list[bytes]:
    out = []
    for src, dst in ADVERT_ENDS:
        vip = ip_address("198.18.0.100" if src.version == 4 else "fd00:198:18::100")
        advert = codec.Advert(vrid=51, priority=150, max_advert_int_cs=10, addresses=(vip,))
        message = codec.encode_advert(advert, src=src, dst=dst)
        signer = vrrp_auth.Authenticator({1: KEYS[1]}, 1, "enforce")
        trailer = signer.sign(message, src=src, vrid=51, unix=ADVERT_NOW)
        out += [message, codec.with_trailer(message, trailer, src=src, dst=dst)]
    return out


def advert_target(data: bytes) -> None:
    for src, dst in ADVERT_ENDS:
        try:
            advert, trailer = codec.decode_signed_untrusted(data, src=src, dst=dst)
        except codec.BadPacket:
            continue
        message = data[: len(data) - len(trailer)] if trailer else data
        for mode in ("enforce", "permissive"):
            checker = vrrp_auth.Authenticator(KEYS, 1, mode)  # type: ignore[arg-type]
            with contextlib.suppress(codec.BadPacket):
                checker.verify_untrusted(
                    message, trailer, src=src, vrid=advert.vrid, unix=ADVERT_NOW
                )


def control_target(data: bytes) -> None:
    result = control._parse(data, 16)
    if not isinstance(result, dict):
        raise TypeError(f"control parser returned {type(result)}")


TARGETS = {
    "envelope": (envelope_target, seeds),
    "advert": (advert_target, advert_seeds),
    "control": (
        control_target,
        lambda: [b'{"command": "status"}', b'{"command": "events", "a": [[[]]]}', b"[]"],
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--runs", type=int, default=300_000)
    parser.add_argument("--seconds", type=int, default=120)
    args, rest = parser.parse_known_args()
    target, corpus = TARGETS[args.target]
    with tempfile.TemporaryDirectory(prefix="vipcast-fuzz-") as folder:
        for i, seed in enumerate(corpus()):
            (Path(folder) / f"seed{i}").write_bytes(seed)
        argv = [sys.argv[0], *rest, f"-runs={args.runs}", f"-max_total_time={args.seconds}"]
        atheris.Setup([*argv, folder], target)
        atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
