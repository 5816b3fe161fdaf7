"""The long fault campaign: many seeds of random faults, judged by tests/lab/checker.py.

    sudo .venv/bin/python bench/campaign.py --minutes 10 --seeds 10
    sudo .venv/bin/python bench/campaign.py --minutes 2 --seeds 1 --first-seed 7 \
        --only "partition nodes"
    sudo .venv/bin/python bench/campaign.py --backend etcd --minutes 10 --seeds 10

Each seed builds a fresh namespace site (remote sender at 2,000/s through the router to
the VIP, two vipcast nodes, a recording app on each, a LAN intruder), applies faults
drawn with that seed from tests/lab/nemesis.py's catalogue for its share of the minutes
(each fault held, healed, then watched for the liveness bound), and checks the
properties. With ``--backend etcd`` the nodes lead through a 3-member etcd (one member
per node, one on a witness host, raft leader on the witness), the fault kinds are
nemesis's ``ETCD_CATALOGUE`` (no advert faults; a node cut off from the etcd majority
added) and no request may be answered twice, partitions included. Prints one row per
fault kind: runs, violations by property (attributed to the last fault that began
before the violation showed), datagrams lost at the apps during the fault's window and
what the nodes reported, and the worst time for every node's apps to get new datagrams
after the heal. Bounded in count and time; traffic
stays inside the namespaces it makes.
"""

from __future__ import annotations

import argparse
import bisect
import math
import pickle
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.lab import checker, nemesis  # noqa: E402

from vipcast.lab.site import Lab, build_site  # noqa: E402


@dataclass
class Row:
    runs: int = 0
    violations: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    reported: int = 0
    resume: list[float] = field(default_factory=list)  # per run; inf: never
    examples: list[str] = field(default_factory=list)


def window_numbers(run: checker.Run, start: float, stop: float) -> range:
    lo = run.sender.first_number_after(start)
    hi = run.sender.first_number_after(stop)
    return range(
        lo if lo is not None else run.sender.count, hi if hi is not None else run.sender.count
    )


def resume_time(run: checker.Run, heal: float) -> float:
    """The worst node's wait, after ``heal``, for a datagram sent after it."""
    number = run.sender.first_number_after(heal)
    if number is None:
        return float("nan")
    worst = 0.0
    for node in run.nodes.values():
        first = next(
            (d.at for d in node.deliveries if number <= d.number < checker.FOREIGN_NUMBER), None
        )
        worst = max(worst, float("inf") if first is None else first - heal)
    return worst


def tally(
    rows: dict[str, Row],
    run: checker.Run,
    done: list[tuple[str, str, float]],
    violations: list[checker.Violation],
) -> None:
    starts = [f.start for f in run.faults]
    kinds = [k for k, _, _ in done]
    for i, (fault, kind) in enumerate(zip(run.faults, kinds, strict=True)):
        row = rows[kind]
        row.runs += 1
        stop = starts[i + 1] if i + 1 < len(starts) else run.end
        numbers = window_numbers(run, fault.start, stop)
        for node in run.nodes.values():
            got = {d.number for d in node.deliveries if d.number in numbers}
            row.lost += len(numbers) - len(got)
            row.reported += sum(g.count for g in node.gaps if fault.start <= g.at < stop)
        row.resume.append(resume_time(run, fault.heal))
    for v in violations:
        i = bisect.bisect_right(starts, v.at) - 1 if v.at is not None else len(starts) - 1
        row = rows[kinds[i]] if 0 <= i < len(kinds) else rows["(before any fault)"]
        row.violations[v.prop] += 1
        if len(row.examples) < 2:
            row.examples.append(str(v))


def print_table(rows: dict[str, Row]) -> None:
    print()
    head = f"{'fault':<34} {'runs':>4}  {'violations (property:count)':<28} "
    print(head + f"{'lost at apps':>12} {'reported':>9} {'resume max':>10}")
    for kind, row in sorted(rows.items()):
        props = " ".join(f"{p}:{n}" for p, n in sorted(row.violations.items())) or "-"
        finite = [r for r in row.resume if not math.isnan(r)]  # nan: the sender had stopped
        worst = max(finite, default=float("nan"))
        shown = "never" if worst == float("inf") else f"{worst:.2f}s"
        print(
            f"{kind:<34} {row.runs:>4}  {props:<28} {row.lost:>12,} {row.reported:>9,} {shown:>10}"
        )
    print()
    for kind, row in sorted(rows.items()):
        for example in row.examples:
            print(f"{kind}: {example}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="total fault time")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--only", action="append", help="fault kinds to draw from (repeatable)")
    parser.add_argument("--dump", type=Path, help="pickle each failing seed's records here")
    parser.add_argument("--backend", choices=nemesis.BACKENDS, default="vrrp")
    args = parser.parse_args()
    kinds = None  # the backend's catalogue
    if args.only:
        kinds = tuple(nemesis.BY_NAME[name] for name in args.only)
    seconds = args.minutes * 60 / args.seeds
    rows: dict[str, Row] = defaultdict(Row)
    total = 0
    began = time.monotonic()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with Lab() as lab:
            try:
                run, done, violations = nemesis.campaign(
                    build_site(lab), seed, seconds, kinds, backend=args.backend
                )
            except Exception:
                print(f"seed {seed}: harness error\n{traceback.format_exc()}", flush=True)
                continue
        tally(rows, run, done, violations)
        if violations and args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            with (args.dump / f"seed{seed}.pickle").open("wb") as f:
                pickle.dump((run, done, violations), f)
        total += len(violations)
        answered = len({r.number for r in run.replies})
        print(
            f"seed {seed}: {len(done)} faults, {len(violations)} violations, "
            f"{answered:,} requests answered ({len(run.replies) - answered} twice)",
            flush=True,
        )
    print_table(rows)
    print(f"{total} violations in {time.monotonic() - began:.0f} s")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
