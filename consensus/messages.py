"""Consensus messages that are not ledger types: the signed block proposal.

Votes and commit certificates are :class:`mftp.ledger.block.Vote` and
:class:`~mftp.ledger.block.CommitCertificate` (their sign bytes are what
observers verify).  A proposal is the paper's ``<PROPOSAL, h, r, v, vr>``: the
proposer signs (domain ``proposal``) the chain id, height, round, ``pol_round``
(the paper's *validRound* ``vr``, -1 for none) and the block hash; the block
itself travels beside it in a :class:`ProposalMessage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import BadSignatureError, DecodeError
from mftp.crypto.signing import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SigningIdentity, verify
from mftp.ledger import schema as s
from mftp.ledger.block import HASH_BYTES, Block, CommitCertificate, Vote
from mftp.ledger.errors import LedgerInputError

from .errors import ConsensusInputError

MAX_ROUND: Final = 2**31


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposer's signed claim: block ``block_hash`` for (height, round), re-proposed from ``pol_round``."""

    height: int
    round: int
    pol_round: int  # -1: a fresh value; otherwise the round whose prevotes justify it (line 28)
    block_hash: bytes
    proposer: bytes
    signature: bytes

    def verify(self, chain_id: str) -> None:
        """Raise :class:`ConsensusInputError` unless the proposer's signature is valid."""
        try:
            verify(self.proposer, "proposal", proposal_sign_bytes(chain_id, self), self.signature)
        except BadSignatureError as exc:
            raise ConsensusInputError(f"proposal h={self.height} r={self.round}: {exc}") from None

    def to_value(self) -> dict[str, Any]:
        """Canonical map form."""
        return {
            "height": self.height,
            "round": self.round,
            "pol_round": self.pol_round,
            "block": self.block_hash,
            "proposer": self.proposer,
            "sig": self.signature,
        }

    @classmethod
    def from_value(cls, value: Any) -> Proposal:
        """Parse and check the shape (not the signature)."""
        try:
            s.check(_PROPOSAL_SCHEMA, value, "proposal")
        except LedgerInputError as exc:
            raise ConsensusInputError(str(exc)) from None
        if value["pol_round"] >= value["round"]:
            raise ConsensusInputError("proposal: pol_round must be below round")
        return cls(
            value["height"],
            value["round"],
            value["pol_round"],
            value["block"],
            value["proposer"],
            value["sig"],
        )


_PROPOSAL_SCHEMA: Final[s.Schema] = {
    "height": s.integer(1),
    "round": s.integer(0, MAX_ROUND),
    "pol_round": s.Field("int", min_value=-1, max_value=MAX_ROUND),
    "block": s.exact_bytes(HASH_BYTES),
    "proposer": s.exact_bytes(PUBLIC_KEY_BYTES),
    "sig": s.exact_bytes(SIGNATURE_BYTES),
}


def proposal_sign_bytes(chain_id: str, proposal: Proposal) -> bytes:
    """What the proposer signs (domain ``proposal``), bound to the chain id."""
    return canonical.encode(
        {
            "chain_id": chain_id,
            "height": proposal.height,
            "round": proposal.round,
            "pol_round": proposal.pol_round,
            "block": proposal.block_hash,
        }
    )


def sign_proposal(
    identity: SigningIdentity, chain_id: str, height: int, round_: int, pol_round: int, block_hash: bytes
) -> Proposal:
    """Make a signed proposal as ``identity``."""
    unsigned = Proposal(height, round_, pol_round, block_hash, identity.public.sign_key, b"")
    signature = identity.sign("proposal", proposal_sign_bytes(chain_id, unsigned))
    return Proposal(height, round_, pol_round, block_hash, identity.public.sign_key, signature)


@dataclass(frozen=True, slots=True)
class ProposalMessage:
    """A proposal with its block, as broadcast."""

    proposal: Proposal
    block: Block


@dataclass(frozen=True, slots=True)
class SyncedBlock:
    """A committed block with its certificate, as sent to a lagging peer."""

    block: Block
    certificate: CommitCertificate


Message = ProposalMessage | Vote | SyncedBlock
"""What the core broadcasts or the shell sends to one peer."""


def decode_vote(value: Any) -> Vote:
    """A vote from its canonical map, as a :class:`ConsensusInputError` on failure."""
    try:
        return Vote.from_value(value)
    except (LedgerInputError, ValueError) as exc:
        raise ConsensusInputError(f"bad vote: {exc}") from None


def decode_block(data: Any) -> Block:
    """A block from its encoding, as a :class:`ConsensusInputError` on failure."""
    if not isinstance(data, bytes):
        raise ConsensusInputError("block must be bytes")
    try:
        return Block.from_bytes(data)
    except (LedgerInputError, DecodeError, ValueError) as exc:
        raise ConsensusInputError(f"bad block: {exc}") from None


def decode_certificate(value: Any) -> CommitCertificate:
    """A certificate from its canonical map, as a :class:`ConsensusInputError` on failure."""
    try:
        return CommitCertificate.from_value(value)
    except (LedgerInputError, ValueError) as exc:
        raise ConsensusInputError(f"bad certificate: {exc}") from None
