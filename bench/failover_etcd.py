"""Failover outage of vipcast's etcd backend (ARP and route announcement) next to its
VRRP backend, in one run.

    .venv/bin/python bench/failover_etcd.py                   # 3 runs per cell (~5 min)
    .venv/bin/python bench/failover_etcd.py --repeats 5 --lease-ttl 1 --vrrp-interval 0.1
    .venv/bin/python bench/failover_etcd.py --raft-leader ""  # etcd picks its raft leader

Needs root (namespaces), etcd, etcdctl and BIRD 2. Each run builds a fresh site:

* VRRP and etcd+ARP: the standard site (remote -> router -> switch -> node1, node2); for
  etcd also a 3-member etcd (vipcast.lab.etcd: one member in each node's namespace, one on
  a witness host, raft heartbeat 50 ms / election timeout 500 ms so that etcd grants a 1 s
  lease), its raft leader moved to the witness (``--raft-leader``, ``etcdctl
  move-leader``) as docs/operations.md recommends;
* etcd+route: the two-subnet site (vipcast.lab.routed: node1 and node2 on subnets of
  their own behind the router, BGP from each node's BIRD to the router's, hold time 3 s),
  a 3-member etcd with one member on each node and one on the witness, each in a subnet of
  its own (the same raft timings and raft leader),
  ``[vip] announce = "route"``: the VIP is a host route the leader's BIRD announces.

node1 leads, node2 follows; the remote sends ``--rate`` numbered datagrams/s through the
router to VIP:8600, received on both nodes by bench/failover.py's receivers (bound to
the VIP with IP_FREEBIND, kernel timestamps), so the outage is the address's move as
the apps on the VIP see it. Then node1 fails:

* crash: the host is gone: SIGKILL of node1's daemon and its data plane (no
  resignation, no last advert, no route withdrawn) and node1's link down at once (its
  switch port; in the routed site the router's interface to it) (a SIGKILL alone leaves
  the VIP on node1, where these receivers would still get traffic; with etcd+ARP,
  node1's member goes too, as in a real host crash);
* handover: ``vipcast handover`` on node1 (VRRP: priority 0 advert after the backup
  is master; etcd: the lease revoked, the VIP kept until node2 holds the key).

The outage is the longest gap in the merged arrival stream, lost the numbers that
arrived nowhere (bench/failover.py's ``assess``). VRRP and etcd+ARP announce with ARP
(``vip.garp_*`` defaults: 5 GARPs, request and reply, 50 ms apart). Bounded: every
sender and wait has a count or a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "bench")]

from tests.lab import oracles  # noqa: E402
from tests.lab.nodes import VipcastNode, render_config, start_node  # noqa: E402
from tests.lab.wait import wait_until  # noqa: E402

import failover as fo  # noqa: E402
from vipcast.daemon import control  # noqa: E402
from vipcast.lab import etcd, routed  # noqa: E402
from vipcast.lab.site import Lab, Site, build_site, node_address, sweep  # noqa: E402

Backend = Literal["vrrp", "etcd", "route"]
Failure = Literal["crash", "handover"]
BACKENDS: tuple[Backend, ...] = ("vrrp", "etcd", "route")
LABELS = {"vrrp": "VRRP", "etcd": "etcd+ARP", "route": "etcd+route"}
FAILURES: tuple[Failure, ...] = ("crash", "handover")
HANDOVER_WAIT = 10.0  # s the handover may wait for the successor
START_WAIT = 30.0  # s for a node's first state, BGP sessions, the route (a loaded machine)


def etcd_settings(endpoints: list[str], args: argparse.Namespace) -> dict[str, object]:
    return {
        "endpoints": endpoints,
        "lease_ttl": args.lease_ttl,
        "renew_interval": args.renew_interval,
    }


def start_backend(
    site: Site, backend: Backend, args: argparse.Namespace
) -> tuple[list[VipcastNode], etcd.EtcdCluster | None]:
    if backend == "vrrp":
        pair = fo.start_pair(site, "vipcast", args.vrrp_interval)
        return [pair[0], pair[1]], None  # type: ignore[list-item]
    members = etcd.build_etcd_cluster(
        site, election_ms=args.election_ms, raft_leader=args.raft_leader or None
    )
    nodes = []
    for i in (1, 2):
        settings = etcd_settings(members.endpoints(first=f"node{i}"), args)
        node = start_node(site, i, election={"backend": "etcd"}, etcd=settings, vip=fo.VIPCAST_VIP)
        node.wait_state("MASTER" if i == 1 else "BACKUP", START_WAIT)
        nodes.append(node)
    wait_until(
        lambda: nodes[1].status()["master"] == node_address(1), 5, what="node2 sees node1 lead"
    )
    return nodes, members


def start_routed(site: routed.RoutedSite, args: argparse.Namespace) -> list[VipcastNode]:
    """etcd + ``announce = "route"`` on the two-subnet site, node1 leading."""
    wait_until(lambda: routed.established(site), START_WAIT, what="BGP sessions established")
    addresses = [routed.node_address(i) for i in (1, 2)]
    nodes = []
    for i in (1, 2):
        sections = {
            "node": {
                "name": f"node{i}",
                "interface": "eth0",
                "control_socket": str(site.lab.workdir / f"node{i}.sock"),
            },
            "election": {"backend": "etcd"},
            "etcd": etcd_settings(site.etcd_endpoints(i), args),
            "vip": {
                "addresses": [f"{routed.VIP}/32"],
                "announce": "route",
                "route_table": routed.ROUTE_TABLE,
                "route_protocol": routed.ROUTE_PROTOCOL,
            },
            "cluster": {"receivers": [f"{a}:8601" for a in addresses], "members": addresses},
        }
        path = site.lab.workdir / f"node{i}.toml"
        path.write_text(render_config(sections))
        proc = site.nodes[i - 1].spawn(
            [sys.executable, "-m", "vipcast", "run", "--config", str(path)], name="vipcast"
        )
        node = VipcastNode(i, path, str(sections["node"]["control_socket"]), proc)
        node.wait_state("MASTER" if i == 1 else "BACKUP", START_WAIT)
        nodes.append(node)
    wait_until(
        lambda: routed.router_route(site) == [addresses[0]],
        START_WAIT,
        what="the router's route to the VIP via node1",
    )
    return nodes


def fail(site: Site | routed.RoutedSite, master: VipcastNode, failure: Failure) -> str:
    if failure == "crash":  # the host is gone: the daemon and, with it, its link
        master.proc.kill_group(signal.SIGKILL)
        if isinstance(site, routed.RoutedSite):
            site.router.set_link("eth0", up=False)  # the router's interface to node1
        else:
            site.switch.set_link("p-node1", up=False)
        return "killed"
    answer = control.request(
        master.socket, "handover", timeout=HANDOVER_WAIT + 5, wait=HANDOVER_WAIT
    )
    return str(answer.get("message") or answer.get("error"))


def failover_once(
    backend: Backend, failure: Failure, args: argparse.Namespace
) -> tuple[fo.Outcome, str]:
    """One failover on a fresh site: the outcome, and etcd's raft leader at the failure."""
    with Lab() as lab:
        raft_leader, members = "-", None
        if backend == "route":
            site: Site | routed.RoutedSite = routed.build_routed_site(
                lab, election_ms=args.election_ms, raft_leader=args.raft_leader or None
            )
            master, _backup = start_routed(site, args)  # type: ignore[arg-type]
            vip = routed.VIP
            assert site.etcd is not None
            raft_leader = site.etcd.leader() or "none"
        else:
            site = build_site(lab)
            (master, _backup), members = start_backend(site, backend, args)
            vip = fo.VIP
        receivers = [fo.Receiver(node, vip=vip) for node in site.nodes]
        after = 2 * args.lease_ttl + 2.0
        count = int(args.rate * (fo.WARMUP + after))
        proc = fo.sender(site, count, args.rate, vip=vip)  # type: ignore[arg-type]
        try:
            wait_until(lambda: receivers[0].arrivals, 5, what="traffic reaches node1")
            fo.steady_pacing(proc)
            wait_until(
                lambda: len(receivers[0].arrivals) >= args.rate * fo.WARMUP * 0.9,
                fo.WARMUP + 5,
                what="a second of traffic at node1",
            )
            if isinstance(site, Site):
                node1_mac = oracles.link_mac(site.nodes[0])
                wait_until(
                    lambda: oracles.neighbour_mac(site.router, fo.VIP) == node1_mac,
                    2,
                    what="router's ARP entry for the VIP -> node1",
                )
                if fo.holders(site) != {1}:
                    raise RuntimeError(f"before the failure the VIP is on nodes {fo.holders(site)}")
                if members is not None:
                    raft_leader = members.leader() or "none"
            failed_at = time.time()
            note = fail(site, master, failure)
            proc.wait(count / args.rate + 10)
            time.sleep(0.2)  # the last datagrams in flight
        finally:
            proc.stop()
            for r in receivers:
                r.close()
        interval = args.vrrp_interval if backend == "vrrp" else args.lease_ttl
        outcome = fo.assess("vipcast", failure, interval, receivers, count, failed_at, [])  # type: ignore[arg-type]
        outcome.impl = backend
        if failure == "handover" and not note.startswith("handed over"):
            outcome.took_over = False
        return outcome, raft_leader


def cell(outcomes: Sequence[fo.Outcome], backend: str, failure: str) -> str:
    chosen = [o for o in outcomes if (o.impl, o.failure) == (backend, failure)]
    if not chosen:
        return "-"
    out = [o.outage_ms for o in chosen]
    lost = [o.lost for o in chosen]
    flag = "" if all(o.took_over for o in chosen) else " NO TAKEOVER"
    return (
        f"{statistics.median(out):.0f} [{min(out):.0f}-{max(out):.0f}] "
        f"lost {statistics.median(lost):g} [{min(lost)}-{max(lost)}]{flag}"
    )


def table(outcomes: Sequence[fo.Outcome], args: argparse.Namespace) -> str:
    heads = {
        "vrrp": f"VRRP (advert_interval {args.vrrp_interval:g} s)",
        "etcd": f"etcd+ARP (lease_ttl {args.lease_ttl} s)",
        "route": f"etcd+route (lease_ttl {args.lease_ttl} s)",
    }
    lines = [
        "| failure | "
        + " | ".join(f"{heads[b]} outage ms, lost" for b in BACKENDS)
        + " | etcd target |",
        "|---|" + "---|" * len(BACKENDS) + "---|",
    ]
    targets = {"crash": f"< {(args.lease_ttl + 0.5) * 1000:.0f} ms", "handover": "0 lost"}
    for failure in FAILURES:
        cells = " | ".join(cell(outcomes, b, failure) for b in BACKENDS)
        lines.append(f"| {failure} | {cells} | {targets[failure]} |")
    return "\n".join(lines)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--repeats", type=int, default=3, help="runs per cell (default 3)")
    p.add_argument("--rate", type=float, default=1000.0, help="datagrams/s (default 1000)")
    p.add_argument("--lease-ttl", type=int, default=1, help="etcd.lease_ttl, s (default 1)")
    p.add_argument("--renew-interval", type=float, default=0.25, help="etcd.renew_interval")
    p.add_argument("--election-ms", type=int, default=etcd.ELECTION_MS, help="etcd raft")
    p.add_argument("--vrrp-interval", type=float, default=0.1, help="advert_interval, s")
    p.add_argument(
        "--raft-leader",
        default="witness",
        help='the etcd member made raft leader (etcdctl move-leader); "" leaves it to etcd',
    )
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, of {','.join(BACKENDS)} (default all)",
    )
    p.add_argument(
        "--failures",
        default=",".join(FAILURES),
        help=f"comma-separated, of {','.join(FAILURES)} (default both)",
    )
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    args = p.parse_args(argv)
    if not 1 <= args.repeats <= 20 or not 1 <= args.rate <= 20000:
        p.error("--repeats 1..20, --rate 1..20000")
    args.failures = [f for f in args.failures.split(",") if f]
    if not args.failures or any(f not in FAILURES for f in args.failures):
        p.error(f"--failures: of {','.join(FAILURES)}")
    args.backends = [b for b in args.backends.split(",") if b]
    if not args.backends or any(b not in BACKENDS for b in args.backends):
        p.error(f"--backends: of {','.join(BACKENDS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    sweep()
    started = time.monotonic()
    outcomes: list[fo.Outcome] = []
    records: list[dict[str, object]] = []
    for failure in args.failures:
        for repeat in range(args.repeats):
            for backend in args.backends:  # interleaved: drift on the machine hits all alike
                o, raft_leader = failover_once(backend, failure, args)
                outcomes.append(o)
                records.append({**asdict(o), "raft_leader": raft_leader})
                print(
                    f"{failure:8}  #{repeat + 1}  {LABELS[backend]:10}  raft leader "
                    f"{raft_leader:7}  outage {o.outage_ms:7.1f} ms  "
                    f"lost {o.lost:5}  gap began {o.gap_after_failure_ms:+7.1f} ms after "
                    f"the failure; floor {o.floor_ms:.1f} ms"
                    + ("" if o.took_over else "  NO TAKEOVER"),
                    flush=True,
                )
    print(
        f"\nrate {args.rate:g}/s, {args.repeats} run(s) per cell, load "
        f"{os.getloadavg()[0]:.1f}: median [min-max]\n"
    )
    print(table(outcomes, args))
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
