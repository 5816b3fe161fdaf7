"""keepalived as a peer in a test: its state read from its log, graceful and hard stops.

Builds on :mod:`tests.lab.keepalived` (config and launch). keepalived runs as a parent
process and a VRRP child. The child holds ``PR_SET_PDEATHSIG = SIGTERM``, so a SIGKILL
of the parent alone makes the child shut down *gracefully* (it resigns with a
priority-0 advert). A crash without resignation therefore kills the whole process
group at once (:meth:`KeepalivedPeer.kill`).

keepalived's own words are the oracle for its state: ``(VI_51) Entering MASTER STATE``,
``(VI_51) Invalid VRRPv3 checksum``, ``(VI_51) wrong version. Received 3 and expect 2``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from dataclasses import dataclass

from tests.lab.keepalived import config_path, keepalived_config, start_keepalived
from tests.lab.wait import wait_until
from vipcast.lab.process import NsProcess
from vipcast.lab.site import Host, Site

_ENTERING = re.compile(r"\) Entering ([A-Z]+) STATE")


@dataclass
class KeepalivedPeer:
    """One running keepalived in one lab host."""

    host: Host
    proc: NsProcess

    def log(self) -> str:
        return self.proc.output()

    def states(self) -> list[str]:
        """Every state keepalived said it entered, in order."""
        return _ENTERING.findall(self.log())

    def state(self) -> str | None:
        states = self.states()
        return states[-1] if states else None

    def count(self, text: str) -> int:
        """How many times ``text`` occurs in keepalived's log."""
        return self.log().count(text)

    def wait_state(self, state: str, timeout: float = 5) -> None:
        wait_until(
            lambda: self.state() == state, timeout, what=f"keepalived in {self.host.name} {state}"
        )

    def wait_log(self, text: str, timeout: float = 5) -> None:
        wait_until(
            lambda: text in self.log(), timeout, what=f"keepalived in {self.host.name}: {text!r}"
        )

    def terminate(self, timeout: float = 5) -> int:
        """SIGTERM: keepalived resigns (priority 0), removes its VIPs and exits."""
        self.proc.signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stats(self, timeout: float = 5) -> dict[str, int]:
        """keepalived's own counters (SIGUSR2 -> keepalived.stats), as "Section/Name": n.

        E.g. ``"Authentication Extension Errors/Invalid HMAC"``, ``"Advertisements/Received"``.
        """
        path = config_path(self.proc).parent / "keepalived.stats"
        before = path.stat().st_mtime_ns if path.exists() else 0
        path.unlink(missing_ok=True)
        self.proc.signal(signal.SIGUSR2)
        wait_until(
            lambda: path.exists() and "Priority Zero" in path.read_text(),
            timeout,
            what=f"keepalived.stats in {self.host.name} (after {before})",
        )
        return parse_stats(path.read_text())

    def reload(self, config: str) -> None:
        """Write a new configuration and SIGHUP keepalived (it reloads in place)."""
        config_path(self.proc).write_text(config)
        self.proc.signal(signal.SIGHUP)

    def kill(self, timeout: float = 5) -> int:
        """SIGKILL to the parent and its VRRP child at once: no resignation, VIPs left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the launcher starts a new session
        return self.proc.wait(timeout)


def parse_stats(text: str) -> dict[str, int]:
    """keepalived.stats' indented ``Name: n`` lines under their section heading."""
    found: dict[str, int] = {}
    section = ""
    for line in text.splitlines():
        name, sep, value = line.strip().partition(":")
        if not sep:
            continue
        if not value.strip():
            section = name
        elif value.strip().isdigit() and line.startswith("    "):
            found[f"{section}/{name}"] = int(value)
        elif value.strip().isdigit():
            found[name] = int(value)
    return found


def start_peer(
    site: Site,
    i: int,
    *,
    extra_globals: tuple[str, ...] = (),
    binary: str = "keepalived",
    **options: object,
) -> KeepalivedPeer:
    """keepalived in node ``i`` with ``keepalived_config(**options)`` plus ``extra_globals``.

    ``extra_globals`` are ``global_defs`` lines the launcher has no keyword for, e.g.
    ``"vrrp_garp_master_delay 0"``.
    """
    host = site.nodes[i - 1]
    config = with_globals(keepalived_config(**options), *extra_globals)  # type: ignore[arg-type]
    proc = start_keepalived(host, site.lab, config=config, binary=binary)
    peer = KeepalivedPeer(host, proc)
    wait_until(
        lambda: peer.state() is not None or proc.returncode is not None,
        5,
        what=f"keepalived in {host.name} started",
    )
    assert proc.returncode is None, peer.log()
    return peer


def with_globals(config: str, *lines: str) -> str:
    """``config`` with ``lines`` added at the top of its ``global_defs`` block."""
    if not lines:
        return config
    head, sep, tail = config.partition("global_defs {\n")
    if not sep:
        raise ValueError("config has no global_defs block")
    return head + sep + "".join(f"    {line}\n" for line in lines) + tail
