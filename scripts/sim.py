#!/usr/bin/env python3
"""Run the deterministic consensus simulator over many seeds.

    python scripts/sim.py --seeds 2000                      # every scenario, round robin
    python scripts/sim.py --scenario twins --seed 17        # replay one failure exactly
    python scripts/sim.py --seeds 200 --broken-quorum       # the tester's test: must find violations
    python scripts/sim.py --scenario churn --seeds 20 --broken-membership   # ... and for membership rules

Seed ``s`` of ``--scenario all`` runs scenario ``SCENARIOS[s % len(SCENARIOS)]``.
Every violation is printed with its scenario, seed and the exact replay command.
The last line printed is one JSON object:
``{"seeds": N, "violations": K, "scenarios": {...}, "elapsed_s": ...}`` where K
is the number of seeds with at least one violation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from mftp.consensus.sim import SCENARIOS, Result, run_seed


def plan(scenario: str, start: int, count: int) -> list[tuple[str, int]]:
    """(scenario, seed) pairs to run."""
    if scenario == "all":
        return [(SCENARIOS[s % len(SCENARIOS)], s) for s in range(start, start + count)]
    return [(scenario, s) for s in range(start, start + count)]


def _run(job: tuple[str, int, bool, bool]) -> Result:
    scenario, seed, broken, broken_membership = job
    return run_seed(scenario, seed, broken_quorum=broken, broken_membership=broken_membership)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--seed", type=int, default=None, help="run exactly this one seed")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--scenario", default="all", choices=("all", *SCENARIOS))
    parser.add_argument("--broken-quorum", action="store_true", help="run the deliberately broken protocol")
    parser.add_argument(
        "--broken-membership",
        action="store_true",
        help="run membership churn under a deliberately weaker approval rule (more than half)",
    )
    parser.add_argument("--stop-at-first", action="store_true", help="stop at the first violating seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    if args.seed is not None:
        jobs = plan(args.scenario, args.seed, 1)
    else:
        jobs = plan(args.scenario, args.start, args.seeds)
    started = time.monotonic()
    per_scenario: dict[str, Counter[str]] = {}
    kinds: Counter[str] = Counter()
    bad_seeds: list[str] = []
    ran = 0
    slowest_heal_ms = 0
    for result in _results(jobs, args.broken_quorum, args.broken_membership, args.jobs):
        ran += 1
        slowest_heal_ms = max(slowest_heal_ms, result.stats.get("heal_to_done_ms", 0))
        tally = per_scenario.setdefault(result.scenario, Counter())
        tally["seeds"] += 1
        if result.violations:
            tally["violations"] += 1
            bad_seeds.append(f"{result.scenario}:{result.seed}")
            kinds.update(v.split(":", 1)[0] for v in result.violations)
            for line in result.describe():
                print(line, flush=True)
            if args.stop_at_first:
                break
    summary = {
        "seeds": ran,
        "violations": len(bad_seeds),
        "broken_quorum": args.broken_quorum,
        "broken_membership": args.broken_membership,
        "kinds": dict(kinds),
        "first_violating": bad_seeds[:10],
        "scenarios": {name: dict(t) for name, t in sorted(per_scenario.items())},
        "elapsed_s": round(time.monotonic() - started, 2),
        # liveness margin: the longest a run took, after the heal, to bring every correct node to its target
        "max_heal_to_target_ms": slowest_heal_ms,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


def _results(
    jobs: list[tuple[str, int]], broken: bool, broken_membership: bool, workers: int
) -> Iterator[Result]:
    work = [(scenario, seed, broken, broken_membership) for scenario, seed in jobs]
    if workers <= 1:
        for job in work:
            yield _run(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_run, work, chunksize=8)


if __name__ == "__main__":
    sys.exit(main())
