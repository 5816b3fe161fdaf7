"""Real etcd clusters in a site: one member per node namespace and one on a witness host.

::

    node1 198.18.0.11 ── etcd "node1"  ┐
    node2 198.18.0.12 ── etcd "node2"  ├─ one raft cluster, clients on :2379, peers on :2380
    witness 198.18.0.30 ── etcd "witness" ┘

Each member is a real ``etcd`` process (Debian ``etcd-server``) in its host's namespace,
its data directory in the lab's workdir, so a member stopped with :meth:`EtcdCluster.kill`
comes back with :meth:`EtcdCluster.start` as the same member. Clients may use TLS
(:class:`ServerTls`: a CA and one server certificate for every member's address); peers
speak plain http on the lab's LAN. Every wait is bounded (``timeout``), and the
members' raft timings are the caller's (``heartbeat_ms``, ``election_ms``): etcd grants
no lease shorter than 1.5 election timeouts, so ``lease_ttl = 1`` needs ``election_ms``
600 or less. ``raft_leader="witness"`` keeps etcd's raft leader off the nodes, as
docs/operations.md recommends (a node's crash then costs etcd no raft election).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from vipcast.lab.netns import NETNS_DIR
from vipcast.lab.process import NsProcess
from vipcast.lab.site import (
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    WITNESS,
    Host,
    Lab,
    Site,
    node_address,
)

HEARTBEAT_MS = 50
ELECTION_MS = 500  # 10 heartbeats; the smallest lease etcd then grants is 1 s
START_TIMEOUT = 20.0  # s for every member to answer healthy
POLL = 0.1  # s between health checks while waiting
ETCDCTL_TIMEOUT = 5.0  # s for one etcdctl run


@dataclass(frozen=True)
class ServerTls:
    """Client-side TLS of the members: the CA, a server certificate valid for every
    member's address, and whether clients must present a certificate the CA signed."""

    ca_file: str
    cert_file: str
    key_file: str
    client_cert_auth: bool = False


@dataclass(frozen=True)
class ClientCreds:
    """What etcdctl (the lab's own admin tool) presents: TLS files and a user."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    user: str | None = None  # "name:password", as etcdctl --user takes it


@dataclass
class EtcdMember:
    name: str
    host: Host
    address: str
    args: list[str]
    proc: NsProcess | None = None

    def client_url(self, scheme: str) -> str:
        return f"{scheme}://{self.address}:{ETCD_CLIENT_PORT}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class EtcdCluster:
    lab: Lab
    members: list[EtcdMember]
    scheme: str  # "http" or "https" for clients
    admin: ClientCreds = field(default_factory=ClientCreds)
    preferred_leader: str | None = None  # the member kept as raft leader (see start)

    def member(self, name: str) -> EtcdMember:
        return next(m for m in self.members if m.name == name)

    def endpoints(self, first: str | None = None) -> list[str]:
        """Every member's client URL; ``first`` (a member's name) leads the list."""
        ordered = sorted(self.members, key=lambda m: m.name != first)
        return [m.client_url(self.scheme) for m in ordered]

    # --- processes ------------------------------------------------------------------

    def start(self, name: str | None = None, timeout: float = START_TIMEOUT) -> None:
        """Start one member (or all not running) and wait until it answers healthy; then
        give the raft leadership back to ``preferred_leader`` if one is set."""
        chosen = [self.member(name)] if name else [m for m in self.members if not m.running]
        for m in chosen:
            m.proc = m.host.spawn(m.args, name=f"etcd-{m.name}")
        self.wait_healthy([m.name for m in chosen], timeout)
        if self.preferred_leader is not None:
            self.move_leader(self.preferred_leader, timeout)

    def move_leader(self, to: str, timeout: float = START_TIMEOUT) -> None:
        """Make member ``to`` etcd's raft leader (``etcdctl move-leader``, asked of the
        current leader) and wait until every running member says so."""
        deadline = time.monotonic() + timeout
        while (leader := self.leader()) != to:
            if leader is not None and self.member(to).running:
                target = f"{self.member_id(to):x}"
                self.etcdctl(leader, "move-leader", target, check=False)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"etcd's raft leader is {leader}, not {to}, after {timeout:g}s")
            time.sleep(POLL)  # the poll interval of a bounded wait

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Stop one member at once (SIGKILL: a crash; SIGTERM: etcd hands leadership on)."""
        m = self.member(name)
        if m.proc is not None:
            m.proc.signal(sig)
            m.proc.wait(10)

    # --- questions ------------------------------------------------------------------

    def wait_healthy(self, names: Sequence[str], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            pending = [n for n in pending if not self.healthy(n)]
            dead = [n for n in pending if not self.member(n).running]
            if dead:
                raise RuntimeError(f"etcd member(s) {dead} exited: see the lab's logs")
            if pending and time.monotonic() >= deadline:
                raise TimeoutError(f"etcd member(s) {pending} not healthy after {timeout:g}s")
            if pending:
                time.sleep(POLL)  # the poll interval of a bounded wait

    def healthy(self, name: str) -> bool:
        """Whether the member answers a linearizable read (so a raft leader is known)."""
        return self.etcdctl(name, "endpoint", "health", check=False).returncode == 0

    def member_id(self, name: str) -> int:
        done = self.etcdctl(name, "endpoint", "status", "-w", "json")
        return int(json.loads(done.stdout)[0]["Status"]["header"]["member_id"])

    def leader(self) -> str | None:
        """The raft leader's member name, as the running members report it."""
        ids: dict[int, str] = {}
        leader_id = None
        for m in self.members:
            if not m.running:
                continue
            done = self.etcdctl(m.name, "endpoint", "status", "-w", "json", check=False)
            if done.returncode != 0:
                continue
            for status in json.loads(done.stdout):
                s = status["Status"]
                ids[int(s["header"]["member_id"])] = m.name
                leader_id = int(s["leader"]) or leader_id
        return ids.get(leader_id) if leader_id is not None else None

    def etcdctl(self, via: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """etcdctl against member ``via``, run in that member's namespace."""
        m = self.member(via)
        a = self.admin
        flags = [f"--endpoints={m.client_url(self.scheme)}", "--dial-timeout=1s"]
        flags += [f"--cacert={a.ca_file}"] * bool(a.ca_file)
        flags += [f"--cert={a.cert_file}", f"--key={a.key_file}"] * bool(a.cert_file)
        flags += [f"--user={a.user}"] * bool(a.user)
        return subprocess.run(
            ["nsenter", f"--net={NETNS_DIR / m.host.ns}", "--", "etcdctl", *flags, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=ETCDCTL_TIMEOUT,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        )


def add_witness_host(site: Site, name: str = "witness", address: str = WITNESS) -> Host:
    """A third host on the LAN (no etcd of its own yet)."""
    host = site.lab.host(name)
    site.lab.plug(site.switch, host, "eth0")
    host.add_address("eth0", f"{address}/24")
    host.set_link("lo", up=True)
    return host


def build_etcd_cluster(
    site: Site,
    *,
    tls: ServerTls | None = None,
    heartbeat_ms: int = HEARTBEAT_MS,
    election_ms: int = ELECTION_MS,
    timeout: float = START_TIMEOUT,
    raft_leader: str | None = None,
) -> EtcdCluster:
    """Three members (node1, node2, a new witness host), started and healthy; with
    ``raft_leader`` (a member's name, e.g. "witness") that member is made etcd's raft
    leader, and made it again whenever a member is started."""
    witness = add_witness_host(site)
    places = [(f"node{i}", h, node_address(i)) for i, h in enumerate(site.nodes[:2], 1)]
    places.append(("witness", witness, WITNESS))
    return start_members(
        site.lab,
        places,
        tls=tls,
        heartbeat_ms=heartbeat_ms,
        election_ms=election_ms,
        timeout=timeout,
        raft_leader=raft_leader,
    )


def start_members(
    lab: Lab,
    places: Sequence[tuple[str, Host, str]],
    *,
    tls: ServerTls | None = None,
    heartbeat_ms: int = HEARTBEAT_MS,
    election_ms: int = ELECTION_MS,
    timeout: float = START_TIMEOUT,
    raft_leader: str | None = None,
) -> EtcdCluster:
    """One member per ``(name, host, address)``, wherever the hosts are (one LAN, or
    subnets behind a router), started and healthy; the rest as :func:`build_etcd_cluster`."""
    initial = ",".join(f"{n}=http://{a}:{ETCD_PEER_PORT}" for n, _, a in places)
    scheme = "https" if tls else "http"
    token = f"{lab.prefix}etcd"  # one lab's members never join another's
    members = []
    for name, host, address in places:
        args = _member_args(lab, name, address, scheme, initial, token, tls)
        args += [f"--heartbeat-interval={heartbeat_ms}", f"--election-timeout={election_ms}"]
        members.append(EtcdMember(name, host, address, args))
    admin = ClientCreds(tls.ca_file, None, None) if tls else ClientCreds()
    if tls and tls.client_cert_auth:  # the server certificate serves as etcdctl's too
        admin = ClientCreds(tls.ca_file, tls.cert_file, tls.key_file)
    cluster = EtcdCluster(lab, members, scheme, admin, preferred_leader=raft_leader)
    cluster.start(timeout=timeout)
    return cluster


def _member_args(
    lab: Lab,
    name: str,
    address: str,
    scheme: str,
    initial: str,
    token: str,
    tls: ServerTls | None,
) -> list[str]:
    client = f"{scheme}://{address}:{ETCD_CLIENT_PORT}"
    peer = f"http://{address}:{ETCD_PEER_PORT}"
    args = [
        "etcd",
        f"--name={name}",
        f"--data-dir={lab.workdir / f'etcd-{name}'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={initial}",
        "--initial-cluster-state=new",  # ignored once the data directory exists
        f"--initial-cluster-token={token}",
        "--pre-vote",  # a member back from a partition does not depose the raft leader
    ]
    if tls is not None:
        args += [
            f"--cert-file={tls.cert_file}",
            f"--key-file={tls.key_file}",
            f"--trusted-ca-file={tls.ca_file}",
        ]
        args += ["--client-cert-auth"] * tls.client_cert_auth
    return args
