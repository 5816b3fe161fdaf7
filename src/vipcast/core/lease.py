"""Leadership from a quorum store's lease (etcd): when to campaign, when to stop.

The leader is whoever holds the election key, a key attached to its lease; the
**term** is that key's creation revision (strictly increasing, issued by the quorum).
This core is pure: it is told what the adapter sent and when, and what came back, and
says what to send next and whether this node may act as the leader now.

**The stopping rule.** A lease granted or renewed with TTL ``ttl`` by a request this
node *sent* at local time ``sent`` cannot expire at the server before the server's
clock has run ``ttl`` past the moment it received the request, which is after
``sent``. With clock rates that differ by at most ``max_drift`` (a fraction), that is
no earlier than local time ``sent + ttl * (1 - max_drift)``. The leader stops relaying,
replying and holding the VIP ``stop_margin`` seconds before that (``safe_until``): the
margin covers the time to carry out the stop (the loop's latency, a netlink request).
A new leader can only take the key after the old lease has expired at the server, so
an old and a new leader never overlap. The clock assumption is on *rates* only (no
synchronised clocks): steps of the host's clock are irrelevant (monotonic time), a rate error
above ``max_drift`` (far above NTP-disciplined or free-running crystals, ~1e-4) is not
covered.

**Learning fast.** Polls come every ``renew_interval``; two things shorten that. A
watch on the key (the adapter's) calls :meth:`Leadership.changed`, a hint only: the key
is then read (or campaigned for) through the ordinary requests at once, so a follower
takes a key deleted by a resignation or an expiry without waiting for its poll. And a
node that resigned polls every ``handover_poll`` seconds until it sees its successor
(or its hold-off ends): make-before-break needs the old leader to hand its data plane
the new leader and term the moment there is one.

**Safety over availability.** Without answers from the etcd majority nobody can be
the leader: the leader stops at ``safe_until`` and a node that has had no successful
request for a lease TTL reports ``no etcd quorum`` (FAULT) until one succeeds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vipcast.core.vrrp.machine import State, Transition

NO_QUORUM = "no etcd quorum"  # the fault's name in status and transitions
RETRY_FRACTION = 0.5  # a failed request is tried again after this share of renew_interval
HANDOVER_POLL = 0.02  # s between reads of the key while a resigned node awaits its successor


class Step(enum.Enum):
    """What the adapter should send to etcd next."""

    GRANT = "grant"  # a new lease of ``ttl`` seconds
    RENEW = "renew"  # a keep-alive of the lease
    CAMPAIGN = "campaign"  # create the key on our lease if absent, else read it
    OBSERVE = "observe"  # read the key (who leads, which term), without campaigning
    REVOKE = "revoke"  # give the lease (and with it the key) up: resign
    CLEAR = "clear"  # revoke a lease of ours that outlived our leading (see observed)


@dataclass(frozen=True)
class LeaseParams:
    ttl: int  # seconds asked of the store
    renew_interval: float
    max_drift: float = 0.01
    stop_margin: float = 0.2
    handover_poll: float = HANDOVER_POLL

    def safe_for(self, ttl: float) -> float:
        """Seconds after sending a request that granted ``ttl`` during which we may lead."""
        return ttl * (1.0 - self.max_drift) - self.stop_margin


@dataclass
class LeaseStats:
    requests: int = 0
    failures: int = 0
    terms_won: int = 0
    stepped_down_unrenewed: int = 0  # stopped at safe_until for want of a renewal
    quorum_lost: int = 0
    stale_revoked: int = 0  # leases of ours given up after we stopped leading under them


@dataclass
class Leadership:
    """One node's view of the election; all times are the caller's monotonic seconds."""

    params: LeaseParams
    me: str  # what this node writes into the key (its relay address)
    state: State = State.INITIALIZE
    lease: int | None = None  # our lease id at the store
    granted_ttl: float = 0.0
    safe_until: float = 0.0  # see the module's docstring
    held_term: int | None = None  # the term of the key held on our lease
    leader: str | None = None  # who holds the key, as last seen
    leader_term: int = 0  # the highest term seen
    faults: dict[str, str] = field(default_factory=dict)  # declines to campaign, by source
    resigning: bool = False  # a planned handover: revoke, then let another take over
    handed_over_until: float = 0.0  # no campaign before this (a handover's hold-off)
    recheck: bool = False  # the key changed (a watch's hint): read it even while leading
    stale_lease: int | None = None  # a lease of ours the key is on, not the one we hold
    last_ok: float = 0.0  # when the last request that succeeded was sent
    next_renew: float = 0.0
    next_campaign: float = 0.0
    stats: LeaseStats = field(default_factory=LeaseStats)

    # --- lifecycle ---------------------------------------------------------------

    def start(self, now: float) -> list[Transition]:
        self.last_ok = now  # the quorum is given a TTL to answer first
        return self._settle(now, "started")

    def stop(self, now: float) -> list[Transition]:
        return self._to(State.STOPPED, "stopped", now)

    # --- what to send, and when ---------------------------------------------------

    def due(self, now: float) -> Step | None:
        """The request to send now, or None until :meth:`next_time`."""
        if self.lease is not None and (self.resigning or self.faults):
            return Step.REVOKE
        if self.stale_lease is not None and now >= self.next_campaign:
            return Step.CLEAR
        if self.faults or (self.handed_over_until > now and self.lease is None):
            return Step.OBSERVE if now >= self.next_campaign else None
        if self.lease is None or now >= self.next_renew:
            return self._lease_step(now)
        if (self.held_term is None or self.recheck) and now >= self.next_campaign:
            return Step.CAMPAIGN
        return None

    def _lease_step(self, now: float) -> Step | None:
        if self.lease is None:
            return Step.GRANT if now >= self.next_renew else None
        return Step.RENEW

    def next_time(self) -> float:
        """When :meth:`due` or :meth:`tick` next has something to do."""
        times = [self.next_renew, self.next_campaign, self.last_ok + self.params.ttl]
        if self.state is State.MASTER:
            times.append(self.safe_until)
        if self.handed_over_until:
            times.append(self.handed_over_until)
        return min(times)

    def is_leader(self, now: float) -> bool:
        """Whether this node may relay, reply and hold the VIP at ``now``."""
        return (
            self.held_term is not None
            and now < self.safe_until
            and not self.faults
            and not self.resigning
        )

    # --- results of requests (``sent``: when the request left) -----------------------

    def granted(self, lease: int, ttl: float, sent: float, now: float) -> list[Transition]:
        self._ok(sent)
        self.lease, self.granted_ttl, self.held_term = lease, ttl, None
        self.safe_until = sent + self.params.safe_for(ttl)
        self.next_renew = sent + self.params.renew_interval
        self.next_campaign = now
        return self._settle(now, "lease granted")

    def renewed(self, ttl: float, sent: float, now: float) -> list[Transition]:
        """A keep-alive's answer; ``ttl <= 0``: the lease had already expired."""
        self._ok(sent)
        self.next_renew = sent + self.params.renew_interval
        if ttl <= 0:
            self._drop_lease()
            self.next_renew = now  # a new lease at once
            return self._settle(now, "lease expired at the store")
        self.safe_until = max(self.safe_until, sent + self.params.safe_for(ttl))
        return self._settle(now, "lease renewed")

    def observed(
        self, holder: str | None, holder_lease: int | None, term: int, sent: float, now: float
    ) -> list[Transition]:
        """A campaign's or a read's answer: who holds the key (None: nobody) and its term."""
        self._ok(sent)
        self.recheck = False
        if holder is None:
            self.leader, self.stale_lease = None, None
            if self.held_term is not None:  # our key is gone: someone deleted it
                self.held_term = None
            self.next_campaign = self._next_read(sent, now)
            return self._settle(now, "no leader")
        self.leader_term = max(self.leader_term, term)
        self.leader = holder
        if holder_lease is not None and holder_lease == self.lease:
            if self.held_term is None:
                self.stats.terms_won += 1
            self.held_term = term
        else:
            self.held_term = None
            if holder == self.me:
                # our own address on a lease we do not hold: one we stepped down from (it
                # may live on at the store, lease promotion even renews it) or our previous
                # run's; nobody leads under it, so give it up now rather than at its expiry
                self.stale_lease = holder_lease
            else:
                self.handed_over_until = 0.0  # someone took over: campaign normally again
        self.next_campaign = now if self.stale_lease else self._next_read(sent, now)
        return self._settle(now, f"{holder} leads (term {term})")

    def revoked(self, sent: float, now: float) -> list[Transition]:
        self._ok(sent)
        self._drop_lease()
        self.resigning = False
        if self.leader == self.me:
            self.leader = None  # the key went with the lease: nobody leads until one is seen
        self.next_campaign = self._next_read(sent, now)
        return self._settle(now, "resigned")

    def cleared(self, sent: float, now: float) -> list[Transition]:
        """The stale lease is revoked (or was already gone): the key is free, campaign."""
        self._ok(sent)
        self.stale_lease = None
        self.stats.stale_revoked += 1
        self.next_campaign = now
        return self._settle(now, "stale lease revoked")

    def failed(self, step: Step, now: float) -> list[Transition]:
        """A request got no answer (timeout, refused, error): try again soon."""
        self.stats.failures += 1
        retry = now + self.params.renew_interval * RETRY_FRACTION
        if step in (Step.GRANT, Step.RENEW, Step.REVOKE):
            self.next_renew = retry
        else:
            self.next_campaign = retry
        return self.tick(now)

    # --- time and operator inputs ----------------------------------------------------

    def tick(self, now: float) -> list[Transition]:
        """The deadlines: the leader's safe time, the quorum's silence."""
        if self.held_term is not None and now >= self.safe_until:
            self.stats.stepped_down_unrenewed += 1
            self._drop_lease()  # it may live on at the store; a new lease, a new term
            self.next_renew = now
        if self.handed_over_until and now >= self.handed_over_until:
            self.handed_over_until = 0.0
        return self._settle(now, "lease not renewed in time")

    def changed(self, now: float) -> list[Transition]:
        """The key changed (or a watch began, which may have missed a change): read it now."""
        self.recheck = True
        self.next_campaign = min(self.next_campaign, now)
        return []

    def awaiting_successor(self, now: float) -> bool:
        """Resigned, within the hold-off, no other holder seen yet."""
        return self.handed_over_until > now and self.lease is None

    def decline(self, source: str, reason: str, now: float) -> list[Transition]:
        """Do not lead while ``source`` says so (a failing health track, a link down)."""
        self.faults[source] = reason
        return self._settle(now, reason)

    def accept(self, source: str, now: float) -> list[Transition]:
        if self.faults.pop(source, None) is None:
            return []
        self.next_renew = now
        return self._settle(now, f"{source} cleared")

    def resign(self, now: float, hold_off: float) -> list[Transition]:
        """A planned handover: revoke the lease; no campaign for ``hold_off`` seconds
        unless another node takes over first (then campaigning is normal again)."""
        self.resigning = self.lease is not None
        self.handed_over_until = now + hold_off
        return self._settle(now, "handover")

    # --- internals ---------------------------------------------------------------------

    def quorum(self, now: float) -> bool:
        """Whether the store answered within the last lease TTL."""
        return now - self.last_ok < self.params.ttl

    def _ok(self, sent: float) -> None:
        self.stats.requests += 1
        self.last_ok = max(self.last_ok, sent)

    def _next_read(self, sent: float, now: float) -> float:
        if self.awaiting_successor(now):
            return sent + self.params.handover_poll
        return sent + self.params.renew_interval

    def _drop_lease(self) -> None:
        self.lease, self.held_term, self.safe_until = None, None, 0.0

    def _settle(self, now: float, reason: str) -> list[Transition]:
        if self.state is State.STOPPED:
            return []
        if self.faults:
            return self._to(State.FAULT, next(iter(self.faults.values())), now)
        if not self.quorum(now):
            if self.state is not State.FAULT:
                self.stats.quorum_lost += 1
            self.leader = None
            return self._to(State.FAULT, NO_QUORUM, now)
        if self.is_leader(now):
            return self._to(State.MASTER, reason, now)
        return self._to(State.BACKUP, reason, now)

    def _to(self, new: State, reason: str, now: float) -> list[Transition]:
        if new is self.state:
            return []
        old, self.state = self.state, new
        return [Transition(old, new, reason, now)]
