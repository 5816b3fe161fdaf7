"""Frame capture: an AF_PACKET socket opened inside a namespace, read by a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vipcast.lab.site import Host

ETH_P_ALL = 0x0003


@dataclass(frozen=True)
class Frame:
    time: float  # time.monotonic() when read
    data: bytes

    @property
    def ethertype(self) -> int:
        return int.from_bytes(self.data[12:14], "big")


class Capture:
    """Collects every frame seen on one interface of a host until closed."""

    def __init__(self, host: Host, ifname: str = "eth0") -> None:
        self.sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.05)
        self.frames: list[Frame] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.frames.append(Frame(time.monotonic(), data))

    def matching(self, predicate: Callable[[Frame], bool]) -> list[Frame]:
        return [f for f in list(self.frames) if predicate(f)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
