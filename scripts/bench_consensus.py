#!/usr/bin/env python3
"""Benchmark the consensus core.

    python scripts/bench_consensus.py [--quick]         # 4 validator processes + 1 audit node
    python scripts/bench_consensus.py --sim [--quick]   # the core alone, in the simulator

``--sim`` runs n = 4 validators in the deterministic simulator (no faults) with
blocks of 500 records and reports, as the last line, one JSON object:

* ``sim_blocks_per_s``: committed blocks per second of wall time of the event
  loop, the whole network (four cores, signing and verifying, WALs in memory)
  running in this one process (building the signed load is not timed);
  ``sim_blocks_per_cpu_s`` is the same over CPU time, steadier on a shared machine;
* ``core_us_per_block``: CPU time spent inside ``Consensus.step`` per committed
  block of 500 records, per validator -- mempool admission (one Ed25519 verify
  per record), proposal validation (``valid(v)``: ledger checks, Merkle roots,
  and the signatures of records not already verified), votes and certificates;
* the split of that figure (``admission_us_per_block`` / ``consensus_us_per_block``)
  and, as a baseline measured in the same run, ``ed25519_verify_us`` and
  ``verify_500_records_us`` (verifying 500 record signatures alone): signature
  checks dominate, and the ratio says how much the core adds;
* ``validate_unpooled_block_us``: ``valid(v)`` of a 500-record block whose
  records the validator never pooled (every signature checked then) -- the
  cost a validator pays for a proposal instead of at admission.

Without ``--sim`` the benchmark runs real node processes on loopback; see
``bench_devnet.py`` for what it measures (committed_records_per_s,
latency_p50_ms, latency_p99_ms, audit_lag_blocks).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from mftp.consensus.config import ConsensusConfig
from mftp.consensus.events import Action, Event, RecordsSubmitted
from mftp.consensus.sim import Simulator, Spec
from mftp.consensus.sim.nodes import sim_record
from mftp.consensus.validity import validate_block
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.chain import ChainState, build_block
from mftp.ledger.checkcache import use_check_caches
from mftp.ledger.genesis import make_genesis

RECORDS_PER_BLOCK = 500


class StepTimer:
    """Wraps ``core.step`` to add up the CPU time spent inside it."""

    def __init__(self) -> None:
        self.admission_s = 0.0
        self.other_s = 0.0

    def wrap(self, step: Callable[[Event, int], list[Action]]) -> Callable[[Event, int], list[Action]]:
        def timed(event: Event, now_ms: int) -> list[Action]:
            started = time.process_time()
            try:
                return step(event, now_ms)
            finally:
                spent = time.process_time() - started
                if isinstance(event, RecordsSubmitted):
                    self.admission_s += spent
                else:
                    self.other_s += spent

        return timed


def bench_sim(blocks: int) -> dict[str, Any]:
    """Run the simulator to ``blocks`` full blocks and measure."""
    spec = Spec("faults", 0, [1, 1, 1, 1], target_height=blocks, delay_ms=(1, 5), heal_ms=0, records=0)
    spec.bulk_records = blocks * RECORDS_PER_BLOCK
    spec.tick_ms = 1000
    config = ConsensusConfig(
        timeout_propose_ms=3000,
        timeout_prevote_ms=1000,
        timeout_precommit_ms=1000,
        timeout_commit_ms=10,
        batch_records=RECORDS_PER_BLOCK,
        sync_interval_ms=10_000,
    )
    sim = Simulator(spec, config=config)
    timer = StepTimer()
    original_boot = sim._boot

    def boot_timed(node: Any) -> None:
        original_boot(node)
        node.replica.core.step = timer.wrap(node.replica.core.step)

    sim._boot = boot_timed  # type: ignore[method-assign]
    sim.prepare()  # untimed: builds and signs the load (the ledger's record building, not consensus)
    wall = time.perf_counter()
    cpu = time.process_time()
    sim.run_loop()
    wall_s = time.perf_counter() - wall
    cpu_s = time.process_time() - cpu
    result = sim.judge()
    if result.violations:
        raise SystemExit(f"benchmark run failed: {result.violations}")
    committed = min(result.heights.values())
    full = sum(1 for s in sim.nodes[0].store if len(s.block.records) == RECORDS_PER_BLOCK)
    validators = spec.n
    per_block = 1e6 / (committed * validators)
    return {
        "validators": validators,
        "records_per_block": RECORDS_PER_BLOCK,
        "blocks": committed,
        "full_blocks": full,
        "wall_s": round(wall_s, 3),
        "sim_blocks_per_s": round(committed / wall_s, 3),
        "sim_cpu_s": round(cpu_s, 3),  # wall time suffers on a shared machine; CPU time does not
        "sim_blocks_per_cpu_s": round(committed / cpu_s, 3),
        "core_us_per_block": round((timer.admission_s + timer.other_s) * per_block),
        "admission_us_per_block": round(timer.admission_s * per_block),
        "consensus_us_per_block": round(timer.other_s * per_block),
    }


def bench_verify_baseline(samples: int = RECORDS_PER_BLOCK) -> dict[str, Any]:
    """Ed25519 verification alone: the floor under any per-record cost."""
    rng = random.Random(1)
    identity = SigningIdentity(rng.randbytes(32))
    records = [sim_record(identity, rng, 0) for _ in range(samples)]
    started = time.process_time()
    for record in records:
        record.verify_signature()
    spent = time.process_time() - started
    return {
        "ed25519_verify_us": round(spent * 1e6 / samples, 1),
        "verify_500_records_us": round(spent * 1e6 * RECORDS_PER_BLOCK / samples),
    }


def bench_cold_validation() -> dict[str, Any]:
    """``valid(v)`` of a 500-record block none of whose records this validator pooled before."""
    rng = random.Random(2)
    validators = [SigningIdentity(rng.randbytes(32)) for _ in range(4)]
    genesis = make_genesis(
        "bench", "mftp-bench", 0, [(f"v{i}", v.public.sign_key, 1) for i, v in enumerate(validators)]
    )
    state = ChainState.initial(genesis)
    records = [sim_record(validators[i % 4], rng, 1) for i in range(RECORDS_PER_BLOCK)]
    block = build_block(state, records, time_ms=2, proposer=validators[0].public.sign_key, last_commit=None)
    started = time.process_time()
    validate_block(state, block, lambda _id: False)
    return {"validate_unpooled_block_us": round((time.process_time() - started) * 1e6)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sim", action="store_true", help="benchmark in the in-process simulator")
    parser.add_argument("--quick", action="store_true", help="a short run (well under a minute)")
    parser.add_argument("--blocks", type=int, default=None, help="blocks of 500 records to commit")
    parser.add_argument("--seconds", type=float, default=None, help="submission time (real mode)")
    args = parser.parse_args(argv)
    if not args.sim:
        from bench_devnet import bench_real  # scripts/ is on the path when run as a script

        seconds = args.seconds or (15.0 if args.quick else 40.0)
        result = bench_real(seconds, records=int(seconds * 3000))
        result["quick"] = args.quick
        print(json.dumps(result, sort_keys=True))
        return 0
    blocks = args.blocks or (4 if args.quick else 20)
    # Four validators share this process: without this, one validator's signature check
    # would spare the other three theirs and understate the core's cost per validator.
    use_check_caches(False)
    figures: dict[str, Any] = {"mode": "sim", "quick": args.quick}
    figures.update(bench_verify_baseline())
    figures.update(bench_cold_validation())
    figures.update(bench_sim(blocks))
    figures["core_per_block_vs_verify_500"] = round(
        figures["core_us_per_block"] / max(1, figures["verify_500_records_us"]), 2
    )
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
