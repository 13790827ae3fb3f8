"""The paper's ``valid(v)`` and ``getValue()`` on ledger blocks.

``valid(v)`` is :func:`mftp.ledger.chain.apply_block` (the one definition of a
valid next block: header, links, every record's signature, replay protection,
membership approvals) plus one consensus-level rule: an EVIDENCE record must
really prove an equivocation (:func:`~mftp.consensus.evidence.check_evidence_record`).
It depends only on the chain state, the block and the chain's record index, so
every correct validator computes the same answer.  Every record's signature is
checked before the validator prevotes: records byte-identical to ones it
admitted to its mempool were checked on admission, the rest are checked here.

``getValue()`` builds the next block from the oldest mempool records.  The
proposer checks its own block with the same function (signatures were checked
on admission to the mempool, so it skips them); a record that became unfit
meanwhile (its author removed, a membership change no longer applying) is
found by bisection over prefixes and evicted, and the block is rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mftp.ledger.block import Block, CommitCertificate
from mftp.ledger.chain import ChainState, RecordExists, apply_block, build_block
from mftp.ledger.errors import InvalidRecordError, LedgerInputError
from mftp.ledger.records import Record, RecordType

from .errors import ConsensusInputError
from .evidence import check_evidence_record
from .mempool import Mempool


def validate_block(
    state: ChainState,
    block: Block,
    record_exists: RecordExists,
    *,
    check_signatures: bool = True,
    already_verified: Callable[[Record], bool] | None = None,
) -> ChainState:
    """The state after ``block``; raises :class:`ConsensusInputError` if it is not a valid next block.

    ``already_verified`` names records whose signature this validator checked
    before (byte-identical copies of mempool records): their signatures are not
    checked twice, every other record's is.
    """
    if check_signatures and already_verified is not None:
        for record in block.records:
            if not already_verified(record):
                try:
                    record.verify_signature()
                except InvalidRecordError as exc:
                    raise ConsensusInputError(f"block {block.height}: {exc}") from None
        check_signatures = False
    try:
        new_state = apply_block(state, block, record_exists=record_exists, check_signatures=check_signatures)
    except LedgerInputError as exc:
        raise ConsensusInputError(str(exc)) from None
    sets = (state.validators,) if state.last_validators is None else (state.validators, state.last_validators)
    for record in block.records:
        if record.type is RecordType.EVIDENCE:
            check_evidence_record(record, state.chain_id, sets)
    return new_state


def build_valid_block(
    state: ChainState,
    mempool: Mempool,
    record_exists: RecordExists,
    *,
    max_records: int,
    time_ms: int,
    proposer: bytes,
    last_commit: CommitCertificate | None,
) -> tuple[Block, ChainState]:
    """A valid next block holding the oldest fit mempool records, and the state after it."""
    batch = mempool.batch(max_records)
    stored = {r.record_id for r in batch if record_exists(r.record_id)}  # committed meanwhile
    candidates = [r for r in batch if r.record_id not in stored]
    mempool.remove(stored)
    while True:
        block = build_block(state, candidates, time_ms=time_ms, proposer=proposer, last_commit=last_commit)
        try:
            return block, validate_block(state, block, record_exists, check_signatures=False)
        except ConsensusInputError:
            if not candidates:
                raise  # an empty block must be valid; anything else is our bug
        bad = _first_unfit(state, candidates, record_exists, time_ms, proposer, last_commit)
        mempool.remove([candidates[bad].record_id])
        del candidates[bad]


def _first_unfit(
    state: ChainState,
    candidates: Sequence[Record],
    record_exists: RecordExists,
    time_ms: int,
    proposer: bytes,
    last_commit: CommitCertificate | None,
) -> int:
    """Index of the first record that makes the block invalid (prefix validity is monotone)."""
    low, high = 0, len(candidates)  # prefix [:low] is valid, prefix [:high] is not
    while high - low > 1:
        middle = (low + high) // 2
        block = build_block(
            state, candidates[:middle], time_ms=time_ms, proposer=proposer, last_commit=last_commit
        )
        try:
            validate_block(state, block, record_exists, check_signatures=False)
            low = middle
        except ConsensusInputError:
            high = middle
    return high - 1
