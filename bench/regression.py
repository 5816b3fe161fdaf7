"""This tree against an earlier revision, in one run: relay throughput and failover.

    sudo .venv/bin/python bench/regression.py [--base REV] [--rounds 2] [--only relay|failover]

Checks REV out into a temporary git worktree, then runs the same two benchmarks of
each tree, alternating (base, this, base, this, ...) so that drift of the machine falls
on both: ``bench/relay.py --only vipcast`` at 10k..90k/s, 2 s a step (the highest rate
delivered without loss to both apps and kept up with: p99 under 50 ms), and
``bench/failover.py --quick --impls vipcast`` (outage of a master link cut and of a
graceful stop, at 0.1 s and 0.01 s adverts). Each tree runs its own code
(``PYTHONPATH`` set to its ``src``), the daemons it starts too. Prints the figures side
by side with this/base ratios. Bounded: a fixed number of runs of bounded benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r"vipcast\s+(\d+)/s sent.*?delivered\s+(\d+)\s+(\d+) of (\d+).*?p99 (\d+) us")
RATES = "10000,40000,60000,70000,80000,90000"  # the first is the latency step
KEPT_UP_US = 50_000  # bench/relay.py's rule: p99 under 50 ms, not filling socket buffers


def worktree(rev: str, into: Path) -> Path:
    path = into / "base"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
        check=True,
        capture_output=True,
    )
    return path


def run_tree(tree: Path, script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree}"}
    done = subprocess.run(
        [sys.executable, str(tree / "bench" / script), *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree.name} {script} failed:\n{done.stdout[-2000:]}{done.stderr}")
    return done.stdout


def relay_rate(tree: Path) -> int:
    """The highest step delivered whole to both apps and kept up with."""
    best = 0
    out = run_tree(tree, "relay.py", "--only", "vipcast", "--rates", RATES, "--seconds", "2")
    for line in out.splitlines():
        found = STEP.search(line)
        if found:
            rate, n1, n2, sent, p99 = map(int, found.groups())
            if n1 == n2 == sent and p99 < KEPT_UP_US:
                best = max(best, rate)
    return best


def failovers(tree: Path, out: Path) -> dict[str, float]:
    run_tree(tree, "failover.py", "--quick", "--impls", "vipcast", "--json", str(out))
    figures = json.loads(out.read_text())["failover"]
    return {f"{f['failure']} @ {f['interval']:g} s": f["outage_ms"] for f in figures}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="d650000", help="the revision to compare with")
    p.add_argument("--rounds", type=int, default=2, help="runs of each tree (1..5)")
    p.add_argument("--only", choices=("relay", "failover"), help="one of the two benchmarks")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if not 1 <= args.rounds <= 5:
        p.error("--rounds 1..5")
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory(prefix="vipcast-regression-") as tmp:
        base = worktree(args.base, Path(tmp))
        try:
            for r in range(args.rounds):
                for name, tree in (("base", base), ("this", ROOT)):
                    print(f"round {r + 1}: {name} ...", flush=True)
                    if args.only != "failover":
                        rows["relay lossless, kept up (/s)"][name].append(relay_rate(tree))
                    if args.only != "relay":
                        out = Path(tmp) / f"{name}-{r}.json"
                        for cell, ms in failovers(tree, out).items():
                            rows[f"outage {cell} (ms)"][name].append(ms)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                check=False,
                capture_output=True,
            )
    print(f"\nmedian of {args.rounds} round(s); base = {args.base}\n")
    print(f"  {'figure':40} {'base':>10} {'this':>10} {'this/base':>10}")
    for figure, by in rows.items():
        b, t = statistics.median(by["base"]), statistics.median(by["this"])
        ratio = f"{t / b:10.2f}" if b else f"{'-':>10}"
        print(f"  {figure:40} {b:10.1f} {t:10.1f} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
