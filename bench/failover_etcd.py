"""Failover outage of vipcast's etcd backend next to its VRRP backend, in one run.

    .venv/bin/python bench/failover_etcd.py                   # 3 runs per cell (~3 min)
    .venv/bin/python bench/failover_etcd.py --repeats 5 --lease-ttl 1 --vrrp-interval 0.1

Needs root (namespaces), etcd and etcdctl. Each run builds a fresh standard site
(remote -> router -> switch -> node1, node2); for the etcd backend also a 3-member etcd
(vipcast.lab.etcd: one member in each node's namespace, one on a witness host, raft
heartbeat 50 ms / election timeout 500 ms so that etcd grants a 1 s lease). node1
leads, node2 follows; the remote sends ``--rate`` numbered datagrams/s through the
router to VIP:8600, received on both nodes by bench/failover.py's receivers (bound to
the VIP with IP_FREEBIND, kernel timestamps), so the outage is the address's move as
the apps on the VIP see it. Then node1 fails:

* crash: the host is gone: SIGKILL of node1's daemon and its data plane (no
  resignation, no last advert) and node1's switch port down at once (a SIGKILL alone
  leaves the VIP on node1's interface, where these receivers would still get traffic;
  with etcd, node1's member goes too, as in a real host crash);
* handover: ``vipcast handover`` on node1 (VRRP: priority 0 advert after the backup
  is master; etcd: the lease revoked, the VIP kept until node2 holds the key).

The outage is the longest gap in the merged arrival stream, lost the numbers that
arrived nowhere (bench/failover.py's ``assess``). Both backends announce with ARP
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
from tests.lab.nodes import VipcastNode, start_node  # noqa: E402
from tests.lab.wait import wait_until  # noqa: E402

import failover as fo  # noqa: E402
from vipcast.daemon import control  # noqa: E402
from vipcast.lab import etcd  # noqa: E402
from vipcast.lab.site import Lab, Site, build_site, node_address, sweep  # noqa: E402

Backend = Literal["vrrp", "etcd"]
Failure = Literal["crash", "handover"]
BACKENDS: tuple[Backend, ...] = ("vrrp", "etcd")
FAILURES: tuple[Failure, ...] = ("crash", "handover")
HANDOVER_WAIT = 10.0  # s the handover may wait for the successor


def start_backend(site: Site, backend: Backend, args: argparse.Namespace) -> list[VipcastNode]:
    if backend == "vrrp":
        pair = fo.start_pair(site, "vipcast", args.vrrp_interval)
        return [pair[0], pair[1]]  # type: ignore[list-item]
    members = etcd.build_etcd_cluster(site, election_ms=args.election_ms)
    nodes = []
    for i in (1, 2):
        settings = {
            "endpoints": members.endpoints(first=f"node{i}"),
            "lease_ttl": args.lease_ttl,
            "renew_interval": args.renew_interval,
        }
        node = start_node(site, i, election={"backend": "etcd"}, etcd=settings, vip=fo.VIPCAST_VIP)
        node.wait_state("MASTER" if i == 1 else "BACKUP", 15)
        nodes.append(node)
    wait_until(
        lambda: nodes[1].status()["master"] == node_address(1), 5, what="node2 sees node1 lead"
    )
    return nodes


def fail(site: Site, master: VipcastNode, failure: Failure) -> str:
    if failure == "crash":  # the host is gone: the daemon and, with it, its link
        master.proc.kill_group(signal.SIGKILL)
        site.switch.set_link("p-node1", up=False)
        return "killed"
    answer = control.request(
        master.socket, "handover", timeout=HANDOVER_WAIT + 5, wait=HANDOVER_WAIT
    )
    return str(answer.get("message") or answer.get("error"))


def failover_once(backend: Backend, failure: Failure, args: argparse.Namespace) -> fo.Outcome:
    with Lab() as lab:
        site = build_site(lab)
        master, _backup = start_backend(site, backend, args)
        receivers = [fo.Receiver(node) for node in site.nodes]
        after = 2 * args.lease_ttl + 2.0
        count = int(args.rate * (fo.WARMUP + after))
        proc = fo.sender(site, count, args.rate)
        try:
            wait_until(lambda: receivers[0].arrivals, 5, what="traffic reaches node1")
            fo.steady_pacing(proc)
            wait_until(
                lambda: len(receivers[0].arrivals) >= args.rate * fo.WARMUP * 0.9,
                fo.WARMUP + 5,
                what="a second of traffic at node1",
            )
            node1_mac = oracles.link_mac(site.nodes[0])
            wait_until(
                lambda: oracles.neighbour_mac(site.router, fo.VIP) == node1_mac,
                2,
                what="router's ARP entry for the VIP -> node1",
            )
            if fo.holders(site) != {1}:
                raise RuntimeError(f"before the failure the VIP is on nodes {fo.holders(site)}")
            failed_at = time.time()
            note = fail(site, master, failure)
            proc.wait(count / args.rate + 10)
            time.sleep(0.2)  # the last datagrams in flight
        finally:
            proc.stop()
            for r in receivers:
                r.close()
        interval = args.lease_ttl if backend == "etcd" else args.vrrp_interval
        outcome = fo.assess("vipcast", failure, interval, receivers, count, failed_at, [])  # type: ignore[arg-type]
        outcome.impl = backend
        if failure == "handover" and not note.startswith("handed over"):
            outcome.took_over = False
        return outcome


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
    lines = [
        f"| failure | VRRP (advert_interval {args.vrrp_interval:g} s) outage ms, lost "
        f"| etcd (lease_ttl {args.lease_ttl} s) outage ms, lost | etcd target |",
        "|---|---|---|---|",
    ]
    targets = {"crash": f"< {(args.lease_ttl + 0.5) * 1000:.0f} ms", "handover": "0 lost"}
    for failure in FAILURES:
        v, e = cell(outcomes, "vrrp", failure), cell(outcomes, "etcd", failure)
        lines.append(f"| {failure} | {v} | {e} | {targets[failure]} |")
    return "\n".join(lines)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--repeats", type=int, default=3, help="runs per cell (default 3)")
    p.add_argument("--rate", type=float, default=1000.0, help="datagrams/s (default 1000)")
    p.add_argument("--lease-ttl", type=int, default=1, help="etcd.lease_ttl, s (default 1)")
    p.add_argument("--renew-interval", type=float, default=0.25, help="etcd.renew_interval")
    p.add_argument("--election-ms", type=int, default=etcd.ELECTION_MS, help="etcd raft")
    p.add_argument("--vrrp-interval", type=float, default=0.1, help="advert_interval, s")
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    args = p.parse_args(argv)
    if not 1 <= args.repeats <= 20 or not 1 <= args.rate <= 20000:
        p.error("--repeats 1..20, --rate 1..20000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    sweep()
    started = time.monotonic()
    outcomes: list[fo.Outcome] = []
    for failure in FAILURES:
        for repeat in range(args.repeats):
            for backend in BACKENDS:  # interleaved: drift on the machine hits both alike
                o = failover_once(backend, failure, args)
                outcomes.append(o)
                print(
                    f"{failure:8}  #{repeat + 1}  {backend:4}  outage {o.outage_ms:7.1f} ms  "
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
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
