"""Typed, frozen configuration loaded from TOML.

Every error names the key's path and the reason (``election.priority: 1..255``);
unknown keys are rejected so a typo never silently becomes a default.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from vipcast import keys as keyfiles
from vipcast.core import timing
from vipcast.core.vrrp import auth
from vipcast.core.vrrp.auth import AntiReplay, AuthMode
from vipcast.keys import Key

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = tuple[str, int]
ChecksumForm = Literal["pseudo-header", "message-only"]
DeliveryMode = Literal["payload", "envelope", "transparent"]
GarpForm = Literal["request", "reply", "both"]
AnnounceMode = Literal["arp", "route"]
RoleWhen = Literal["master", "backup", "always"]
DemoteTo = Literal["backup", "fault"]
ROLE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")
ElectionBackend = Literal["vrrp", "etcd"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; ``path`` names the key."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class NodeConfig:
    name: str
    interface: str
    control_socket: str = "/run/vipcast/control.sock"
    # our primary address on the interface (tie-break, unicast source); found if unset
    address: IPAddress | None = None
    node_id: int = 0  # 0: derived from the primary address


@dataclass(frozen=True)
class AdvertAuthConfig:
    """``[election.auth]``: keepalived 2.4's ``auth_hmac`` (see vipcast.core.vrrp.auth)."""

    keys: tuple[Key, ...]
    active_key: int
    mode: AuthMode = "enforce"
    anti_replay: AntiReplay = "time"
    time_window: int = auth.WINDOW_FLOOR  # seconds; unset: auth.default_time_window

    def secrets(self) -> dict[int, bytes]:
        return {k.id: k.secret for k in self.keys}


@dataclass(frozen=True)
class ElectionConfig:
    vrid: int = 1  # required with backend "vrrp"; with "etcd" it only names the lock
    backend: ElectionBackend = "vrrp"
    priority: int = 100
    advert_interval: float = 1.0
    preempt: bool = True
    preempt_delay: float = 0.0
    unicast_peers: tuple[IPAddress, ...] = ()
    checksum: ChecksumForm = "pseudo-header"
    auth: AdvertAuthConfig | None = None  # None: adverts unauthenticated (RFC 9568)


@dataclass(frozen=True)
class EtcdConfig:
    """``[etcd]``: leadership from an etcd v3 cluster (``election.backend = "etcd"``).

    The timing rule (vipcast.core.lease): a leader stops relaying, replying and
    announcing ``stop_margin`` seconds before its lease could expire at the server,
    counting ``max_drift`` of clock rate error against the server's clock.
    """

    endpoints: tuple[str, ...] = ()  # "http://198.18.0.30:2379", "https://..."
    election: str = "vipcast/leader"  # the key the leader holds on its lease
    lease_ttl: int = 2  # seconds asked of etcd (it may grant more; etcd 3.4 grants >= 2)
    renew_interval: float = 0.0  # 0: lease_ttl / 4
    request_timeout: float = 0.0  # 0: renew_interval
    max_drift: float = 0.01  # bound on the clock rate difference to the etcd leader
    stop_margin: float = 0.2  # seconds to stop everything before the lease can expire
    ca_file: str | None = None  # TLS: the CA that signed the servers' certificates
    cert_file: str | None = None  # TLS client certificate (with key_file)
    key_file: str | None = None
    user: str | None = None  # etcd authentication (with password or password_file)
    password: str | None = None  # inline; password_file keeps it out of the config file
    password_file: str | None = None  # its first line is the password

    @property
    def renew_every(self) -> float:
        return self.renew_interval or self.lease_ttl / 4

    @property
    def timeout(self) -> float:
        return self.request_timeout or self.renew_every


@dataclass(frozen=True)
class VipConfig:
    addresses: tuple[IPInterface, ...]
    # "arp": on node.interface, announced by GARP/NA; "route": a host route for BGP
    announce: AnnounceMode = "arp"
    garp_count: int = 5
    garp_interval: float = 0.05
    garp_refresh: float = 60.0  # seconds between periodic refreshes; 0 turns them off
    garp_form: GarpForm = "both"
    route_table: int = 100  # announce = "route": the table the host routes go in
    route_protocol: int = 200  # ... their protocol number (BIRD: krt_source)
    local_interface: str = "lo"  # ... where the VIP is a local address, never announced


@dataclass(frozen=True)
class ClusterAuth:
    """The envelopes' keys ([cluster.auth], or the cluster.key shorthand)."""

    keys: tuple[Key, ...]
    active_key: int  # the id envelopes are signed with
    anti_replay: AntiReplay = "time"  # "time": counters must be fresh as well as new
    time_window: float = 5.0  # seconds a counter may differ from this node's clock

    def secrets(self) -> dict[int, bytes]:
        return {k.id: k.secret for k in self.keys}

    @property
    def active_secret(self) -> bytes:
        return self.secrets()[self.active_key]

    @property
    def window_ns(self) -> int:
        """The freshness window in ns; 0 in monotonic mode (no freshness check)."""
        return int(self.time_window * 1e9) if self.anti_replay == "time" else 0


@dataclass(frozen=True)
class ClusterConfig:
    group: Endpoint | None = None
    receivers: tuple[Endpoint, ...] = ()
    port: int = 8601  # where this node's receiver listens
    auth: ClusterAuth | None = None  # None: envelopes unauthenticated
    members: tuple[IPAddress, ...] = ()  # accepted envelope sources; empty: the LAN subnet
    mtu: int = 1500
    retransmit_buffer: int = 65536  # datagrams kept per feed for recovery
    retransmit_age: float = 5.0  # seconds
    # seconds a new session waits for a crashed session's end, and for one closing
    takeover_grace: float = timing.TAKEOVER_GRACE_NS / 1e9
    handover_grace: float = timing.HANDOVER_GRACE_NS / 1e9
    reorder_window: int = 32768  # datagrams a receiver holds behind a gap


@dataclass(frozen=True)
class FeedConfig:
    name: str
    port: int
    deliver: tuple[Endpoint, ...] = ()
    mode: DeliveryMode = "payload"
    outbound: Endpoint | None = None
    send_to: tuple[Endpoint, ...] = ()
    feed_id: int = 0  # 1-based position in the file unless given


@dataclass(frozen=True)
class MetricsConfig:
    listen: Endpoint | None = None  # e.g. ("127.0.0.1", 9586); None: no endpoint


@dataclass(frozen=True)
class RoleConfig:
    name: str
    when: RoleWhen
    command: tuple[str, ...] = ()
    unit: str | None = None
    critical: bool = False
    stop_timeout: float = 10.0


@dataclass(frozen=True)
class TrackConfig:
    name: str
    kind: Literal["interface", "ping", "script"]
    target: str
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2
    weight: int = 0  # priority change while failing; 0 means Fault
    block_promotion: bool = False


@dataclass(frozen=True)
class HealthConfig:
    # seconds a track or critical role that failed must stay healthy before its
    # effect ends (doubling, up to 16x, for a cause that fails again soon after)
    hold_time: float = 30.0
    # a demoted node: "backup" advertises priority 1 (the master keeps the VIP when
    # every node is demoted), "fault" enters FAULT (no master when all are demoted)
    demote_to: DemoteTo = "backup"


@dataclass(frozen=True)
class Config:
    node: NodeConfig
    election: ElectionConfig
    vip: VipConfig
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    etcd: EtcdConfig | None = None  # with election.backend = "etcd" only
    feeds: tuple[FeedConfig, ...] = ()
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    roles: tuple[RoleConfig, ...] = ()
    tracks: tuple[TrackConfig, ...] = ()
    health: HealthConfig = field(default_factory=HealthConfig)
    notify: tuple[str, ...] = ()
    notify_timeout: float = 10.0


# --- writing (the demo and the test lab generate node files) -------------------


def render_toml(
    tables: Mapping[str, Mapping[str, Any]], feeds: Sequence[Mapping[str, Any]] = ()
) -> str:
    """A config file from plain values: ``[name]`` tables, then ``[[feed]]`` tables."""
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for feed in feeds:
        lines.append("[[feed]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in feed.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table: keys = { 1 = "hex:..." }
        return "{ " + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + " }"
    return repr(value)


# --- loading -----------------------------------------------------------------


def load(path: str | Path) -> Config:
    """Read and validate a TOML file (``file:`` key paths relative to its directory)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(str(path), e.strerror or str(e)) from e
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from e
    return parse(data, base=Path(path).parent)


def parse(data: Mapping[str, Any], *, base: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative ``file:`` keys are read from ``base``."""
    t = _Table(data, "")
    cfg = Config(
        node=_node(t.table("node")),
        election=_election(t.table("election"), base),
        vip=_vip(t.table("vip")),
        cluster=_cluster(t.table("cluster", required=False), base),
        etcd=_etcd(t.table("etcd"), base) if "etcd" in t.data else None,
        feeds=_feeds(t.array_of_tables("feed")),
        metrics=_metrics(t.table("metrics", required=False)),
        roles=_roles(t.array_of_tables("role")),
        tracks=tuple(_track(r) for r in t.array_of_tables("track")),
        health=_health(t.table("health", required=False)),
        notify=tuple(t.get("notify", _str_list, [])),
        notify_timeout=t.get("notify_timeout", _positive_float, Config.notify_timeout),
    )
    t.done()
    _check_cross(cfg)
    return cfg


def _node(t: _Table) -> NodeConfig:
    n = NodeConfig(
        name=t.get("name", _nonempty_str),
        interface=t.get("interface", _interface_name),
        control_socket=t.get("control_socket", _nonempty_str, "/run/vipcast/control.sock"),
        address=t.get("address", _ip_address, None),
        node_id=t.get("node_id", _int_range(0, 65535), 0),
    )
    t.done()
    return n


def _election(t: _Table, base: Path | None) -> ElectionConfig:
    interval = t.get("advert_interval", _advert_interval, 1.0)
    backend = t.get("backend", _choice("vrrp", "etcd"), ElectionConfig.backend)
    vrid_default = ElectionConfig.vrid if backend == "etcd" else _MISSING
    e = ElectionConfig(
        vrid=t.get("vrid", _int_range(1, 255), vrid_default),
        backend=backend,
        priority=t.get("priority", _int_range(1, 255), 100),
        advert_interval=interval,
        preempt=t.get("preempt", _bool, True),
        preempt_delay=t.get("preempt_delay", _float_range(0.0, 3600.0), 0.0),
        unicast_peers=tuple(t.get("unicast_peers", _list_of(_ip_address), [])),
        checksum=t.get("checksum", _choice("pseudo-header", "message-only"), "pseudo-header"),
        auth=_advert_auth(t.table("auth"), interval, base) if "auth" in t.data else None,
    )
    t.done()
    return e


def _advert_auth(t: _Table, interval: float, base: Path | None) -> AdvertAuthConfig:
    a = AdvertAuthConfig(
        keys=t.get("keys", _key_table(base)),
        active_key=t.get("active_key", _int_range(1, keyfiles.KEY_ID_MAX)),
        mode=t.get("mode", _choice(*auth.AUTH_MODES), "enforce"),
        anti_replay=t.get("anti_replay", _choice(*auth.ANTI_REPLAY), "time"),
        time_window=t.get(
            "time_window",
            _int_range(auth.WINDOW_MIN, auth.WINDOW_MAX),
            auth.default_time_window(interval),
        ),
    )
    t.done()
    if a.active_key not in a.secrets():
        raise ConfigError(
            t.path_of("active_key"), f"{a.active_key} is not one of the keys {sorted(a.secrets())}"
        )
    return a


def _etcd(t: _Table, base: Path | None) -> EtcdConfig:
    d = EtcdConfig
    e = EtcdConfig(
        endpoints=tuple(t.get("endpoints", _list_of(_etcd_endpoint))),
        election=t.get("election", _etcd_key, d.election),
        lease_ttl=t.get("lease_ttl", _int_range(1, 3600), d.lease_ttl),
        renew_interval=t.get("renew_interval", _float_range(0.0, 3600.0), d.renew_interval),
        request_timeout=t.get("request_timeout", _float_range(0.0, 60.0), d.request_timeout),
        max_drift=t.get("max_drift", _fraction(0.0, 0.1), d.max_drift),
        stop_margin=t.get("stop_margin", _float_range(0.0, 60.0), d.stop_margin),
        ca_file=t.get("ca_file", _readable_file(base), None),
        cert_file=t.get("cert_file", _readable_file(base), None),
        key_file=t.get("key_file", _readable_file(base), None),
        user=t.get("user", _nonempty_str, None),
        password=t.get("password", _nonempty_str, None),
        password_file=t.get("password_file", _readable_file(base), None),
    )
    t.done()
    _check_etcd(t, e)
    return e


def _check_etcd(t: _Table, e: EtcdConfig) -> None:
    """What each key allows but the lease rule or the client could not use together."""
    if not e.endpoints:
        raise ConfigError(t.path_of("endpoints"), "at least one etcd endpoint")
    if (e.cert_file is None) != (e.key_file is None):
        raise ConfigError(t.path_of("cert_file"), "give cert_file and key_file together")
    if e.password is not None and e.password_file is not None:
        raise ConfigError(t.path_of("password"), "give password or password_file, not both")
    if (e.user is None) != (e.password is None and e.password_file is None):
        raise ConfigError(t.path_of("user"), "give user with password or password_file")
    if e.renew_every >= e.lease_ttl / 2:
        raise ConfigError(
            t.path_of("renew_interval"), f"less than half of lease_ttl ({e.lease_ttl / 2:g} s)"
        )
    tls = any(u.startswith("https://") for u in e.endpoints)
    if (e.ca_file or e.cert_file) and not tls:
        raise ConfigError(t.path_of("endpoints"), "TLS files given: use https:// endpoints")
    if e.lease_ttl * (1 - e.max_drift) - e.stop_margin <= 2 * e.renew_every:
        raise ConfigError(
            t.path_of("stop_margin"),
            "too large for lease_ttl: the leader would stop before its second renewal",
        )


ARP_KEYS = ("garp_count", "garp_interval", "garp_refresh", "garp_form")
ROUTE_KEYS = ("route_table", "route_protocol", "local_interface")
RESERVED_TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
ROUTE_PROTOCOLS = (5, 255)  # 0..4 mean unspec, redirect, kernel, boot, static


def _vip(t: _Table) -> VipConfig:
    addresses = t.get("addresses", _list_of(_ip_interface))
    if not addresses:
        raise ConfigError(t.path_of("addresses"), "at least one address is needed")
    d = VipConfig
    v = VipConfig(
        addresses=tuple(addresses),
        announce=t.get("announce", _choice("arp", "route"), d.announce),
        garp_count=t.get("garp_count", _int_range(0, 100), d.garp_count),
        garp_interval=t.get("garp_interval", _float_range(0.0, 10.0), d.garp_interval),
        garp_refresh=t.get("garp_refresh", _float_range(0.0, 86400.0), d.garp_refresh),
        garp_form=t.get("garp_form", _choice("request", "reply", "both"), d.garp_form),
        route_table=t.get("route_table", _route_table, d.route_table),
        route_protocol=t.get("route_protocol", _int_range(*ROUTE_PROTOCOLS), d.route_protocol),
        local_interface=t.get("local_interface", _interface_name, d.local_interface),
    )
    t.done()
    _check_announce(t, v)
    return v


def _route_table(v: Any, path: str) -> int:
    table = _int_range(1, 2**32 - 1)(v, path)
    if table in RESERVED_TABLES:
        raise ConfigError(path, f"{table} is the kernel's {RESERVED_TABLES[table]!r} table")
    return table


def _check_announce(t: _Table, v: VipConfig) -> None:
    """Keys of the other announcement are refused, not ignored; route mode needs hosts."""
    other = ARP_KEYS if v.announce == "route" else ROUTE_KEYS
    for key in other:
        if key in t.data:
            raise ConfigError(t.path_of(key), f'does not apply with announce = "{v.announce}"')
    if v.announce != "route":
        return
    for i, a in enumerate(v.addresses):
        if a.network.prefixlen != a.max_prefixlen:
            raise ConfigError(
                f"{t.path_of('addresses')}[{i}]",
                f'with announce = "route" a VIP is a host address: {a.ip}/{a.max_prefixlen}',
            )


def _cluster(t: _Table, base: Path | None = None) -> ClusterConfig:
    c = ClusterConfig(
        group=t.get("group", _multicast_endpoint, None),
        receivers=tuple(t.get("receivers", _list_of(_endpoint), [])),
        port=t.get("port", _port, 8601),
        auth=_cluster_auth(t, base),
        members=tuple(t.get("members", _list_of(_ip_address), [])),
        mtu=t.get("mtu", _int_range(576, 65535), 1500),
        retransmit_buffer=t.get("retransmit_buffer", _int_range(0, 10_000_000), 65536),
        retransmit_age=t.get("retransmit_age", _float_range(0.0, 3600.0), 5.0),
        takeover_grace=t.get(
            "takeover_grace", _float_range(0.0, 60.0), ClusterConfig.takeover_grace
        ),
        handover_grace=t.get(
            "handover_grace", _float_range(0.0, 60.0), ClusterConfig.handover_grace
        ),
        reorder_window=t.get("reorder_window", _int_range(1, 10_000_000), 32768),
    )
    t.done()
    if c.group and c.receivers:
        raise ConfigError(t.path or "cluster", "give either group or receivers, not both")
    return c


def _cluster_auth(t: _Table, base: Path | None) -> ClusterAuth | None:
    """[cluster.auth], or cluster.key: the shorthand for key id 1 (its bytes unchanged)."""
    legacy = t.get("key", _key, None)
    if "auth" not in t.data:
        if legacy is None:
            return None
        return ClusterAuth((Key(SHORTHAND_KEY_ID, legacy),), SHORTHAND_KEY_ID)
    if legacy is not None:
        raise ConfigError(t.path_of("key"), "give cluster.key or [cluster.auth], not both")
    a = t.table("auth")
    found = a.get("keys", _key_table(base))
    active = a.get("active_key", _int_range(1, keyfiles.KEY_ID_MAX))
    if active not in {k.id for k in found}:
        raise ConfigError(a.path_of("active_key"), f"key id {active} is not in keys")
    cluster_auth = ClusterAuth(
        keys=found,
        active_key=active,
        anti_replay=a.get("anti_replay", _choice(*auth.ANTI_REPLAY), "time"),
        time_window=a.get("time_window", _float_range(1.0, 300.0), ClusterAuth.time_window),
    )
    a.done()
    return cluster_auth


def _key_table(base: Path | None) -> Callable[[Any, str], tuple[Key, ...]]:
    def conv(v: Any, path: str) -> tuple[Key, ...]:
        if not isinstance(v, Mapping) or not v:
            raise ConfigError(
                path, 'at least one key: a table of key id = value, e.g. { 1 = "file:PATH" }'
            )
        found = []
        for name, value in v.items():
            if not name.isdigit() or not isinstance(value, str):
                raise ConfigError(
                    f"{path}.{name}", 'key id (1..255) = "hex:...", "file:PATH" or ASCII'
                )
            try:
                found.append(keyfiles.parse_key(int(name), value, base=base))
            except keyfiles.BadKey as e:
                raise ConfigError(f"{path}.{name}", str(e)) from None
        if len({k.id for k in found}) != len(found):  # "1" and "01"
            raise ConfigError(path, "duplicate key id")
        return tuple(sorted(found, key=lambda k: k.id))

    return conv


def _feeds(tables: list[_Table]) -> tuple[FeedConfig, ...]:
    feeds = []
    for i, t in enumerate(tables, start=1):
        f = FeedConfig(
            name=t.get("name", _nonempty_str),
            port=t.get("port", _service_port),
            deliver=tuple(t.get("deliver", _list_of(_endpoint), [])),
            mode=t.get("mode", _choice("payload", "envelope", "transparent"), "payload"),
            outbound=t.get("outbound", _endpoint, None),
            send_to=tuple(t.get("send_to", _list_of(_endpoint), [])),
            feed_id=t.get("feed_id", _int_range(1, 65535), i),
        )
        t.done()
        feeds.append(f)
    _unique(tables, feeds, "name", lambda f: f.name)
    _unique(tables, feeds, "port", lambda f: f.port)
    _unique(tables, feeds, "feed_id", lambda f: f.feed_id)
    return tuple(feeds)


def _metrics(t: _Table) -> MetricsConfig:
    m = MetricsConfig(listen=t.get("listen", _endpoint, None))
    t.done()
    return m


def _health(t: _Table) -> HealthConfig:
    h = HealthConfig(
        hold_time=t.get("hold_time", _float_range(0.0, 3600.0), HealthConfig.hold_time),
        demote_to=t.get("demote_to", _choice("backup", "fault"), HealthConfig.demote_to),
    )
    t.done()
    return h


def _role_name(v: Any, path: str) -> str:
    name = _nonempty_str(v, path)
    if not set(name) <= ROLE_NAME_CHARS or name.startswith("."):
        raise ConfigError(path, "letters, digits and _.@- (it names the role's pidfile)")
    return name


def _role(t: _Table) -> RoleConfig:
    r = RoleConfig(
        name=t.get("name", _role_name),
        when=t.get("when", _choice("master", "backup", "always")),
        command=tuple(t.get("command", _str_list, [])),
        unit=t.get("unit", _nonempty_str, None),
        critical=t.get("critical", _bool, False),
        stop_timeout=t.get("stop_timeout", _positive_float, 10.0),
    )
    t.done()
    if bool(r.command) == bool(r.unit):
        raise ConfigError(t.path, "give exactly one of command or unit")
    return r


def _roles(tables: list[_Table]) -> tuple[RoleConfig, ...]:
    roles = [_role(t) for t in tables]
    seen: set[str] = set()
    for t, r in zip(tables, roles, strict=True):
        if r.name in seen:
            raise ConfigError(t.path_of("name"), f"duplicate role name {r.name!r}")
        seen.add(r.name)
    return tuple(roles)


def _track(t: _Table) -> TrackConfig:
    k = TrackConfig(
        name=t.get("name", _nonempty_str),
        kind=t.get("kind", _choice("interface", "ping", "script")),
        target=t.get("target", _nonempty_str),
        interval=t.get("interval", _positive_float, 1.0),
        timeout=t.get("timeout", _positive_float, 1.0),
        rise=t.get("rise", _int_range(1, 100), 2),
        fall=t.get("fall", _int_range(1, 100), 2),
        weight=t.get("weight", _int_range(-254, 254), 0),
        block_promotion=t.get("block_promotion", _bool, False),
    )
    t.done()
    return k


def vrrp_link_local(cfg: Config) -> bool:
    """Whether this node speaks VRRP, and relays envelopes, from its IPv6 link-local address.

    IPv6 multicast VRRP must (RFC 9568); unicast VRRP speaks in its peers' scope.
    """
    if cfg.vip.addresses[0].version != 6:
        return False
    peers = cfg.election.unicast_peers
    return not peers or peers[0].is_link_local


def _check_cross(cfg: Config) -> None:
    """What each table allows but ``run`` could not start together."""
    families = {a.version for a in cfg.vip.addresses}
    if len(families) > 1:
        raise ConfigError("vip.addresses", "IPv4 and IPv6 need separate virtual routers")
    _check_families(cfg, families.pop())
    _check_backend(cfg)
    if cfg.vip.announce == "route" and cfg.vip.local_interface == cfg.node.interface:
        raise ConfigError(
            "vip.local_interface", 'not node.interface (that is announce = "arp"): lo or a dummy'
        )
    if cfg.feeds and not (cfg.cluster.group or cfg.cluster.receivers):
        raise ConfigError("cluster", "feeds need cluster.group or cluster.receivers")
    if cfg.vip.addresses[0].version == 6:
        _check_ipv6_scopes(cfg)


def _check_backend(cfg: Config) -> None:
    if cfg.election.backend == "etcd" and cfg.etcd is None:
        raise ConfigError("etcd", 'election.backend = "etcd" needs an [etcd] table')
    if cfg.election.backend == "vrrp" and cfg.etcd is not None:
        raise ConfigError("etcd", 'an [etcd] table needs election.backend = "etcd"')


def _check_families(cfg: Config, version: int) -> None:
    """One family: the relay sends from the VRRP address, replies from the VIP."""
    c = cfg.cluster
    hosts: list[tuple[str, Sequence[str]]] = [
        ("node.address", [str(cfg.node.address)] if cfg.node.address else []),
        ("election.unicast_peers", [str(a) for a in cfg.election.unicast_peers]),
        ("cluster.group", [c.group[0]] if c.group else []),
        ("cluster.receivers", [host for host, _ in c.receivers]),
        ("cluster.members", [str(a) for a in c.members]),
    ]
    hosts += [(f"feed[{i}].send_to", [h for h, _ in f.send_to]) for i, f in enumerate(cfg.feeds)]
    for path, found in hosts:
        for host in found:
            if ipaddress.ip_address(host).version != version:
                raise ConfigError(path, f"{host} is not the VIPs' family (IPv{version})")


def _check_ipv6_scopes(cfg: Config) -> None:
    """IPv6 link-local or global, everywhere the same as the VRRP source."""
    peers = cfg.election.unicast_peers
    if len({p.is_link_local for p in peers}) > 1:
        raise ConfigError("election.unicast_peers", "all link-local (fe80::) or all global")
    link_local = vrrp_link_local(cfg)
    scope = "link-local" if link_local else "global"
    why = "IPv6 multicast VRRP" if not peers else "election.unicast_peers"
    address = cfg.node.address
    if address is not None and address.is_link_local != link_local:
        raise ConfigError("node.address", f"{address}: {why} needs this node's {scope} address")
    group = cfg.cluster.group
    if group and ipaddress.ip_address(group[0]).packed[1] & 0x0F < 2:
        raise ConfigError("cluster.group", f"{group[0]}: use a link-local (ff12::) or wider group")
    if cfg.cluster.receivers and link_local:
        raise ConfigError(
            "cluster.receivers",
            "IPv6 unicast receivers need election.unicast_peers with the nodes' global or "
            "unique-local addresses (the relay sends from the VRRP address, "
            "link-local with multicast VRRP)",
        )
    for host, _ in cfg.cluster.receivers:
        if ipaddress.ip_address(host).is_link_local:
            raise ConfigError("cluster.receivers", f"{host}: give the nodes' global addresses")
    for member in cfg.cluster.members:
        if member.is_link_local != link_local:
            raise ConfigError(
                "cluster.members",
                f"{member}: envelopes come from the nodes' {scope} addresses ({why})",
            )


def _unique(
    tables: list[_Table], feeds: list[FeedConfig], key: str, get: Callable[[FeedConfig], object]
) -> None:
    seen: set[object] = set()
    for t, f in zip(tables, feeds, strict=True):
        if get(f) in seen:
            raise ConfigError(t.path_of(key), f"duplicate {key} {get(f)!r}")
        seen.add(get(f))


# --- a table reader that tracks paths and unknown keys ------------------------

_MISSING: Any = object()


class _Table:
    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def path_of(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, conv: Callable[[Any, str], T], default: Any = _MISSING) -> T:
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise ConfigError(self.path_of(key), "required")
            return default  # type: ignore[no-any-return]
        return conv(self.data[key], self.path_of(key))

    def table(self, key: str, *, required: bool = True) -> _Table:
        self.used.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING and not required:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(self.path_of(key), "required table" if required else "a table")
        return _Table(value, self.path_of(key))

    def array_of_tables(self, key: str) -> list[_Table]:
        self.used.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise ConfigError(self.path_of(key), f"write it as [[{key}]] tables")
        return [_Table(v, f"{self.path_of(key)}[{i}]") for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(self.path_of(unknown[0]), "unknown key")


# --- value converters: (value, path) -> typed value ---------------------------


def _nonempty_str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(path, "a non-empty string")
    return v


def _str_list(v: Any, path: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ConfigError(path, "a list of strings")
    return v


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(path, "true or false")
    return v


def _int_range(lo: int, hi: int) -> Callable[[Any, str], int]:
    def conv(v: Any, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(path, f"an integer {lo}..{hi}")
        return v

    return conv


def _float_range(lo: float, hi: float) -> Callable[[Any, str], float]:
    def conv(v: Any, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ConfigError(path, f"a number of seconds {lo:g}..{hi:g}")
        return float(v)

    return conv


def _positive_float(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise ConfigError(path, "a positive number of seconds")
    return float(v)


def _advert_interval(v: Any, path: str) -> float:
    seconds = _float_range(0.01, 40.95)(v, path)
    if abs(round(seconds * 100) - seconds * 100) > 1e-6:
        raise ConfigError(path, "a whole number of centiseconds (0.01 steps)")
    return round(seconds * 100) / 100


def _choice(*options: str) -> Callable[[Any, str], Any]:
    def conv(v: Any, path: str) -> Any:
        if v not in options:
            raise ConfigError(path, "one of " + ", ".join(repr(o) for o in options))
        return v

    return conv


def _list_of(conv: Callable[[Any, str], T]) -> Callable[[Any, str], list[T]]:
    def convert(v: Any, path: str) -> list[T]:
        if not isinstance(v, list):
            raise ConfigError(path, "a list")
        return [conv(item, f"{path}[{i}]") for i, item in enumerate(v)]

    return convert


def _interface_name(v: Any, path: str) -> str:
    name = _nonempty_str(v, path)
    if len(name) > 15 or "/" in name or " " in name:
        raise ConfigError(path, "an interface name (at most 15 characters)")
    return name


def _ip_address(v: Any, path: str) -> IPAddress:
    try:
        return ipaddress.ip_address(_nonempty_str(v, path))
    except ValueError as e:
        raise ConfigError(path, f"an IP address ({e})") from e


def _ip_interface(v: Any, path: str) -> IPInterface:
    text = _nonempty_str(v, path)
    if "/" not in text:
        raise ConfigError(path, "an address with its prefix length, e.g. 198.18.0.100/24")
    try:
        return ipaddress.ip_interface(text)
    except ValueError as e:
        raise ConfigError(path, f"an address with prefix ({e})") from e


def _fraction(lo: float, hi: float) -> Callable[[Any, str], float]:
    def conv(v: Any, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ConfigError(path, f"a fraction {lo:g}..{hi:g}")
        return float(v)

    return conv


def _etcd_endpoint(v: Any, path: str) -> str:
    """http(s)://host:port, as etcdctl's --endpoints spells them."""
    text = _nonempty_str(v, path)
    scheme, sep, rest = text.partition("://")
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not sep or scheme not in ("http", "https") or not colon or not host:
        raise ConfigError(path, "an endpoint http://host:port or https://host:port")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(path, f"{port!r} is not a port")
    return f"{scheme}://{host}:{int(port)}"


def _etcd_key(v: Any, path: str) -> str:
    text = _nonempty_str(v, path)
    if not text.isprintable() or " " in text:
        raise ConfigError(path, "a key name without spaces or control characters")
    return text


def _readable_file(base: Path | None) -> Callable[[Any, str], str]:
    """A file's path, relative to the config file's directory; it must be readable now."""

    def conv(v: Any, path: str) -> str:
        p = Path(_nonempty_str(v, path))
        if not p.is_absolute() and base is not None:
            p = base / p
        try:
            p.read_bytes()
        except OSError as e:
            raise ConfigError(path, f"{p}: {e.strerror or e}") from None
        return str(p)

    return conv


def _port(v: Any, path: str) -> int:
    return _int_range(1, 65535)(v, path)


def _service_port(v: Any, path: str) -> int:
    """A port number, or a service name looked up in /etc/services."""
    if isinstance(v, str):
        try:
            return socket.getservbyname(v, "udp")
        except OSError:
            raise ConfigError(path, f"no UDP service named {v!r} in /etc/services") from None
    return _port(v, path)


def _endpoint(v: Any, path: str) -> Endpoint:
    text = _nonempty_str(v, path)
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        raise ConfigError(path, "host:port (IPv6 as [addr]:port)")
    addr = _ip_address(host, path)
    return (str(addr), _port(int(port), path))


def _multicast_endpoint(v: Any, path: str) -> Endpoint:
    host, port = _endpoint(v, path)
    if not ipaddress.ip_address(host).is_multicast:
        raise ConfigError(path, f"{host} is not a multicast group")
    return (host, port)


SHORTHAND_KEY_ID = 1  # cluster.key = S is [cluster.auth] keys = { 1 = S }, active_key = 1


def _key(v: Any, path: str) -> bytes:
    """cluster.key: its UTF-8 bytes, as before 1.1, so nodes not yet upgraded still verify."""
    text = _nonempty_str(v, path)
    if len(text) < 16:
        raise ConfigError(path, "a shared key of at least 16 characters")
    return text.encode()
