"""The etcd election service: core/lease driven by the etcd adapter, the VIPs on netlink.

The same outward interface the Node uses of :class:`vipcast.daemon.election.Election`
(``listeners``, ``relay_listeners``, ``leader_listeners``, ``add_fault``, ``handover``,
``status()``...), so the data plane, roles and health tracks work unchanged. Leading
means holding the VIPs and relaying; :meth:`Leadership.is_leader` decides, and a
ticker every ``TICK`` seconds checks the lease's safe time, so the stop comes at most
``TICK`` after ``safe_until`` (inside ``etcd.stop_margin``; config requires it larger).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from vipcast.config import Config, IPAddress
from vipcast.core.lease import Leadership, LeaseParams, Step
from vipcast.core.vrrp.machine import State, Transition
from vipcast.daemon.control import RefusedError
from vipcast.daemon.election import vrrp_source
from vipcast.daemon.events import EventBus
from vipcast.daemon.metrics import Metrics
from vipcast.daemon.quietlog import QuietLogger
from vipcast.daemon.vips import (
    VipErrors,
    Vips,
    announces_by_arp,
    for_config,
    withdraw_routes_first,
)
from vipcast.linux.announce import Announcer
from vipcast.linux.vip import LinkDown, LinkUp, NetlinkWatcher, VipRemoved
from vipcast.quorum.etcd import EtcdStore, Holder, KeyWatch, StoreError

log = logging.getLogger("vipcast.etcd")
quiet = QuietLogger(log)
TICK = 0.02  # s between checks of the lease's safe time
HANDOVER_HOLD_OFF = 2  # lease TTLs a node that handed over waits before campaigning again


class EtcdElection:
    def __init__(self, cfg: Config, bus: EventBus, metrics: Metrics) -> None:
        assert cfg.etcd is not None
        self.cfg = cfg
        self.bus = bus
        self.metrics = metrics
        e = cfg.etcd
        self.listeners: list[Callable[[Transition], None]] = []
        # (relaying?, the term it is under) and (who leads, under which term): the term
        # fences the data plane (docs/protocol.md, "Fencing")
        self.relay_listeners: list[Callable[[bool, int], None]] = []
        self.leader_listeners: list[Callable[[str | None, int], None]] = []
        self.drain_hook: Callable[[], Awaitable[None]] | None = None
        self.closing_hook: Callable[[], None] | None = None
        self.primary: IPAddress = vrrp_source(cfg)
        params = LeaseParams(e.lease_ttl, e.renew_every, e.max_drift, e.stop_margin)
        self.router = Leadership(params, str(self.primary))  # `router.state` as the VRRP one
        self.store = EtcdStore(e)
        self.watch = KeyWatch(e, self._watch_saw_change, self._watch_failed)
        self.vips: Vips = for_config(cfg)  # on the interface, or as host routes
        self.announcer: Announcer | None = None
        self.watcher: NetlinkWatcher | None = None  # ARP mode: the VIPs and the link
        self.handed_over = False
        self.transitions = 0
        self.errors: dict[str, int] = {}
        self._holding = False
        self._draining = False
        self._leader: tuple[str | None, int] = (None, 0)
        self._loop = asyncio.get_event_loop()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    @property
    def faults(self) -> dict[str, str]:
        return self.router.faults

    # --- lifecycle -------------------------------------------------------------------

    def remove_stale_vips(self) -> None:
        """Remove a VIP left by a run killed with its guard: we start as a follower."""
        self.vips.remove()

    async def start(self) -> None:
        if announces_by_arp(self.cfg):  # route mode: the host route is the announcement
            self.announcer = Announcer(self.cfg.node.interface)
            self.watcher = NetlinkWatcher(self.cfg.node.interface, self.cfg.vip.addresses)
            self._loop.add_reader(self.watcher.fileno(), self._on_netlink)
        self._apply(self.router.start(self._loop.time()))
        self._tasks = [
            self._loop.create_task(self._requests()),
            self._loop.create_task(self._ticker()),
        ]
        self.watch.start()

    async def stop(self) -> None:
        self.watch.stop()
        for task in self._tasks:
            task.cancel()
        lease = self.router.lease
        self._apply(self.router.stop(self._loop.time()))
        self._release()
        if lease is not None:  # resign: the next leader need not wait for the TTL
            with contextlib.suppress(StoreError):
                await asyncio.wait_for(
                    asyncio.to_thread(self.store.revoke, lease), self.store.cfg.timeout
                )
        if self.announcer is not None:
            self.announcer.close()
        if self.watcher is not None:
            self._loop.remove_reader(self.watcher.fileno())
            self.watcher.close()
        self.vips.close()

    # --- the request loop: one at a time, each bounded ---------------------------------

    async def _requests(self) -> None:
        while True:
            now = self._loop.time()
            step = self.router.due(now)
            if step is None:
                self._wake.clear()
                delay = max(0.0, min(self.router.next_time() - now, 1.0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            await self._request(step)

    async def _request(self, step: Step) -> None:
        sent = self._loop.time()
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(self._call, step), self.store.cfg.timeout
            )
        except (StoreError, TimeoutError) as e:
            self.errors[step.value] = self.errors.get(step.value, 0) + 1
            quiet.warning(
                f"etcd:{step.value}", "etcd %s failed: %s", step.value, str(e) or "timeout"
            )
            self._apply(self.router.failed(step, self._loop.time()))
            return
        except Exception:
            quiet.exception(f"etcd:unexpected:{step.value}", "etcd %s: unexpected", step.value)
            self._apply(self.router.failed(step, self._loop.time()))
            return
        self._apply(self._feed(step, result, sent, self._loop.time()))

    # --- netlink (ARP mode): the link, and a VIP removed behind our back --------------------

    def _on_netlink(self) -> None:
        assert self.watcher is not None
        try:
            for event in self.watcher.read_events():
                if isinstance(event, LinkDown):
                    self.add_fault("link", f"link {event.ifname} down")
                elif isinstance(event, LinkUp):
                    self.remove_fault("link")
                elif isinstance(event, VipRemoved) and self._holding and not self._draining:
                    self._restore_vip(event)
        except Exception:
            quiet.exception("etcd:netlink", "etcd election netlink: unexpected")

    def _restore_vip(self, event: VipRemoved) -> None:
        log.warning("VIP %s was removed behind our back: restoring it", event.address)
        try:
            self.vips.add()
        except VipErrors as e:
            quiet.warning("etcd:vip_restore", "VIP not restored: %s", e)
            return
        self.metrics.vip_restored.inc()
        self.bus.publish("vip_restored", f"VIP {event.address} removed by someone else; restored")
        self._announce()

    # --- the watch (its own thread): a hint to read the key now ----------------------------

    def _watch_saw_change(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the daemon is exiting
            self._loop.call_soon_threadsafe(self._key_changed)

    def _key_changed(self) -> None:
        self._apply(self.router.changed(self._loop.time()))

    def _watch_failed(self, detail: str) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._note_watch_failure, detail)

    def _note_watch_failure(self, detail: str) -> None:
        self.errors["watch"] = self.errors.get("watch", 0) + 1
        quiet.warning("etcd:watch", "etcd watch failed: %s (polling meanwhile)", detail)

    def _call(self, step: Step) -> Any:
        r, s = self.router, self.store
        if step is Step.GRANT:
            return s.grant(r.params.ttl)
        if step is Step.CLEAR:
            assert r.stale_lease is not None
            return s.revoke(r.stale_lease)
        assert step is Step.OBSERVE or r.lease is not None
        if step is Step.RENEW:
            return s.renew(r.lease)  # type: ignore[arg-type]
        if step is Step.CAMPAIGN:
            return s.campaign(r.me, r.lease)  # type: ignore[arg-type]
        if step is Step.REVOKE:
            return s.revoke(r.lease)  # type: ignore[arg-type]
        return s.observe()

    def _feed(self, step: Step, result: Any, sent: float, now: float) -> list[Transition]:
        r = self.router
        if step is Step.GRANT:
            lease, ttl = result
            return r.granted(lease, ttl, sent, now)
        if step is Step.RENEW:
            return r.renewed(result, sent, now)
        if step is Step.REVOKE:
            return r.revoked(sent, now)
        if step is Step.CLEAR:
            return r.cleared(sent, now)
        holder: Holder | None = result
        if holder is None:
            return r.observed(None, None, 0, sent, now)
        return r.observed(holder.value, holder.lease, holder.term, sent, now)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self._apply(self.router.tick(self._loop.time()))
            except Exception:
                quiet.exception("etcd:tick", "etcd election tick: unexpected")

    # --- outputs -------------------------------------------------------------------------

    def _apply(self, transitions: list[Transition]) -> None:
        """Hold the VIPs and relay exactly while the core says we lead; then bookkeeping."""
        leading = self.router.state is State.MASTER and self.router.is_leader(self._loop.time())
        if leading and not self._holding:
            self._hold()
        elif not leading and self._holding and not self._draining:
            self._release()
        for t in transitions:
            self._transitioned(t)
        self._tell_leader()
        self._wake.set()

    def _hold(self) -> None:
        try:
            self.vips.add()
        except VipErrors as e:
            quiet.warning("etcd:vip_add", "VIPs not added: %s; declining to lead", e)
            self._apply(self.router.decline("vip", f"VIPs not added: {e}", self._loop.time()))
            self._loop.call_later(self.cfg.etcd.lease_ttl, self.remove_fault, "vip")  # type: ignore[union-attr]
            return
        self._holding = True
        for listener in self.relay_listeners:
            listener(True, self.router.held_term or 0)
        self._announce()

    def _release(self) -> None:
        was = self._holding
        self._holding = False
        if was:
            for listener in self.relay_listeners:
                listener(False, 0)
        try:
            self.vips.remove()
        except VipErrors as e:
            quiet.warning("etcd:vip_remove", "VIPs not removed: %s", e)

    def _announce(self) -> None:
        if self.announcer is None or self.cfg.vip.garp_count < 1:
            return
        ips = [a.ip for a in self.cfg.vip.addresses]
        try:
            self.announcer.announce(ips, self.cfg.vip.garp_form)
        except OSError as e:
            quiet.warning("etcd:announce", "announcement not sent: %s", e)

    def _transitioned(self, t: Transition) -> None:
        self.transitions += 1
        self.last_transition_wall = time.time()
        log.info("%s -> %s (%s)", t.old.value, t.new.value, t.reason)
        self.metrics.transitions.labels(t.old.value, t.new.value).inc()
        self.metrics.set_state(t.new.value)
        self.bus.publish(
            "transition",
            f"{t.old.value} -> {t.new.value} ({t.reason})",
            old=t.old.value,
            new=t.new.value,
            reason=t.reason,
            term=self.router.held_term or self.router.leader_term,
        )
        for listener in self.listeners:
            try:
                listener(t)
            except Exception:
                log.exception("state listener failed")

    def _tell_leader(self) -> None:
        leader = (self.router.leader, self.router.leader_term)
        if leader != self._leader:
            self._leader = leader
            for listener in self.leader_listeners:
                listener(*leader)

    # --- the Node's inputs ------------------------------------------------------------------

    def add_fault(self, source: str, reason: str) -> None:
        self._apply(self.router.decline(source, reason, self._loop.time()))

    def remove_fault(self, source: str) -> None:
        self._apply(self.router.accept(source, self._loop.time()))

    def set_priority(self, priority: int) -> None:
        """etcd has no priorities: a failing track declines (weight 0), weights are ignored."""

    def restore_priority(self, priority: int) -> None:
        self.handed_over = False

    def reconfigure_auth(self, cfg: Config) -> None:
        """Advert keys do not apply to the etcd backend."""

    def reannounce(self) -> None:
        """A split healed (the data plane saw another relay): point the LAN back here,
        if we lead; never while draining a handover (the successor's announcement wins)."""
        if self._holding and self.router.is_leader(self._loop.time()):
            self._announce()

    def timer_alive(self) -> bool:
        return all(not t.done() for t in self._tasks)

    async def handover(self, timeout: float) -> str:
        """Resign; keep relaying until another node holds the key, drain, then let go."""
        if not self._holding:
            raise RefusedError(f"this node is {self.router.state.value}, not MASTER")
        self.handed_over = True
        self._draining = True
        if self.closing_hook is not None:
            self.closing_hook()
        try:
            hold_off = HANDOVER_HOLD_OFF * self.router.params.ttl
            self._apply(self.router.resign(self._loop.time(), hold_off))
            deadline = self._loop.time() + timeout
            while self._loop.time() < deadline and not self._other_leads():
                await asyncio.sleep(0.01)
            if not self._other_leads():
                raise RefusedError("no peer took over within the wait")
            await withdraw_routes_first(self.vips)
            if self.drain_hook is not None:
                await self.drain_hook()
            return f"handed over to {self.router.leader} (term {self.router.leader_term})"
        finally:
            self._draining = False
            self._apply([])

    def _other_leads(self) -> bool:
        return self.router.leader not in (None, self.router.me)

    # --- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        r, now = self.router, self._loop.time()
        return {
            "backend": "etcd",
            "state": r.state.value,
            "primary_address": str(self.primary),
            "master": r.leader,
            "term": r.held_term,
            "leader_term": r.leader_term,
            "leading": r.is_leader(now),
            "quorum": r.quorum(now),
            "lease": r.lease,
            "safe_for_ms": round(max(0.0, r.safe_until - now) * 1000) if r.held_term else 0,
            "endpoint": self.store.endpoint,
            "vips": [str(a) for a in self.cfg.vip.addresses],
            "vips_held": self._vips_held(),
            "transitions": self.transitions,
            "handed_over": self.handed_over,
            "faults": dict(r.faults),
            "etcd_errors": dict(self.errors),
            "watch": {"streams": self.watch.streams, "events": self.watch.events},
            "stats": vars(r.stats),
        }

    def _vips_held(self) -> list[str] | None:
        try:
            return sorted(str(a) for a in self.vips.present())
        except VipErrors:
            return None

    def vips_present(self) -> bool:
        with contextlib.suppress(*VipErrors):
            return bool(self.vips.present())
        return False
