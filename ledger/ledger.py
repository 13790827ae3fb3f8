"""The ledger facade: a block store plus the chain state of its head.

:class:`Ledger` is what a node holds: it checks each committed block with
:func:`mftp.ledger.chain.apply_block` (pure) and the block's certificate, then
stores both with a snapshot of the new :class:`ChainState` in the same synced
batch.  Reopening therefore costs one read, not a replay of the chain, and the
snapshot can never disagree with the head after a crash.

A store without a usable snapshot (written by a bare :class:`BlockStore`) is
recovered by full verification from the genesis.
"""

from __future__ import annotations

from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError

from . import schema as s
from .block import Block, CommitCertificate, ValidatorSet
from .chain import ChainState, apply_block
from .errors import LedgerInputError, LedgerUsageError, StoreError
from .genesis import AuditNode, Genesis
from .membership import MAX_OPEN_PROPOSALS, MAX_RECENT_OUTCOMES, MemberEntry, OpenProposal
from .store import BlockStore

# Version 2 added the member directory and the membership flow; a version-1 snapshot is not
# refused as damage: the head state is rebuilt from the chain (see Ledger._recover).
STATE_VERSION: Final = 2
MAX_STATE_BYTES: Final = 1024 * 1024
MAX_PENDING_CHANGES: Final = 1024

_H = s.exact_bytes(32)
_STATE_SCHEMA: Final[s.Schema] = {
    "v": s.integer(STATE_VERSION, STATE_VERSION),
    "genesis": _H,
    "height": s.integer(),
    "last_hash": _H,
    "last_time_ms": s.integer(),
    "ledger_size": s.integer(),
    "ledger_peaks": s.list_of(_H, 64),
    "validators": s.list_of(s.Field("map", max_len=3), 64, min_len=1),
    "last_validators": s.list_of(s.Field("map", max_len=3), 64),  # empty: none (height 0)
    "auditors": s.list_of(s.Field("map", max_len=2), 64),
    "pending": s.list_of(s.Field("map", max_len=2), MAX_PENDING_CHANGES),
    "directory": s.list_of(s.some_bytes(4096), 128),
    "proposals": s.list_of(s.Field("map", max_len=12), MAX_OPEN_PROPOSALS),
    "recent": s.list_of(s.list_of(s.Field("bytes", max_len=16), 3, min_len=3), MAX_RECENT_OUTCOMES),
}
_AUDITOR_SCHEMA: Final[s.Schema] = {"name": s.text(64, min_len=1), "key": s.exact_bytes(32)}
# A pending membership change: the record body without its approvals (see chain._check_membership).
_PENDING_SCHEMA: Final[s.Schema] = {
    "at": s.integer(1),
    "change": s.map_of(None, 16),
}


def encode_state(state: ChainState) -> bytes:
    """The canonical snapshot of a chain state (everything but the genesis, named by its hash)."""
    return canonical.encode(
        {
            "v": STATE_VERSION,
            "genesis": state.genesis.hash,
            "height": state.height,
            "last_hash": state.last_hash,
            "last_time_ms": state.last_time_ms,
            "ledger_size": state.ledger_size,
            "ledger_peaks": list(state.ledger_peaks),
            "validators": state.validators.to_value(),
            "last_validators": [] if state.last_validators is None else state.last_validators.to_value(),
            "auditors": [{"name": a.name, "key": a.sign_key} for a in state.auditors],
            "pending": [{"at": effective, "change": dict(change)} for effective, change in state.pending],
            "directory": [entry.encode() for entry in state.directory],
            "proposals": [proposal.to_value() for proposal in state.proposals],
            # (id, outcome, height) as three byte strings: one item kind keeps the schema simple
            "recent": [
                [pid, outcome.encode(), height.to_bytes(8, "big")] for pid, outcome, height in state.recent
            ],
        }
    )


class OldSnapshot(StoreError):
    """A snapshot written by an older version: rebuild the state from the chain instead."""


def decode_state(data: bytes, genesis: Genesis) -> ChainState:
    """Parse a snapshot made by :func:`encode_state` for ``genesis``; raises :class:`StoreError`."""
    try:
        value = canonical.decode(data, max_bytes=MAX_STATE_BYTES, max_depth=5)
        if isinstance(value, dict) and isinstance(value.get("v"), int) and value["v"] < STATE_VERSION:
            raise OldSnapshot(f"chain state snapshot of version {value['v']}")
        s.check(_STATE_SCHEMA, value, "state")
        if value["genesis"] != genesis.hash:
            raise StoreError("the store belongs to another genesis")
        return _state_from_value(value, genesis)
    except (DecodeError, LedgerInputError) as exc:
        raise StoreError(f"chain state snapshot is corrupt: {exc}") from None


def _state_from_value(value: dict[str, Any], genesis: Genesis) -> ChainState:
    for item in value["auditors"]:
        s.check(_AUDITOR_SCHEMA, item, "state.auditors")
    pending = []
    for item in value["pending"]:
        s.check(_PENDING_SCHEMA, item, "state.pending")
        pending.append((item["at"], tuple(sorted(item["change"].items()))))
    last = value["last_validators"]
    return ChainState(
        genesis=genesis,
        height=value["height"],
        last_hash=value["last_hash"],
        last_time_ms=value["last_time_ms"],
        ledger_size=value["ledger_size"],
        ledger_peaks=tuple(value["ledger_peaks"]),
        validators=ValidatorSet.from_value(value["validators"]),
        last_validators=ValidatorSet.from_value(last) if last else None,
        auditors=tuple(AuditNode(a["name"], a["key"]) for a in value["auditors"]),
        pending=tuple(pending),
        directory=tuple(MemberEntry.decode(item) for item in value["directory"]),
        proposals=tuple(OpenProposal.from_value(item) for item in value["proposals"]),
        recent=tuple(
            (pid, outcome.decode("ascii", "replace"), int.from_bytes(height, "big"))
            for pid, outcome, height in value["recent"]
        ),
    )


class Ledger:
    """A block store and the chain state of its head, moved forward together."""

    def __init__(self, store: BlockStore, genesis: Genesis, *, workers: int = 2) -> None:
        """Open over ``store``; ``workers`` is only used if the head state must be rebuilt."""
        self.store = store
        self.genesis = genesis
        self.state = self._recover(workers)

    def _recover(self, workers: int) -> ChainState:
        if self.store.head_height == 0:
            return ChainState.initial(self.genesis)
        snapshot = self.store.state_bytes()
        if snapshot is not None:
            try:
                state = decode_state(snapshot, self.genesis)
            except OldSnapshot:
                state = None
            if (
                state is not None
                and state.height == self.store.head_height
                and state.last_hash == self.store.head_hash
            ):
                return state
        from .verify import verify_chain  # only on this rare path: verify imports more

        return verify_chain(self.store, self.genesis, workers=workers)

    @property
    def height(self) -> int:
        """Height of the head block."""
        return self.state.height

    def append(
        self,
        block: Block,
        cert: CommitCertificate,
        *,
        check_signatures: bool = True,
        state_after: ChainState | None = None,
    ) -> ChainState:
        """Check and store a committed block; returns the new head state.

        ``state_after`` skips re-checking a block the caller already ran through
        :func:`apply_block` from this ledger's state (consensus does, before it
        votes).  The certificate is always checked against the validators that
        voted on the block.  Raises :class:`InvalidBlockError` for a bad block or
        certificate, and leaves the ledger unchanged.
        """
        if state_after is None:
            new = apply_block(
                self.state, block, record_exists=self.store.has_record, check_signatures=check_signatures
            )
        elif state_after.height != block.height or state_after.last_hash != block.hash:
            raise LedgerUsageError(f"state_after is not the state after block {block.height}")
        else:
            new = state_after
        new.verify_commit(cert)
        self.store.append(block, cert, state=encode_state(new))
        self.state = new
        return new

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
