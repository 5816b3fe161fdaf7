"""The election signs its adverts at send time and verifies what it receives.

Real Election, real VrrpSocket code over a recording UDP socket (see
test_election_errors); received adverts go through ``_validate`` as the raw socket
hands them over. Every rejection is counted by reason, in status and in Prometheus, and
changes no state.
"""

from __future__ import annotations

import time
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

from tests.unit.test_election_errors import NODE, VIP, Node, fake_vip_manager, run, until
from vipcast import config
from vipcast.core.vrrp import codec
from vipcast.core.vrrp.auth import AUTH_REASONS, Authenticator, parse_trailer
from vipcast.core.vrrp.codec import AUTH_TRAILER_LEN, Advert
from vipcast.core.vrrp.plausible import PLAUSIBILITY_REASONS
from vipcast.linux.vrrp_socket import GROUP_V4, RawAdvert

__all__ = ["fake_vip_manager"]  # the autouse fixture, imported to take effect here

K1 = "hex:" + bytes(range(32)).hex()
K2 = "hex:" + bytes(range(100, 132)).hex()
PEER = IPv4Address("127.0.0.2")
INTERVAL_CS = 2  # test_election_errors' INTERVAL


def auth(keys: dict[str, str], active: int, mode: str = "enforce") -> dict[str, Any]:
    return {"auth": {"keys": keys, "active_key": active, "mode": mode}}


def advert_from(
    src: IPv4Address = PEER,
    *,
    priority: int = 200,
    interval_cs: int = INTERVAL_CS,
    signer: Authenticator | None = None,
    unix: float | None = None,
) -> RawAdvert:
    advert = Advert(vrid=51, priority=priority, max_advert_int_cs=interval_cs, addresses=(VIP.ip,))
    message = codec.encode_advert(advert, src=src, dst=GROUP_V4)
    if signer is not None:
        t = time.time() if unix is None else unix
        message += signer.sign(message, src=src, vrid=51, unix=t)
    return RawAdvert(message, src, GROUP_V4, 255)


def key(secret: str) -> bytes:
    return bytes.fromhex(secret[4:])


def rejected(n: Node, reason: str) -> int:
    value = n.metrics.registry.get_sample_value(
        "vipcast_adverts_rejected_total", {"reason": reason}
    )
    assert value == n.election.status()["rejected"].get(reason, 0)
    return int(value)


def test_adverts_are_signed_at_send_time_with_a_growing_sequence() -> None:
    async def scenario(n: Node) -> None:
        n.election.begin()
        await until(lambda: len(n.wire.sent) >= 3, what="three adverts")
        receiver = Authenticator({1: key(K1)}, 1)
        seqs = []
        for packet in n.wire.sent[:3]:
            _, trailer = codec.decode_signed_untrusted(packet, src=NODE, dst=GROUP_V4)
            assert trailer is not None
            message = packet[:-AUTH_TRAILER_LEN]
            assert receiver.verify_untrusted(
                message, trailer, src=NODE, vrid=51, unix=time.time()
            ).authenticated
            seqs.append(parse_trailer(trailer).sequence)
        assert seqs == sorted(set(seqs))

    run(scenario, **auth({"1": K1}, 1))


def test_receive_only_sends_no_trailer() -> None:
    async def scenario(n: Node) -> None:
        n.election.begin()
        await until(lambda: len(n.wire.sent) >= 1, what="an advert")
        codec.decode_advert_untrusted(n.wire.sent[0], src=NODE, dst=GROUP_V4)  # no trailer

    run(scenario, **auth({"1": K1}, 1, "receive-only"))


def test_every_rejection_is_counted_by_reason_and_changes_nothing() -> None:
    async def scenario(n: Node) -> None:
        for reason in (*AUTH_REASONS, *PLAUSIBILITY_REASONS):
            assert rejected(n, reason) == 0  # exported before any
        n.election.begin()
        await until(lambda: n.state == "MASTER", what="MASTER")
        good = Authenticator({1: key(K1)}, 1)
        stranger = Authenticator({9: bytes(32)}, 9)
        wrong = Authenticator({1: bytes(32)}, 1)
        signed = advert_from(signer=good)
        forged = [
            (advert_from(), "no_trailer"),
            (advert_from(signer=stranger), "unknown_key"),
            (advert_from(signer=wrong), "bad_hmac"),
            (advert_from(signer=good, unix=time.time() - 3600), "stale"),
        ]
        for raw, reason in forged:
            assert n.election._validate(raw) is None
            assert rejected(n, reason) == 1, reason
        assert n.state == "MASTER"
        assert n.election._validate(signed) is not None  # a valid one is adopted...
        assert n.election._validate(signed) is None  # ...once: the copy is a replay
        assert rejected(n, "replay") == 1

    run(scenario, **auth({"1": K1}, 1))


def test_permissive_accepts_an_unsigned_advert_within_bounds() -> None:
    async def scenario(n: Node) -> None:
        assert n.election._validate(advert_from()) is not None
        assert n.election._validate(advert_from(priority=255)) is None
        assert rejected(n, "implausible_priority") == 1

    run(scenario, **auth({"1": K1}, 1, "permissive"))


def test_unauthenticated_adverts_out_of_bounds_are_not_adopted() -> None:
    async def scenario(n: Node) -> None:
        n.election.begin()
        await until(lambda: n.state == "MASTER", what="MASTER")
        assert n.election._validate(advert_from(priority=255)) is None
        assert n.election._validate(advert_from(interval_cs=4095)) is None
        assert n.election._validate(advert_from(interval_cs=INTERVAL_CS * 10 + 1)) is None
        assert rejected(n, "implausible_priority") == 1
        assert rejected(n, "implausible_interval") == 2
        assert n.election._validate(advert_from(interval_cs=INTERVAL_CS * 10)) is not None
        owner = IPv4Address(str(VIP.ip))
        assert n.election._validate(advert_from(owner, priority=255)) is not None
        assert n.state == "MASTER"  # nothing above was fed to the machine

    run(scenario)


def test_authenticated_adverts_are_trusted_whatever_their_priority() -> None:
    async def scenario(n: Node) -> None:
        good = Authenticator({1: key(K1)}, 1)
        assert n.election._validate(advert_from(priority=255, signer=good)) is not None

    run(scenario, **auth({"1": K1}, 1))


def test_a_rotation_by_reconfiguration_keeps_verifying() -> None:
    async def scenario(n: Node) -> None:
        e = n.election
        old = Authenticator({1: key(K1)}, 1)
        assert e._validate(advert_from(signer=old)) is not None
        both = config.parse(
            {
                "node": {"name": "n", "interface": "lo", "address": str(NODE)},
                "election": {"vrid": 51, "advert_interval": 0.02, **auth({"1": K1, "2": K2}, 2)},
                "vip": {"addresses": [str(VIP)]},
            }
        )
        e.reconfigure_auth(both)
        new = Authenticator({2: key(K2)}, 2)
        assert e._validate(advert_from(signer=old)) is not None  # old key still known
        assert e._validate(advert_from(signer=new)) is not None
        assert e.auth is not None
        assert e.auth.active_key == 2
        only_new = replace(
            both,
            election=replace(
                both.election, auth=replace(both.election.auth, keys=both.election.auth.keys[1:])
            ),  # type: ignore[arg-type]
        )
        e.reconfigure_auth(only_new)
        assert e._validate(advert_from(signer=old)) is None
        assert rejected(n, "unknown_key") == 1

    run(scenario, **auth({"1": K1}, 1))
