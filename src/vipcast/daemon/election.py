"""The election service: the VRRP state machine driven by the Linux adapters.

Like aioquic's asyncio protocol: datagrams and netlink events are fed into the
pure :class:`VirtualRouter` with the loop's monotonic clock, its actions are
carried out, and one timer is re-armed at ``router.next_timer()``.

Nothing that goes wrong on the way stops the machine: a send that fails (an advert, an
announcement, a VIP's netlink request) is counted by path (``send_errors``), logged
rate-limited, and the remaining actions are carried out; an unexpected exception in a
callback or an action is logged with its traceback and counted; the timer is re-armed
whatever happened. A VIP that could not be added (or removed) is tried again every advert
interval; a master that still cannot add it after ``VIP_ADD_ATTEMPTS`` tries enters
FAULT so that the peer takes over (see :meth:`Election._put_vips`).
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

from vipcast import config, keys
from vipcast.config import Config, IPAddress
from vipcast.core.vrrp import codec
from vipcast.core.vrrp.auth import AUTH_REASONS, Authenticator, Checked
from vipcast.core.vrrp.codec import AUTH_TRAILER_LEN, Advert, BadPacket
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
from vipcast.core.vrrp.plausible import PLAUSIBILITY_REASONS, check_plausible_untrusted
from vipcast.core.vrrp.timers import master_down_interval
from vipcast.daemon.control import RefusedError
from vipcast.daemon.events import EventBus
from vipcast.daemon.metrics import SEND_PATHS, Metrics
from vipcast.daemon.quietlog import QuietLogger
from vipcast.daemon.vips import VipErrors, Vips, announces_by_arp, for_config, withdraw_routes_first
from vipcast.linux import interfaces
from vipcast.linux.announce import Announcer
from vipcast.linux.privileges import require
from vipcast.linux.timerfd import LoopTimer, OneShot, make_timer
from vipcast.linux.vip import LinkDown, LinkUp, NetlinkWatcher, VipRemoved
from vipcast.linux.vrrp_socket import RawAdvert, VrrpSocket

log = logging.getLogger("vipcast.election")
quiet = QuietLogger(log)

StateListener = Callable[[Transition], None]
RelayListener = Callable[[bool], None]
LeaderListener = Callable[[str | None], None]
DrainHook = Callable[[], Awaitable[None]]
HANDOVER_PRIORITY = 1  # a node that handed over stays below every peer
HANDOVER_SETTLE = 0.05  # s the VIP stays after the new master is heard, without a relay
VIP_ADD_ATTEMPTS = 3  # failed adds, one per advert interval, before a master enters FAULT
VIP_FAULT_COOLDOWN = 10  # advert intervals in FAULT("vip") before it is cleared to try again
TIMER_GRACE = 3  # Master_Down_Intervals a due timer may be late before it counts as stuck
REPLAY_SLOTS = 4  # per-sender replay marks kept in multicast mode (keepalived's count)


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


def make_authenticator(cfg: Config) -> Authenticator | None:
    """``[election.auth]`` as the core's authenticator; None when adverts are unsigned."""
    a = cfg.election.auth
    if a is None:
        return None
    return Authenticator(
        a.secrets(),
        a.active_key,
        a.mode,
        anti_replay=a.anti_replay,
        time_window=a.time_window,
        senders=max(REPLAY_SLOTS, len(cfg.election.unicast_peers)),
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
        self.leader_listeners: list[LeaderListener] = []  # who the master is, when it changes
        self._leader: str | None = None
        self.drain_hook: DrainHook | None = None
        self.closing_hook: Callable[[], None] | None = None
        self.faults: dict[str, str] = {}  # what keeps the node in FAULT, by source
        self.handed_over = False
        self._drain: asyncio.Task[None] | None = None
        self.rejected: Counter[str] = Counter()
        self.version = cfg.vip.addresses[0].version
        self.primary: IPAddress = vrrp_source(cfg)
        self.router = VirtualRouter(self._params(cfg))
        self._note_down_interval()
        self.auth = make_authenticator(cfg)
        self._unix: Callable[[], float] = time.time  # the wall clock the trailer stamps
        for reason in (*AUTH_REASONS, *PLAUSIBILITY_REASONS):
            metrics.adverts_rejected.labels(reason)
        self.sock: VrrpSocket | None = None
        self.vips: Vips = for_config(cfg)  # on the interface, or as host routes
        self.announcer: Announcer | None = None  # GARP/NA: with announce = "arp" only
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
        self.send_errors = dict.fromkeys(SEND_PATHS, 0)
        self.callback_errors: Counter[str] = Counter()
        self._vips_pending: bool | None = None  # an add (True) or remove (False) to retry
        self._vip_failures = 0  # consecutive failed tries of the pending one
        self._vip_retry: asyncio.TimerHandle | None = None
        self._vip_cooldown: asyncio.TimerHandle | None = None

    def reconfigure_auth(self, cfg: Config) -> None:
        """A reload's ``[election.auth]``, live: keys, active key, mode, window.

        The send sequence and the replay marks are kept, so a rotation (a key added
        everywhere, ``active_key`` switched, the old key removed) neither flaps nor
        opens a replay. Removing the table turns authentication off; adding it on.
        """
        a = cfg.election.auth
        if a is None or self.auth is None:
            self.auth = make_authenticator(cfg)
        else:
            self.auth.configure(
                a.secrets(),
                a.active_key,
                a.mode,
                anti_replay=a.anti_replay,
                time_window=a.time_window,
            )

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

    def remove_stale_vips(self) -> None:
        """Remove a VIP left by a run that was killed with its guard: we start as backup.

        Done first, before the control socket answers and the data plane starts, so
        that nothing sees this node up while it still holds the VIP beside the master.
        """
        self.vips.remove()

    async def start(self) -> None:
        require("CAP_NET_RAW", "CAP_NET_ADMIN", what="run the VRRP election")
        ifname = self.cfg.node.interface
        interfaces.ifindex(ifname)  # a clear error for an unknown interface
        self._warn_outside_subnets()
        self._warn_open_key_files()
        self.sock = VrrpSocket(
            ifname,
            self.version,
            unicast_peers=self.cfg.election.unicast_peers,
            source=self.primary,
        )
        if announces_by_arp(self.cfg):
            self.announcer = Announcer(ifname)
        self.watcher = NetlinkWatcher(ifname, self.cfg.vip.addresses)
        self._loop.add_reader(self.sock.fileno(), self._on_adverts)
        self._loop.add_reader(self.watcher.fileno(), self._on_netlink)
        self.begin()
        if not interfaces.link_is_up(ifname):
            self.add_fault("link", f"link {ifname} down at start")

    def begin(self) -> None:
        """Start the machine on the adapters in place (``start`` opens them; tests inject)."""
        self._prepare_adverts()
        if self.announcer is not None:
            self.announcer.prepare(self._vip_ips(), self.cfg.vip.garp_form)
        self._apply(self.router.start(self._now()))

    async def stop(self) -> None:
        """Resign (priority-0 advert), release the VIPs, close everything."""
        try:
            if self._drain is not None:
                self._drain.cancel()
            self._apply(self.router.shutdown(self._now()))
        finally:
            self._put_vips(held=False)
            self._tell_relay(False)
            self._close()

    def _close(self) -> None:
        if self._timer:
            self._timer.close()
        for handle in (self._vip_retry, self._vip_cooldown):
            if handle is not None:
                handle.cancel()
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

    def _warn_open_key_files(self) -> None:
        a = self.cfg.election.auth
        for key in a.keys if a else ():
            if key.path is not None and keys.readable_by_others(key.path):
                log.warning("key file %s is readable by others: chmod 600 it", key.path)

    def _warn_outside_subnets(self) -> None:
        if not announces_by_arp(self.cfg):
            return  # a routed VIP is outside the node's subnets by design
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
        try:
            self._read_adverts()
        except Exception:
            self._unexpected("adverts")
        finally:
            self._rearm()

    def _read_adverts(self) -> None:
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
        """The checks that need the IP header, then the codec's, the trailer's, the bounds."""
        problem = self._ip_header_problem(raw)
        if problem is not None:
            self._reject(problem[0], raw, problem[1])
            return None
        try:
            codec.check_source_untrusted(raw.src, multicast=not self.cfg.election.unicast_peers)
            advert, trailer = self._decode(raw)
            self._check_ours(advert)
            checked = self._authenticate(raw, trailer)
            if not checked.authenticated:
                check_plausible_untrusted(
                    advert,
                    raw.src,
                    interval_cs=self.router.params.advert_interval_cs,
                    owners=self._vip_ips(),
                )
        except BadPacket as e:
            self._reject(e.reason, raw, str(e))
            return None
        return advert

    def _check_ours(self, advert: Advert) -> None:
        if advert.version == 2:
            raise BadPacket("version", "VRRPv2 advert: set vrrp_version 3 on the peer")
        if advert.vrid != self.cfg.election.vrid:
            raise BadPacket("vrid", f"VRID {advert.vrid}, ours is {self.router_vrid}")

    def _ip_header_problem(self, raw: RawAdvert) -> tuple[str, str] | None:
        """(reason, detail) if the IP layer's facts already rule the advert out."""
        if raw.ttl != 255:
            return "ttl", f"TTL/hop limit {raw.ttl}, not 255"
        peers = self.cfg.election.unicast_peers
        if peers and raw.src not in peers:
            return "unicast_source", "not a configured unicast peer"
        if raw.src == self.primary:
            return "own_address", "our own address from the wire: spoofed"
        return None

    def _decode(self, raw: RawAdvert) -> tuple[Advert, bytes | None]:
        if self.auth is None:  # a trailer makes the length wrong, as in keepalived
            return codec.decode_advert_untrusted(raw.payload, src=raw.src, dst=raw.dst), None
        return codec.decode_signed_untrusted(raw.payload, src=raw.src, dst=raw.dst)

    def _authenticate(self, raw: RawAdvert, trailer: bytes | None) -> Checked:
        if self.auth is None:
            return Checked(authenticated=False)
        message = raw.payload if trailer is None else raw.payload[:-AUTH_TRAILER_LEN]
        checked = self.auth.verify_untrusted(
            message, trailer, src=raw.src, vrid=self.cfg.election.vrid, unix=self._unix()
        )
        if checked.authenticated and abs(checked.skew) > self.auth.time_window / 2:
            quiet.warning(
                "auth:skew",
                "advert from %s: clock skew %+d s, near the %d s window (check NTP)",
                raw.src,
                checked.skew,
                self.auth.time_window,
            )
        return checked

    @property
    def router_vrid(self) -> int:
        return self.cfg.election.vrid

    def _reject(self, reason: str, raw: RawAdvert, detail: str) -> None:
        self.rejected[reason] += 1
        self.metrics.adverts_rejected.labels(reason).inc()
        quiet.warning(f"reject:{reason}", "advert from %s rejected: %s", raw.src, detail)

    def _on_netlink(self) -> None:
        try:
            self._read_netlink()
        except Exception:
            self._unexpected("netlink")
        finally:
            self._rearm()

    def _read_netlink(self) -> None:
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
        if self._put_vips(held=True):  # else retried every interval, as a takeover's add
            self.metrics.vip_restored.inc()
            message = f"VIP {event.address} removed by someone else; restored"
            self.bus.publish("vip_restored", message)
            self._announce_burst()

    def _on_timer(self) -> None:
        due, self._timer_at = self._timer_at, None  # the one-shot fired: re-armed below
        try:
            now = self._now()
            self._note_lateness(0.0 if due is None else max(0.0, now - due))
            self._apply(self.router.handle_timer(now))
        except Exception:
            self._unexpected("timer")
        finally:
            self._rearm()

    def _note_lateness(self, late: float) -> None:
        self.metrics.timer_lateness.observe(late)
        if late > self.lateness_max:
            self.lateness_max = late
            self.metrics.timer_lateness_max.set(late)

    def _unexpected(self, where: str) -> None:
        """A bug met in a callback or an action: logged with its traceback, counted, survived."""
        self.callback_errors[where] += 1
        self.metrics.callback_errors.labels(where).inc()
        quiet.exception(
            f"unexpected:{where}", "election: unexpected error (%s); carrying on", where
        )

    def timer_alive(self) -> bool:
        """Whether the election's timer runs (the watchdog pings only while it does).

        In BACKUP and MASTER the machine always wants a timer: it must be armed for that
        time, and not be overdue by ``TIMER_GRACE`` Master_Down_Intervals (a timer that
        never fires). In the other states (FAULT, before start, stopped) none is needed.
        """
        if self.router.state not in (State.BACKUP, State.MASTER):
            return True
        want = self.router.next_timer()
        if want is None or self._timer_at != want:
            return False
        r = self.router
        grace = TIMER_GRACE * master_down_interval(r.priority, r.master_advert_interval_cs)
        return self._loop.time() - want < grace

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
        """Carry out every action, each on its own (one failing skips none), then re-arm.

        The wire first (VIPs, advert, first announcement), then a transition's
        bookkeeping (log, metrics, events, roles): a takeover's outage lasts until
        the LAN hears of it (bench/failover.py measures it).
        """
        wire = [a for a in actions if not isinstance(a, Transition)]
        bookkeeping = [a for a in actions if isinstance(a, Transition)]
        try:
            for action in (*wire, *bookkeeping):
                try:
                    self._carry_out(action)
                except Exception:
                    self._unexpected("action")
            self._tell_leader()
        finally:
            self._rearm()

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, SendAdvert):
            self._send(action)
        elif isinstance(action, AddVips):
            self._hold_vips()
        elif isinstance(action, RemoveVips):
            self._release_vips(drain=action.drain)
        elif isinstance(action, Announce):
            self._announce_burst()
        elif isinstance(action, Transition):
            self._transitioned(action)

    def _send_failed(self, path: str, count: int, msg: str, *args: object) -> None:
        """One send path failed ``count`` times: counted, logged rate-limited per path."""
        self.send_errors[path] += count
        self.metrics.send_errors.labels(path).inc(count)
        quiet.warning(f"send:{path}", msg, *args)

    def _hold_vips(self) -> None:
        if self._drain is not None:  # nobody took over during a handover: keep going
            self._drain.cancel()
            self._drain = None
        self._put_vips(held=True)
        self._tell_relay(True)

    def _release_vips(self, *, drain: bool) -> None:
        if drain:
            self._cancel_vip_retry()  # a handover keeps what it holds, and adds nothing
            self._drain = self._loop.create_task(self._drain_then_release())
            return
        self._put_vips(held=False)
        self._tell_relay(False)

    def _tell_leader(self) -> None:
        """Receivers follow the relay of the node we see as master: say when it changes."""
        master = self.router.current_master
        leader = None if master is None else str(master)
        if leader != self._leader:
            self._leader = leader
            for listener in self.leader_listeners:
                listener(leader)

    # --- the VIPs on the interface, retried until they are where the state wants them ---

    def _put_vips(self, *, held: bool) -> bool:
        """Add (``held``) or remove the VIPs now; on failure, retry every advert interval.

        A master that has failed ``VIP_ADD_ATTEMPTS`` times (the first try and one retry
        per interval) enters FAULT("vip"): it resigns, so the peer takes over with its own
        VIP. In FAULT nothing is added (the peer holds the address), so the retry after
        that is the fault's clearing after ``VIP_FAULT_COOLDOWN`` intervals: BACKUP, and
        if the election makes this node master again, the add is tried afresh. A remove
        that fails is retried every interval for as long as the node is not master.
        """
        self._cancel_vip_retry()
        self._vip_failures = 0
        return self._try_vips(held=held)

    def _try_vips(self, *, held: bool) -> bool:
        path = "vip_add" if held else "vip_remove"
        try:
            if held:
                self.vips.add()
            else:
                self.vips.remove()
        except VipErrors as exc:
            self._vip_failures += 1
            self._send_failed(
                path,
                1,
                "VIPs not %s (try %d, again in %gs): %s",
                "added" if held else "removed",
                self._vip_failures,
                self.cfg.election.advert_interval,
                exc,
            )
            self._vips_pending = held
            self._vip_retry = self._loop.call_later(
                self.cfg.election.advert_interval, self._retry_vips, held
            )
            return False
        self._vips_pending = None
        return True

    def _retry_vips(self, held: bool) -> None:
        self._vip_retry = None
        try:
            if held and self.router.state is not State.MASTER:
                self._vips_pending = None  # no longer wanted (a RemoveVips cancels it too)
            elif self._try_vips(held=held):
                log.info("VIPs %s on retry", "added" if held else "removed")
                if held:
                    self._announce_burst()
            elif held and self._vip_failures >= VIP_ADD_ATTEMPTS:
                self._vip_fault()
        except Exception:
            self._unexpected("vip_retry")

    def _vip_fault(self) -> None:
        self._cancel_vip_retry()
        cooldown = VIP_FAULT_COOLDOWN * self.cfg.election.advert_interval
        reason = f"VIPs not added after {self._vip_failures} tries"
        log.error("%s: FAULT so the peer takes over; trying again in %gs", reason, cooldown)
        self.bus.publish("vip_fault", reason)
        self.add_fault("vip", reason)
        if self._vip_cooldown is not None:
            self._vip_cooldown.cancel()
        self._vip_cooldown = self._loop.call_later(cooldown, self._vip_fault_over)

    def _vip_fault_over(self) -> None:
        self._vip_cooldown = None
        self.remove_fault("vip")

    def _cancel_vip_retry(self) -> None:
        if self._vip_retry is not None:
            self._vip_retry.cancel()
            self._vip_retry = None
        self._vips_pending = None

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
        if self._new_master_heard():
            await withdraw_routes_first(self.vips)  # route mode: the router moves it first
        if self.drain_hook is not None and self._new_master_heard():
            await self.drain_hook()
        elif self._new_master_heard():  # no relay to watch: let its announcement land first
            await asyncio.sleep(HANDOVER_SETTLE)
        if self.router.state is not State.MASTER:
            self._put_vips(held=False)
            self._tell_relay(False)
        self._drain = None

    def _new_master_heard(self) -> bool:
        master = self.router.current_master
        return master is not None and master != self.primary

    async def handover(self, timeout: float) -> str:
        """Planned switchover from this master; returns who took over."""
        if self.router.state is not State.MASTER:
            raise RefusedError(f"this node is {self.router.state.value}, not MASTER")
        self.handed_over = True
        self._apply(self.router.handover(HANDOVER_PRIORITY, self._now()))
        drain = self._drain
        if drain is not None:
            # a drain cancelled because nobody took over ends the wait, it is no error
            await asyncio.wait({drain}, timeout=timeout)
        if self.router.state is State.MASTER or not self._new_master_heard():
            self.restore_priority(self.cfg.election.priority)
            raise RefusedError("no peer took over; this node stays master")
        return f"handed over to {self.router.current_master}"

    def _note_down_interval(self) -> None:
        r = self.router
        down = master_down_interval(r.priority, r.master_advert_interval_cs)
        self.metrics.down_interval.set(down)

    def _rearm(self) -> None:
        self._note_down_interval()  # priority and the master's interval change with inputs
        at = self.router.next_timer()
        if at == self._timer_at:
            return
        if self._timer is None:
            self._timer = make_timer(self._loop, self._on_timer)
        try:
            self._set_timer(at)
        except OSError as exc:  # timerfd_settime refused: the loop's own timers still work
            quiet.warning("timer", "election timerfd failed (%s): using loop.call_at", exc)
            self._timer.close()
            self._timer = LoopTimer(self._loop, self._on_timer)
            self._set_timer(at)

    def _set_timer(self, at: float | None) -> None:
        assert self._timer is not None
        self._timer_at = None  # until it is armed: timer_alive() tells the watchdog
        if at is None:
            self._timer.cancel()
        else:
            self._timer.arm(at)
        self._timer_at = at

    def _send(self, action: SendAdvert) -> None:
        if self.sock is None:
            return
        trailer = b""
        for dst in self.sock.destinations():
            message = self._advert(action.priority, action.interval_cs, dst)
            if self.auth is not None and self.auth.signs:
                # signed once per advert: every unicast copy carries the same sequence
                trailer = trailer or self._sign(message)
                message = codec.with_trailer(message, trailer, src=self.primary, dst=dst)
            try:
                sent, detail = self.sock.send(message, dst), self.sock.last_error
            except OSError as exc:  # VrrpSocket.send returns False; a stand-in may raise
                sent, detail = False, str(exc)
            if sent:
                self.metrics.adverts_sent.inc()
            else:
                self._send_failed("advert", 1, "VRRP advert to %s not sent: %s", dst, detail)

    def _sign(self, message: bytes) -> bytes:
        """The trailer for the advert sent now: ~10 us (one HMAC over ~60 bytes)."""
        assert self.auth is not None
        vrid = self.cfg.election.vrid
        return self.auth.sign(message, src=self.primary, vrid=vrid, unix=self._unix())

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

    def reannounce(self) -> None:
        """Another node was master beside us (a healed split): point the LAN back here.

        After a split the router's ARP/ND entry may still name the other side, and
        which advert each side hears first at the heal is a race: the side that
        stayed master announces again when the data plane finds the split.
        """
        if self.router.state is State.MASTER:
            log.warning("split brain healed: announcing the VIPs again")
            self._announce_burst()

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
        """One announcement of every VIP; never raises (the paced tasks call it too)."""
        if self.announcer is None:
            return
        try:
            self._announce_frames(self.announcer)
        except Exception:
            self._unexpected("announce")

    def _announce_frames(self, announcer: Announcer) -> None:
        ips, form = self._vip_ips(), self.cfg.vip.garp_form
        frames = len(announcer.prepare(ips, form))
        try:
            sent, detail = announcer.announce(ips, form), announcer.last_error
        except OSError as exc:  # Announcer.announce counts its own; a stand-in may raise
            sent, detail = 0, str(exc)
        self.metrics.announcements.inc(sent)
        if sent < frames:
            self._send_failed(
                "announce",
                frames - sent,
                "%d of %d ARP/NA frames not sent: %s",
                frames - sent,
                frames,
                detail,
            )

    def _vip_ips(self) -> list[IPAddress]:
        return [a.ip for a in self.cfg.vip.addresses]

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
            "vips_held": self._vips_held(),
            "vip_retry": {True: "add", False: "remove", None: None}[self._vips_pending],
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
            "auth": self._auth_status(),
            "timer_lateness_max_ms": round(self.lateness_max * 1000, 3),
            "handed_over": self.handed_over,
            "faults": dict(self.faults),
            "send_errors": dict(self.send_errors),
            "callback_errors": dict(self.callback_errors),
        }

    def _auth_status(self) -> dict[str, Any] | None:
        a = self.auth
        if a is None:
            return None
        return {"mode": a.mode, "active_key": a.active_key, "keys": sorted(a.keys)}

    def _vips_held(self) -> list[str] | None:
        """The VIPs on the interface now; None when netlink cannot say."""
        try:
            return sorted(str(a) for a in self.vips.present())
        except VipErrors:
            return None

    def vips_present(self) -> bool:
        with contextlib.suppress(OSError):
            return bool(self.vips.present())
        return False
