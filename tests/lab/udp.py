"""UDP endpoints inside namespaces: a counting sink and a bounded sender."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from vipcast.lab.site import Host


@dataclass(frozen=True)
class Received:
    time: float
    data: bytes
    source: tuple[str, int]


class UdpSink:
    """Receives on host:port in a thread and keeps what arrives, with its source."""

    def __init__(self, host: Host, address: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = host.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((address, port))
        self.sock.settimeout(0.05)
        self.received: list[Received] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(Received(time.monotonic(), data, (src[0], src[1])))

    @property
    def payloads(self) -> list[bytes]:
        return [r.data for r in list(self.received)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def send_numbered(
    host: Host, dst: tuple[str, int], count: int, *, rate: float, src_port: int = 0
) -> list[bytes]:
    """Send ``count`` datagrams b"seq=N" at ``rate`` per second; bounded in count and time.

    The socket is of ``dst``'s family (IPv6 when its address has a colon).
    """
    v6 = ":" in dst[0]
    sock = host.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("::" if v6 else "0.0.0.0", src_port))
    sent, start = [], time.monotonic()
    try:
        for i in range(count):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            payload = b"seq=%d" % i
            sock.sendto(payload, dst)
            sent.append(payload)
    finally:
        sock.close()
    return sent
