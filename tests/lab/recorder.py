"""What the checker judges, recorded: apps, the sender, events, state and VIP samples.

Two programs, each run as its own process inside a namespace::

    python -m tests.lab.recorder app PORT --out FILE [--reply OUTBOUND_PORT --name NODE]
    python -m tests.lab.recorder send HOST PORT --count N --rate R --out FILE [--replies]

The app decodes each one-record envelope the node delivers and keeps
[session, seq, number, arrival monotonic time, term, relay's ingress Unix ns]; with
``--reply`` it answers every ``--reply-every``-th number as a hot-standby app does (each
node's app answers; only one answer may leave): through the feed's outbound port to the
request's sender (``vipcast.Sender``, naming the request's session and term, or with
``--unnamed`` neither), with the request's number and its node's name. The sender
numbers its payloads 0..N-1 and keeps, every ``MARK_EVERY`` numbers, the time just
before it sent that number; with ``--replies`` it also keeps every reply it gets, as
[number, answering node, source address, source port, arrival time] (read on its own
socket, and for ``REPLY_LINGER`` s after the last send unless stopped). Both write JSON
on SIGTERM (the sender also when it is done).

In the test process: :class:`EventsRecorder` (a thread reading a node's ``events``
stream, reconnecting after a restart) and :class:`Sampler` (threads sampling every
node's status, ``ip -json addr`` and the router's ARP entry for the VIP).
``time.monotonic()`` is one clock for every namespace on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NUMBER = struct.Struct("!Q")
PAYLOAD_SIZE = 64
MARK_EVERY = 20
PACE = 0.001  # the sender's pacing tick
SAMPLE_INTERVAL = 0.02
STATUS_TIMEOUT = 0.2
RECONNECT_INTERVAL = 0.05
REPLY_LINGER = 1.0  # s the sender keeps reading replies after its last send
REPLY_EVERY = 4  # by default the app answers numbers divisible by this


# ---------------------------------------------------------------- the programs


def _on_sigterm() -> list[int]:
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    return stop


def app(
    port: int,
    out: Path,
    reply: int | None = None,
    name: str = "",
    every: int = REPLY_EVERY,
    named: bool = True,
) -> None:
    from vipcast.api import Sender
    from vipcast.core import envelope as env

    answer = None if reply is None else Sender(("127.0.0.1", reply))
    tag = name.encode()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.05)
    records: list[list[Any]] = []
    bad = 0
    stop = _on_sigterm()
    out.with_suffix(".ready").write_text("ready")
    while not stop:
        try:
            data = sock.recv(65535)
        except (TimeoutError, InterruptedError):
            continue
        now = time.monotonic()
        try:
            msg = env.decode_message_untrusted(data)
        except env.BadEnvelope:
            bad += 1
            continue
        if not isinstance(msg, env.Data):
            bad += 1
            continue
        for i, d in enumerate(msg.datagrams):
            number = NUMBER.unpack_from(d.payload)[0] if len(d.payload) >= NUMBER.size else -1
            records.append([msg.session, msg.first_seq + i, number, now, msg.term, d.ingress_ns])
            if answer is not None and number >= 0 and number % every == 0:
                with contextlib.suppress(OSError):  # a daemon restarting: no outbound port
                    answer.send(
                        NUMBER.pack(number) + tag,
                        d.src,
                        term=msg.term if named else 0,
                        session=msg.session if named else 0,
                    )
    out.write_text(json.dumps({"records": records, "undecodable": bad}))


def send(host: str, port: int, count: int, rate: float, out: Path, replies: bool = False) -> None:
    """Numbers 0..count-1 at ``rate``/s, paced per millisecond; bounded in count."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    answered: list[list[Any]] = []
    pad = bytes(PAYLOAD_SIZE - NUMBER.size)
    marks: list[list[float]] = []
    stop = _on_sigterm()
    start, i = time.monotonic(), 0
    while i < count and not stop:
        due = min(count, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            if i % MARK_EVERY == 0:
                marks.append([i, time.monotonic()])
            with contextlib.suppress(BlockingIOError, OSError):
                sock.sendto(NUMBER.pack(i) + pad, (host, port))  # a dead route is a fault
            i += 1
        time.sleep(PACE)
        if replies:
            _read_replies(sock, answered)
    end = time.monotonic()
    while replies and not stop and time.monotonic() < end + REPLY_LINGER:
        time.sleep(PACE)
        _read_replies(sock, answered)
    result = {"count": i, "marks": marks, "end": end, "replies": answered}
    out.write_text(json.dumps(result))


def _read_replies(sock: socket.socket, answered: list[list[Any]]) -> None:
    """Keep the replies waiting: [number, node, source address, source port, arrival]."""
    while True:
        try:
            data, (src, sport) = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # an ICMP error from an earlier send: nothing to keep
        if len(data) >= NUMBER.size:
            node = data[NUMBER.size :].decode(errors="replace")
            answered.append([NUMBER.unpack_from(data)[0], node, src, sport, time.monotonic()])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["app", "send"])
    parser.add_argument("args", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--reply", type=int, help="app: answer through this outbound port")
    parser.add_argument("--name", default="", help="app: its node, carried in its answers")
    parser.add_argument("--reply-every", type=int, default=REPLY_EVERY, help="app")
    parser.add_argument("--unnamed", action="store_true", help="app: name no request")
    parser.add_argument("--replies", action="store_true", help="send: count the replies")
    a = parser.parse_args()
    if a.mode == "app":
        app(int(a.args[0]), a.out, a.reply, a.name, a.reply_every, not a.unnamed)
    else:
        send(a.args[0], int(a.args[1]), a.count, a.rate, a.out, a.replies)
    return 0


# ---------------------------------------------------------------- events


class EventsRecorder:
    """Every event a node publishes, with its monotonic time, across restarts.

    On each (re)connection the daemon replays its recent history first: events already
    kept are recognised by (seq, wall time) and skipped. When the replay does not reach
    back to what was last kept (the daemon's history rolled over, or we were cut off for
    falling behind), the loss is written to ``problems``: the run cannot be judged there.
    """

    def __init__(self, name: str, path: Callable[[], str]) -> None:
        self.name, self._path = name, path
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._seen: set[tuple[int, float]] = set()
        self._stop = threading.Event()
        self._offset = time.time() - time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"events-{name}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                self._read(self._path())
            self._stop.wait(RECONNECT_INTERVAL)

    def _read(self, path: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.1)
            sock.connect(path)
            sock.sendall(b'{"command": "events"}\n')
            buf, first = b"", True
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._keep(json.loads(line), first)
                    first = False

    def _keep(self, event: dict[str, Any], first: bool) -> None:
        key = (int(event.get("seq", 0)), float(event.get("time", 0.0)))
        if key in self._seen:
            return
        if first:
            self._check_continuity(key)
        self._seen.add(key)
        self.events.append({**event, "at": key[1] - self._offset})

    def _check_continuity(self, key: tuple[int, float]) -> None:
        """The first event of a connection: does it follow what was kept before?"""
        seq, wall = key
        last = max(self._seen, key=lambda k: k[1], default=None)
        same_daemon = last is not None and seq > last[0]
        expected = last[0] + 1 if same_daemon and last is not None else 1
        if seq > expected:
            self.problems.append(
                f"events recorder missed events {expected}..{seq - 1} of a daemon "
                f"(first kept at wall time {wall:.3f})"
            )

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("kind") == kind]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


# ---------------------------------------------------------------- samples


def _ip_json(ns: str, *args: str) -> Any:
    out = subprocess.run(
        ["ip", "-n", ns, "-json", *args], capture_output=True, text=True, check=False, timeout=2
    ).stdout
    return json.loads(out or "[]")


def holds(ns: str, vip: str, ifname: str = "eth0") -> bool:
    links = _ip_json(ns, "addr", "show", "dev", ifname)
    return any(a.get("local") == vip for link in links for a in link.get("addr_info", []))


def arp_mac(ns: str, address: str) -> str | None:
    for entry in _ip_json(ns, "neigh", "show", "to", address):
        if entry.get("dst") == address and "lladdr" in entry:
            return str(entry["lladdr"])
    return None


class Sampler:
    """Every ~20 ms: each node's state (control socket), who holds the VIP, the router's ARP.

    ``nodes`` maps a node's name to a callable giving its control socket path and to its
    namespace (a restart replaces the daemon, not the namespace). Each node's status is
    read by its own thread, so a frozen daemon delays no other sample.
    """

    def __init__(
        self, nodes: dict[str, tuple[Callable[[], str], str]], router_ns: str, vip: str
    ) -> None:
        self.nodes, self.router_ns, self.vip = nodes, router_ns, vip
        self.status: list[tuple[float, str, str | None]] = []
        self.addrs: list[tuple[float, frozenset[str]]] = []
        self.arp: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._status_loop, args=(n, p), daemon=True)
            for n, (p, _) in nodes.items()
        ]
        self._threads.append(threading.Thread(target=self._addr_loop, daemon=True))
        self._threads.append(threading.Thread(target=self._arp_loop, daemon=True))
        for t in self._threads:
            t.start()

    def _status_loop(self, name: str, path: Callable[[], str]) -> None:
        from vipcast.daemon import control

        while not self._stop.is_set():
            state: str | None = None
            with contextlib.suppress(OSError, ValueError, KeyError):
                answer = control.request(path(), "status", timeout=STATUS_TIMEOUT)
                state = str(answer["status"]["state"])
            self.status.append((time.monotonic(), name, state))
            self._stop.wait(SAMPLE_INTERVAL)

    def _addr_loop(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
                holders = frozenset(n for n, (_, ns) in self.nodes.items() if holds(ns, self.vip))
                self.addrs.append((at, holders))
            self._stop.wait(SAMPLE_INTERVAL)

    def _arp_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
                mac = arp_mac(self.router_ns, self.vip)
                self.arp.append((time.monotonic(), mac))
            self._stop.wait(SAMPLE_INTERVAL)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(3)


if __name__ == "__main__":
    sys.exit(main())
