"""The Tendermint consensus core as a pure state machine: ``step(event, now_ms) -> list[action]``.

This follows Algorithm 1 of "The latest gossip on BFT consensus" (Buchman,
Kwon, Milosevic, 2018, arXiv:1807.04938); comments cite its line numbers.  The
paper's "2f+1" is "more than 2/3 of the voting power" and "f+1" is "more than
1/3" (:class:`~mftp.consensus.config.ConsensusConfig`).  There is no asyncio,
I/O, disk or clock in here: time comes in as ``now_ms``, timeouts go out as
:class:`~mftp.consensus.events.ScheduleTimeout` and come back as
:class:`~mftp.consensus.events.TimeoutFired`.

Design decisions (beyond the paper):

* The upon-rules are re-evaluated after every input until none fires, so any
  order of message arrival reaches the same state the paper's rules describe.
* Line 49 accepts the decided value from *any* known proposal of the height
  with that hash (a value re-proposed in a later round is the same block): the
  decision is fixed by the 2f+1 precommits, we only need the block's content.
* After a decision the core waits ``timeout_commit_ms`` (step COMMIT) before
  StartRound(0) of the next height, like CometBFT, to collect more precommits
  for the next block's ``last_commit`` and more records.  Every height change
  goes through that timeout, so the shell always applies a :class:`Commit`
  (and updates the record index behind ``record_exists``) before the core
  validates a block of the next height.
* A double-sign guard remembers every vote and proposal this validator signed
  (restored from the WAL after a crash, :meth:`Consensus.restore_own`); it never
  signs a second, different one for the same (height, round, step) and re-sends
  the first instead.
* Lines 22-23 also refuse a fresh proposal whose time is more than
  ``max_block_future_ms`` ahead of our clock (a Byzantine proposer could
  otherwise drag the chain's time forward); re-proposals (line 28) and
  decisions are not subject to it, so ``valid`` stays deterministic for them.
* Gossip is lossy, so :class:`Tick` re-sends our own votes of a height that has
  lasted a sync interval (and our proposal, and the proof-of-lock prevotes of
  our valid value, which line 28 needs at peers).  An equivocator counts toward every block it signed for
  (:mod:`~mftp.consensus.votes`), so a proof-of-lock built on its other vote
  is seen as one everywhere.
* Catch-up (:mod:`~mftp.consensus.catchup`): a peer whose messages show an
  older height gets a :class:`SendBlocks`; when validators holding f+1 power
  show a newer height we emit :class:`FetchBlocks`.  Fetched blocks are
  checked against their certificate and ``valid`` like anything else.
* Messages for height + 1 are buffered (bounded) and replayed on entering it;
  votes for rounds far ahead are bounded per validator.
* Observer mode: without an identity in the current validator set the core
  follows and decides but never proposes or votes.  Votes from non-validators
  are ignored and counted.
"""

from __future__ import annotations

from collections import Counter

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import NIL, Block, CommitCertificate, ValidatorSet, Vote, VoteType, sign_vote
from mftp.ledger.chain import ChainState, RecordExists
from mftp.ledger.errors import LedgerInputError
from mftp.ledger.records import Record

from .catchup import CatchUp, height_shown
from .config import ConsensusConfig
from .errors import ConsensusInputError, ConsensusUsageError
from .events import (
    Action,
    BlockSynced,
    Broadcast,
    Commit,
    Event,
    Evidence,
    Log,
    OwnProposal,
    OwnVote,
    ProposalReceived,
    RecordsSubmitted,
    ScheduleTimeout,
    Start,
    Step,
    Tick,
    TimeoutFired,
    VoteReceived,
    WalAppend,
)
from .evidence import EvidencePool, check_evidence_record, make_evidence_record
from .mempool import Admission, Mempool
from .messages import Proposal, ProposalMessage, sign_proposal
from .rules import UponRules
from .validity import build_valid_block, validate_block
from .votes import HeightVotes

MAX_SYNCED_AHEAD = 16


class Consensus(UponRules):
    """One validator's (or observer's) Tendermint state machine over the MFTP ledger.

    ``state`` is the chain state after the last stored block and ``last_commit``
    that block's certificate (None at genesis).  ``record_exists`` answers
    whether a record id is already on the chain; the shell must update what it
    answers when it carries out a :class:`Commit`, before the next event.
    """

    def __init__(
        self,
        config: ConsensusConfig,
        *,
        state: ChainState,
        last_commit: CommitCertificate | None,
        record_exists: RecordExists,
        identity: SigningIdentity | None = None,
    ) -> None:
        if (last_commit is None) != (state.height == 0):
            raise ConsensusUsageError("last_commit is required exactly when the chain has blocks")
        self.config = config
        self.identity = identity
        self.key = identity.public.sign_key if identity is not None else None
        self.state = state
        self.last_commit = last_commit
        self._record_exists = record_exists
        self.mempool = Mempool(
            max_records=config.mempool_max_records,
            max_bytes=config.mempool_max_bytes,
            max_record_bytes=config.max_record_bytes,
        )
        self.evidence = EvidencePool(config.evidence_max_items)
        self.counters: Counter[str] = Counter()
        self.now_ms = 0
        self.started = False
        self._out: list[Action] = []
        self._signed_votes: dict[tuple[int, int, VoteType], Vote] = {}
        self._signed_proposals: dict[tuple[int, int], tuple[Proposal, Block]] = {}
        self._last_round = -1 if last_commit is None else last_commit.round
        self._last_precommits: dict[bytes, Vote] = {}
        self._catchup = CatchUp(config.sync_interval_ms)
        self._synced_ahead: dict[int, BlockSynced] = {}
        self._future: list[Event] = []
        # Per-height state (the paper's lines 2-9), set by _enter_height.
        self._height = 0
        self.round = 0
        self.current_step = Step.COMMIT
        self.locked_value: Block | None = None
        self.locked_round = -1
        self.valid_value: Block | None = None
        self.valid_round = -1
        self.votes = HeightVotes(1, state.validators)
        self.proposals: dict[int, tuple[Proposal, Block]] = {}
        self.round_senders: dict[int, set[bytes]] = {}
        self.is_validator = False
        self._fired: set[tuple[int, int]] = set()
        self._validity: dict[bytes, ChainState | None] = {}
        self._idle = False  # waiting, after the commit wait, for something to record
        self._enter_height()

    # ------------------------------------------------------------------ public

    def step(self, event: Event, now_ms: int) -> list[Action]:
        """Feed one event at time ``now_ms``; returns the actions to carry out in order."""
        self.now_ms = max(self.now_ms, now_ms)  # a clock stepping back must not undo timeouts
        self._out = []
        try:
            self._dispatch(event)
        except ConsensusInputError as exc:
            self.counters["input_errors"] += 1
            self._out.append(Log("debug", f"dropped input: {exc}"))
        out, self._out = self._out, []
        return out

    def restore_own(self, votes: list[Vote], proposals: list[tuple[Proposal, Block]]) -> None:
        """Teach the double-sign guard what this validator signed before a restart (from its WAL)."""
        for vote in votes:
            if vote.height >= self.height:
                self._signed_votes[(vote.height, vote.round, vote.type)] = vote
        for proposal, block in proposals:
            if proposal.height >= self.height:
                self._signed_proposals[(proposal.height, proposal.round)] = (proposal, block)

    @property
    def height(self) -> int:
        """The paper's h_p: the height being decided."""
        return self._height

    @property
    def validators(self) -> ValidatorSet:
        """The set voting on the current height."""
        return self.state.validators

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, VoteReceived):
            self._on_vote(event.vote)
        elif isinstance(event, ProposalReceived):
            self._on_proposal(event.proposal, event.block)
        elif isinstance(event, TimeoutFired):
            self._on_timeout(event)
        elif isinstance(event, Tick):
            self._on_tick()
        elif isinstance(event, RecordsSubmitted):
            self._on_records(event)
        elif isinstance(event, BlockSynced):
            self._on_synced(event)
        elif isinstance(event, Start):
            self._on_start()
        else:
            raise ConsensusUsageError(f"not a consensus event: {type(event).__name__}")

    def _on_start(self) -> None:
        # line 10: upon start do StartRound(0); idempotent so a restarted shell may always send it
        if self.started:
            return
        self.started = True
        if self.current_step is Step.COMMIT:
            self._start_round(0)
        self._run_rules()

    def _on_timeout(self, event: TimeoutFired) -> None:
        if event.height != self.height:
            return
        if event.step is Step.COMMIT:
            if self.current_step is Step.COMMIT:
                # A restarted core replays this from its WAL before its own Start: begin the
                # height exactly when the crashed run did, so the replay follows the same path.
                self.started = True
                if self._idle_until_ms() > self.now_ms:
                    # Nothing to record: wait for a record, a peer's proposal or vote, or the
                    # heartbeat (the decision depends only on logged inputs, so replay agrees).
                    self._idle = True
                    wake_at = self._idle_until_ms()
                    self._out.append(ScheduleTimeout(self.height, 0, Step.COMMIT, wake_at))
                else:
                    self._idle = False
                    self._start_round(0)
        elif event.round != self.round:
            return
        elif event.step is Step.PROPOSE and self.current_step is Step.PROPOSE:
            self._cast(VoteType.PREVOTE, NIL)  # lines 57-60: OnTimeoutPropose
            self.current_step = Step.PREVOTE
        elif event.step is Step.PREVOTE and self.current_step is Step.PREVOTE:
            self._cast(VoteType.PRECOMMIT, NIL)  # lines 61-64: OnTimeoutPrevote
            self.current_step = Step.PRECOMMIT
        elif event.step is Step.PRECOMMIT and self.current_step is not Step.COMMIT:
            self._start_round(self.round + 1)  # lines 65-67: OnTimeoutPrecommit
        self._run_rules()

    def _on_tick(self) -> None:
        """Re-send our own signed messages of a height that lasts (identical bytes: idempotent).

        Not before the height is a sync interval old: a height decided sooner lost nothing
        that mattered, and at 10-15 heights a second re-sending at every Tick was 1.5 of a
        validator's 10 messages out per height (laggards are also helped by catch-up)."""
        if self.key is None or self.now_ms - self._catchup.height_started_ms < self.config.sync_interval_ms:
            return
        own_last = self._last_precommits.get(self.key)
        if own_last is not None:
            self._out.append(Broadcast(own_last))  # laggards may still need it for height - 1
        if not self.is_validator:
            return
        oldest = self.round - self.config.rebroadcast_rounds
        for vote in self.votes.own_votes(self.key):
            if vote.round > oldest:
                self._out.append(Broadcast(vote))
        signed = self._signed_proposals.get((self.height, self.round))
        if signed is not None:
            self._out.append(Broadcast(ProposalMessage(*signed)))
        if self.valid_value is not None:
            # Relay the proof of lock of our valid value (CometBFT gossips POL prevotes too): a
            # proposer re-proposing it (line 16) is followed by peers only if they see it (line 28).
            pol = self.votes.get(self.valid_round, VoteType.PREVOTE).for_block(self.valid_value.hash)
            self._out.extend(Broadcast(vote) for vote in pol if vote.validator != self.key)

    def _on_records(self, event: RecordsSubmitted) -> None:
        for record in event.records:
            outcome = self.mempool.add(
                record,
                state=self.state,
                record_exists=self._record_exists,
                extra_check=self._check_evidence_content,
            )
            self.counters[f"mempool_{outcome.value}"] += 1
        if len(self.mempool):
            self._wake()

    def _idle_until_ms(self) -> int:
        """When an idle height must start anyway: now if records wait, if idling is off, or if
        a peer already proposed or voted at this height (during our commit wait: those wake-ups
        came before we were idle, and nothing else would come to wake us before the heartbeat)."""
        interval = self.config.empty_block_interval_ms
        if interval <= 0 or len(self.mempool) or self.round_senders:
            return self.now_ms
        return self.state.last_time_ms + interval

    def _wake(self) -> None:
        """Leave the idle wait: something is to be decided at this height."""
        if self._idle and self.current_step is Step.COMMIT:
            self._idle = False
            self.counters["idle_wakeups"] += 1
            self._start_round(0)
            self._run_rules()

    def _check_evidence_content(self, record: Record) -> None:
        sets = tuple(s for s in (self.state.validators, self.state.last_validators) if s is not None)
        check_evidence_record(record, self.state.chain_id, sets)

    # ------------------------------------------------------------------ messages

    def _on_proposal(self, proposal: Proposal, block: Block) -> None:
        if proposal.height != self.height:
            self._other_height(ProposalReceived(proposal, block), proposal.height, proposal.proposer)
            return
        round_ = proposal.round
        if not -1 <= proposal.pol_round < round_:
            raise ConsensusInputError("proposal: pol_round must be in [-1, round)")
        if proposal.proposer != self.validators.proposer(self.height, round_).sign_key:
            raise ConsensusInputError(f"proposal h={self.height} r={round_}: not from the round's proposer")
        if round_ > self.round + self.config.max_future_rounds_per_validator:
            self.counters["future_round_dropped"] += 1
            return
        known = self.proposals.get(round_)
        if known is not None and known[0].signature == proposal.signature:
            self.counters["duplicates"] += 1
            return
        if block.hash != proposal.block_hash:
            raise ConsensusInputError("proposal: block does not match the signed hash")
        proposal.verify(self.state.chain_id)
        if known is not None:
            # a second signed proposal for one round: the proposer equivocates; keep the first
            self.counters["proposal_equivocations"] += 1
            self._out.append(Log("warning", f"proposer equivocated at h={self.height} r={round_}"))
            return
        self.proposals[round_] = (proposal, block)
        self._note_sender(round_, proposal.proposer)
        self._wake()  # a peer has something to decide: an idle height starts now
        self._run_rules()

    def _on_vote(self, vote: Vote) -> None:
        if vote.height != self.height:
            if vote.height == self.height - 1:
                self._on_last_height_vote(vote)
            self._other_height(VoteReceived(vote), vote.height, vote.validator, shown=height_shown(vote))
            return
        if vote.validator not in self.validators:
            self.counters["votes_from_non_validators"] += 1
            return
        existing = self.votes.existing(vote)
        if existing is not None:
            if self.votes.knows(vote):
                self.counters["duplicates"] += 1
                return
            self._verify_vote(vote)
            self._equivocation(existing, vote)
            if self.votes.add_conflicting(vote):
                self._run_rules()
            return
        above = sum(1 for r in self.votes.rounds_of(vote.validator) if r > self.round)
        if vote.round > self.round and above >= self.config.max_future_rounds_per_validator:
            self.counters["future_round_dropped"] += 1
            return
        self._verify_vote(vote)
        self.votes.add(vote)
        self._note_sender(vote.round, vote.validator)
        self._wake()  # a validator is deciding this height: an idle height starts now
        self._run_rules()

    def _verify_vote(self, vote: Vote) -> None:
        try:
            vote.verify(self.state.chain_id)
        except LedgerInputError as exc:
            raise ConsensusInputError(str(exc)) from None

    def _on_last_height_vote(self, vote: Vote) -> None:
        """A late precommit for the block we just decided makes the next certificate fuller."""
        last = self.state.last_validators
        if vote.type is not VoteType.PRECOMMIT or vote.round != self._last_round or last is None:
            return
        if vote.validator not in last:
            return
        known = self._last_precommits.get(vote.validator)
        if known is not None:
            if known.block_hash != vote.block_hash:
                self._verify_vote(vote)
                self._equivocation(known, vote)
            return
        if vote.block_hash != self.state.last_hash or not self._last_precommits:
            return
        self._verify_vote(vote)
        self._last_precommits[vote.validator] = vote

    def _other_height(self, event: Event, height: int, sender: bytes, *, shown: int | None = None) -> None:
        if height < self.height:
            if (lowest := height if shown is None else shown) < self.height:  # lowest height sender may be at
                self._peer_behind(event, sender, lowest)
        elif height == self.height + 1 and len(self._future) < self.config.max_future_messages:
            self._future.append(event)  # replayed when we enter that height
            self._peer_ahead(sender, height)
        else:
            self._peer_ahead(sender, height)
            self.counters["far_future_dropped"] += 1

    def _note_sender(self, round_: int, sender: bytes) -> None:
        self.round_senders.setdefault(round_, set()).add(sender)

    def _equivocation(self, vote_a: Vote, vote_b: Vote) -> None:
        """Two signed, different votes for one (height, round, type) from one validator: evidence."""
        if not self.evidence.add(vote_a, vote_b):
            return
        self.counters["equivocations"] += 1
        self._out.append(Evidence(vote_a.validator, vote_a, vote_b))
        if self.identity is not None and self.key is not None and self.state.is_member(self.key):
            record = make_evidence_record(self.identity, vote_a, vote_b, time_ms=self.now_ms)
            outcome = self.mempool.add(
                record, state=self.state, record_exists=self._record_exists, verified=True
            )
            if outcome is not Admission.ADDED:
                self.counters[f"evidence_{outcome.value}"] += 1

    # ------------------------------------------------------------------ catch-up

    def _peer_behind(self, event: Event, peer: bytes, their_height: int) -> None:
        """Send blocks to the signer of an old message, once its signature is checked.

        The signer is who the message claims it is from; a message re-broadcast by another
        (a peer back from a pause replays old votes, some signed by us) must not send blocks to
        anyone before its signature is checked, and never to ourselves.
        """
        if peer == self.key:
            self.counters["own_old_messages"] += 1
            return
        last = self.state.last_validators
        known = peer in self.validators or (last is not None and peer in last)
        if not self._catchup.behind_is_due(peer, their_height, known=known, now_ms=self.now_ms):
            return
        self._verify_signer(event)
        action = self._catchup.peer_behind(
            peer, their_height, height=self.height, known=known, now_ms=self.now_ms
        )
        if action is not None:
            self._out.append(action)

    def _verify_signer(self, event: Event) -> None:
        """Check the signature of an old vote or proposal: :class:`ConsensusInputError` if bad."""
        try:
            if isinstance(event, VoteReceived):
                event.vote.verify(self.state.chain_id)
            elif isinstance(event, ProposalReceived):
                event.proposal.verify(self.state.chain_id)
        except LedgerInputError as exc:
            raise ConsensusInputError(f"old message: {exc}") from None

    def _peer_ahead(self, peer: bytes, their_height: int) -> None:
        action = self._catchup.peer_ahead(
            peer, their_height, height=self.height, validators=self.validators, now_ms=self.now_ms
        )
        if action is not None:
            self._out.append(action)

    def _on_synced(self, event: BlockSynced) -> None:
        height = event.block.height
        if height < self.height:
            self.counters["synced_duplicate"] += 1
            return
        if height > self.height:
            if len(self._synced_ahead) < MAX_SYNCED_AHEAD:
                self._synced_ahead[height] = event
            return
        block, cert = event.block, event.certificate
        if cert.height != height or cert.block_hash != block.hash:
            raise ConsensusInputError("synced block: certificate is for another block")
        try:
            cert.verify(self.state.chain_id, self.validators)
        except LedgerInputError as exc:
            raise ConsensusInputError(f"synced block: {exc}") from None
        new_state = self._valid(block)
        if new_state is None:
            raise ConsensusInputError("synced block with a valid certificate is invalid (f exceeded?)")
        self.counters["blocks_synced"] += 1
        precommits = [
            Vote(VoteType.PRECOMMIT, height, cert.round, cert.block_hash, key, sig)
            for key, sig in cert.signatures
        ]
        self._decide(block, cert, new_state, precommits)
        following = self._synced_ahead.pop(self.height, None)
        if following is not None:
            self._on_synced(following)

    # ------------------------------------------------------------------ round and height changes

    def _start_round(self, round_: int) -> None:
        # lines 11-21: StartRound(round)
        self.round = round_  # line 12
        self.current_step = Step.PROPOSE  # line 13
        self.counters["rounds_started"] += 1
        proposer = self.validators.proposer(self.height, round_)
        if self.is_validator and proposer.sign_key == self.key:  # line 14
            if self.valid_value is not None:  # line 15
                self._propose(self.valid_value, self.valid_round)  # lines 16, 19
            else:
                self._propose(self._get_value(), -1)  # lines 18, 19
        else:
            self._schedule(Step.PROPOSE)  # line 21

    def _get_value(self) -> Block:
        """Line 18: getValue(), a valid block of the oldest pooled records."""
        assert self.key is not None
        last_commit = self.last_commit
        if self._last_precommits:  # the fuller certificate collected during the commit wait
            last_commit = CommitCertificate.from_votes(list(self._last_precommits.values()))
        block, new_state = build_valid_block(
            self.state,
            self.mempool,
            self._record_exists,
            max_records=self.config.batch_records,
            time_ms=self.now_ms,
            proposer=self.key,
            last_commit=last_commit,
        )
        self._validity[block.hash] = new_state
        return block

    def _propose(self, block: Block, pol_round: int) -> None:
        """Line 19: broadcast PROPOSAL(h_p, round_p, proposal, validRound_p), guarded against re-signing."""
        assert self.identity is not None
        signed = self._signed_proposals.get((self.height, self.round))
        if signed is None:
            proposal = sign_proposal(
                self.identity, self.state.chain_id, self.height, self.round, pol_round, block.hash
            )
            signed = (proposal, block)
            self._signed_proposals[(self.height, self.round)] = signed
            self._out.append(WalAppend(OwnProposal(proposal, block), sync=True))
        elif signed[1].hash != block.hash:
            self.counters["guard_kept_prior_proposal"] += 1
        self._out.append(Broadcast(ProposalMessage(*signed)))
        self.proposals[self.round] = signed  # we receive our own broadcast
        self._note_sender(self.round, signed[0].proposer)

    def _cast(self, vote_type: VoteType, block_hash: bytes) -> None:
        """Sign (once), log with sync, broadcast and count our own vote."""
        if not self.is_validator:
            return
        assert self.identity is not None and self.key is not None
        slot = (self.height, self.round, vote_type)
        vote = self._signed_votes.get(slot)
        if vote is None:
            vote = sign_vote(
                self.identity, self.state.chain_id, vote_type, self.height, self.round, block_hash
            )
            self._signed_votes[slot] = vote
            self._out.append(WalAppend(OwnVote(vote), sync=True))
        elif vote.block_hash != block_hash:
            # Never sign a second, different vote for one slot: re-send the one already out.
            self.counters["guard_kept_prior_vote"] += 1
            self._out.append(Log("warning", f"kept prior {vote_type.name} at h={self.height} r={self.round}"))
            known = self._known_block(vote.block_hash)
            if vote_type is VoteType.PRECOMMIT and known is not None:
                self.locked_value, self.locked_round = known, self.round  # stay locked on what we sent
        self._out.append(Broadcast(vote))
        self.votes.add(vote)
        self._note_sender(self.round, self.key)

    def _decide(
        self, block: Block, cert: CommitCertificate, new_state: ChainState, precommits: list[Vote]
    ) -> None:
        # lines 51-54: decision_p[h_p] = v; h_p <- h_p + 1; reset; StartRound(0) after the commit wait
        self._out.append(Commit(block, cert, new_state))
        self.mempool.remove(r.record_id for r in block.records)
        self.counters["commits"] += 1
        self.state = new_state
        self.last_commit = cert
        self._last_round = cert.round
        self._last_precommits = {v.validator: v for v in precommits}
        self.started = True
        self._enter_height()
        self._schedule(Step.COMMIT)

    def _enter_height(self) -> None:
        """Line 53: reset the per-height state (and replay buffered messages of the new height)."""
        self._height = self.state.height + 1
        self.round = 0
        self.current_step = Step.COMMIT
        self.locked_value = None  # line 6
        self.locked_round = -1  # line 7
        self.valid_value = None  # line 8
        self.valid_round = -1  # line 9
        self.votes = HeightVotes(self._height, self.state.validators)
        self.proposals = {}
        self.round_senders = {}
        self._fired = set()
        self._validity = {}
        self._idle = False
        self._catchup.new_height(self._height, self.now_ms)
        self.is_validator = self.key is not None and self.key in self.state.validators
        self._signed_votes = {k: v for k, v in self._signed_votes.items() if k[0] >= self._height}
        self._signed_proposals = {k: v for k, v in self._signed_proposals.items() if k[0] >= self._height}
        buffered, self._future = self._future, []
        for event in buffered:
            try:
                self._dispatch(event)
            except ConsensusInputError:
                self.counters["input_errors"] += 1

    def _schedule(self, step: Step) -> None:
        at_ms = self.now_ms + self.config.timeout_ms(step, self.round)
        self._out.append(ScheduleTimeout(self.height, self.round, step, at_ms))

    # ------------------------------------------------------------------ values

    def _valid(self, block: Block) -> ChainState | None:
        """The paper's valid(v), cached per block: the state after it, or None."""
        if block.hash in self._validity:
            return self._validity[block.hash]
        try:
            new_state: ChainState | None = validate_block(
                self.state, block, self._record_exists, already_verified=self.mempool.holds
            )
        except ConsensusInputError as exc:
            self.counters["invalid_blocks"] += 1
            self._out.append(Log("info", f"invalid block at h={self.height}: {exc}"))
            new_state = None
        self._validity[block.hash] = new_state
        return new_state

    def _known_block(self, block_hash: bytes) -> Block | None:
        candidates = [block for _proposal, block in self.proposals.values()]
        candidates += [b for b in (self.locked_value, self.valid_value) if b is not None]
        return next((b for b in candidates if b.hash == block_hash), None)

    def _is_locked_on(self, block: Block) -> bool:
        return self.locked_value is not None and self.locked_value.hash == block.hash
