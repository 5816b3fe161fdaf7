"""The data-plane process: ``python -m vipcast.daemon.dataplane --config F --control-fd N``.

It builds the relays, the receiver and the outbound ports from the config,
then runs its epoll loop. The main process tells it when this node becomes or
stops being master; it reports counters and events back.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from vipcast import config
from vipcast.config import Config
from vipcast.core import envelope as env
from vipcast.core import replies, timing
from vipcast.core.relay_session import DrainWatch, end_times
from vipcast.daemon import guard, scheduling
from vipcast.daemon.dataplane.deliver import Delivery
from vipcast.daemon.dataplane.keyring import Keyring
from vipcast.daemon.dataplane.loop import Loop, Timer
from vipcast.daemon.dataplane.outbound import Outbound
from vipcast.daemon.dataplane.receiver import ClusterReceiver, relay_host
from vipcast.daemon.dataplane.relay import Fanout, FeedRelay
from vipcast.daemon.dataplane.stats import FeedStats
from vipcast.daemon.quietlog import QuietLogger, setup_logging
from vipcast.daemon.vips import route_spec

log = logging.getLogger("vipcast.dataplane")
quiet = QuietLogger(log)

STATS_INTERVAL = 0.5


class Dataplane:
    def __init__(
        self,
        cfg: Config,
        control: socket.socket,
        node_id: int,
        source: str,
        config_path: Path | None = None,
    ) -> None:
        self.cfg, self.control, self.node_id, self.source = cfg, control, node_id, source
        self.config_path = config_path  # read again on "reload"
        self.keys = Keyring(cfg.cluster.auth, node_id)
        self.loop = Loop()
        vip = str(cfg.vip.addresses[0].ip)
        self.stats = {f.feed_id: FeedStats() for f in cfg.feeds}
        self.fanout = Fanout(cfg.cluster, cfg.node.interface, source)
        self.relays = {
            f.feed_id: FeedRelay(
                f, vip, cfg.cluster, node_id, self.fanout, self.stats[f.feed_id], self.keys.signer
            )
            for f in cfg.feeds
        }
        self.deliveries = {
            f.feed_id: Delivery(f, self.stats[f.feed_id], node_id) for f in cfg.feeds
        }
        self.receiver = ClusterReceiver(
            cfg.cluster,
            cfg.node.interface,
            self.deliveries,
            self.stats,
            self.emit,
            node_id,
            self.keys.signer,
            self.keys.envelopes,
        )
        self.receiver_endpoints = {(relay_host(h), p) for h, p in cfg.cluster.receivers}
        self.rejected_nacks: dict[str, int] = {}
        # our own envelopes go straight to our receiver, not back through the kernel
        self.fanout.deliver_locally(self._on_local_envelopes, (source, cfg.cluster.port))
        self.outbounds = [
            Outbound(
                f,
                self.relays[f.feed_id],
                self.stats[f.feed_id],
                partial(self.speaking, f.feed_id),
                partial(self.answers_for, f.feed_id),
            )
            for f in cfg.feeds
            if f.outbound
        ]
        self.master = False
        self.term = 0  # the fencing term our relay stamps (the master op's; 0: VRRP)
        self.leader_term = 0  # the term the election names the leader with (the leader op's)
        self._seq_timer: Timer | None = None
        self._seq_timer_at: float | None = None

    # --- wiring ---------------------------------------------------------------------

    def run(self) -> None:
        loop = self.loop
        loop.add_reader(self.control.fileno(), self._on_control)
        loop.add_reader(self.receiver.fileno(), self._on_envelopes)
        loop.add_reader(self.fanout.sock.fileno(), self._on_nacks)
        for relay in self.relays.values():
            loop.add_reader(relay.sock.fileno(), relay.on_readable)
        for out in self.outbounds:
            loop.add_reader(out.fileno(), out.on_readable)
        self._every(STATS_INTERVAL, self._report)
        self._every(timing.HEARTBEAT_TICK_NS / 1e9, self._heartbeats)
        self._send({"op": "ready"})
        try:
            loop.run()
        finally:
            self._close()

    def _every(self, interval: float, callback: Any) -> None:
        def tick() -> None:
            self.loop.call_later(interval, tick)  # first: a callback that raises stops nothing
            callback()

        self.loop.call_later(interval, tick)

    def _on_envelopes(self) -> None:
        self.receiver.on_readable()
        self._rearm_sequencer()

    def _on_local_envelopes(
        self, items: Sequence[bytes | env.Message], source: tuple[str, int]
    ) -> None:
        self.receiver.accept_local(items, source)
        self._rearm_sequencer()

    def _rearm_sequencer(self) -> None:
        at = self.receiver.next_timer()
        if at == self._seq_timer_at:
            return
        if self._seq_timer is not None:
            self._seq_timer.cancel()
        self._seq_timer_at = at
        self._seq_timer = None if at is None else self.loop.call_at(at, self._on_seq_timer)

    def _on_seq_timer(self) -> None:
        self._seq_timer = self._seq_timer_at = None
        self.receiver.on_timer()
        self._rearm_sequencer()

    def _on_nacks(self) -> None:
        while batch := self.fanout.receiver.receive():
            for r in batch:
                self._serve_nack(bytes(r.payload), r.source)

    def _serve_nack(self, data: bytes, peer: tuple[str, int]) -> None:
        """Answer a member's NACK, to that member's receiver only; refuse anything else."""
        if not self._is_receiver(peer):
            self._refuse_nack("foreign", peer, "not a cluster member's receiver address")
            return
        try:
            msg = env.decode_message_untrusted(data, auth=self.keys.nacks, now=time.time_ns())
        except env.BadEnvelope as e:
            self._refuse_nack(e.reason, peer, str(e))
            return
        relay = self.relays.get(msg.feed) if isinstance(msg, env.Nack) else None
        if relay is None or not isinstance(msg, env.Nack):
            self._refuse_nack("type", peer, "not a NACK for a feed of ours")
            return
        self.fanout.send_to(relay.serve_nack(msg, peer), peer)

    def _is_receiver(self, peer: tuple[str, int]) -> bool:
        """A receiver's address: listed in cluster.receivers, or a member at cluster.port."""
        host = relay_host(peer[0])
        if self.receiver_endpoints:
            return (host, peer[1]) in self.receiver_endpoints
        return peer[1] == self.cfg.cluster.port and self.receiver.is_member(peer[0])

    def _refuse_nack(self, reason: str, peer: tuple[str, int], detail: str) -> None:
        self.rejected_nacks[reason] = self.rejected_nacks.get(reason, 0) + 1
        quiet.warning(f"nack:{reason}", "NACK from %s:%d refused: %s", peer[0], peer[1], detail)

    def _heartbeats(self) -> None:
        beats = [b for r in self.relays.values() for b in r.idle_messages()]
        if beats:
            self.fanout.send(beats)

    # --- role changes ---------------------------------------------------------------

    def set_master(self, master: bool, term: int = 0) -> None:
        """Relay (``master``) under the fencing ``term`` the election holds, or stop."""
        if master == self.master:
            return
        self.master = master
        if master:
            self.term = term
            self.set_leader(self.source, term)  # our own relay is the one to follow
            sessions = [relay.start(term) for relay in self.relays.values()]
            session = sessions[0] if sessions else 0
            self.emit(
                "relay",
                f"relaying under session {session:x}, term {term}",
                session=session,
                term=term,
            )
        else:
            for relay in self.relays.values():
                relay.on_readable()  # whatever is still queued goes out first
            ends = [(r, e) for r in self.relays.values() if (e := r.stop()) is not None]
            if ends:
                self._send_repeated(ends)
            self.emit("relay", "relaying stopped (end of session sent)")

    def speaking(self, feed: int) -> bool:
        """Replies on ``feed`` leave from here (the rule: :mod:`vipcast.core.replies`),
        under the term our relay stamps (etcd: only while we hold the current term)."""
        return self.leader_term == self.term and replies.answers(
            holds_vips=self.master,
            delivering=self.receiver.sequencer.session(feed),
            own_session=self.relays[feed].session,
            leads=self.receiver.leader == relay_host(self.source),
        )

    def answers_for(self, feed: int, session: int) -> bool:
        """A reply naming the request's ``session`` leaves from here: our relay's own."""
        return self.leader_term == self.term and replies.answers_request(
            holds_vips=self.master,
            request_session=session,
            own_session=self.relays[feed].session,
        )

    def set_leader(self, address: str | None, term: int = 0) -> None:
        """The election sees ``address`` as master (None: nobody) under ``term``."""
        self.leader_term = term
        self.receiver.set_leader(address, term)
        self._rearm_sequencer()

    def _send_repeated(self, messages: Sequence[tuple[FeedRelay, env.Message]]) -> None:
        """Control messages that close or end sessions go out now and a few times more.

        Each copy is sealed anew: with cluster keys, a copy of the same bytes would be
        refused as a replay.
        """

        def again() -> None:
            self.fanout.send([relay.seal(msg) for relay, msg in messages])

        now = time.monotonic_ns()
        for at in end_times(now):
            self.loop.call_later((at - now) / 1e9, again)

    def drain(self) -> None:
        """Report "drained" once no relay has received anything for a few ticks."""
        watch = DrainWatch()

        def tick() -> None:
            if watch.tick(sum(s.relayed for s in self.stats.values())) or not self.master:
                self._send({"op": "drained"})
            else:
                self.loop.call_later(timing.DRAIN_TICK_NS / 1e9, tick)

        tick()

    # --- control channel ------------------------------------------------------------

    def _on_control(self) -> None:
        try:
            data = self.control.recv(65536)
        except BlockingIOError:
            return
        if not data:  # the main process is gone: stop relaying, exit
            guard.release_vips(
                self.cfg.node.interface, self.cfg.vip.addresses, route_spec(self.cfg)
            )
            self.set_master(False)
            self.loop.stop()
            return
        msg = json.loads(data)
        if msg.get("op") == "master":
            self.set_master(bool(msg["value"]), int(msg.get("term", 0)))
        elif msg.get("op") == "leader":
            self.set_leader(msg.get("address"), int(msg.get("term", 0)))
        elif msg.get("op") == "drain":
            self.drain()
        elif msg.get("op") == "closing":
            beats = [(r, b) for r in self.relays.values() if (b := r.closing_heartbeat())]
            if beats:
                self._send_repeated(beats)
        elif msg.get("op") == "reload":
            self.reload()
        elif msg.get("op") == "stop":
            self.set_master(False)
            self.loop.stop()

    def reload(self) -> None:
        """Read the config file again and apply what can change live: the cluster keys."""
        if self.config_path is None:
            return
        try:
            new = config.load(self.config_path)
        except config.ConfigError as e:
            log.error("reload refused, keeping the running keys: %s", e)
            return
        old = self.cfg.cluster
        problem = self.keys.reload(new.cluster.auth)
        if problem is None:
            self.cfg = replace(self.cfg, cluster=replace(old, auth=new.cluster.auth))
        if problem or replace(new.cluster, auth=old.auth) != old:
            log.warning(
                "reload: %s; restart vipcast to apply", problem or "cluster settings changed"
            )
        self.emit("reloaded", "data plane reloaded", keys=self.keys.status())

    def emit(self, kind: str, message: str, **data: Any) -> None:
        self._send({"op": "event", "kind": kind, "message": message, "data": data})

    def _report(self) -> None:
        self.receiver.refresh_stats()
        feeds = {f.name: self.stats[f.feed_id].to_dict() for f in self.cfg.feeds}
        sessions = {f.name: self.relays[f.feed_id].session for f in self.cfg.feeds}
        self._send(
            {
                "op": "stats",
                "feeds": feeds,
                "sessions": sessions,
                "rejected": dict(self.receiver.rejected),
                "rejected_nacks": dict(self.rejected_nacks),
                "delivering": {f.name: self.receiver.session_of(f.feed_id) for f in self.cfg.feeds},
                "leader": self.receiver.leader,
                "terms": {f.name: self.receiver.sequencer.term(f.feed_id) for f in self.cfg.feeds},
                "auth": self.keys.status(),
            }
        )

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self.control.send(json.dumps(msg).encode())
        except (BlockingIOError, BrokenPipeError, ConnectionError):
            quiet.warning("control", "main process not reading; report dropped")

    def _close(self) -> None:
        for relay in self.relays.values():
            relay.close()
        for out in self.outbounds:
            out.close()
        for delivery in self.deliveries.values():
            delivery.close()
        self.receiver.close()
        self.fanout.close()
        self.loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vipcast-dataplane")
    parser.add_argument("--config", required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--source", required=True, help="this node's LAN address")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    scheduling.normal()  # the relay must never delay the election's real-time timers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: None)
    control = socket.socket(fileno=args.control_fd)
    control.setblocking(False)
    cfg = config.load(args.config)
    guard.release_on_parent_death(cfg.node.interface, cfg.vip.addresses, route_spec(cfg))
    Dataplane(cfg, control, args.node_id, args.source, Path(args.config)).run()
    return 0
