"""Soak: 10 ms adverts while the relay runs flat out. Are the election's timers disturbed?

    sudo .venv/bin/python bench/soak_relay.py [--seconds 60] [--rate 40000] [--interval 0.01]

Two vipcast nodes in a namespace site elect with the given advert interval while the
remote centre sends ``rate`` datagrams/s to the VIP for ``seconds`` (relay on node1,
receivers and apps on both nodes). Reports transitions after convergence (must be 0),
the election's worst timer lateness on each node (``status`` → timer_lateness_max_ms),
and what the relay delivered. The same run without traffic is the reference. Bounded
in count and time; traffic stays inside the namespaces it makes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.lab.nodes import VipcastNode, start_node  # noqa: E402
from tests.lab.wait import wait_until  # noqa: E402

from vipcast.lab.site import VIP, Lab, Site, build_site  # noqa: E402

FEEDS = [{"name": "load", "port": 8600, "deliver": ["127.0.0.1:9600"]}]


def pair(site: Site, interval: float) -> list[VipcastNode]:
    common: dict[str, Any] = {"cluster": {"group": "239.255.86.1:8601"}, "feeds": FEEDS}
    n1 = start_node(site, 1, election={"priority": 150, "advert_interval": interval}, **common)
    n2 = start_node(site, 2, election={"priority": 100, "advert_interval": interval}, **common)
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    wait_until(lambda: n2.status()["master"] is not None, 5)
    return [n1, n2]


def soak(seconds: float, rate: float, interval: float) -> dict[str, Any]:
    with Lab() as lab:
        site = build_site(lab)
        nodes = pair(site, interval)
        before = [n.status()["transitions"] for n in nodes]
        sender = None
        if rate:
            sender = site.remote.spawn(
                [
                    sys.executable,
                    str(ROOT / "bench" / "relay_peers.py"),
                    "send",
                    "--dst",
                    f"{VIP}:8600",
                    "--rate",
                    str(rate),
                    "--seconds",
                    str(seconds),
                    "--step",
                    "1",
                ],
                name="sender",
            )
            sender.wait(seconds + 30)
        else:
            time.sleep(seconds)  # the reference: the same time without traffic
        time.sleep(1.0)  # let the last counters reach the status
        after = [n.status() for n in nodes]
        sent = json.loads(sender.output().strip().splitlines()[-1]) if sender else {"sent": 0}
        return {
            "rate": rate,
            "sent": sent["sent"],
            "flaps": sum(a["transitions"] - b for a, b in zip(after, before, strict=True)),
            "states": [a["state"] for a in after],
            "lateness_ms": [a["timer_lateness_max_ms"] for a in after],
            "delivered": [a["feeds"].get("load", {}).get("delivered", 0) for a in after],
            "lost": [a["feeds"].get("load", {}).get("lost", 0) for a in after],
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=40_000.0)
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args(argv)
    rows = [soak(args.seconds, 0, args.interval), soak(args.seconds, args.rate, args.interval)]
    print(f"advert interval {args.interval * 1000:g} ms, {args.seconds:g} s per run")
    print(
        f"{'traffic/s':>10} {'sent':>9} {'flaps':>5} {'states':>16} "
        f"{'lateness max ms (n1, n2)':>26} {'delivered (n1, n2)':>20} {'lost':>8}"
    )
    for r in rows:
        print(
            f"{r['rate']:>10,.0f} {r['sent']:>9,} {r['flaps']:>5} {'/'.join(r['states']):>16} "
            f"{r['lateness_ms']!s:>26} {r['delivered']!s:>20} {r['lost']!s:>8}"
        )
    idle, busy = rows
    ratio = max(busy["lateness_ms"]) / max(*idle["lateness_ms"], 1e-3)
    print(f"worst timer lateness under relay load / idle: {ratio:.2f}x")
    return 0 if busy["flaps"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
