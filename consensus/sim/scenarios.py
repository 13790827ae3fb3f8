"""Scenarios: what one seed of the simulator sets up.

Every choice comes from ``random.Random(f"{scenario}:{seed}")``, so a
(scenario, seed) pair names one exact run.  Each scenario draws n from
{4, 5, 7} (sometimes with unequal voting powers), a network with random
delays, drops, duplicates and reordering, and partitions; faults stop at
``heal_ms`` (GST), after which delivery is reliable and delays bounded, and
liveness is judged.  Byzantine members never hold a third of the power.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

SCENARIOS: Final = (
    "faults",
    "partition",
    "crash",
    "equivocating_proposer",
    "double_vote",
    "invalid_block",
    "unknown_votes",
    "twins",
    "churn",
    "membership",
    "mixed",
)


@dataclass(frozen=True)
class Partition:
    """From ``start_ms`` to ``end_ms`` only nodes in the same group hear each other."""

    start_ms: int
    end_ms: int
    groups: tuple[frozenset[int], ...]


@dataclass(frozen=True)
class Crash:
    """Node ``node`` stops at ``at_ms`` and restarts from its WAL at ``restart_ms``."""

    node: int
    at_ms: int
    restart_ms: int
    power_loss: bool = False  # lose the unsynced WAL tail
    torn_bytes: int = 0  # ... except this many bytes of it (a torn write)


@dataclass
class Spec:
    """Everything a run needs; node indices: validators, then twins, auditors, joiners."""

    scenario: str
    seed: int
    powers: list[int]
    byzantine: dict[int, str] = field(default_factory=dict)  # validator index -> behaviour
    auditors: int = 0
    joiner: bool = False  # one extra node added as validator by a membership change
    remove_validator: int | None = None  # a validator removed by a membership change
    # churn: the proposal-and-vote flow adds a validator and an audit node and removes an original
    # validator, one after the other in this order (see churn.py)
    churn: tuple[str, ...] = ()
    churn_remove: int = 0
    broken_membership: bool = False  # the flow approves on more than half the power (must be caught)
    target_height: int = 3
    delay_ms: tuple[int, int] = (1, 30)
    drop: float = 0.0
    duplicate: float = 0.0
    partitions: list[Partition] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    heal_ms: int = 0
    records: int = 4
    bulk_records: int = 0  # submitted to every validator at t=0 (the benchmark's load)
    broken_quorum: bool = False
    crash_after_append: tuple[int, int] | None = None  # (node, n-th WAL append)
    crash_power_loss: tuple[bool, int] = (False, 0)
    tick_ms: int = 250
    liveness_bound_ms: int = 20_000

    @property
    def n(self) -> int:
        """Number of validators."""
        return len(self.powers)

    def twins(self) -> list[int]:
        """Validator indices that run twice."""
        return [i for i, b in self.byzantine.items() if b == "twin"]


def byzantine_budget(powers: list[int], rng: random.Random, wanted: int) -> list[int]:
    """Up to ``wanted`` validator indices whose total power stays below a third."""
    order = list(range(len(powers)))
    rng.shuffle(order)
    chosen: list[int] = []
    for index in order:
        if len(chosen) >= wanted:
            break
        if (sum(powers[i] for i in chosen) + powers[index]) * 3 < sum(powers):
            chosen.append(index)
    return chosen


def _powers(rng: random.Random) -> list[int]:
    n = rng.choice((4, 4, 5, 5, 7))  # n = 7 costs about three times n = 4 in signatures
    if rng.random() < 0.3:
        return [rng.randint(1, 3) for _ in range(n)]
    return [1] * n


def _random_partition(rng: random.Random, nodes: list[int], start_ms: int, end_ms: int) -> Partition:
    shuffled = nodes[:]
    rng.shuffle(shuffled)
    cut = rng.randint(1, len(shuffled) - 1)
    return Partition(start_ms, end_ms, (frozenset(shuffled[:cut]), frozenset(shuffled[cut:])))


def make_spec(
    scenario: str, seed: int, *, broken_quorum: bool = False, broken_membership: bool = False
) -> Spec:
    """The run of ``scenario`` for ``seed``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = random.Random(f"{scenario}:{seed}")
    spec = Spec(scenario, seed, _powers(rng))
    spec.delay_ms = (1, rng.choice((10, 30, 80)))
    spec.drop = rng.choice((0.0, 0.05, 0.2))
    spec.duplicate = rng.choice((0.0, 0.1))
    spec.heal_ms = rng.randint(200, 900)
    spec.records = rng.randint(0, 6)
    spec.auditors = 1 if rng.random() < 0.3 else 0
    _add_faults(spec, rng)
    if broken_quorum:
        _break(spec, rng)
    elif broken_membership:
        _break_membership(spec, rng)
    return spec


def _add_faults(spec: Spec, rng: random.Random) -> None:
    name = spec.scenario
    validators = list(range(spec.n))
    if name in ("partition", "twins", "mixed") or rng.random() < 0.3:
        start = rng.randint(0, spec.heal_ms // 2)
        spec.partitions.append(_random_partition(rng, validators, start, spec.heal_ms))
    if name in ("crash", "mixed"):
        for node in rng.sample(validators, rng.randint(1, 2)):
            at = rng.randint(0, spec.heal_ms)
            restart = rng.randint(at + 1, spec.heal_ms + 1)
            spec.crashes.append(Crash(node, at, restart, rng.random() < 0.5, rng.randint(0, 40)))
    behaviour = {
        "equivocating_proposer": "equivocating_proposer",
        "double_vote": "double_vote",
        "invalid_block": "invalid_block",
        "unknown_votes": "unknown_votes",
        "twins": "twin",
    }.get(name)
    if behaviour is not None:
        for index in byzantine_budget(spec.powers, rng, 1):
            spec.byzantine[index] = behaviour
    if name == "mixed":
        kinds = ["equivocating_proposer", "double_vote", "invalid_block", "unknown_votes", "twin"]
        for index in byzantine_budget(spec.powers, rng, 2):
            spec.byzantine[index] = rng.choice(kinds)
        # crashes are benign; a Byzantine node crashing as well changes nothing
    if name == "churn":
        spec.churn = (
            ("add_validator", "add_audit", "remove")
            if rng.random() < 0.5
            else ("add_validator", "remove", "add_audit")
        )
        spec.churn_remove = rng.choice([i for i in validators if i not in spec.byzantine])
        spec.target_height = 4
    if name == "membership":
        spec.joiner = True
        if rng.random() < 0.5:
            candidates = [i for i in validators if i not in spec.byzantine]
            spec.remove_validator = rng.choice(candidates)


def _break(spec: Spec, rng: random.Random) -> None:
    """The broken protocol: quorum 2f, f twins, and a partition that lets both sides reach it."""
    spec.broken_quorum = True
    spec.powers = [1] * spec.n
    spec.crashes = []
    spec.joiner = False
    spec.remove_validator = None
    f = (spec.n - 1) // 3
    twins = rng.sample(range(spec.n), f)
    spec.byzantine = dict.fromkeys(twins, "twin")
    honest = [i for i in range(spec.n) if i not in spec.byzantine]
    rng.shuffle(honest)
    cut = len(honest) // 2
    # twin instances are node indices n, n+1, ...; each side gets one instance of every twin
    side_a = set(honest[:cut]) | set(twins)
    side_b = set(honest[cut:]) | {spec.n + k for k in range(len(twins))}
    spec.heal_ms = rng.randint(1500, 3000)
    spec.liveness_bound_ms = 500  # nothing to judge after the heal: the broken protocol promises no liveness
    spec.partitions = [Partition(0, spec.heal_ms, (frozenset(side_a), frozenset(side_b)))]


def _break_membership(spec: Spec, rng: random.Random) -> None:
    """Churn under a weaker approval rule, approved by just over half the power (see churn.py)."""
    spec.broken_membership = True
    spec.powers = [1] * rng.choice((5, 7))  # n = 4 has no count above 1/2 that is not above 2/3
    spec.byzantine = {}
    spec.crashes = []
    spec.joiner = False
    spec.remove_validator = None
    spec.churn = ("add_validator",)
    spec.liveness_bound_ms = 8000
