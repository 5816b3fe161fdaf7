"""The election service: the VRRP state machine driven by the Linux adapters.

Like aioquic's asyncio protocol: datagrams and netlink events are fed into the
pure :class:`VirtualRouter` with the loop's monotonic clock, its actions are
carried out, and one timer is re-armed at ``router.next_timer()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vipcast import config
from vipcast.config import Config, IPAddress
from vipcast.core.vrrp import codec
from vipcast.core.vrrp.codec import Advert, BadPacket
from vipcast.core.vrrp.machine import (
    Action,
    AddVips,
    Announce,
    RemoveVips,
    RouterParams,
    SendAdvert,
    State,
    Transition,
    VirtualRouter,
)
from vipcast.daemon.events import EventBus
from vipcast.daemon.metrics import Metrics
from vipcast.daemon.quietlog import QuietLogger
from vipcast.linux import interfaces
from vipcast.linux.announce import Announcer
from vipcast.linux.privileges import require
from vipcast.linux.timerfd import OneShot, make_timer
from vipcast.linux.vip import LinkDown, LinkUp, NetlinkWatcher, VipManager, VipRemoved
from vipcast.linux.vrrp_socket import RawAdvert, VrrpSocket

log = logging.getLogger("vipcast.election")
quiet = QuietLogger(log)

StateListener = Callable[[Transition], None]
RelayListener = Callable[[bool], None]
DrainHook = Callable[[], Awaitable[None]]
HANDOVER_PRIORITY = 1  # a node that handed over stays below every peer
HANDOVER_SETTLE = 0.05  # s the VIP stays after the new master is heard, without a relay


def vrrp_source(cfg: Config) -> IPAddress:
    """The address this node speaks VRRP from, and relays envelopes from.

    ``node.address`` if given (it must be on the interface), else the interface's
    primary address of the VIPs' family: for IPv6 the link-local one unless the
    unicast peers are global (:func:`vipcast.config.vrrp_link_local`).
    :class:`LookupError` when the interface has no such address.
    """
    ifname, version = cfg.node.interface, cfg.vip.addresses[0].version
    if cfg.node.address is not None:
        own = [a.ip for a in interfaces.addresses(ifname, version)]
        if cfg.node.address not in own:
            raise LookupError(
                f"node.address {cfg.node.address} is not an address of {ifname} "
                f"(which has {', '.join(map(str, own)) or 'none'})"
            )
        return cfg.node.address
    return interfaces.primary_address(
        ifname,
        version,
        exclude=[a.ip for a in cfg.vip.addresses],
        link_local=config.vrrp_link_local(cfg) if version == 6 else None,
    )


@dataclass
class ElectionStatus:
    """What ``vipcast status`` shows of the election."""

    state: str
    priority: int
    master: str | None
    vips_held: list[str]


class Election:
    """One virtual router on one interface."""

    def __init__(self, cfg: Config, bus: EventBus, metrics: Metrics) -> None:
        self.cfg = cfg
        self.bus = bus
        self.metrics = metrics
        self.listeners: list[StateListener] = []
        self.relay_listeners: list[RelayListener] = []  # True: VIPs held, relay on
        self.drain_hook: DrainHook | None = None
        self.closing_hook: Callable[[], None] | None = None
        self.faults: dict[str, str] = {}  # what keeps the node in FAULT, by source
        self.handed_over = False
        self._drain: asyncio.Task[None] | None = None
        self.rejected: Counter[str] = Counter()
        self.version = cfg.vip.addresses[0].version
        self.primary: IPAddress = vrrp_source(cfg)
        self.router = VirtualRouter(self._params(cfg))
        self.sock: VrrpSocket | None = None
        self.vips = VipManager(cfg.node.interface, cfg.vip.addresses)
        self.announcer: Announcer | None = None
        self.watcher: NetlinkWatcher | None = None
        self._loop = asyncio.get_event_loop()
        self._timer: OneShot | None = None  # made on first use, in the running loop
        self._timer_at: float | None = None  # when it is armed for, None: not armed
        self._adverts: dict[tuple[int, int, IPAddress], bytes] = {}  # see _advert
        self._last_now = 0.0  # see _now
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refresh: asyncio.Task[None] | None = None
        self.lateness_max = 0.0
        self.last_transition_wall = 0.0
        self.transitions = 0

    def _params(self, cfg: Config) -> RouterParams:
        e = cfg.election
        return RouterParams(
            vrid=e.vrid,
            priority=e.priority,
            primary_address=self.primary,
            advert_interval=e.advert_interval,
            preempt=e.preempt,
            preempt_delay=e.preempt_delay,
        )

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        require("CAP_NET_RAW", "CAP_NET_ADMIN", what="run the VRRP election")
        ifname = self.cfg.node.interface
        interfaces.ifindex(ifname)  # a clear error for an unknown interface
        self._warn_outside_subnets()
        self.vips.remove()  # a VIP left by a crashed run: we start as backup
        self.sock = VrrpSocket(
            ifname,
            self.version,
            unicast_peers=self.cfg.election.unicast_peers,
            source=self.primary,
        )
        self.announcer = Announcer(ifname)
        self.watcher = NetlinkWatcher(ifname, self.cfg.vip.addresses)
        self._loop.add_reader(self.sock.fileno(), self._on_adverts)
        self._loop.add_reader(self.watcher.fileno(), self._on_netlink)
        self._prepare_adverts()
        self.announcer.prepare([a.ip for a in self.cfg.vip.addresses], self.cfg.vip.garp_form)
        self._apply(self.router.start(self._now()))
        if not interfaces.link_is_up(ifname):
            self.add_fault("link", f"link {ifname} down at start")

    async def stop(self) -> None:
        """Resign (priority-0 advert), release the VIPs, close everything."""
        try:
            if self._drain is not None:
                self._drain.cancel()
            self._apply(self.router.shutdown(self._now()))
        finally:
            self.vips.remove()
            self._tell_relay(False)
            self._close()

    def _close(self) -> None:
        if self._timer:
            self._timer.close()
        for task in [*self._tasks, self._refresh]:
            if task:
                task.cancel()
        for closable in (self.sock, self.watcher):
            if closable is not None:
                self._loop.remove_reader(closable.fileno())
                closable.close()
        if self.announcer:
            self.announcer.close()
        self.vips.close()

    def _warn_outside_subnets(self) -> None:
        nets = interfaces.subnets(self.cfg.node.interface)
        for vip in self.cfg.vip.addresses:
            if not any(vip.ip in net for net in nets):
                log.warning(
                    "VIP %s is outside every subnet of %s (%s): neighbours may not reach it",
                    vip,
                    self.cfg.node.interface,
                    ", ".join(str(n) for n in nets) or "none",
                )

    # --- inputs ------------------------------------------------------------------

    def _now(self, age: float = 0.0) -> float:
        """The core's clock: the loop's, less ``age`` (an advert's time since its arrival).

        Never earlier than a time the core was already given: an advert read just after
        a timer fired may have arrived before it, and the core sees time run forward only.
        """
        self._last_now = max(self._loop.time() - age, self._last_now)
        return self._last_now

    def _on_adverts(self) -> None:
        assert self.sock is not None
        for _ in range(64):  # drain, but let the loop breathe under a flood
            raw = self.sock.recv()
            if raw is None:
                return
            advert = self._validate(raw)
            if advert is not None:
                self.metrics.adverts_received.inc()
                now = self._now(raw.age)
                self._apply(self.router.receive_advert(advert, raw.src, now))

    def _validate(self, raw: RawAdvert) -> Advert | None:
        """The checks that need the IP header, then the codec's own."""
        if raw.ttl != 255:
            self._reject("ttl", raw, f"TTL/hop limit {raw.ttl}, not 255")
            return None
        peers = self.cfg.election.unicast_peers
        if peers and raw.src not in peers:
            self._reject("unicast_source", raw, "not a configured unicast peer")
            return None
        try:
            codec.check_source_untrusted(raw.src, multicast=not peers)
            advert = codec.decode_advert_untrusted(raw.payload, src=raw.src, dst=raw.dst)
        except BadPacket as e:
            self._reject(e.reason, raw, str(e))
            return None
        if advert.version == 2:
            self._reject("version", raw, "VRRPv2 advert: set vrrp_version 3 on the peer")
            return None
        if advert.vrid != self.cfg.election.vrid:
            self._reject("vrid", raw, f"VRID {advert.vrid}, ours is {self.router_vrid}")
            return None
        return advert

    @property
    def router_vrid(self) -> int:
        return self.cfg.election.vrid

    def _reject(self, reason: str, raw: RawAdvert, detail: str) -> None:
        self.rejected[reason] += 1
        self.metrics.adverts_rejected.labels(reason).inc()
        quiet.warning(f"reject:{reason}", "advert from %s rejected: %s", raw.src, detail)

    def _on_netlink(self) -> None:
        assert self.watcher is not None
        for event in self.watcher.read_events():
            if isinstance(event, LinkDown):
                self.add_fault("link", f"link {event.ifname} down")
            elif isinstance(event, LinkUp):
                self.remove_fault("link")
            elif isinstance(event, VipRemoved) and self.router.state is State.MASTER:
                self._restore_vip(event)

    def _restore_vip(self, event: VipRemoved) -> None:
        log.warning("VIP %s was removed behind our back: restoring it", event.address)
        self.metrics.vip_restored.inc()
        self.bus.publish("vip_restored", f"VIP {event.address} removed by someone else; restored")
        self.vips.add()
        self._announce_burst()

    def _on_timer(self) -> None:
        now = self._now()
        late = 0.0 if self._timer_at is None else max(0.0, now - self._timer_at)
        self.metrics.timer_lateness.observe(late)
        if late > self.lateness_max:
            self.lateness_max = late
            self.metrics.timer_lateness_max.set(late)
        self._timer_at = None
        self._apply(self.router.handle_timer(now))

    # --- health and operator inputs -----------------------------------------------

    def set_priority(self, priority: int) -> None:
        """The priority health tracking wants; a node that handed over stays at the bottom."""
        if self.handed_over:
            priority = HANDOVER_PRIORITY
        if priority != self.router.priority:
            self._apply(self.router.set_priority(priority, self._now()))
            self._prepare_adverts()

    def restore_priority(self, priority: int) -> None:
        """Undo a handover (config reload): take part in elections normally again."""
        self.handed_over = False
        self.set_priority(priority)

    def add_fault(self, source: str, reason: str) -> None:
        """FAULT while any source (link, a track, a role) says so."""
        first = not self.faults
        self.faults[source] = reason
        if first:
            self._apply(self.router.set_fault(reason, self._now()))

    def remove_fault(self, source: str) -> None:
        if self.faults.pop(source, None) is not None and not self.faults:
            self._apply(self.router.clear_fault(self._now()))

    # --- outputs -------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        # The wire first (advert, VIPs, first announcement), then a transition's
        # bookkeeping (log, metrics, events, roles): a takeover's outage lasts until
        # the LAN hears of it (bench/failover.py measures it).
        for action in actions:
            if isinstance(action, SendAdvert):
                self._send(action)
            elif isinstance(action, AddVips):
                self._hold_vips()
            elif isinstance(action, RemoveVips):
                self._release_vips(drain=action.drain)
            elif isinstance(action, Announce):
                self._announce_burst()
        for action in actions:
            if isinstance(action, Transition):
                self._transitioned(action)
        self._rearm()

    def _hold_vips(self) -> None:
        if self._drain is not None:  # nobody took over during a handover: keep going
            self._drain.cancel()
            self._drain = None
        self.vips.add()
        self._tell_relay(True)

    def _release_vips(self, *, drain: bool) -> None:
        if drain:
            self._drain = self._loop.create_task(self._drain_then_release())
            return
        self.vips.remove()
        self._tell_relay(False)

    def _tell_relay(self, active: bool) -> None:
        for listener in self.relay_listeners:
            listener(active)

    async def _drain_then_release(self) -> None:
        """Make-before-break: wait for the new master, let traffic move, then let go."""
        if self.closing_hook is not None:
            self.closing_hook()
        interval = self.cfg.election.advert_interval
        deadline = self._loop.time() + 3 * interval + 2.0
        while self._loop.time() < deadline and not self._new_master_heard():
            await asyncio.sleep(min(0.01, interval / 4))
        if self.drain_hook is not None and self._new_master_heard():
            await self.drain_hook()
        elif self._new_master_heard():  # no relay to watch: let its announcement land first
            await asyncio.sleep(HANDOVER_SETTLE)
        if self.router.state is not State.MASTER:
            self.vips.remove()
            self._tell_relay(False)
        self._drain = None

    def _new_master_heard(self) -> bool:
        master = self.router.current_master
        return master is not None and master != self.primary

    async def handover(self, timeout: float) -> str:
        """Planned switchover from this master; returns who took over."""
        if self.router.state is not State.MASTER:
            raise RuntimeError(f"this node is {self.router.state.value}, not MASTER")
        self.handed_over = True
        self._apply(self.router.handover(HANDOVER_PRIORITY, self._now()))
        drain = self._drain
        if drain is not None:
            # a drain cancelled because nobody took over ends the wait, it is no error
            await asyncio.wait({drain}, timeout=timeout)
        if self.router.state is State.MASTER or not self._new_master_heard():
            self.restore_priority(self.cfg.election.priority)
            raise RuntimeError("no peer took over; this node stays master")
        return f"handed over to {self.router.current_master}"

    def _rearm(self) -> None:
        at = self.router.next_timer()
        if at == self._timer_at:
            return
        if self._timer is None:
            self._timer = make_timer(self._loop, self._on_timer)
        self._timer_at = at
        if at is None:
            self._timer.cancel()
        else:
            self._timer.arm(at)

    def _send(self, action: SendAdvert) -> None:
        if self.sock is None:
            return
        for dst in self.sock.destinations():
            if self.sock.send(self._advert(action.priority, action.interval_cs, dst), dst):
                self.metrics.adverts_sent.inc()

    def _advert(self, priority: int, interval_cs: int, dst: IPAddress) -> bytes:
        """The encoded advert, made once per (priority, interval, destination).

        A master sends the same bytes every interval, and a backup's first advert as
        it takes over is on the wire before Python has encoded anything (``start``
        prepares it): encoding costs ~0.2 ms, a few percent of a 10 ms-advert takeover.
        """
        key = (priority, interval_cs, dst)
        message = self._adverts.get(key)
        if message is None:
            if len(self._adverts) >= 64:  # priorities come and go with health tracks
                self._adverts.clear()
            advert = Advert(
                vrid=self.cfg.election.vrid,
                priority=priority,
                max_advert_int_cs=interval_cs,
                addresses=tuple(a.ip for a in self.cfg.vip.addresses),
            )
            message = codec.encode_advert(
                advert, src=self.primary, dst=dst, checksum=self.cfg.election.checksum
            )
            self._adverts[key] = message
        return message

    def _prepare_adverts(self) -> None:
        """Encode now the adverts a takeover at the current priority will send."""
        if self.sock is not None:
            interval_cs = self.router.params.advert_interval_cs
            for dst in self.sock.destinations():
                self._advert(self.router.priority, interval_cs, dst)

    def _transitioned(self, t: Transition) -> None:
        self.last_transition_wall = time.time()
        self.transitions += 1
        log.info("%s -> %s (%s)", t.old.value, t.new.value, t.reason)
        self.metrics.transitions.labels(t.old.value, t.new.value).inc()
        self.metrics.set_state(t.new.value)
        self.metrics.priority.set(self.router.priority)
        self.bus.publish(
            "transition",
            f"{t.old.value} -> {t.new.value} ({t.reason})",
            old=t.old.value,
            new=t.new.value,
            reason=t.reason,
        )
        self._refresh_task(t.new is State.MASTER)
        for listener in self.listeners:
            try:
                listener(t)
            except Exception:
                log.exception("state listener failed")

    # --- announcements -----------------------------------------------------------

    def _announce_burst(self) -> None:
        """The first announcement now, not on the next loop turn; the rest paced."""
        if self.cfg.vip.garp_count < 1 or self.router.state is not State.MASTER:
            return
        self._announce_once()
        if self.cfg.vip.garp_count > 1:
            task = self._loop.create_task(self._burst())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _burst(self) -> None:
        for _ in range(self.cfg.vip.garp_count - 1):
            await asyncio.sleep(self.cfg.vip.garp_interval)
            if self.router.state is not State.MASTER:
                return
            self._announce_once()

    def _announce_once(self) -> None:
        if self.announcer is None:
            return
        sent = self.announcer.announce(
            [a.ip for a in self.cfg.vip.addresses], self.cfg.vip.garp_form
        )
        self.metrics.announcements.inc(sent)

    def _refresh_task(self, master: bool) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if master and self.cfg.vip.garp_refresh > 0:
            self._refresh = self._loop.create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.vip.garp_refresh)
            self._announce_once()

    # --- status ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        r = self.router
        last = r.last_transition
        return {
            "state": r.state.value,
            "vrid": self.cfg.election.vrid,
            "priority": r.priority,
            "configured_priority": self.cfg.election.priority,
            "advert_interval": self.cfg.election.advert_interval,
            "primary_address": str(self.primary),
            "master": str(r.current_master) if r.current_master else None,
            "vips": [str(a) for a in self.cfg.vip.addresses],
            "vips_held": sorted(str(a) for a in self.vips.present()),
            "last_transition": None
            if last is None
            else {
                "old": last.old.value,
                "new": last.new.value,
                "reason": last.reason,
                "time": self.last_transition_wall,
            },
            "transitions": self.transitions,
            "adverts_sent": r.stats.adverts_sent,
            "adverts_received": r.stats.adverts_received,
            "rejected": dict(self.rejected),
            "timer_lateness_max_ms": round(self.lateness_max * 1000, 3),
            "handed_over": self.handed_over,
            "faults": dict(self.faults),
        }

    def vips_present(self) -> bool:
        with contextlib.suppress(OSError):
            return bool(self.vips.present())
        return False
