"""Compact proposals: a proposal names its block's records by id to validators that pooled them.

Every record reaches every validator's mempool by gossip before a proposer
puts it in a block, so sending the block's records again with the proposal
doubled the record bytes that cross the network (and the work of the network
thread, a quarter of a node's CPU under load).  A validator is sent the
block's header, its last commit and the ids of its records (``c.proposal_ids``)
and rebuilds the block from its own mempool; the rebuilt block must hash to
what the proposer signed, so a wrong id can only make the proposal invalid,
never change it.  A validator that lacks a record asks the proposer for the
whole proposal (``c.proposal?``) and gets the usual ``c.proposal``.  Audit
nodes get no gossip and always get whole proposals.

The core never sees the difference: it still receives whole blocks (and logs
them to its WAL).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from mftp.consensus.errors import ConsensusInputError
from mftp.consensus.events import ProposalReceived
from mftp.consensus.messages import Proposal, ProposalMessage
from mftp.ledger.block import MAX_BLOCK_RECORDS, Block, BlockHeader, CommitCertificate
from mftp.ledger.errors import LedgerInputError
from mftp.ledger.records import RECORD_ID_BYTES, Record

KEPT_PROPOSALS: Final = 8
"""Own proposals kept to answer ``c.proposal?`` (the current height's rounds, and a few before)."""
MAX_ANSWERED: Final = 256
"""Requests remembered so that a peer repeating one is answered at most once a second (bounded)."""
ANSWER_INTERVAL_MS: Final = 1000


def compact_value(message: ProposalMessage) -> dict[str, Any]:
    """The ``c.proposal_ids`` value of a proposal: the block with its records replaced by their ids."""
    block = message.block
    return {
        "p": message.proposal.to_value(),
        "h": block.header.to_value(),
        "c": None if block.last_commit is None else block.last_commit.to_value(),
        "ids": [record.record_id for record in block.records],
    }


def rebuild(value: Any, pooled: Callable[[bytes], Record | None]) -> ProposalReceived | list[bytes]:
    """The proposal of a ``c.proposal_ids`` value with its block rebuilt from ``pooled`` records.

    Returns the ids not in the pool instead when some are missing (ask for the
    whole proposal then).  Raises :class:`ConsensusInputError` for a malformed
    value or a block whose records do not match its header.
    """
    if not isinstance(value, dict) or set(value) != {"p", "h", "c", "ids"}:
        raise ConsensusInputError("malformed c.proposal_ids message")
    ids = value["ids"]
    if not isinstance(ids, list) or len(ids) > MAX_BLOCK_RECORDS:
        raise ConsensusInputError("c.proposal_ids: ids must be a bounded list")
    if not all(isinstance(i, bytes) and len(i) == RECORD_ID_BYTES for i in ids):
        raise ConsensusInputError("c.proposal_ids: each id is 16 bytes")
    try:
        proposal = Proposal.from_value(value["p"])
        header = BlockHeader.from_value(value["h"])
        cert = None if value["c"] is None else CommitCertificate.from_value(value["c"])
    except (LedgerInputError, ValueError, TypeError, KeyError) as exc:
        raise ConsensusInputError(f"c.proposal_ids: {exc}") from None
    found = [pooled(i) for i in ids]
    missing = [i for i, record in zip(ids, found, strict=True) if record is None]
    if missing:
        return missing
    block = Block(header, tuple(r for r in found if r is not None), cert)
    try:
        block.check_contents()  # count, records root and last commit agree with the header
    except LedgerInputError as exc:
        raise ConsensusInputError(f"c.proposal_ids: {exc}") from None
    return ProposalReceived(proposal, block)


class OwnProposals:
    """This node's recent proposals, to answer validators that could not rebuild one."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[int, int], ProposalMessage] = OrderedDict()
        self._answered: OrderedDict[tuple[bytes, int, int], int] = OrderedDict()  # -> when, in ms

    def keep(self, message: ProposalMessage) -> None:
        """Remember a proposal we broadcast."""
        self._kept[(message.proposal.height, message.proposal.round)] = message
        while len(self._kept) > KEPT_PROPOSALS:
            self._kept.popitem(last=False)

    def answer(self, peer: bytes, value: Any, now_ms: int) -> ProposalMessage | None:
        """The proposal ``peer`` asks for (``{"h": height, "r": round}``), if kept and not sent it
        within the last second (a lost answer is asked for again when our re-sent proposal
        still cannot be rebuilt); else None."""
        if not isinstance(value, dict) or set(value) != {"h", "r"}:
            raise ConsensusInputError("malformed c.proposal? request")
        height, round_ = value["h"], value["r"]
        if not isinstance(height, int) or not isinstance(round_, int):
            raise ConsensusInputError("c.proposal?: height and round are integers")
        message = self._kept.get((height, round_))
        key = (peer, height, round_)
        if message is None or now_ms - self._answered.get(key, -(10**12)) < ANSWER_INTERVAL_MS:
            return None
        self._answered[key] = now_ms
        self._answered.move_to_end(key)
        while len(self._answered) > MAX_ANSWERED:
            self._answered.popitem(last=False)
        return message
