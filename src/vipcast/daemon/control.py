"""The local control socket: one JSON object per line, in both directions.

Requests: ``{"command": "status"}``, ``{"command": "events"}`` (a stream: the recent
history, then each new event), ``{"command": "handover"}``. Every answer carries
``"ok"``; errors carry ``"error"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from vipcast.daemon.events import EventBus

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024


class ControlServer:
    def __init__(self, path: str, bus: EventBus, handlers: dict[str, Handler]) -> None:
        self.path = Path(path)
        self.bus = bus
        self.handlers = handlers
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_REQUEST
        )
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        self.bus.close_subscribers()  # ends every events stream cleanly
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request.get("command") == "events":
                await self._stream_events(writer)
            else:
                await _write(writer, await self._dispatch(request))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        handler = self.handlers.get(str(request.get("command")))
        if handler is None:
            return {"ok": False, "error": f"unknown command {request.get('command')!r}"}
        try:
            return {"ok": True, **await handler(request)}
        except Exception as e:  # a bad request must never take the daemon down
            log.exception("control command %r failed", request.get("command"))
            return {"ok": False, "error": str(e)}

    async def _stream_events(self, writer: asyncio.StreamWriter) -> None:
        queue = self.bus.subscribe()
        try:
            for past in list(self.bus.history):
                await _write(writer, past.to_json())
            while (event := await queue.get()) is not None:
                await _write(writer, event.to_json())
        finally:
            self.bus.unsubscribe(queue)


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        line = await reader.readline()
        request = json.loads(line or b"{}")
    except (ValueError, asyncio.LimitOverrunError):
        return {"command": None}
    return request if isinstance(request, dict) else {"command": None}


async def _write(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(json.dumps(obj, default=str).encode() + b"\n")
    await writer.drain()


# --- client side (the CLI) ----------------------------------------------------


def request(path: str, command: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one request to a running daemon and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
        with sock.makefile("rb") as f:
            answer = json.loads(f.readline() or b"{}")
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}


def stream(path: str, command: str = "events") -> Iterator[dict[str, Any]]:
    """Yield each JSON line a daemon streams, until it closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        with sock.makefile("rb") as f:
            for line in f:
                yield json.loads(line)
