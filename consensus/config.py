"""Consensus parameters.

Timeouts follow CometBFT: the timeout of ``step`` in round ``r`` is
``timeout_<step>_ms + r * timeout_<step>_delta_ms``, so after GST every correct
validator eventually waits long enough for the others (the paper's assumption
that timeouts grow).  ``timeout_commit_ms`` is the wait after a decision before
round 0 of the next height: it lets the next proposer collect more precommits
(a fuller certificate) and records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mftp.ledger.block import ValidatorSet
from mftp.ledger.records import MAX_RECORD_BYTES

from .errors import ConsensusUsageError
from .events import Step

DEFAULT_BATCH_RECORDS: Final = 500


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """Every tunable of the core, with production defaults (milliseconds)."""

    timeout_propose_ms: int = 3000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 1000
    timeout_prevote_delta_ms: int = 500
    timeout_precommit_ms: int = 1000
    timeout_precommit_delta_ms: int = 500
    timeout_commit_ms: int = 1000
    # With no record waiting, a new height starts only this long after the last block's
    # time (a heartbeat block), or as soon as a record, proposal or vote shows up:
    # CometBFT's create_empty_blocks_interval.  0 makes a block after every commit wait.
    empty_block_interval_ms: int = 0
    batch_records: int = DEFAULT_BATCH_RECORDS  # records per proposal
    mempool_max_records: int = 20_000
    mempool_max_bytes: int = 64 * 1024 * 1024
    max_record_bytes: int = MAX_RECORD_BYTES
    evidence_max_items: int = 256
    # Distinct rounds above ours a validator may fill with votes (and how far ahead a
    # proposal may be): bounds what a Byzantine member can make us store.
    max_future_rounds_per_validator: int = 8
    max_future_messages: int = 4096  # buffered messages for height + 1
    rebroadcast_rounds: int = 8  # own votes of this many latest rounds are re-sent on Tick
    sync_interval_ms: int = 1000  # at most one SendBlocks per peer / FetchBlocks per interval
    max_block_future_ms: int = 60_000  # a fresh proposal's time may run this far ahead of ours
    # Test-only: True lowers the quorum to 2f of the power (the broken protocol
    # the simulator must catch).  Never set in production.
    broken_quorum: bool = False

    def __post_init__(self) -> None:
        for name in (
            "timeout_propose_ms",
            "timeout_prevote_ms",
            "timeout_precommit_ms",
            "timeout_commit_ms",
            "timeout_propose_delta_ms",
            "timeout_prevote_delta_ms",
            "timeout_precommit_delta_ms",
            "empty_block_interval_ms",
        ):
            if getattr(self, name) < 0:
                raise ConsensusUsageError(f"{name} must not be negative")
        if not 0 <= self.batch_records <= 10_000:
            raise ConsensusUsageError("batch_records must be within 0..10000")
        if self.mempool_max_records < 1 or self.mempool_max_bytes < self.max_record_bytes:
            raise ConsensusUsageError("the mempool must hold at least one record")

    def timeout_ms(self, step: Step, round_: int) -> int:
        """How long to wait in ``step`` of round ``round_`` (grows with the round)."""
        if step is Step.PROPOSE:
            return self.timeout_propose_ms + round_ * self.timeout_propose_delta_ms
        if step is Step.PREVOTE:
            return self.timeout_prevote_ms + round_ * self.timeout_prevote_delta_ms
        if step is Step.PRECOMMIT:
            return self.timeout_precommit_ms + round_ * self.timeout_precommit_delta_ms
        return self.timeout_commit_ms

    def has_quorum(self, validators: ValidatorSet, power: int) -> bool:
        """The paper's 2f+1: more than 2/3 of the power (or, broken on purpose, 2f)."""
        if self.broken_quorum:
            f_power = (validators.total_power - 1) // 3
            return power >= max(1, 2 * f_power)
        return validators.has_quorum(power)

    def has_one_third(self, validators: ValidatorSet, power: int) -> bool:
        """The paper's f+1: more than 1/3 of the power, so at least one correct member."""
        return validators.has_one_third(power)
