"""The wire form of consensus messages on the peer network: channel and canonical value.

``c.vote``      a prevote (sent to the validators) or a precommit (to every member)
``c.proposal``  ``{"p": proposal, "b": block bytes}`` (to audit nodes, or on request;
                validators get it by record ids, see :mod:`.compact_proposals`)
``c.block``     ``{"b": block bytes, "c": certificate}``: a committed block for a lagging peer

Decoding goes through the canonical decoders with their limits; anything
malformed raises :class:`~mftp.consensus.errors.ConsensusInputError`, which
the node counts against the sender.
"""

from __future__ import annotations

from typing import Any, Final

from mftp.consensus.errors import ConsensusInputError
from mftp.consensus.events import BlockSynced, Event, ProposalReceived, VoteReceived
from mftp.consensus.messages import Message, Proposal, ProposalMessage, decode_block, decode_certificate
from mftp.ledger.block import Vote
from mftp.ledger.errors import LedgerInputError

CONSENSUS_CHANNELS: Final = ("c.vote", "c.proposal", "c.block")


def encode_message(message: Message) -> tuple[str, Any]:
    """The channel and canonical value of a consensus message."""
    if isinstance(message, Vote):
        return "c.vote", message.to_value()
    if isinstance(message, ProposalMessage):
        return "c.proposal", {"p": message.proposal.to_value(), "b": message.block.to_bytes()}
    return "c.block", {"b": message.block.to_bytes(), "c": message.certificate.to_value()}


def decode_event(channel: str, value: Any) -> Event:
    """A consensus event from a peer's message; :class:`ConsensusInputError` if malformed."""
    try:
        if channel == "c.vote":
            return VoteReceived(Vote.from_value(value))
        if channel == "c.proposal" and isinstance(value, dict) and set(value) == {"p", "b"}:
            return ProposalReceived(Proposal.from_value(value["p"]), decode_block(value["b"]))
        if channel == "c.block" and isinstance(value, dict) and set(value) == {"b", "c"}:
            return BlockSynced(decode_block(value["b"]), decode_certificate(value["c"]))
    except (LedgerInputError, ValueError, TypeError, KeyError) as exc:
        raise ConsensusInputError(f"{channel}: {exc}") from None
    raise ConsensusInputError(f"malformed {channel} message")
