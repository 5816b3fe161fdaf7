"""The control socket within its limits: a real asyncio server in a thread, real clients."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from tests.lab.wait import wait_until
from vipcast.daemon import control
from vipcast.daemon.control import ControlServer, Limits
from vipcast.daemon.events import EventBus

FLOOD = 1100
STATUS_DEADLINE = 1.0  # s for one status answer during the flood
FD_MARGIN = 400  # descriptors for pytest itself and the server's own few
SPARE_FDS = 20  # what the out-of-descriptors server has beyond what it holds at start
# a ControlServer in its own process, RLIMIT_NOFILE a few descriptors above its needs
SCARCE_SERVER = """
import asyncio, logging, os, resource, sys
from vipcast.daemon.control import ControlServer
from vipcast.daemon.events import EventBus
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

async def status(request):
    return {"status": {"state": "MASTER"}}

async def main():
    server = ControlServer(sys.argv[1], EventBus(), {"status": status})
    await server.start()
    spare, (_, hard) = int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + spare, hard))
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


class Server:
    """A ControlServer on its own event loop in a thread, answering ``status``."""

    def __init__(self, path: Path, limits: Limits | None) -> None:
        self.path = str(path)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.bus = EventBus()
        handlers = {"status": self._status}
        self.server = ControlServer(self.path, self.bus, handlers, limits)
        self.call(self.server.start)

    async def _status(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"status": {"state": "MASTER"}}

    def call(self, coro: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro(), self.loop).result(10)

    def soon(self, fn: Callable[[], Any]) -> Any:
        done: Future[Any] = Future()
        self.loop.call_soon_threadsafe(lambda: done.set_result(fn()))
        return done.result(10)

    def close(self) -> None:
        self.call(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(limits: Limits | None = None) -> Server:
        servers.append(Server(tmp_path / "control.sock", limits))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def connect(path: str, timeout: float = 2.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def answer(sock: socket.socket) -> dict[str, Any]:
    with sock.makefile("rb") as f:
        return dict(json.loads(f.readline()))


def ask(path: str, payload: bytes) -> dict[str, Any]:
    with connect(path) as sock:
        sock.sendall(payload)
        return answer(sock)


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def descriptor_budget() -> Iterator[int]:
    """The soft RLIMIT_NOFILE for the flood's clients plus a daemon that keeps its cap.

    Client and server share this process: its budget is the flood plus a margin, so a
    server that kept every idle connection would run out of descriptors, as the
    tester's daemon did at its 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FLOOD + FD_MARGIN
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        pytest.skip(f"cannot set RLIMIT_NOFILE to {want} (hard limit {hard})")
    yield want
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_status_answers_while_1100_idle_connections_are_attempted(
    serve: Callable[..., Server], descriptor_budget: int, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    caplog.set_level(logging.INFO, logger="vipcast.daemon.control")
    idle: list[socket.socket] = []
    refused = 0

    def flood() -> None:
        nonlocal refused
        for _ in range(FLOOD):
            try:
                idle.append(connect(server.path, timeout=1.0))
            except OSError:
                refused += 1

    flooder = threading.Thread(target=flood)
    flooder.start()
    latencies = []
    try:
        while flooder.is_alive() or not latencies:
            start = time.monotonic()
            reply = control.request(server.path, "status", timeout=STATUS_DEADLINE)
            latencies.append(time.monotonic() - start)
            assert reply == {"ok": True, "status": {"state": "MASTER"}}
        flooder.join(30)
        assert len(idle) + refused == FLOOD
        assert server.soon(lambda: server.server.clients) <= Limits().connections
        reply = control.request(server.path, "status", timeout=STATUS_DEADLINE)
        assert reply["ok"] is True
    finally:
        for sock in idle:
            sock.close()
    assert max(latencies) < STATUS_DEADLINE
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "exhausted" in warnings[0].getMessage()


def test_a_client_that_sends_no_request_is_closed_after_the_idle_timeout(
    serve: Callable[..., Server],
) -> None:
    server = serve(Limits(idle_timeout=0.3))
    with connect(server.path) as sock:
        start = time.monotonic()
        assert closed_by_peer(sock)
        assert 0.25 < time.monotonic() - start < 1.5
    wait_until(lambda: server.soon(lambda: server.server.clients) == 0, 2, what="no client")


def test_an_oversized_request_gets_an_error(serve: Callable[..., Server]) -> None:
    server = serve()
    limit = Limits().request_bytes
    reply = ask(server.path, b'{"command": "status", "pad": "' + b"x" * (limit + 10) + b'"}\n')
    assert reply == {"ok": False, "error": f"request longer than {limit} bytes"}


@pytest.mark.parametrize("depth", [Limits().depth + 1, 20_000])
def test_a_deeply_nested_request_gets_an_error(serve: Callable[..., Server], depth: int) -> None:
    server = serve()
    nested = b"[" * depth + b"]" * depth
    reply = ask(server.path, b'{"command": "status", "x": ' + nested + b"}\n")
    assert reply == {"ok": False, "error": f"request nested deeper than {Limits().depth}"}
    assert ask(server.path, b'{"command": "status", "x": [[1]]}\n')["ok"] is True


def test_events_streams_outlive_the_idle_timeout_but_count_toward_the_cap(
    serve: Callable[..., Server],
) -> None:
    server = serve(Limits(connections=2, streams=2, idle_timeout=0.2))
    streams = [connect(server.path) for _ in range(2)]
    for s in streams:
        s.sendall(b'{"command": "events"}\n')
    wait_until(lambda: server.soon(lambda: server.server.clients) == 2, 2, what="two streams")
    time.sleep(0.5)  # the fault: longer than the idle timeout
    server.soon(lambda: server.bus.publish("test", "still here"))
    for s in streams:
        assert answer(s)["message"] == "still here"
    with connect(server.path) as third:  # every client busy: closed at once
        start = time.monotonic()
        assert closed_by_peer(third)
        assert time.monotonic() - start < 0.15
    for s in streams:
        s.close()


def test_events_streams_leave_room_for_commands(serve: Callable[..., Server]) -> None:
    server = serve(Limits(connections=4, streams=1))
    with connect(server.path) as stream:
        stream.sendall(b'{"command": "events"}\n')
        wait_until(lambda: server.soon(lambda: server.server.clients) == 1, 2, what="a stream")
        reply = ask(server.path, b'{"command": "events"}\n')
        assert reply == {"ok": False, "error": "too many events streams (at most 1)"}
        assert control.request(server.path, "status")["ok"] is True


def test_out_of_descriptors_the_server_makes_room_and_logs_once(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    argv = [sys.executable, "-c", SCARCE_SERVER, path, str(SPARE_FDS)]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    idle: list[socket.socket] = []
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "ready\n"
        for _ in range(10 * SPARE_FDS):  # far more than it has descriptors for
            idle.append(connect(path))
            if len(idle) % SPARE_FDS == 0:
                reply = control.request(path, "status", timeout=STATUS_DEADLINE)
                assert reply["ok"] is True
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        _, stderr = server.communicate(10)
    warnings = [line for line in stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, stderr
    assert "exhausted (Too many open files)" in warnings[0]
