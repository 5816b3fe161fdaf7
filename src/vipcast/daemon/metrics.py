"""Prometheus metrics, in a registry of the daemon's own (tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STATES = ("INITIALIZE", "BACKUP", "MASTER", "FAULT", "STOPPED")
# the election's send paths: VRRP adverts, GARP/NA frames, the VIPs' netlink requests
SEND_PATHS = ("advert", "announce", "vip_add", "vip_remove")
# where the election catches a bug: its callbacks, one of the machine's actions, the
# VIP retry, an announcement (also sent from paced tasks)
CALLBACKS = ("timer", "adverts", "netlink", "action", "vip_retry", "announce")


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.state = Gauge("vipcast_state", "1 for the current VRRP state", ["state"], registry=r)
        self.priority = Gauge("vipcast_priority", "effective VRRP priority", registry=r)
        self.transitions = Counter(
            "vipcast_transitions", "VRRP state transitions", ["old", "new"], registry=r
        )
        self.adverts_sent = Counter("vipcast_adverts_sent", "adverts sent", registry=r)
        self.adverts_received = Counter(
            "vipcast_adverts_received", "valid adverts received", registry=r
        )
        self.adverts_rejected = Counter(
            "vipcast_adverts_rejected", "adverts rejected", ["reason"], registry=r
        )
        self.announcements = Counter(
            "vipcast_announcements", "gratuitous ARP / unsolicited NA frames sent", registry=r
        )
        self.vip_restored = Counter(
            "vipcast_vip_restored", "VIPs removed by someone else and put back", registry=r
        )
        self.send_errors = Counter(
            "vipcast_send_errors", "election sends that failed", ["path"], registry=r
        )
        self.callback_errors = Counter(
            "vipcast_election_errors",
            "unexpected exceptions caught in the election's callbacks",
            ["callback"],
            registry=r,
        )
        self.timer_lateness = Histogram(
            "vipcast_timer_lateness_seconds",
            "how late the election's timers fired",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.timer_lateness_max = Gauge(
            "vipcast_timer_lateness_max_seconds", "the latest timer fire seen", registry=r
        )
        self.feed = {
            name: Counter(f"vipcast_datagrams_{name}", text, ["feed"], registry=r)
            for name, text in (
                ("relayed", "datagrams relayed to the cluster (master)"),
                ("delivered", "datagrams delivered to local applications"),
                ("lost", "datagrams reported lost (unrecoverable gaps)"),
                ("recovered", "datagrams recovered by retransmission"),
                ("duplicates", "duplicate datagrams discarded"),
                ("oversized", "datagrams too large for the envelope"),
                ("replies_sent", "application replies sent from the VIP"),
                ("replies_dropped", "application replies dropped on a backup"),
            )
        }
        # sessions and claims the receiver did not follow (FeedStats names -> metric)
        self.split_brains = Counter(
            "vipcast_split_brains",
            "sessions of another relay found after a split brain (their datagrams reported lost)",
            ["feed"],
            registry=r,
        )
        self.envelopes_ignored = Counter(
            "vipcast_envelopes_ignored",
            "envelopes of cluster members not acted on, by reason",
            ["feed", "reason"],
            registry=r,
        )
        for s in STATES:
            self.state.labels(s).set(0)
        for path in SEND_PATHS:
            self.send_errors.labels(path)
        for callback in CALLBACKS:
            self.callback_errors.labels(callback)

    def set_state(self, state: str) -> None:
        for s in STATES:
            self.state.labels(s).set(1 if s == state else 0)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP in a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
