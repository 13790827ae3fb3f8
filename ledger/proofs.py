"""Ledger proofs a light client checks with nothing but a validator set.

A block header under a valid commit certificate is a trusted statement of the
ledger's size and root at that height.  :func:`verify_record_in_ledger` ties an
inclusion proof to such a header; :func:`verify_ledger_extension` shows that a
newer certified header extends an older one (the ledger is append-only).
Proofs travel as canonical maps with bounded sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError

from . import merkle
from . import schema as s
from .block import BlockHeader, CommitCertificate, ValidatorSet
from .errors import InvalidProofError, LedgerInputError, LedgerUsageError
from .records import Record
from .store import BlockStore, StoredRecord

_PATH = s.list_of(s.exact_bytes(merkle.HASH_BYTES), merkle.MAX_PROOF_HASHES)
_SIZE = s.integer(0, merkle.MAX_TREE_SIZE)
_INCLUSION_SCHEMA: Final[s.Schema] = {"index": _SIZE, "size": _SIZE, "path": _PATH}
_CONSISTENCY_SCHEMA: Final[s.Schema] = {"old_size": _SIZE, "new_size": _SIZE, "path": _PATH}
MAX_PROOF_BYTES: Final = 8192


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """The path from leaf ``ledger_index`` to the root of a ledger of ``ledger_size`` records."""

    ledger_index: int
    ledger_size: int
    path: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        value = {"index": self.ledger_index, "size": self.ledger_size, "path": list(self.path)}
        return canonical.encode(value)

    @classmethod
    def from_bytes(cls, data: bytes) -> InclusionProof:
        """Decode a proof from a peer (shape only; :func:`verify_record_in_ledger` checks it)."""
        value = _decode(data, _INCLUSION_SCHEMA, "inclusion proof")
        return cls(value["index"], value["size"], tuple(value["path"]))

    def verify(self, leaf: bytes, root: bytes) -> None:
        """Raise :class:`InvalidProofError` unless ``leaf`` is at the index under the trusted ``root``."""
        merkle.verify_inclusion(leaf, self.ledger_index, self.ledger_size, self.path, root)


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """Shows that the ledger of ``new_size`` records extends the one of ``old_size``."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        value = {"old_size": self.old_size, "new_size": self.new_size, "path": list(self.path)}
        return canonical.encode(value)

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencyProof:
        """Decode a proof from a peer (shape only)."""
        value = _decode(data, _CONSISTENCY_SCHEMA, "consistency proof")
        return cls(value["old_size"], value["new_size"], tuple(value["path"]))

    def verify(self, old_root: bytes, new_root: bytes) -> None:
        """Raise :class:`InvalidProofError` unless the trusted roots are consistent."""
        merkle.verify_consistency(self.old_size, self.new_size, old_root, new_root, self.path)


def _decode(data: bytes, schema: s.Schema, what: str) -> Any:
    try:
        value = canonical.decode(data, max_bytes=MAX_PROOF_BYTES, max_depth=3)
        s.check(schema, value, what, InvalidProofError)
    except (DecodeError, LedgerInputError) as exc:
        raise InvalidProofError(f"malformed {what}: {exc}") from None
    return value


def verify_certified_header(header: BlockHeader, cert: CommitCertificate, validators: ValidatorSet) -> None:
    """Raise :class:`InvalidProofError` unless ``cert`` commits ``header`` under ``validators``.

    ``validators`` is the set that voted on ``header.height``, which the client
    knows (from the genesis and the membership changes it followed).
    """
    if header.validators_hash != validators.hash:
        raise InvalidProofError(f"block {header.height} names another validator set")
    if cert.height != header.height or cert.block_hash != header.hash:
        raise InvalidProofError(f"certificate is not for block {header.height}")
    try:
        cert.verify(header.chain_id, validators)
    except LedgerInputError as exc:
        raise InvalidProofError(f"block {header.height} is not certified: {exc}") from None


def verify_record_in_ledger(
    record_bytes: bytes,
    proof: InclusionProof,
    header: BlockHeader,
    cert: CommitCertificate,
    validators: ValidatorSet,
) -> Record:
    """Check that ``record_bytes`` is in the ledger as of a certified header; return the record.

    Verifies the certificate, then the inclusion proof against the header's
    ledger root, then the record's own signature.  Raises :class:`InvalidProofError`.
    """
    verify_certified_header(header, cert, validators)
    if proof.ledger_size != header.ledger_size:
        raise InvalidProofError(
            f"proof is for {proof.ledger_size} records, the header has {header.ledger_size}"
        )
    proof.verify(merkle.leaf_hash(record_bytes), header.ledger_root)
    try:
        record = Record.decode(record_bytes)
        record.verify_signature()
    except LedgerInputError as exc:
        raise InvalidProofError(f"proven record is invalid: {exc}") from None
    return record


def verify_ledger_extension(old: BlockHeader, new: BlockHeader, proof: ConsistencyProof) -> None:
    """Check that the ledger in trusted header ``new`` extends the one in trusted header ``old``."""
    if (proof.old_size, proof.new_size) != (old.ledger_size, new.ledger_size):
        raise InvalidProofError("consistency proof is for other ledger sizes")
    proof.verify(old.ledger_root, new.ledger_root)


def prove_record(
    store: BlockStore, record_id: bytes, height: int | None = None
) -> tuple[StoredRecord, InclusionProof]:
    """The stored record and its inclusion proof in the ledger as of block ``height`` (default head)."""
    found = store.record(record_id)
    if found is None:
        raise LedgerUsageError(f"record {record_id.hex()} is not in the store")
    header = store.header(store.head_height if height is None else height)
    if found.ledger_index >= header.ledger_size:
        raise LedgerUsageError(f"record {record_id.hex()} is not yet in the ledger at block {header.height}")
    path = store.inclusion_proof(found.ledger_index, header.ledger_size)
    return found, InclusionProof(found.ledger_index, header.ledger_size, tuple(path))


def prove_extension(store: BlockStore, old_height: int, new_height: int) -> ConsistencyProof:
    """The consistency proof between the ledgers of two stored blocks."""
    old, new = store.header(old_height), store.header(new_height)
    path = store.consistency_proof(old.ledger_size, new.ledger_size)
    return ConsistencyProof(old.ledger_size, new.ledger_size, tuple(path))
