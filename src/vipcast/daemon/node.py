"""One node: election, control socket and metrics, with a graceful lifecycle.

SIGTERM/SIGINT: resign and release the VIPs, stop the roles, let the STOPPED hook run
(at most ``SHUTDOWN_HOOK_TIMEOUT``), end what is left of the hooks, exit 0. SIGHUP:
reload the config; the priority, the notify hook and the ``[health]`` table change
live, the tracks and roles keep running with their state (failing, held, restarts),
and what needs a restart is listed in ``status`` as ``pending_restart``; a reload
that leaves the election settings unchanged causes no flap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from vipcast import config
from vipcast.config import Config
from vipcast.core import damping
from vipcast.core.vrrp.machine import State, Transition
from vipcast.daemon import scheduling, sdnotify, vips
from vipcast.daemon.control import ControlServer
from vipcast.daemon.dataplane.client import DataplaneClient
from vipcast.daemon.election import Election
from vipcast.daemon.events import EventBus
from vipcast.daemon.guard import Guard, daemon_lock
from vipcast.daemon.health import Health
from vipcast.daemon.metrics import Metrics
from vipcast.daemon.roles import Roles, run_notify
from vipcast.linux import procs
from vipcast.linux.lock import AlreadyRunningError
from vipcast.linux.privileges import require
from vipcast.quorum.service import EtcdElection

AnyElection = Election | EtcdElection

log = logging.getLogger("vipcast")
HANDOVER_ON_STOP_TIMEOUT = 5.0
SHUTDOWN_HOOK_TIMEOUT = 5.0  # the STOPPED hook's bound at shutdown (or notify_timeout)
HEALTH_SOURCES = ("track:", "role:")  # election.faults sources that health manages
LIVE_SETTINGS = (
    "election.priority",
    "election.auth",
    "cluster.auth",
    "health",
    "notify",
    "notify_timeout",
)
IGNORED_REASONS = ("not_leader", "implausible", "withdrawn", "wrong_relay", "fenced")  # FeedStats


class Node:
    def __init__(self, cfg: Config, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.bus = EventBus()
        self.metrics = Metrics()
        self.metrics.init_feeds([f.name for f in cfg.feeds], IGNORED_REASONS)
        self.election: AnyElection = (
            EtcdElection(cfg, self.bus, self.metrics)
            if cfg.election.backend == "etcd"
            else Election(cfg, self.bus, self.metrics)
        )
        self.control = ControlServer(
            cfg.node.control_socket,
            self.bus,
            {"status": self._status, "handover": self._handover},
        )
        self.stopping = asyncio.Event()
        pidfiles = procs.PidFiles(procs.pidfile_dir(cfg.node.control_socket))
        self.guard = Guard(
            cfg.node.interface,
            cfg.vip.addresses,
            self.bus,
            log.isEnabledFor(logging.DEBUG),
            roles_dir=pidfiles.directory if cfg.roles else None,
            route=vips.route_spec(cfg),
        )
        self.dataplane: DataplaneClient | None = None
        self._feed_totals: dict[tuple[str, str], int] = {}
        self.health = Health(cfg.tracks, self._health_changed, cfg.health.hold_time)
        self.roles = Roles(cfg.roles, self._critical_role_failed, pidfiles)
        self._background: set[asyncio.Task[None]] = set()
        self._hooks: set[procs.Group] = set()  # notify hooks under way
        self._recheck: asyncio.TimerHandle | None = None
        self.demoted: dict[str, str] = {}
        self.pending_restart: list[str] = []
        self.election.listeners.append(self._on_transition)

    async def start(self) -> None:
        require("CAP_NET_RAW", "CAP_NET_ADMIN", what="run the VRRP election")  # before any child
        await self.guard.start()  # before any VIP can be added: it removes them if we die
        self.election.remove_stale_vips()  # a killed run's, before anyone can see us up
        await self.roles.end_previous()  # what a killed daemon left: one copy, always
        await self.control.start()
        if self.cfg.metrics.listen:
            self.metrics.serve(*self.cfg.metrics.listen)
        if self.cfg.feeds:
            await self._start_dataplane()
        await self.election.start()
        self._apply_health()  # tracks start unknown: a block_promotion track blocks now
        self.health.start()
        self.bus.publish("started", f"node {self.cfg.node.name} started")

    # --- transitions, health, roles -----------------------------------------------

    def _on_transition(self, t: Transition) -> None:
        env = {
            "VIPCAST_STATE": t.new.value,
            "VIPCAST_NODE": self.cfg.node.name,
            "VIPCAST_REASON": t.reason,
        }
        self._spawn(self.roles.transition(t.new.value, env))
        if self.cfg.notify:
            self._spawn(
                run_notify(
                    self.cfg.notify, t.new.value, t.reason, self.cfg.notify_timeout, self._hooks
                )
            )
        if t.new is State.MASTER and self.demoted:
            self._report_all_demoted()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _health_changed(self) -> None:
        self._apply_health()
        self.bus.publish("health", "health changed", tracks=self.health.status())

    def _apply_health(self) -> None:
        """Priority and faults from the tracks and critical roles, holds included."""
        verdict = self.health.verdict()
        priority, faults = damping.election_inputs(
            verdict, self.cfg.election.priority, self.cfg.health.demote_to
        )
        was_demoted, self.demoted = self.demoted, verdict.demoted
        if self.demoted and not was_demoted:
            log.warning("demoted (%s)", "; ".join(self.demoted.values()))
        elif was_demoted and not self.demoted:
            log.info("no longer demoted")
        self.election.set_priority(priority)
        managed = [s for s in self.election.faults if s.startswith(HEALTH_SOURCES)]
        for source in managed:
            if source not in faults:
                self.election.remove_fault(source)
        for source, reason in faults.items():
            self.election.add_fault(source, reason)
        self._schedule_recheck(verdict.next_change)

    def _schedule_recheck(self, at: float | None) -> None:
        """Look again when the next hold ends."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if at is not None and not self.stopping.is_set():
            delay = max(0.0, at - time.monotonic()) + 0.001
            self._recheck = asyncio.get_running_loop().call_later(delay, self._health_changed)

    def _critical_role_failed(self, role: str, reason: str) -> None:
        hold = self.health.role_tripped(role, reason)
        log.error("%s: demoted for %.0f s so a peer takes over", reason, hold)
        self.bus.publish("role", reason)
        self._health_changed()

    def _report_all_demoted(self) -> None:
        """Master while demoted: every node that could be master is demoted too."""
        causes = "; ".join(self.demoted.values())
        message = f"every node is demoted: {self.cfg.node.name} keeps the VIP ({causes})"
        log.warning("%s", message)
        self.bus.publish("demoted", message, causes=dict(self.demoted))

    async def _start_dataplane(self) -> None:
        if self.config_path is None:
            raise ValueError("feeds need the configuration file's path for the data plane")
        node_id = self.cfg.node.node_id or int(self.election.primary) & 0xFFFF
        self.dataplane = DataplaneClient(
            self.config_path,
            node_id,
            str(self.election.primary),
            self.bus,
            self._on_stats,
            verbose=log.isEnabledFor(logging.DEBUG),
        )
        await self.dataplane.start()
        self.election.relay_listeners.append(self.dataplane.set_master)
        self.election.leader_listeners.append(self.dataplane.set_leader)
        self.dataplane.on_split = self.election.reannounce
        self.election.drain_hook = self.dataplane.drain
        self.election.closing_hook = self.dataplane.closing

    def _on_stats(self, stats: dict[str, Any]) -> None:
        """Turn the data plane's running totals into Prometheus counter increments."""
        ignored = self.metrics.envelopes_ignored
        for feed, counters in stats.get("feeds", {}).items():
            children = {name: metric.labels(feed) for name, metric in self.metrics.feed.items()}
            children["split_brains"] = self.metrics.split_brains.labels(feed)
            for reason in IGNORED_REASONS:
                children[reason] = ignored.labels(feed, reason)
            for name, child in children.items():
                self._advance(child, (feed, name), int(counters.get(name, 0)))
        for key, metric in (
            ("rejected", self.metrics.envelopes_rejected),
            ("rejected_nacks", self.metrics.nacks_rejected),
        ):
            for reason, total in stats.get(key, {}).items():
                self._advance(metric.labels(reason), (key, reason), int(total))

    def _advance(self, child: Any, key: tuple[str, str], total: int) -> None:
        """A counter child moved up to the data plane's running ``total``."""
        last = self._feed_totals.get(key, 0)
        if total > last:
            child.inc(total - last)
        self._feed_totals[key] = total

    async def stop(self) -> None:
        sdnotify.notify("STOPPING=1")
        try:
            await self.health.stop()
            self._schedule_recheck(None)
            if self.election.router.state is State.MASTER:
                await self._hand_over_before_stopping()
            log.info("stopping: resigning and releasing the VIPs")
            await self.election.stop()  # -> STOPPED: the roles stop, the hook starts
            await self.roles.stop()
            await self._finish_background()
        finally:
            if self.dataplane is not None:
                await self.dataplane.stop()
            await self.control.close()
            await self.guard.stop()

    async def _finish_background(self) -> None:
        """Let hooks (the STOPPED one) finish within a bound, then end their groups."""
        bound = min(self.cfg.notify_timeout, SHUTDOWN_HOOK_TIMEOUT)
        pending = set(self._background)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=bound)
        if pending:
            log.warning("stopping: ending %d notify hook(s) still running", len(self._hooks))
        for group in list(self._hooks):
            group.signal(signal.SIGKILL)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:  # nothing should be left; never wait forever
            task.cancel()

    def reload(self) -> None:
        if self.config_path is None:
            return
        try:
            new = config.load(self.config_path)
        except config.ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            return
        self._apply_reload(new)

    def _apply_reload(self, new: Config) -> None:
        """Apply what can change live; keep the tracks' and roles' state; name the rest.

        Live: the priority, ``[election.auth]``, the cluster keys (not turning them on or
        off), ``[health]``, ``notify``, ``notify_timeout``.
        """
        old = self.cfg
        self.pending_restart = restart_needed(old, new)
        if self.pending_restart:
            log.warning(
                "reload: %s changed; restart vipcast to apply", ", ".join(self.pending_restart)
            )
        keys_live = (old.cluster.auth is None) == (new.cluster.auth is None)
        election = replace(old.election, priority=new.election.priority, auth=new.election.auth)
        self.cfg = replace(
            old,
            election=election,
            cluster=replace(old.cluster, auth=new.cluster.auth) if keys_live else old.cluster,
            health=new.health,
            notify=new.notify,
            notify_timeout=new.notify_timeout,
        )
        self.election.cfg = self.cfg
        if self.dataplane is not None and keys_live and new.cluster.auth != old.cluster.auth:
            self.dataplane.reload()  # it reads the file again and swaps its keys
        if new.election.auth != old.election.auth:
            self.election.reconfigure_auth(self.cfg)
            log.info("reload: advert authentication now %s", _describe_auth(self.cfg))
        self.health.damping.set_hold_time(new.health.hold_time)
        self.election.restore_priority(new.election.priority)  # undoes a handover
        self._apply_health()  # the penalties and demotions still in force
        self.bus.publish("reloaded", "configuration reloaded")
        log.info("configuration reloaded (priority %d)", new.election.priority)

    async def _status(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": {
                "node": self.cfg.node.name,
                "interface": self.cfg.node.interface,
                **self.election.status(),
                "feeds": self._feed_status(),
                "roles": self.roles.status(),
                "tracks": self.health.status(),
                **self._health_status(),
                "pending_restart": self.pending_restart,
            }
        }

    def _health_status(self) -> dict[str, Any]:
        verdict = self.health.verdict()
        return {
            "demoted": dict(verdict.demoted),
            "all_demoted": bool(verdict.demoted) and self.election.router.state is State.MASTER,
            "held": dict(verdict.held),
            "hold_time": self.cfg.health.hold_time,
        }

    def _feed_status(self) -> dict[str, Any]:
        if self.dataplane is None:
            return {}
        stats = self.dataplane.stats
        feeds: dict[str, Any] = {
            name: {
                "session": stats.get("sessions", {}).get(name, 0),
                "delivering": stats.get("delivering", {}).get(name, 0),
                "term": stats.get("terms", {}).get(name, 0),  # the highest believed: fencing
                **counters,
            }
            for name, counters in stats.get("feeds", {}).items()
        }
        for key, name in (("rejected", "rejected_envelopes"), ("rejected_nacks", "rejected_nacks")):
            if stats.get(key):
                feeds[name] = stats[key]
        if stats.get("auth"):
            feeds["cluster_auth"] = stats["auth"]  # key ids and modes, as the data plane uses them
        return feeds

    async def _hand_over_before_stopping(self) -> None:
        """SIGTERM on the master: a planned handover first, so nothing is lost."""
        try:
            log.info("stopping: %s", await self.election.handover(HANDOVER_ON_STOP_TIMEOUT))
        except (RuntimeError, TimeoutError) as e:
            log.warning("handover before stopping incomplete: %s", e)

    async def _handover(self, request: dict[str, Any]) -> dict[str, Any]:
        wait = float(request.get("wait", 30.0))
        message = await self.election.handover(wait)
        self.bus.publish("handover", message)
        return {"message": message}


def _describe_auth(cfg: Config) -> str:
    a = cfg.election.auth
    if a is None:
        return "off"
    ids = ", ".join(str(k.id) for k in a.keys)
    return f"{a.mode}, signing with key {a.active_key}, keys {ids}"


def restart_needed(old: Config, new: Config) -> list[str]:
    """The settings that differ and cannot change live, as ``table`` or ``table.key``."""
    out = []
    for f in fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b or f.name in LIVE_SETTINGS:
            continue
        if f.name in {"election", "cluster"}:
            out += [
                f"{f.name}.{g.name}"
                for g in fields(a)
                if getattr(a, g.name) != getattr(b, g.name)
                and f"{f.name}.{g.name}" not in LIVE_SETTINGS
            ]
            if f.name == "cluster" and (a.auth is None) != (b.auth is None):
                out.append("cluster.auth (turned on or off)")
        else:
            out.append(f.name)
    return out


async def serve(cfg: Config, config_path: Path | None = None) -> int:
    """Run a node until SIGTERM or SIGINT; returns the exit status."""
    loop = asyncio.get_running_loop()
    scheduling.prefer_election()
    node = Node(cfg, config_path)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload)
    try:
        await node.start()
        sdnotify.notify("READY=1")
        watchdog = _start_watchdog(loop, node.election)
        await node.stopping.wait()
        if watchdog:
            watchdog.cancel()
    finally:
        await node.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0


def _start_watchdog(
    loop: asyncio.AbstractEventLoop, election: AnyElection
) -> asyncio.Task[None] | None:
    interval = sdnotify.watchdog_interval()
    if interval is None:
        return None

    async def ping() -> None:
        while True:
            watchdog_tick(election)
            await asyncio.sleep(interval)

    return loop.create_task(ping())


def watchdog_tick(election: AnyElection) -> bool:
    """Ping systemd's watchdog if the election's timer runs; True if it pinged.

    A loop that is blocked runs no ping at all; this also catches a loop that runs but
    whose election is stuck (its timer unarmed, or overdue: ``Election.timer_alive``).
    Without pings systemd kills the daemon after WatchdogSec and restarts it.
    """
    if election.timer_alive():
        return sdnotify.notify("WATCHDOG=1")
    log.error("election timer stuck (state %s): not pinging the watchdog", election.router.state)
    return False


def run(cfg: Config, config_path: Path | None = None) -> int:
    """Take the config's locks first (refused: nothing touched), then serve."""
    lock = daemon_lock(cfg)
    try:
        lock.acquire()
    except AlreadyRunningError as e:
        hint = "stop it first, or give this node its own control_socket and VRID"
        raise AlreadyRunningError(f"{e}; {hint}") from None
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(serve(cfg, config_path))
        return 0
    finally:
        lock.release()
