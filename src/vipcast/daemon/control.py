"""The local control socket: one JSON object per line, in both directions.

Requests: ``{"command": "status"}``, ``{"command": "events"}`` (a stream: the recent
history, then each new event), ``{"command": "handover"}``. Every answer carries
``"ok"``; errors carry ``"error"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vipcast.daemon.events import EventBus
from vipcast.daemon.quietlog import QuietLogger

log = logging.getLogger(__name__)
quiet = QuietLogger(log)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
ACCEPT_BATCH = 16  # accepts per wake-up: requests already in are read in between
ACCEPT_PAUSE = 0.1  # s without accepting when out of descriptors and nobody can go
BACKLOG = 512
RECV_CHUNK = 4096
CONNECT_TIMEOUT = 5.0  # s for a client to get through a full backlog
CONNECT_RETRY = 0.005  # s between its tries
# descriptors or memory exhausted: a reason to make room, never to log each time
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class Limits:
    """What one client may cost the daemon."""

    connections: int = 64  # at once, events streams included
    streams: int = 32  # events streams among them: the rest stay free for commands
    idle_timeout: float = 5.0  # s to send one complete request line
    write_timeout: float = 5.0  # s a client may take to make room for what we write
    request_bytes: int = 64 * 1024
    depth: int = 16  # nesting of JSON arrays and objects in a request


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    task: asyncio.Task[None] | None = None
    started: bool = False  # its task runs (and so will close the socket)
    waiting: bool = True  # no complete request yet: the first to go when it is full
    streaming: bool = False


class ControlServer:
    """Serves the control socket within :class:`Limits`.

    When the connection cap is reached (or accept fails for want of descriptors), the
    oldest client still waiting for its request is closed to make room: an idle flood
    delays nobody who sends a request at once, as the CLI does. With every client busy
    (streams, running commands) a new connection is closed at once. Each episode of
    exhaustion is logged once, with a count at its end.
    """

    def __init__(
        self,
        path: str,
        bus: EventBus,
        handlers: dict[str, Handler],
        limits: Limits | None = None,
    ) -> None:
        self.path = Path(path)
        self.bus = bus
        self.handlers = handlers
        self.limits = limits or Limits()
        self._listener: socket.socket | None = None
        self._clients: dict[_Client, None] = {}  # insertion order: oldest first
        self._closed_early: int | None = None  # in an episode of exhaustion: closed so far

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._listener = _listen(self.path)
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    async def close(self) -> None:
        self.bus.close_subscribers()  # ends every events stream cleanly
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        tasks = [c.task for c in self._clients if c.task is not None]
        for client in list(self._clients):
            self._drop(client)
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @property
    def clients(self) -> int:
        return len(self._clients)

    # --- admission ------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._accept_failed(e)
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        if len(self._clients) >= self.limits.connections and not self._make_room():
            sock.close()  # everyone is busy: this one goes at once
            self._count_closed()
            return
        sock.setblocking(False)
        client = _Client(sock)
        self._clients[client] = None
        client.task = asyncio.get_running_loop().create_task(self._serve(client))

    def _make_room(self) -> bool:
        """Close the oldest client still waiting for its request; False: none is."""
        oldest = next((c for c in self._clients if c.waiting), None)
        self._exhausted(f"{self.limits.connections} connections")
        if oldest is None:
            return False
        self._drop(oldest)
        self._count_closed()
        return True

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client, None)
        if client.task is not None:
            client.task.cancel()  # once started, its finally closes the socket
        if not client.started:
            client.sock.close()

    def _count_closed(self) -> None:
        self._closed_early = (self._closed_early or 0) + 1

    def _accept_failed(self, error: OSError) -> None:
        """Out of descriptors: make room (or pause), and try again next loop round."""
        if error.errno not in EXHAUSTED:
            quiet.warning("accept", "control socket: accept failed: %s", error)
            return
        self._exhausted(error.strerror or str(error))
        made_room = self._make_room()
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._listener.fileno())
        loop.call_later(0 if made_room else ACCEPT_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    def _exhausted(self, what: str) -> None:
        """The start of an episode is logged (rate-limited); what it closes is counted."""
        if self._closed_early is None:
            self._closed_early = 0
            quiet.warning(
                "exhausted",
                "control socket exhausted (%s): closing idle clients first, "
                "new ones while all are busy",
                what,
            )

    def _left(self, client: _Client) -> None:
        self._clients.pop(client, None)
        if self._closed_early is not None and len(self._clients) < self.limits.connections // 2:
            log.info(
                "control socket recovered: %d connections were closed early",
                self._closed_early,
            )
            self._closed_early = None

    # --- one client -----------------------------------------------------------------

    async def _serve(self, client: _Client) -> None:
        client.started = True
        try:
            request = await self._read_request(client.sock)
            client.waiting = False
            if request.get("command") == "events":
                await self._events(client)
            else:
                await self._send(client.sock, await self._dispatch(request))
        except (TimeoutError, OSError):  # idle, slow reader, hung up
            pass
        finally:
            client.sock.close()
            self._left(client)

    async def _read_request(self, sock: socket.socket) -> dict[str, Any]:
        """The first line, within the idle timeout; a bad one is an error to answer."""
        loop = asyncio.get_running_loop()
        data = bytearray()
        async with asyncio.timeout(self.limits.idle_timeout):
            while b"\n" not in data and len(data) <= self.limits.request_bytes:
                chunk = await loop.sock_recv(sock, RECV_CHUNK)
                if not chunk:
                    break
                data += chunk
        line = bytes(data).partition(b"\n")[0]
        if len(line) > self.limits.request_bytes:
            return _bad(f"request longer than {self.limits.request_bytes} bytes")
        return _parse(line, self.limits.depth)

    async def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        if "error" in request:
            return {"ok": False, "error": request["error"]}
        handler = self.handlers.get(str(request.get("command")))
        if handler is None:
            return {"ok": False, "error": f"unknown command {request.get('command')!r}"}
        try:
            return {"ok": True, **await handler(request)}
        except RefusedError as e:  # an answer, not a fault: no traceback
            log.info("control command %r refused: %s", request.get("command"), e)
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bad request must never take the daemon down
            log.exception("control command %r failed", request.get("command"))
            return {"ok": False, "error": str(e)}

    async def _events(self, client: _Client) -> None:
        streams = sum(1 for c in self._clients if c.streaming)
        if streams >= self.limits.streams:
            error = f"too many events streams (at most {self.limits.streams})"
            await self._send(client.sock, {"ok": False, "error": error})
            return
        client.streaming = True  # exempt from the idle timeout from now on
        queue = self.bus.subscribe()
        try:
            for past in list(self.bus.history):
                await self._send(client.sock, past.to_json())
            while (event := await queue.get()) is not None:
                await self._send(client.sock, event.to_json())
        finally:
            self.bus.unsubscribe(queue)

    async def _send(self, sock: socket.socket, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, default=str).encode() + b"\n"
        async with asyncio.timeout(self.limits.write_timeout):
            await asyncio.get_running_loop().sock_sendall(sock, data)


class RefusedError(RuntimeError):
    """A command this node declines in its present state (a handover asked of a backup)."""


def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o660)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _parse(line: bytes, max_depth: int) -> dict[str, Any]:
    nested = _bad(f"request nested deeper than {max_depth}")
    try:
        request = json.loads(line or b"{}")
    except RecursionError:
        return nested
    except ValueError:
        return _bad("request is not JSON")
    if not isinstance(request, dict):
        return _bad("request is not a JSON object")
    return nested if _depth(request) > max_depth else request


def _depth(obj: Any) -> int:
    """How deep arrays and objects nest in ``obj`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _bad(error: str) -> dict[str, Any]:
    return {"command": None, "error": error}


# --- client side (the CLI) ----------------------------------------------------


def request(path: str, command: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one request to a running daemon and return its answer."""
    with _connect(path, timeout) as sock:
        sock.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
        with sock.makefile("rb") as f:
            answer = json.loads(f.readline() or b"{}")
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}


def stream(path: str, command: str = "events") -> Iterator[dict[str, Any]]:
    """Yield each JSON line a daemon streams, until it closes the connection."""
    with _connect(path, CONNECT_TIMEOUT) as sock:
        sock.settimeout(None)
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        with sock.makefile("rb") as f:
            for line in f:
                yield json.loads(line)


def _connect(path: str, timeout: float) -> socket.socket:
    """Connected within ``timeout``, also while a flood of others fills the backlog.

    A full backlog makes a unix socket's connect fail at once (EAGAIN) rather than
    wait, so it is tried again until the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(CONNECT_RETRY)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
