"""Prometheus metrics, in a registry of the daemon's own (tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STATES = ("INITIALIZE", "BACKUP", "MASTER", "FAULT", "STOPPED")
# the election's send paths: VRRP adverts, GARP/NA frames, the VIPs' netlink requests
SEND_PATHS = ("advert", "announce", "vip_add", "vip_remove")
# where the election catches a bug: its callbacks, one of the machine's actions, the
# VIP retry, an announcement (also sent from paced tasks)
CALLBACKS = ("timer", "adverts", "netlink", "action", "vip_retry", "announce")
# why an envelope or NACK is refused: the receiver's own checks, then every
# BadEnvelope reason of vipcast.core (a unit test keeps this list complete)
DECODE_REASONS = (
    "address", "bad_tag", "count", "length", "magic", "no_tag", "replay", "sequence",
    "session", "stale", "truncated", "type", "unknown_key", "version",
)  # fmt: skip
ENVELOPE_REJECT_REASONS = ("foreign", "feed", *DECODE_REASONS)
NACK_REJECT_REASONS = ("foreign", *DECODE_REASONS)
# per-feed counters: the data plane's FeedStats name -> (metric name, HELP)
FEED_COUNTERS = {
    "relayed": ("datagrams_relayed", "datagrams received on VIP:port and relayed (master)"),
    "envelopes": ("envelopes_sent", "DATA envelopes sent to the cluster, first transmissions"),
    "oversized": (
        "datagrams_oversized",
        "datagrams too big for one unfragmented envelope, relayed in a fragmented one",
    ),
    "dropped_too_big": ("datagrams_dropped_too_big", "datagrams too big for any envelope"),
    "not_master": ("datagrams_not_master", "datagrams received while not master (dropped)"),
    "fanout_errors": ("fanout_errors", "envelope sends to a receiver that failed"),
    "retransmitted": ("datagrams_retransmitted", "datagrams resent in answer to NACKs"),
    "unavailable": ("datagrams_unavailable", "datagrams asked for that were not buffered"),
    "delivered": ("datagrams_delivered", "datagrams delivered to local applications"),
    "lost": ("datagrams_lost", "datagrams reported lost (unrecoverable gaps)"),
    "recovered": ("datagrams_recovered", "datagrams recovered by retransmission"),
    "duplicates": ("datagrams_duplicates", "duplicate datagrams discarded"),
    "delivery_errors": ("delivery_errors", "sends to local applications that failed"),
    "replies_sent": ("datagrams_replies_sent", "application replies sent from the VIP"),
    "replies_dropped": (
        "datagrams_replies_dropped",
        "application replies dropped (not the master, or answering another term's request)",
    ),
    "nacks_refused": ("nacks_refused", "NACKs not answered (not a member, over the budget)"),
}


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
            # up to seconds: lateness is compared with the Master_Down_Interval (3.6 s at
            # the default 1 s adverts) by packaging/prometheus/vipcast-rules.yml
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 3, 5),
            registry=r,
        )
        self.down_interval = Gauge(
            "vipcast_master_down_interval_seconds",
            "the VRRP Master_Down_Interval in effect (priority, master's advert interval)",
            registry=r,
        )
        self.timer_lateness_max = Gauge(
            "vipcast_timer_lateness_max_seconds", "the latest timer fire seen", registry=r
        )
        self.feed = {
            stat: Counter(f"vipcast_{name}", text, ["feed"], registry=r)
            for stat, (name, text) in FEED_COUNTERS.items()
        }
        self.envelopes_rejected = Counter(
            "vipcast_envelopes_rejected", "envelopes refused, by reason", ["reason"], registry=r
        )
        self.nacks_rejected = Counter(
            "vipcast_nacks_rejected", "NACKs refused, by reason", ["reason"], registry=r
        )
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
        for reason in ENVELOPE_REJECT_REASONS:
            self.envelopes_rejected.labels(reason)
        for reason in NACK_REJECT_REASONS:
            self.nacks_rejected.labels(reason)
        for old in STATES:
            for new in STATES:
                if old != new:
                    self.transitions.labels(old, new)

    def init_feeds(self, feeds: list[str], ignored_reasons: tuple[str, ...]) -> None:
        """Every feed's label sets at zero, so the first loss is an increase."""
        for feed in feeds:
            for metric in (*self.feed.values(), self.split_brains):
                metric.labels(feed)
            for reason in ignored_reasons:
                self.envelopes_ignored.labels(feed, reason)

    def set_state(self, state: str) -> None:
        for s in STATES:
            self.state.labels(s).set(1 if s == state else 0)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP in a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
