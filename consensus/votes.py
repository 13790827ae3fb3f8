"""Vote bookkeeping for one height: who voted what, and how much power stands behind it.

Tallies are kept incrementally so the upon-rules of the core (which ask "is
there 2f+1 for X in round r?") cost a dictionary lookup, not a scan.  Only the
first vote of a validator per (round, type) counts; a second, different one is
handed back to the caller as equivocation evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mftp.ledger.block import NIL, ValidatorSet, Vote, VoteType


@dataclass(slots=True)
class RoundVotes:
    """The votes of one type in one round.

    ``votes`` holds each validator's first vote (it alone counts toward the
    round's total ``power``).  ``by_block`` also holds an equivocator's later
    votes for *other* blocks: like CometBFT we count a validator toward every
    block it signed for.  That is safe (two quorums for different blocks in one
    round would need f+1 equivocators) and needed for liveness: a correct node
    may have locked on a proof-of-lock that includes the equivocator's other vote.
    """

    votes: dict[bytes, Vote] = field(default_factory=dict)
    by_block: dict[bytes, dict[bytes, Vote]] = field(default_factory=dict)
    power_by_block: dict[bytes, int] = field(default_factory=dict)
    power: int = 0  # total power of first votes, whatever their block

    def block_power(self, block_hash: bytes) -> int:
        """Power of the validators that signed a vote for ``block_hash`` (:data:`NIL` for nil)."""
        return self.power_by_block.get(block_hash, 0)

    def for_block(self, block_hash: bytes) -> list[Vote]:
        """The votes for ``block_hash``, sorted by validator key."""
        return [v for _k, v in sorted(self.by_block.get(block_hash, {}).items())]

    def count(self, vote: Vote, power: int) -> bool:
        """Count ``vote`` toward its block; False if this validator already counts there."""
        voters = self.by_block.setdefault(vote.block_hash, {})
        if vote.validator in voters:
            return False
        voters[vote.validator] = vote
        self.power_by_block[vote.block_hash] = self.power_by_block.get(vote.block_hash, 0) + power
        return True


_EMPTY = RoundVotes()
MAX_BLOCKS_PER_SLOT = 4  # an equivocator counts toward at most this many blocks per (round, type)


class HeightVotes:
    """Prevotes and precommits of every round of one height, from one validator set."""

    def __init__(self, height: int, validators: ValidatorSet) -> None:
        self.height = height
        self.validators = validators
        self._rounds: dict[tuple[int, VoteType], RoundVotes] = {}
        self._rounds_of: dict[bytes, set[int]] = {}  # validator -> rounds it voted in

    def get(self, round_: int, vote_type: VoteType) -> RoundVotes:
        """The votes of ``vote_type`` in ``round_`` (empty if none)."""
        return self._rounds.get((round_, vote_type), _EMPTY)

    def existing(self, vote: Vote) -> Vote | None:
        """The vote this validator already cast for the vote's (round, type), if any."""
        return self.get(vote.round, vote.type).votes.get(vote.validator)

    def rounds_of(self, validator: bytes) -> set[int]:
        """Rounds in which ``validator`` has a vote here."""
        return self._rounds_of.get(validator, set())

    def add(self, vote: Vote) -> bool:
        """Count a vote whose signature and membership the caller checked; False if already counted."""
        key = (vote.round, vote.type)
        bucket = self._rounds.get(key)
        if bucket is None:
            bucket = self._rounds[key] = RoundVotes()
        validator = self.validators.get(vote.validator)
        if vote.validator in bucket.votes or validator is None:
            return False
        bucket.votes[vote.validator] = vote
        bucket.count(vote, validator.power)
        bucket.power += validator.power
        self._rounds_of.setdefault(vote.validator, set()).add(vote.round)
        return True

    def add_conflicting(self, vote: Vote) -> bool:
        """Count an equivocator's verified second vote toward its block, at most
        ``MAX_BLOCKS_PER_SLOT`` blocks per validator and slot; False if not counted."""
        bucket = self.get(vote.round, vote.type)
        validator = self.validators.get(vote.validator)
        if validator is None or vote.validator not in bucket.votes:
            return False
        signed_for = sum(1 for voters in bucket.by_block.values() if vote.validator in voters)
        if signed_for >= MAX_BLOCKS_PER_SLOT:
            return False
        return bucket.count(vote, validator.power)

    def knows(self, vote: Vote) -> bool:
        """This exact vote (validator, slot and block) is already counted."""
        return vote.validator in self.get(vote.round, vote.type).by_block.get(vote.block_hash, {})

    def rounds(self, vote_type: VoteType) -> list[int]:
        """Rounds that hold votes of ``vote_type``, ascending."""
        return sorted(r for r, t in self._rounds if t == vote_type)

    def quorum_block(
        self, round_: int, vote_type: VoteType, has_quorum: Callable[[int], bool]
    ) -> bytes | None:
        """The non-nil block with a quorum of ``vote_type`` in ``round_``, if any."""
        for block_hash, power in self.get(round_, vote_type).power_by_block.items():
            if block_hash != NIL and has_quorum(power):
                return block_hash
        return None

    def own_votes(self, validator: bytes) -> list[Vote]:
        """Every vote ``validator`` has here, by round then type."""
        found = []
        for _key, bucket in sorted(self._rounds.items()):
            vote = bucket.votes.get(validator)
            if vote is not None:
                found.append(vote)
        return found
