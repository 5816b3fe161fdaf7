"""Gap-free streams: the figures behind tests/integration/test_gapfree.py, printed.

    sudo .venv/bin/python bench/gapfree.py            # ~1 min

Four scenarios in a namespace site (remote centre, router, two vipcast nodes, a counting
app on each): 5 % random loss on node2's cluster port at 20k/s for 10 s; node2's data
plane frozen 200 ms (SIGSTOP) at 10k/s; a planned handover at 5k/s; a crash of the master
(SIGKILL of its whole process group) at 5k/s. For each: what was sent, what each app got,
duplicates, order, what the receivers recovered and reported lost. Bounded in count and
time; traffic stays inside the namespaces it makes.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.lab import faults  # noqa: E402
from tests.lab.nodes import VipcastNode, start_node, start_sender, start_sink  # noqa: E402
from tests.lab.wait import wait_until  # noqa: E402

from vipcast.daemon import control  # noqa: E402
from vipcast.lab.site import VIP, Lab, Site, build_site  # noqa: E402

CLUSTER = {"group": "239.255.86.1:8601"}


def stat(node: VipcastNode, name: str) -> int:
    return int(node.status()["feeds"].get("radar", {}).get(name, 0))


def pair(site: Site, mode: str = "payload") -> tuple[VipcastNode, VipcastNode]:
    feeds = [{"name": "radar", "port": 8600, "deliver": ["127.0.0.1:9600"], "mode": mode}]
    n1 = start_node(site, 1, election={"priority": 150}, cluster=CLUSTER, feeds=feeds)
    n2 = start_node(site, 2, cluster=CLUSTER, feeds=feeds)
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    return n1, n2


def summary(name: str, sent: int, got: list[list[int]], extra: str) -> str:
    cells = []
    for i, numbers in enumerate(got, 1):
        dup = len(numbers) - len(set(numbers))
        order = "in order" if numbers == sorted(numbers) else "OUT OF ORDER"
        cells.append(f"node{i} {len(set(numbers)):,}/{sent:,} ({dup} dup, {order})")
    same = "identical" if got[0] == got[-1] else "differ"
    return f"{name:<28} {'; '.join(cells)}; apps {same}; {extra}"


def loss(site: Site) -> str:
    n1, n2 = pair(site)
    faults.random_loss(site.nodes[1], 5, udp_dport=8601)
    apps = [start_sink(site, 1), start_sink(site, 2)]
    count = 200_000
    start_sender(site, (VIP, 8600), count, 20_000).wait(60)
    wait_until(lambda: stat(n2, "delivered") + stat(n2, "lost") >= count, 30)
    envelopes, dropped = stat(n1, "envelopes"), faults.dropped_by_loss(site.nodes[1])
    got = [a.result() for a in apps]
    extra = (
        f"{dropped:,} of {envelopes:,} envelopes dropped at node2, "
        f"{stat(n2, 'recovered'):,} datagrams recovered, {stat(n2, 'lost')} lost"
    )
    return summary("5 % loss, 20k/s x 10 s", count, got, extra)


def frozen(site: Site) -> str:
    _, n2 = pair(site)
    apps = [start_sink(site, 1), start_sink(site, 2)]
    count = 20_000
    sender = start_sender(site, (VIP, 8600), count, 10_000)
    wait_until(lambda: stat(n2, "delivered") > 2000, 10)
    with open(f"/proc/{n2.proc.pid}/task/{n2.proc.pid}/children") as f:
        dataplane = int(f.read().split()[0])
    with faults.stalled(dataplane):
        time.sleep(0.2)  # the freeze itself
    sender.wait(30)
    wait_until(lambda: stat(n2, "delivered") + stat(n2, "lost") >= count, 20)
    got = [a.result() for a in apps]
    extra = f"{stat(n2, 'recovered')} recovered, {stat(n2, 'lost')} lost"
    return summary("node2 frozen 200 ms, 10k/s", count, got, extra)


def handover(site: Site) -> str:
    n1, n2 = pair(site)
    apps = [start_sink(site, 1), start_sink(site, 2)]
    count = 25_000
    sender = start_sender(site, (VIP, 8600), count, 5_000)
    wait_until(lambda: stat(n1, "relayed") > 5000, 10)
    began = time.monotonic()
    answer = control.request(n1.socket, "handover", timeout=20, wait=10)
    took = time.monotonic() - began
    sender.wait(30)
    wait_until(lambda: stat(n2, "delivered") >= count, 20)
    got = [a.result() for a in apps]
    extra = f"'{answer.get('message')}' in {took * 1000:.0f} ms, {stat(n2, 'lost')} lost"
    return summary("planned handover, 5k/s", count, got, extra)


def crash(site: Site) -> str:
    n1, n2 = pair(site, mode="envelope")
    app = start_sink(site, 2, envelope=True)
    count = 20_000
    sender = start_sender(site, (VIP, 8600), count, 5_000)
    wait_until(lambda: stat(n1, "relayed") > 5000, 10)
    n1.proc.kill_group(signal.SIGKILL)
    n2.wait_state("MASTER", 5)
    sender.wait(30)
    wait_until(lambda: stat(n2, "delivered") > count // 2, 10)
    records = [tuple(r) for batch in app.result() for r in batch]
    old = min(s for s, _, _ in records)
    seqs = [q for s, q, _ in records if s == old]
    holes = max(seqs) - len(seqs)
    numbers = [n for _, _, n in records]
    extra = (
        f"{count - len(numbers)} never reached a live master; reported lost "
        f"{stat(n2, 'lost')}, holes the app saw {holes}"
    )
    return summary("crash of the master, 5k/s", count, [numbers], extra)


def main() -> int:
    scenarios: list[Callable[[Site], str]] = [loss, frozen, handover, crash]
    lines: list[Any] = []
    for scenario in scenarios:
        with Lab() as lab:
            lines.append(scenario(build_site(lab)))
            print(lines[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
