"""Blocks, votes, commit certificates and validator sets.

A block at height ``h`` carries the commit certificate of block ``h-1``
(``last_commit``), like CometBFT, so the chain itself proves that every block
but the newest was committed; the store keeps the newest block's certificate
beside it.  A certificate is a set of precommits for one (height, round,
block hash) from validators holding more than 2/3 of the voting power, and an
observer verifies it knowing only the validator set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from math import gcd
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import BadSignatureError, DecodeError
from mftp.crypto.signing import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SigningIdentity, verify

from . import merkle
from . import schema as s
from .checkcache import VERIFIED_VOTES
from .errors import InvalidBlockError, LedgerInputError, LedgerUsageError
from .records import Record

HASH_BYTES: Final = 32
NIL: Final = b""  # the block hash of a vote for nothing
MAX_VALIDATORS: Final = 64
MAX_POWER: Final = 1000
MAX_BLOCK_RECORDS: Final = 10_000
MAX_BLOCK_BYTES: Final = 16 * 1024 * 1024
MAX_CHAIN_ID_CHARS: Final = 64


class VoteType(IntEnum):
    """The two voting steps of Tendermint."""

    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True)
class Validator:
    """A voting member: its name, Ed25519 public key and voting power."""

    name: str
    sign_key: bytes
    power: int

    def to_value(self) -> dict[str, Any]:
        """Canonical map form."""
        return {"name": self.name, "key": self.sign_key, "power": self.power}


class ValidatorSet:
    """An ordered set of validators (sorted by key) with weighted round-robin proposers."""

    def __init__(self, validators: Iterable[Validator]) -> None:
        ordered = sorted(validators, key=lambda v: v.sign_key)
        if not 1 <= len(ordered) <= MAX_VALIDATORS:
            raise LedgerUsageError(f"a validator set has 1 to {MAX_VALIDATORS} members")
        keys = [v.sign_key for v in ordered]
        if len(set(keys)) != len(keys):
            raise LedgerUsageError("duplicate validator key")
        for v in ordered:
            if len(v.sign_key) != PUBLIC_KEY_BYTES or not 1 <= v.power <= MAX_POWER:
                raise LedgerUsageError(
                    f"validator {v.name!r}: bad key length or power outside 1..{MAX_POWER}"
                )
        self.validators: tuple[Validator, ...] = tuple(ordered)
        self._by_key = {v.sign_key: v for v in ordered}
        self.total_power = sum(v.power for v in ordered)

    def __len__(self) -> int:
        return len(self.validators)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ValidatorSet) and self.validators == other.validators

    def __hash__(self) -> int:
        return hash(self.validators)

    def __repr__(self) -> str:
        return f"ValidatorSet({[v.name for v in self.validators]})"

    def get(self, key: bytes) -> Validator | None:
        """The validator with this key, or None."""
        return self._by_key.get(key)

    def power_of(self, keys: Iterable[bytes]) -> int:
        """Total power of the distinct members among ``keys``."""
        return sum(self._by_key[k].power for k in set(keys) if k in self._by_key)

    def has_quorum(self, power: int) -> bool:
        """More than 2/3 of the total power."""
        return power * 3 > self.total_power * 2

    def has_one_third(self, power: int) -> bool:
        """More than 1/3 of the total power (at least one correct member among them)."""
        return power * 3 > self.total_power

    def to_value(self) -> list[dict[str, Any]]:
        """Canonical list form."""
        return [v.to_value() for v in self.validators]

    @cached_property
    def hash(self) -> bytes:
        """Hash committed in each block header."""
        return canonical.digest(self.to_value())

    @classmethod
    def from_value(cls, value: Any) -> ValidatorSet:
        """Parse the canonical list form."""
        spec = s.list_of(s.Field("map", max_len=3, item=None), MAX_VALIDATORS, min_len=1)
        s.check_field(spec, value, "validators", InvalidBlockError)
        validator_schema = {
            "name": s.text(64, min_len=1),
            "key": s.exact_bytes(32),
            "power": s.integer(1, MAX_POWER),
        }
        for item in value:
            s.check(validator_schema, item, "validator", InvalidBlockError)
        try:
            return cls(Validator(v["name"], v["key"], v["power"]) for v in value)
        except LedgerUsageError as exc:  # e.g. a repeated key: the input's fault here, not ours
            raise InvalidBlockError(f"validators: {exc}") from None

    @cached_property
    def _schedule(self) -> tuple[int, ...]:
        # Smooth weighted round robin: over one period each validator proposes in
        # proportion to its power, and turns are spread out rather than bunched.
        divisor = 0
        for v in self.validators:
            divisor = gcd(divisor, v.power)
        weights = [v.power // divisor for v in self.validators]
        total = sum(weights)
        current = [0] * len(weights)
        order: list[int] = []
        for _ in range(total):
            for i, w in enumerate(weights):
                current[i] += w
            best = max(range(len(weights)), key=lambda i: (current[i], -i))
            current[best] -= total
            order.append(best)
        return tuple(order)

    def proposer(self, height: int, round_: int) -> Validator:
        """The proposer for (height, round): pure, so every member computes the same."""
        return self.validators[self._schedule[(height + round_) % len(self._schedule)]]


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed prevote or precommit; ``block_hash`` is :data:`NIL` for a vote for nothing."""

    type: VoteType
    height: int
    round: int
    block_hash: bytes
    validator: bytes
    signature: bytes

    def sign_bytes(self, chain_id: str) -> bytes:
        """What the validator signs (domain ``vote``)."""
        return vote_sign_bytes(chain_id, self.type, self.height, self.round, self.block_hash)

    def verify(self, chain_id: str) -> None:
        """Raise :class:`InvalidBlockError` unless the signature is valid."""
        try:
            _verify_vote_signature(self.validator, self.sign_bytes(chain_id), self.signature)
        except BadSignatureError as exc:
            raise InvalidBlockError(f"vote h={self.height} r={self.round}: {exc}") from None

    def to_value(self) -> dict[str, Any]:
        """Canonical map form."""
        return {
            "type": int(self.type),
            "height": self.height,
            "round": self.round,
            "block": self.block_hash,
            "validator": self.validator,
            "sig": self.signature,
        }

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return canonical.encode(self.to_value())

    @classmethod
    def from_value(cls, value: Any) -> Vote:
        """Parse and check the shape (not the signature)."""
        s.check(_VOTE_SCHEMA, value, "vote", InvalidBlockError)
        block = value["block"]
        if len(block) not in (0, HASH_BYTES):
            raise InvalidBlockError("vote: block hash must be empty (nil) or 32 bytes")
        return cls(
            VoteType(value["type"]), value["height"], value["round"], block, value["validator"], value["sig"]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Vote:
        """Decode canonical bytes from a peer."""
        try:
            return cls.from_value(canonical.decode(data, max_bytes=1024, max_depth=2))
        except DecodeError as exc:
            raise InvalidBlockError(f"undecodable vote: {exc}") from None


_VOTE_SCHEMA: Final[s.Schema] = {
    "type": s.integer(VoteType.PREVOTE, VoteType.PRECOMMIT),
    "height": s.integer(1),
    "round": s.integer(0, 2**31),
    "block": s.some_bytes(HASH_BYTES),
    "validator": s.exact_bytes(PUBLIC_KEY_BYTES),
    "sig": s.exact_bytes(SIGNATURE_BYTES),
}


def vote_sign_bytes(chain_id: str, vote_type: VoteType, height: int, round_: int, block_hash: bytes) -> bytes:
    """The canonical bytes of a vote's content, bound to the chain id."""
    return canonical.encode(
        {"chain_id": chain_id, "type": int(vote_type), "height": height, "round": round_, "block": block_hash}
    )


def _verify_vote_signature(key: bytes, message: bytes, signature: bytes) -> None:
    """Check one vote signature, remembering the good ones (see :mod:`.checkcache`).

    Each precommit is checked as a vote, again in the next block's last commit,
    and again in the certificate stored with its block: about half of a node's
    signature checks per height, each ~60 µs.
    """
    exact = (
        isinstance(key, bytes)
        and isinstance(signature, bytes)
        and len(key) == PUBLIC_KEY_BYTES
        and len(signature) == SIGNATURE_BYTES
    )
    if not exact:  # the fixed lengths make the joined bytes unambiguous; anything else just fails
        verify(key, "vote", message, signature)
        return
    checked = key + signature + message
    if checked in VERIFIED_VOTES:
        return
    verify(key, "vote", message, signature)
    VERIFIED_VOTES.remember(checked)


def sign_vote(
    identity: SigningIdentity, chain_id: str, vote_type: VoteType, height: int, round_: int, block_hash: bytes
) -> Vote:
    """Make a signed vote as ``identity``."""
    signature = identity.sign("vote", vote_sign_bytes(chain_id, vote_type, height, round_, block_hash))
    return Vote(vote_type, height, round_, block_hash, identity.public.sign_key, signature)


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """Precommits for one block from validators holding more than 2/3 of the power."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]  # (validator key, signature), sorted by key

    @classmethod
    def from_votes(cls, votes: Sequence[Vote]) -> CommitCertificate:
        """Build from precommits that all name the same height, round and block."""
        if not votes:
            raise LedgerUsageError("a certificate needs votes")
        first = votes[0]
        for vote in votes:
            if (vote.type, vote.height, vote.round, vote.block_hash) != (
                VoteType.PRECOMMIT,
                first.height,
                first.round,
                first.block_hash,
            ):
                raise LedgerUsageError("certificate votes must be precommits for one block and round")
        pairs = {v.validator: v.signature for v in votes}
        return cls(first.height, first.round, first.block_hash, tuple(sorted(pairs.items())))

    def verify(self, chain_id: str, validators: ValidatorSet) -> None:
        """Raise :class:`InvalidBlockError` unless this certificate commits its block."""
        if len(self.block_hash) != HASH_BYTES:
            raise InvalidBlockError(f"certificate h={self.height}: not for a block")
        keys = [key for key, _ in self.signatures]
        if keys != sorted(set(keys)):
            raise InvalidBlockError(f"certificate h={self.height}: signers unsorted or repeated")
        message = vote_sign_bytes(chain_id, VoteType.PRECOMMIT, self.height, self.round, self.block_hash)
        for key, signature in self.signatures:
            if key not in validators:
                raise InvalidBlockError(f"certificate h={self.height}: signer is not a validator")
            try:
                _verify_vote_signature(key, message, signature)
            except BadSignatureError:
                raise InvalidBlockError(f"certificate h={self.height}: bad precommit signature") from None
        if not validators.has_quorum(validators.power_of(keys)):
            raise InvalidBlockError(
                f"certificate h={self.height}: signers hold no more than 2/3 of the power"
            )

    def to_value(self) -> dict[str, Any]:
        """Canonical map form."""
        return {
            "height": self.height,
            "round": self.round,
            "block": self.block_hash,
            "sigs": [key + sig for key, sig in self.signatures],
        }

    @property
    def hash(self) -> bytes:
        """Hash committed by the next block's header."""
        return canonical.digest(self.to_value())

    @classmethod
    def from_value(cls, value: Any) -> CommitCertificate:
        """Parse and check the shape (not the signatures)."""
        s.check(_CERT_SCHEMA, value, "certificate", InvalidBlockError)
        pairs = tuple((item[:PUBLIC_KEY_BYTES], item[PUBLIC_KEY_BYTES:]) for item in value["sigs"])
        return cls(value["height"], value["round"], value["block"], pairs)


_CERT_SCHEMA: Final[s.Schema] = {
    "height": s.integer(1),
    "round": s.integer(0, 2**31),
    "block": s.exact_bytes(HASH_BYTES),
    "sigs": s.list_of(s.exact_bytes(PUBLIC_KEY_BYTES + SIGNATURE_BYTES), MAX_VALIDATORS, min_len=1),
}


@dataclass(frozen=True)  # no slots: cached_property needs an instance __dict__
class BlockHeader:
    """What a block's hash covers."""

    chain_id: str
    height: int
    time_ms: int
    prev_hash: bytes  # hash of block height-1; the genesis hash for height 1
    proposer: bytes
    records_root: bytes  # Merkle root of this block's records
    record_count: int
    ledger_size: int  # records in the whole ledger up to and including this block
    ledger_root: bytes  # Merkle root over every record of the ledger, in order
    validators_hash: bytes  # the set that votes on this block
    last_commit_hash: bytes  # hash of the certificate of block height-1 (32 zero bytes at height 1)

    def to_value(self) -> dict[str, Any]:
        """Canonical map form."""
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "time_ms": self.time_ms,
            "prev": self.prev_hash,
            "proposer": self.proposer,
            "records_root": self.records_root,
            "record_count": self.record_count,
            "ledger_size": self.ledger_size,
            "ledger_root": self.ledger_root,
            "validators": self.validators_hash,
            "last_commit": self.last_commit_hash,
        }

    @cached_property
    def hash(self) -> bytes:
        """The block hash."""
        return hashlib.sha256(canonical.encode(self.to_value())).digest()

    @classmethod
    def from_value(cls, value: Any) -> BlockHeader:
        """Parse and check the shape."""
        s.check(_HEADER_SCHEMA, value, "header", InvalidBlockError)
        return cls(
            value["chain_id"],
            value["height"],
            value["time_ms"],
            value["prev"],
            value["proposer"],
            value["records_root"],
            value["record_count"],
            value["ledger_size"],
            value["ledger_root"],
            value["validators"],
            value["last_commit"],
        )


_H = s.exact_bytes(HASH_BYTES)
_HEADER_SCHEMA: Final[s.Schema] = {
    "chain_id": s.text(MAX_CHAIN_ID_CHARS, min_len=1),
    "height": s.integer(1),
    "time_ms": s.integer(),
    "prev": _H,
    "proposer": s.exact_bytes(PUBLIC_KEY_BYTES),
    "records_root": _H,
    "record_count": s.integer(0, MAX_BLOCK_RECORDS),
    "ledger_size": s.integer(),
    "ledger_root": _H,
    "validators": _H,
    "last_commit": _H,
}

ZERO_HASH: Final = bytes(HASH_BYTES)


@dataclass(frozen=True, slots=True)
class Block:
    """A header, its records and the certificate of the previous block."""

    header: BlockHeader
    records: tuple[Record, ...]
    last_commit: CommitCertificate | None

    @property
    def hash(self) -> bytes:
        """The block hash (the header's hash)."""
        return self.header.hash

    @property
    def height(self) -> int:
        """The block height."""
        return self.header.height

    def to_bytes(self) -> bytes:
        """Canonical encoding (records embedded as their own encodings)."""
        return canonical.encode(
            {
                "header": self.header.to_value(),
                "records": [r.to_bytes() for r in self.records],
                "last_commit": None if self.last_commit is None else self.last_commit.to_value(),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Block:
        """Decode a block from a peer or the store; checks shape and internal hashes, not signatures."""
        try:
            value = canonical.decode(data, max_bytes=MAX_BLOCK_BYTES, max_depth=8)
        except DecodeError as exc:
            raise InvalidBlockError(f"undecodable block: {exc}") from None
        if not isinstance(value, dict) or set(value) != {"header", "records", "last_commit"}:
            raise InvalidBlockError("block: expected header, records and last_commit")
        header = BlockHeader.from_value(value["header"])
        raw_records = value["records"]
        if not isinstance(raw_records, list) or len(raw_records) > MAX_BLOCK_RECORDS:
            raise InvalidBlockError("block: records must be a list of bounded length")
        if not all(isinstance(item, bytes) for item in raw_records):
            raise InvalidBlockError(f"block {header.height}: each record must be bytes")
        try:
            records = tuple(Record.decode(item) for item in raw_records)
        except LedgerInputError as exc:  # only the peer's bad records: our own bugs stay bugs
            raise InvalidBlockError(f"block {header.height}: {exc}") from None
        cert = None if value["last_commit"] is None else CommitCertificate.from_value(value["last_commit"])
        block = cls(header, records, cert)
        block.check_contents()
        return block

    def check_contents(self) -> None:
        """Check what the block says about itself: record count, records root, last commit hash."""
        header = self.header
        if header.record_count != len(self.records):
            raise InvalidBlockError(f"block {header.height}: record count mismatch")
        if header.records_root != records_root(self.records):
            raise InvalidBlockError(f"block {header.height}: records root mismatch")
        expected = ZERO_HASH if self.last_commit is None else self.last_commit.hash
        if header.last_commit_hash != expected:
            raise InvalidBlockError(f"block {header.height}: last commit hash mismatch")
        if (self.last_commit is None) != (header.height == 1):
            raise InvalidBlockError(f"block {header.height}: last commit present iff height > 1")
        if self.last_commit is not None and (
            self.last_commit.height != header.height - 1 or self.last_commit.block_hash != header.prev_hash
        ):
            raise InvalidBlockError(f"block {header.height}: last commit is not for the previous block")


def records_root(records: Sequence[Record]) -> bytes:
    """Merkle root of a block's records (leaves are the records' encodings)."""
    return merkle.root_of([r.leaf_hash for r in records])
