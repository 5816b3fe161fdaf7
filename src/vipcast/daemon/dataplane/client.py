"""The main process's side of the data plane: start it, tell it the role, read its reports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vipcast.daemon.events import EventBus

log = logging.getLogger("vipcast.dataplane")

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
DRAIN_TIMEOUT = 3.0


class DataplaneClient:
    """Supervises the data-plane process; ``set_master`` is a single non-blocking send."""

    def __init__(
        self,
        config_path: Path,
        node_id: int,
        source: str,
        bus: EventBus,
        on_stats: Callable[[dict[str, Any]], None],
        verbose: bool = False,
    ) -> None:
        self.config_path, self.node_id, self.source = config_path, node_id, source
        self.bus, self.on_stats, self.verbose = bus, on_stats, verbose
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.stats: dict[str, Any] = {}
        self.master = False
        self.term = 0  # the fencing term the relay stamps while master (0: VRRP)
        self.leader: str | None = None
        self.leader_term = 0
        self.on_split: Callable[[], None] | None = None  # the data plane found a split brain
        self._ready: asyncio.Event = asyncio.Event()
        self._drained: asyncio.Event = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        args = [
            sys.executable,
            "-m",
            "vipcast.daemon.dataplane",
            "--config",
            str(self.config_path),
            "--control-fd",
            str(theirs.fileno()),
            "--node-id",
            str(self.node_id),
            "--source",
            self.source,
        ]
        self.proc = subprocess.Popen(
            [*args, *(["-v"] if self.verbose else [])], pass_fds=(theirs.fileno(),)
        )
        theirs.close()
        self.sock = ours
        self._ready.clear()
        loop.add_reader(ours.fileno(), self._on_message)
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(f"the data plane did not start (exit {self.proc.poll()})") from None
        self._send({"op": "leader", "address": self.leader, "term": self.leader_term})
        if self.master:
            self._send({"op": "master", "value": True, "term": self.term})

    def set_master(self, master: bool, term: int = 0) -> None:
        """Relay (and reply) as master under the fencing ``term`` (etcd), or stop."""
        self.master, self.term = master, term
        self._send({"op": "master", "value": master, "term": term})

    def set_leader(self, address: str | None, term: int = 0) -> None:
        """The election sees ``address`` as master under ``term``: receivers follow its
        relay and fence lower terms."""
        self.leader, self.leader_term = address, term
        self._send({"op": "leader", "address": address, "term": term})

    def reload(self) -> None:
        """The config was reloaded: the data plane reads it again and applies new cluster keys.

        The message carries nothing secret; the data plane reads the file (and the key
        files) itself.
        """
        self._send({"op": "reload"})

    def closing(self) -> None:
        """A planned handover begins: receivers are told to wait for the end of session."""
        self._send({"op": "closing"})

    async def drain(self) -> None:
        """Until the relay has been idle a moment (traffic moved to the new master)."""
        self._drained.clear()
        self._send({"op": "drain"})
        try:
            await asyncio.wait_for(self._drained.wait(), DRAIN_TIMEOUT)
        except TimeoutError:
            log.warning("relay still busy after %.1fs of drain; releasing anyway", DRAIN_TIMEOUT)

    def _send(self, msg: dict[str, Any]) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send(json.dumps(msg).encode())
        except OSError as e:
            log.error("cannot reach the data plane: %s", e)

    def _on_message(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            if not data:
                self._lost()
                return
            self._handle(json.loads(data))

    def _handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ready":
            self._ready.set()
        elif op == "drained":
            self._drained.set()
        elif op == "stats":
            self.stats = msg
            self.on_stats(msg)
        elif op == "event":
            self.bus.publish(msg["kind"], msg["message"], **msg.get("data", {}))
            data = msg.get("data", {})
            healed = msg["kind"] == "gap" and data.get("reason") == "split"  # its end heard
            if (msg["kind"] == "split_brain" or healed) and self.on_split is not None:
                self.on_split()

    def _lost(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None
        if self._stopping:
            return
        code = self.proc.wait() if self.proc else None
        log.error("the data plane exited (%s); restarting it", code)
        self.bus.publish("dataplane", f"data plane exited ({code}); restarting")
        loop.call_later(1.0, lambda: loop.create_task(self._restart()))

    async def _restart(self) -> None:
        if not self._stopping:
            try:
                await self.start()
            except (RuntimeError, OSError) as e:
                log.error("data plane restart failed: %s", e)

    async def stop(self) -> None:
        self._stopping = True
        self._send({"op": "stop"})
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            self.proc.wait()
        if self.sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
