"""The chain state machine: what follows from genesis and a sequence of blocks.

:func:`apply_block` is the one definition of a valid next block, used by chain
verification, by sync and by consensus before it votes for a proposal.  It is
pure: the only outside knowledge it needs, whether a record id is already on
the chain, is passed in as a function.

Membership changes take effect two heights after the block that commits them
(``H + 2``): by the time a node builds block ``H + 1`` it already knows the set
that will vote on ``H + 2``, and an observer can follow certificates across the
change with nothing but the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from mftp.crypto.errors import BadSignatureError
from mftp.crypto.signing import PUBLIC_KEY_BYTES, verify

from . import merkle
from .block import ZERO_HASH, Block, BlockHeader, CommitCertificate, ValidatorSet, records_root
from .errors import InvalidBlockError, InvalidRecordError
from .genesis import AuditNode, Genesis
from .membership import STANDARD_RULES, Book, MemberEntry, MembershipRules, OpenProposal, activate
from .records import Record, RecordType, membership_payload

MEMBERSHIP_DELAY_BLOCKS: Final = 2
MAX_RECORD_SKEW_MS: Final = 5 * 60 * 1000  # a record may not claim a time this far past its block's

RecordExists = Callable[[bytes], bool]
_FLOW_TYPES: Final = frozenset(
    {RecordType.MEMBER_ENTRY, RecordType.MEMBERSHIP_PROPOSAL, RecordType.MEMBERSHIP_VOTE}
)


@dataclass(frozen=True, slots=True)
class ChainState:
    """Everything needed to check the next block; cheap to copy."""

    genesis: Genesis
    height: int
    last_hash: bytes
    last_time_ms: int
    ledger_size: int
    ledger_peaks: tuple[bytes, ...]
    validators: ValidatorSet  # votes on height + 1
    last_validators: ValidatorSet | None  # voted on height (verifies its certificate)
    auditors: tuple[AuditNode, ...]
    pending: tuple[tuple[int, tuple[tuple[str, Any], ...]], ...] = ()  # (effective height, change)
    # The member directory (by key) and the membership flow (see ledger/membership.py).
    directory: tuple[MemberEntry, ...] = ()
    proposals: tuple[OpenProposal, ...] = ()  # open, in the order proposed
    recent: tuple[tuple[bytes, str, int], ...] = ()  # (proposal id, outcome, height), newest last
    # Never stored nor compared: only the simulator's test of the tester runs other rules.
    membership_rules: MembershipRules = field(default=STANDARD_RULES, compare=False)

    @classmethod
    def initial(cls, genesis: Genesis) -> ChainState:
        """The state before block 1."""
        return cls(
            genesis=genesis,
            height=0,
            last_hash=genesis.hash,
            last_time_ms=genesis.time_ms,
            ledger_size=0,
            ledger_peaks=(),
            validators=genesis.validators,
            last_validators=None,
            auditors=genesis.auditors,
        )

    @property
    def chain_id(self) -> str:
        """The chain id of the genesis."""
        return self.genesis.chain_id

    @property
    def ledger_root(self) -> bytes:
        """Merkle root over every record so far."""
        return merkle.CompactRange(self.ledger_size, self.ledger_peaks).root()

    def is_member(self, key: bytes) -> bool:
        """A validator or audit node right now."""
        return key in self.validators or any(a.sign_key == key for a in self.auditors)

    def verify_commit(self, cert: CommitCertificate) -> None:
        """Check a certificate for the newest block (``height``)."""
        if self.height == 0 or self.last_validators is None:
            raise InvalidBlockError("no block to certify")
        if cert.height != self.height or cert.block_hash != self.last_hash:
            raise InvalidBlockError(f"certificate is not for block {self.height}")
        cert.verify(self.chain_id, self.last_validators)


def apply_block(
    state: ChainState,
    block: Block,
    *,
    record_exists: RecordExists,
    check_signatures: bool = True,
) -> ChainState:
    """Check ``block`` as the next block after ``state`` and return the new state.

    Raises :class:`InvalidBlockError` (with the height) if anything is wrong.
    With ``check_signatures=False`` the caller promises to verify the record
    signatures itself (chain verification does, on all cores).
    """
    header = block.header
    height = state.height + 1
    _check_header(state, block, height)
    if block.last_commit is not None:
        if state.last_validators is None:
            raise InvalidBlockError(f"block {height}: unexpected last commit")
        block.last_commit.verify(state.chain_id, state.last_validators)
    ids: set[bytes] = set()
    leaves = merkle.CompactRange(state.ledger_size, state.ledger_peaks)
    changes: list[tuple[tuple[str, Any], ...]] = []
    book = _book(state, block) if state.proposals or _has_flow_records(block) else None
    for record in block.records:
        _check_record(state, record, header.time_ms, ids, record_exists, check_signatures)
        if record.type is RecordType.MEMBERSHIP_CHANGE:
            changes.append(_check_membership(state, record))
        elif book is not None and record.type in _FLOW_TYPES:
            book.apply(record)
        leaves.append(record.leaf_hash)
    if header.ledger_size != leaves.size or header.ledger_root != leaves.root():
        raise InvalidBlockError(f"block {height}: ledger size or root mismatch")
    pending = state.pending + tuple((height + MEMBERSHIP_DELAY_BLOCKS, c) for c in changes)
    directory, proposals, recent = state.directory, state.proposals, state.recent
    if book is not None:
        pending += tuple(book.scheduled)
        directory, proposals, recent = book.result()
    validators, auditors, directory, pending = _activate(
        state.validators, state.auditors, directory, pending, height + 1
    )
    return replace(
        state,
        height=height,
        last_hash=block.hash,
        last_time_ms=header.time_ms,
        ledger_size=leaves.size,
        ledger_peaks=leaves.peaks,
        validators=validators,
        last_validators=state.validators,
        auditors=auditors,
        pending=pending,
        directory=directory,
        proposals=proposals,
        recent=recent,
    )


def _has_flow_records(block: Block) -> bool:
    return any(record.type in _FLOW_TYPES for record in block.records)


def _book(state: ChainState, block: Block) -> Book:
    """The membership flow's working copy for one block; expired proposals are closed first."""
    book = Book(
        chain_id=state.chain_id,
        genesis_hash=state.genesis.hash,
        height=state.height + 1,
        block_time_ms=block.header.time_ms,
        validators=state.validators,
        auditors=state.auditors,
        pending=state.pending,
        directory=state.directory,
        proposals=state.proposals,
        recent=state.recent,
        delay_blocks=MEMBERSHIP_DELAY_BLOCKS,
        rules=state.membership_rules,
    )
    book.expire()
    return book


def _check_header(state: ChainState, block: Block, height: int) -> None:
    header = block.header
    if header.chain_id != state.chain_id:
        raise InvalidBlockError(f"block {height}: wrong chain id")
    if header.height != height:
        raise InvalidBlockError(f"block {header.height}: expected height {height}")
    if header.prev_hash != state.last_hash:
        raise InvalidBlockError(f"block {height}: does not link to the previous block")
    if header.time_ms <= state.last_time_ms:
        raise InvalidBlockError(f"block {height}: time does not advance")
    if header.validators_hash != state.validators.hash:
        raise InvalidBlockError(f"block {height}: wrong validator set hash")
    if header.proposer not in state.validators:
        raise InvalidBlockError(f"block {height}: proposer is not a validator")
    block.check_contents()


def _check_record(
    state: ChainState,
    record: Record,
    block_time_ms: int,
    ids: set[bytes],
    record_exists: RecordExists,
    check_signatures: bool,
) -> None:
    where = f"block {state.height + 1}: record {record.record_id.hex()}"
    if record.record_id in ids or record_exists(record.record_id):
        raise InvalidBlockError(f"{where}: duplicate record id (replay)")
    ids.add(record.record_id)
    if not state.is_member(record.author):
        raise InvalidBlockError(f"{where}: author is not a member")
    if record.time_ms > block_time_ms + MAX_RECORD_SKEW_MS:
        raise InvalidBlockError(f"{where}: record time is in the block's future")
    if check_signatures:
        try:
            record.verify_signature()
        except InvalidRecordError as exc:
            raise InvalidBlockError(f"{where}: {exc}") from None


def _check_membership(state: ChainState, record: Record) -> tuple[tuple[str, Any], ...]:
    """Check a membership change's approvals against the current validator set."""
    body = record.body
    where = f"block {state.height + 1}: membership change {record.record_id.hex()}"
    message = membership_payload(state.chain_id, record.record_id, body)
    signers: set[bytes] = set()
    for approval in body["approvals"]:
        key, signature = approval[:PUBLIC_KEY_BYTES], approval[PUBLIC_KEY_BYTES:]
        if key not in state.validators or key in signers:
            raise InvalidBlockError(f"{where}: approval by a non-validator or repeated")
        try:
            verify(key, "membership", message, signature)
        except BadSignatureError:
            raise InvalidBlockError(f"{where}: bad approval signature") from None
        signers.add(key)
    if not state.validators.has_quorum(state.validators.power_of(signers)):
        raise InvalidBlockError(f"{where}: approvals hold no more than 2/3 of the power")
    _check_change_applies(state, body, where)
    return tuple(sorted((k, v) for k, v in body.items() if k != "approvals"))


def _check_change_applies(state: ChainState, body: dict[str, Any], where: str) -> None:
    member = body["member"]
    is_validator = member in state.validators
    is_auditor = any(a.sign_key == member for a in state.auditors)
    if body["action"] == "add":
        if is_validator or is_auditor:
            raise InvalidBlockError(f"{where}: already a member")
        if body["role"] == "validator" and body["power"] < 1:
            raise InvalidBlockError(f"{where}: a validator needs power >= 1")
    elif body["role"] == "validator" and (not is_validator or len(state.validators) == 1):
        raise InvalidBlockError(f"{where}: not a validator, or the last one")
    elif body["role"] == "audit" and not is_auditor:
        raise InvalidBlockError(f"{where}: not an audit node")


def _activate(
    validators: ValidatorSet,
    auditors: tuple[AuditNode, ...],
    directory: tuple[MemberEntry, ...],
    pending: tuple[tuple[int, tuple[tuple[str, Any], ...]], ...],
    next_height: int,
) -> tuple[
    ValidatorSet,
    tuple[AuditNode, ...],
    tuple[MemberEntry, ...],
    tuple[tuple[int, tuple[tuple[str, Any], ...]], ...],
]:
    """Apply the changes that take effect at ``next_height``."""
    due = [dict(change) for effective, change in pending if effective == next_height]
    if not due:
        return validators, auditors, directory, pending
    validators, auditors, directory = activate(validators, auditors, directory, due)
    remaining = tuple(item for item in pending if item[0] != next_height)
    return validators, auditors, directory, remaining


def replay(genesis: Genesis, blocks: Iterable[Block]) -> ChainState:
    """Apply blocks from genesis with full checks (small chains and tests; see ``verify`` for speed)."""
    state = ChainState.initial(genesis)
    seen: set[bytes] = set()
    for block in blocks:
        state = apply_block(state, block, record_exists=seen.__contains__)
        seen.update(r.record_id for r in block.records)
    return state


def build_block(
    state: ChainState,
    records: Iterable[Record],
    *,
    time_ms: int,
    proposer: bytes,
    last_commit: CommitCertificate | None,
) -> Block:
    """Build the next block after ``state`` (the proposer's side of :func:`apply_block`)."""
    batch = tuple(records)
    leaves = merkle.CompactRange(state.ledger_size, state.ledger_peaks)
    for record in batch:
        leaves.append(record.leaf_hash)
    header = BlockHeader(
        chain_id=state.chain_id,
        height=state.height + 1,
        time_ms=max(time_ms, state.last_time_ms + 1),
        prev_hash=state.last_hash,
        proposer=proposer,
        records_root=records_root(batch),
        record_count=len(batch),
        ledger_size=leaves.size,
        ledger_root=leaves.root(),
        validators_hash=state.validators.hash,
        last_commit_hash=ZERO_HASH if last_commit is None else last_commit.hash,
    )
    return Block(header, batch, last_commit)
