"""The election survives failures on every send path, and is never left without a timer.

The election runs on a real event loop with its real timerfd and the real ``VrrpSocket``
and ``Announcer`` code; only what is beneath them is a stand-in: a UDP socket whose
``sendmsg``/``send`` can be made to fail as the kernel does (EPERM from an nftables drop
in the output hook), and a VIP manager whose netlink requests can be made to fail.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from vipcast import config
from vipcast.core.vrrp import codec
from vipcast.daemon import node as node_module
from vipcast.daemon import vips as vips_module
from vipcast.daemon.election import VIP_ADD_ATTEMPTS, VIP_FAULT_COOLDOWN, Election
from vipcast.daemon.events import EventBus
from vipcast.daemon.metrics import SEND_PATHS, Metrics
from vipcast.daemon.quietlog import QuietLogger
from vipcast.linux.announce import Announcer
from vipcast.linux.vrrp_socket import GROUP_V4, VrrpSocket

NODE = IPv4Address("127.0.0.1")  # node.address must be on the interface (lo)
VIP = IPv4Interface("198.18.0.100/24")
INTERVAL = 0.02  # advert interval (s): Master_Down_Interval 72 ms at priority 100


class Wire(socket.socket):
    """A UDP socket under the VRRP socket or the announcer: records, or fails with ``error``."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.error: int | None = None
        self.sent: list[bytes] = []

    def _out(self, data: bytes) -> int:
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        self.sent.append(data)
        return len(data)

    def sendmsg(self, buffers: Any, *_: Any) -> int:
        return self._out(b"".join(buffers))

    def send(self, data: Any, *_: Any) -> int:
        return self._out(bytes(data))


def vrrp_socket(wire: Wire) -> VrrpSocket:
    """The real VrrpSocket (send, error counting) over ``wire`` instead of a raw socket."""
    sock = VrrpSocket.__new__(VrrpSocket)
    sock.ifname, sock.version, sock.ifindex = "lo", 4, 1
    sock.unicast_peers, sock.source = (), NODE
    sock.send_errors, sock.last_error, sock.malformed = Counter(), "", 0
    sock._sock = wire
    return sock


def announcer(wire: Wire) -> Announcer:
    """The real Announcer (frames, error counting) over ``wire`` instead of AF_PACKET."""
    ann = Announcer.__new__(Announcer)
    ann.ifname, ann.mac = "lo", bytes.fromhex("020000000001")
    ann.failures, ann.last_error, ann._frames = Counter(), "", {}
    ann._sock = wire
    return ann


class FakeVips:
    """VipManager's interface; ``failures`` adds (or removes) fail before one succeeds."""

    def __init__(self, ifname: str, addresses: Any) -> None:
        self.held = False
        self.add_failures = 0
        self.remove_failures = 0
        self.error: BaseException = OSError(errno.ENOBUFS, "No buffer space available (netlink)")
        self.adds: list[float] = []  # when each add was tried (loop time)
        self.removes: list[float] = []

    def add(self) -> list[IPv4Interface]:
        self.adds.append(time.monotonic())
        if self.add_failures:
            self.add_failures -= 1
            raise self.error
        added, self.held = [] if self.held else [VIP], True
        return added

    def remove(self) -> list[IPv4Interface]:
        self.removes.append(time.monotonic())
        if self.remove_failures:
            self.remove_failures -= 1
            raise self.error
        removed, self.held = [VIP] if self.held else [], False
        return removed

    def present(self) -> set[IPv4Interface]:
        return {VIP} if self.held else set()

    def close(self) -> None:
        pass


class Node:
    """One election on stand-ins, in the running loop."""

    def __init__(self, **election: Any) -> None:
        cfg = config.parse(
            {
                "node": {"name": "n", "interface": "lo", "address": str(NODE)},
                "election": {"vrid": 51, "advert_interval": INTERVAL, **election},
                "vip": {"addresses": [str(VIP)], "garp_count": 2, "garp_interval": 0.005},
            }
        )
        self.metrics = Metrics()
        self.bus = EventBus()
        self.election = Election(cfg, self.bus, self.metrics)
        self.vips: FakeVips = self.election.vips  # type: ignore[assignment]
        self.wire, self.arp = Wire(), Wire()
        self.election.sock = vrrp_socket(self.wire)
        self.election.announcer = announcer(self.arp)

    @property
    def state(self) -> str:
        return self.election.router.state.value

    def errors(self, path: str) -> int:
        """The Prometheus counter, which must agree with ``status``."""
        value = self.metrics.registry.get_sample_value("vipcast_send_errors_total", {"path": path})
        assert value == self.election.status()["send_errors"][path]
        return int(value)

    def priorities_sent(self) -> list[int]:
        return [
            codec.decode_advert_untrusted(m, src=NODE, dst=GROUP_V4).priority
            for m in self.wire.sent
        ]


@pytest.fixture(autouse=True)
def fake_vip_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vips_module, "VipManager", FakeVips)  # every backend opens it there


def run(scenario: Callable[[Node], Awaitable[None]], **election: Any) -> None:
    async def main() -> None:
        node = Node(**election)
        try:
            await scenario(node)
        finally:
            await node.election.stop()

    asyncio.run(main())


async def until(condition: Callable[[], object], timeout: float = 3.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.002)


def test_every_send_path_is_counted_from_zero() -> None:
    async def scenario(n: Node) -> None:
        assert n.election.status()["send_errors"] == dict.fromkeys(SEND_PATHS, 0)
        assert set(SEND_PATHS) == {"advert", "announce", "vip_add", "vip_remove"}
        for path in SEND_PATHS:
            assert n.errors(path) == 0  # exported before anything failed

    run(scenario)


def test_a_takeover_whose_adverts_fail_with_eperm_still_adds_the_vip_and_keeps_its_timer() -> None:
    async def scenario(n: Node) -> None:
        n.wire.error = errno.EPERM  # an nftables drop in the output hook
        n.arp.error = errno.EPERM
        n.election.begin()
        await until(lambda: n.state == "MASTER", what="MASTER")
        assert n.vips.held, "the advert failing must not skip AddVips"
        assert n.election.transitions == 2  # INITIALIZE -> BACKUP -> MASTER, bookkept
        # the timer is re-armed: an advert is tried, and fails, every interval
        await until(lambda: n.errors("advert") >= 5, what="five failed adverts")
        assert n.election.sock is not None
        assert n.election.sock.send_errors["EPERM"] == n.errors("advert")
        assert n.errors("announce") >= 2  # the burst's GARP request and reply
        assert n.election.timer_alive()
        n.wire.error = None  # the rule is gone: adverts go out again
        await until(lambda: len(n.wire.sent) >= 3, what="adverts sent again")
        assert n.metrics.registry.get_sample_value("vipcast_adverts_sent_total") >= 3
        assert set(n.priorities_sent()) == {100}
        assert n.state == "MASTER"

    run(scenario)


def test_a_bug_in_one_action_skips_none_of_the_others() -> None:
    async def scenario(n: Node) -> None:
        n.vips.add_failures, n.vips.error = 1, RuntimeError("a bug in the VIP path")
        n.election.begin()
        await until(lambda: n.state == "MASTER", what="MASTER")
        assert n.election.status()["callback_errors"] == {"action": 1}
        assert n.wire.sent, "the takeover advert went out"
        assert n.arp.sent, "the announcement after the failed AddVips went out"
        assert n.election.transitions == 2
        await until(lambda: len(n.wire.sent) >= 4, what="adverts every interval")
        value = n.metrics.registry.get_sample_value(
            "vipcast_election_errors_total", {"callback": "action"}
        )
        assert value == 1

    run(scenario)


def test_a_bug_in_the_timer_callback_is_survived_and_the_timer_rearmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(n: Node) -> None:
        real = n.election.router.handle_timer
        calls = []

        def broken_once(now: float) -> Any:
            calls.append(now)
            if len(calls) == 1:
                raise RuntimeError("a bug in the timer path")
            return real(now)

        monkeypatch.setattr(n.election.router, "handle_timer", broken_once)
        n.election.begin()
        await until(lambda: n.state == "MASTER", what="MASTER despite the bug")
        await until(lambda: len(n.wire.sent) >= 3, what="adverts every interval")
        assert n.election.status()["callback_errors"] == {"timer": 1}
        assert n.election.timer_alive()

    run(scenario)


def test_a_vip_add_that_fails_once_is_retried_within_one_advert_interval() -> None:
    async def scenario(n: Node) -> None:
        n.vips.add_failures = 1
        n.election.begin()
        await until(lambda: n.vips.held, what="the VIP added on retry")
        assert n.state == "MASTER"
        assert n.errors("vip_add") == 1
        assert len(n.vips.adds) == 2
        gap = n.vips.adds[1] - n.vips.adds[0]
        assert INTERVAL * 0.9 <= gap < INTERVAL + 0.2
        frames = len(n.arp.sent)
        await until(lambda: len(n.arp.sent) > frames, what="an announcement after the retry")
        assert n.election.status()["vip_retry"] is None

    run(scenario)


def test_a_master_that_cannot_add_its_vip_enters_fault_then_tries_again_after_a_cooldown() -> None:
    async def scenario(n: Node) -> None:
        n.vips.add_failures = 10**6
        n.election.begin()
        await until(lambda: n.state == "MASTER", what="MASTER")
        assert n.election.status()["vip_retry"] == "add"
        await until(lambda: n.state == "FAULT", what="FAULT after repeated VIP add failures")
        assert len(n.vips.adds) == VIP_ADD_ATTEMPTS
        assert n.errors("vip_add") == VIP_ADD_ATTEMPTS
        assert n.vips.adds[-1] - n.vips.adds[0] < VIP_ADD_ATTEMPTS * INTERVAL + 0.2
        assert set(n.election.faults) == {"vip"}
        assert n.priorities_sent()[-1] == 0, "it resigned, so the peer takes over at once"
        assert [e.kind for e in n.bus.history].count("vip_fault") == 1
        # in FAULT nothing is added: the peer holds the address
        n.vips.add_failures = 0
        await asyncio.sleep(VIP_FAULT_COOLDOWN * INTERVAL / 2)
        assert len(n.vips.adds) == VIP_ADD_ATTEMPTS
        assert n.state == "FAULT"
        # the cooldown clears the fault; alone on the LAN it becomes master with the VIP
        await until(lambda: n.state == "MASTER" and n.vips.held, what="MASTER with the VIP")
        assert n.election.faults == {}

    run(scenario)


def test_a_vip_remove_that_fails_is_retried_every_interval_until_it_succeeds() -> None:
    async def scenario(n: Node) -> None:
        n.election.begin()
        await until(lambda: n.state == "MASTER" and n.vips.held, what="MASTER with the VIP")
        n.vips.remove_failures = 3
        n.election.add_fault("link", "link lo down")
        assert n.state == "FAULT"
        await until(lambda: not n.vips.held, what="the VIP removed on the fourth try")
        assert n.errors("vip_remove") == 3
        gaps = [b - a for a, b in zip(n.vips.removes, n.vips.removes[1:], strict=False)]
        assert len(gaps) == 3
        assert all(g >= INTERVAL * 0.9 for g in gaps)
        assert n.state == "FAULT"
        assert n.election.status()["vip_retry"] is None

    run(scenario)


def test_no_watchdog_ping_once_the_election_timer_is_stuck(tmp_path: Any) -> None:
    async def scenario(n: Node) -> None:
        with notify_socket(tmp_path) as received:
            n.election.begin()
            await until(lambda: n.state == "MASTER", what="MASTER")
            assert node_module.watchdog_tick(n.election)
            assert received() == [b"WATCHDOG=1"]
            assert n.election._timer is not None
            n.election._timer.cancel()  # as if a bug had left the timer unarmed
            await until(lambda: not n.election.timer_alive(), what="the timer seen stuck")
            assert not node_module.watchdog_tick(n.election)
            assert received() == []
            n.election.add_fault("link", "link lo down")  # FAULT needs no timer
            assert n.election.timer_alive()

    run(scenario)


@contextmanager
def notify_socket(tmp_path: Any) -> Iterator[Callable[[], list[bytes]]]:
    """$NOTIFY_SOCKET on a datagram socket of ours; yields a reader of what arrived."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)

    def received() -> list[bytes]:
        got = []
        while True:
            try:
                got.append(sock.recv(256))
            except BlockingIOError:
                return got

    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = path
    try:
        yield received
    finally:
        if old is None:
            del os.environ["NOTIFY_SOCKET"]
        else:
            os.environ["NOTIFY_SOCKET"] = old
        sock.close()


def test_quiet_logger_logs_a_traceback_once_then_summarises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet = QuietLogger(logging.getLogger("test.quiet.exc"), interval=3600)
    with caplog.at_level(logging.ERROR, "test.quiet.exc"):
        for _ in range(5):
            try:
                int("not a number")
            except ValueError:
                quiet.exception("bug", "unexpected error in %s", "timer")
    assert [r.getMessage() for r in caplog.records] == ["unexpected error in timer"]
    assert caplog.records[0].exc_info is not None
