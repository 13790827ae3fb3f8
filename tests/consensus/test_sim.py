"""The simulator over thousands of seeds, and the test of the tester.

CI runs 2,000 seeds (seed s runs scenario ``SCENARIOS[s % 10]``) split in
chunks so ``pytest -n 2`` spreads them.  A failure prints each violation with
its seed and the command that replays it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mftp.consensus.sim import SCENARIOS, make_spec, run_seed

ROOT = Path(__file__).resolve().parents[2]
CI_SEEDS = 2000
CHUNK = 100


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CI_SEEDS // CHUNK))
def test_no_violation_in_seed_chunk(chunk: int) -> None:
    failures: list[str] = []
    for seed in range(chunk * CHUNK, (chunk + 1) * CHUNK):
        result = run_seed(SCENARIOS[seed % len(SCENARIOS)], seed)
        failures.extend(result.describe())
    assert not failures, "\n".join(failures)


def test_ci_seeds_cover_every_size_power_mix_and_misbehaviour() -> None:
    specs = [make_spec(SCENARIOS[s % len(SCENARIOS)], s) for s in range(CI_SEEDS)]
    assert {spec.n for spec in specs} == {4, 5, 7}
    assert any(len(set(spec.powers)) > 1 for spec in specs)  # weighted voting power
    behaviours = Counter(b for spec in specs for b in spec.byzantine.values())
    assert set(behaviours) == {
        "equivocating_proposer",
        "double_vote",
        "invalid_block",
        "unknown_votes",
        "twin",
    }
    assert sum(bool(spec.crashes) for spec in specs) >= 300
    assert sum(bool(spec.partitions) for spec in specs) >= 600
    assert sum(spec.drop > 0 for spec in specs) >= 1000 and sum(spec.duplicate > 0 for spec in specs) >= 800
    assert sum(spec.joiner for spec in specs) == CI_SEEDS // len(SCENARIOS)
    for spec in specs:  # Byzantine members never hold a third of the power
        assert sum(spec.powers[i] for i in spec.byzantine) * 3 < sum(spec.powers)


def test_broken_quorum_is_caught_within_200_seeds() -> None:
    """The tester is tested: lower the quorum to 2f and the simulator must find disagreement."""
    for seed in range(200):
        result = run_seed(SCENARIOS[seed % len(SCENARIOS)], seed, broken_quorum=True)
        agreement = [v for v in result.violations if v.startswith("agreement")]
        if agreement:
            line = result.describe()[0]
            assert f"seed={seed}" in line and "--broken-quorum" in line
            assert f"python scripts/sim.py --scenario {result.scenario} --seed {seed}" in line
            return
    pytest.fail("the broken protocol survived 200 seeds: the simulator cannot find safety violations")


def test_a_seed_replays_exactly() -> None:
    first = run_seed("mixed", 11)
    again = run_seed("mixed", 11)
    assert (first.heights, first.stats, first.violations) == (again.heights, again.stats, again.violations)


def test_equivocation_evidence_lands_on_chain_and_never_names_a_correct_validator() -> None:
    results = [run_seed("double_vote", seed) for seed in range(3, 200, 10)[:10]]
    assert all(not r.violations for r in results)  # "framed" would be a violation
    assert sum(r.stats["evidence_actions"] > 0 for r in results) >= 8
    assert sum(r.stats.get("evidence_on_chain", 0) > 0 for r in results) >= 5


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=280, check=False
    )


def test_sim_script_prints_json_last_line() -> None:
    done = _script("scripts/sim.py", "--seeds", "3", "--start", "20")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["seeds"] == 3 and summary["violations"] == 0 and "scenarios" in summary
    assert "elapsed_s" in summary


def test_sim_script_broken_quorum_counts_violations() -> None:
    done = _script("scripts/sim.py", "--scenario", "faults", "--seed", "0", "--broken-quorum")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["seeds"] == 1 and summary["violations"] == 1
    assert any("replay: python scripts/sim.py --scenario faults --seed 0 --broken-quorum" in x for x in lines)


def test_sim_bench_prints_json() -> None:
    done = _script("scripts/bench_consensus.py", "--sim", "--blocks", "1")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["sim_blocks_per_s"] > 0 and figures["core_us_per_block"] > 0
    assert figures["records_per_block"] == 500 and figures["full_blocks"] >= 1
