"""The upon-rules of Algorithm 1 of "The latest gossip on BFT consensus" (arXiv:1807.04938).

Mixed into :class:`~mftp.consensus.core.Consensus`: each rule checks its condition on the
core's state and, when it holds, acts and says so; :meth:`UponRules._run_rules` re-evaluates
them after every input until none fires.  Comments cite the paper's line numbers.  Pure, like
the rest of the core: the state and the actions (casting, scheduling, deciding) are the
core's own, declared below for the type checker only.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Final

from mftp.ledger.block import NIL, Block, CommitCertificate, ValidatorSet, Vote, VoteType
from mftp.ledger.chain import ChainState

from .config import ConsensusConfig
from .errors import ConsensusUsageError
from .events import Step
from .messages import Proposal
from .votes import HeightVotes

MAX_RULE_FIRINGS: Final = 10_000  # per input; the rules always make progress, this only guards our bugs


class UponRules:
    """The eight upon-rules, evaluated in the paper's order of precedence."""

    config: ConsensusConfig
    counters: Counter[str]
    now_ms: int
    started: bool
    round: int
    current_step: Step
    locked_value: Block | None
    locked_round: int
    valid_value: Block | None
    valid_round: int
    votes: HeightVotes
    proposals: dict[int, tuple[Proposal, Block]]
    round_senders: dict[int, set[bytes]]
    _fired: set[tuple[int, int]]

    if TYPE_CHECKING:  # the core's own state and actions (mftp.consensus.core.Consensus)

        @property
        def validators(self) -> ValidatorSet: ...

        def _known_block(self, block_hash: bytes) -> Block | None: ...

        def _valid(self, block: Block) -> ChainState | None: ...

        def _decide(
            self, block: Block, cert: CommitCertificate, new_state: ChainState, precommits: list[Vote]
        ) -> None: ...

        def _start_round(self, round_: int) -> None: ...

        def _is_locked_on(self, block: Block) -> bool: ...

        def _cast(self, vote_type: VoteType, block_hash: bytes) -> None: ...

        def _schedule(self, step: Step) -> None: ...

    def _run_rules(self) -> None:
        for _ in range(MAX_RULE_FIRINGS):
            if self.current_step is Step.COMMIT or not self.started:
                return
            fired = (
                self._rule_decide()
                or self._rule_skip_round()
                or self._rule_prevote_fresh()
                or self._rule_prevote_pol()
                or self._rule_prevote_timeout()
                or self._rule_lock()
                or self._rule_precommit_nil()
                or self._rule_precommit_timeout()
            )
            if not fired:
                return
        raise ConsensusUsageError("upon-rules did not settle")  # pragma: no cover - our bug

    def _quorum(self, power: int) -> bool:
        return self.config.has_quorum(self.validators, power)

    def _first_time(self, line: int, round_: int) -> bool:
        if (line, round_) in self._fired:
            return False
        self._fired.add((line, round_))
        return True

    def _rule_decide(self) -> bool:
        # lines 49-54: PROPOSAL(h_p, r, v, *) AND 2f+1 PRECOMMIT(h_p, r, id(v)) while decision_p[h_p] = nil
        for round_ in self.votes.rounds(VoteType.PRECOMMIT):
            block_hash = self.votes.quorum_block(round_, VoteType.PRECOMMIT, self._quorum)
            if block_hash is None:
                continue
            block = self._known_block(block_hash)
            new_state = None if block is None else self._valid(block)  # line 50: if valid(v)
            if block is None or new_state is None:
                self.counters["decision_waiting_for_block"] += 1
                continue
            precommits = self.votes.get(round_, VoteType.PRECOMMIT).for_block(block_hash)
            self._decide(block, CommitCertificate.from_votes(precommits), new_state, precommits)
            return True
        return False

    def _rule_skip_round(self) -> bool:
        # lines 55-56: f+1 messages <*, h_p, round, *, *> with round > round_p: StartRound(round)
        for round_ in sorted(self.round_senders, reverse=True):
            if round_ <= self.round:
                break
            power = self.validators.power_of(self.round_senders[round_])
            if self.config.has_one_third(self.validators, power):
                self.counters["round_skips"] += 1
                self._start_round(round_)
                return True
        return False

    def _rule_prevote_fresh(self) -> bool:
        # lines 22-27: PROPOSAL(h_p, round_p, v, -1) from proposer while step_p = propose
        known = self.proposals.get(self.round)
        if self.current_step is not Step.PROPOSE or known is None or known[0].pol_round != -1:
            return False
        block = known[1]
        timely = block.header.time_ms <= self.now_ms + self.config.max_block_future_ms
        free = self.locked_round == -1 or self._is_locked_on(block)  # line 23
        if self._valid(block) is not None and timely and free:
            self._cast(VoteType.PREVOTE, block.hash)  # line 24
        else:
            self.counters["prevote_nil_on_proposal"] += 1
            self._cast(VoteType.PREVOTE, NIL)  # line 26
        self.current_step = Step.PREVOTE  # line 27
        return True

    def _rule_prevote_pol(self) -> bool:
        # lines 28-33: PROPOSAL(h_p, round_p, v, vr) AND 2f+1 PREVOTE(h_p, vr, id(v)),
        # while step_p = propose and 0 <= vr < round_p
        known = self.proposals.get(self.round)
        if self.current_step is not Step.PROPOSE or known is None:
            return False
        proposal, block = known
        vr = proposal.pol_round
        if not 0 <= vr < self.round:
            return False
        if not self._quorum(self.votes.get(vr, VoteType.PREVOTE).block_power(block.hash)):
            return False
        if self._valid(block) is not None and (self.locked_round <= vr or self._is_locked_on(block)):
            self._cast(VoteType.PREVOTE, block.hash)  # line 30
        else:
            self._cast(VoteType.PREVOTE, NIL)  # line 32
        self.current_step = Step.PREVOTE  # line 33
        return True

    def _rule_prevote_timeout(self) -> bool:
        # lines 34-35: 2f+1 PREVOTE(h_p, round_p, *) while step_p = prevote, for the first time
        if self.current_step is not Step.PREVOTE:
            return False
        if not self._quorum(self.votes.get(self.round, VoteType.PREVOTE).power):
            return False
        if not self._first_time(34, self.round):
            return False
        self._schedule(Step.PREVOTE)
        return True

    def _rule_lock(self) -> bool:
        # lines 36-43: PROPOSAL(h_p, round_p, v, *) AND 2f+1 PREVOTE(h_p, round_p, id(v))
        # while valid(v) and step_p >= prevote, for the first time
        known = self.proposals.get(self.round)
        if self.current_step not in (Step.PREVOTE, Step.PRECOMMIT) or known is None:
            return False
        block = known[1]
        if not self._quorum(self.votes.get(self.round, VoteType.PREVOTE).block_power(block.hash)):
            return False
        if (36, self.round) in self._fired or self._valid(block) is None:
            return False
        self._fired.add((36, self.round))
        if self.current_step is Step.PREVOTE:  # line 37
            self.locked_value, self.locked_round = block, self.round  # lines 38-39
            self._cast(VoteType.PRECOMMIT, block.hash)  # line 40
            self.current_step = Step.PRECOMMIT  # line 41
        self.valid_value, self.valid_round = block, self.round  # lines 42-43
        return True

    def _rule_precommit_nil(self) -> bool:
        # lines 44-46: 2f+1 PREVOTE(h_p, round_p, nil) while step_p = prevote
        if self.current_step is not Step.PREVOTE:
            return False
        if not self._quorum(self.votes.get(self.round, VoteType.PREVOTE).block_power(NIL)):
            return False
        self._cast(VoteType.PRECOMMIT, NIL)  # line 45
        self.current_step = Step.PRECOMMIT  # line 46
        return True

    def _rule_precommit_timeout(self) -> bool:
        # lines 47-48: 2f+1 PRECOMMIT(h_p, round_p, *) for the first time
        if not self._quorum(self.votes.get(self.round, VoteType.PRECOMMIT).power):
            return False
        if not self._first_time(47, self.round):
            return False
        self._schedule(Step.PRECOMMIT)
        return True
