"""The simulator's judges: checked after every step, and once at the end.

After every step
    * agreement: no two correct nodes commit different blocks at one height;
    * certificate validity: every commit's certificate holds precommits for that
      block from validators with a quorum of the power of that height's set;
    * no double signing: no correct validator ever *signs* (not merely sends)
      two different votes for one (height, round, step), or two proposals for
      one (height, round) -- across crashes and restarts;
    * no framing: no evidence on the chain names a correct validator;
    * observers never vote.
At the end
    * liveness (judged by the simulator: every correct node reaches the target
      height within a bounded time after the network heals);
    * the chain verifies for an observer knowing only the genesis
      (``ledger.chain.replay`` and ``ChainState.verify_commit``), across
      membership changes.
"""

from __future__ import annotations

from typing import Any

from mftp.crypto.errors import BadSignatureError
from mftp.crypto.signing import verify
from mftp.ledger.block import Block, CommitCertificate, ValidatorSet, VoteType, vote_sign_bytes
from mftp.ledger.errors import LedgerInputError
from mftp.ledger.records import RecordType

from ..config import ConsensusConfig
from .nodes import SimNode


class Checker:
    """Collects violations; each is a one-line description."""

    def __init__(self, config: ConsensusConfig, chain_id: str, correct_keys: set[bytes]) -> None:
        self.config = config
        self.chain_id = chain_id
        self.correct_keys = correct_keys
        self.violations: list[str] = []
        self.decided: dict[int, bytes] = {}
        self._cert_ok: dict[bytes, str | None] = {}
        self._votes: dict[tuple[bytes, int, int, int], bytes] = {}
        self._proposals: dict[tuple[bytes, int, int], bytes] = {}

    def fail(self, kind: str, detail: str) -> None:
        """Record a violation."""
        self.violations.append(f"{kind}: {detail}")

    def on_commit(
        self, node: SimNode, block: Block, cert: CommitCertificate, validators: ValidatorSet
    ) -> None:
        """A node stored a block."""
        if not node.correct:
            return
        first = self.decided.setdefault(block.height, block.hash)
        if first != block.hash:
            self.fail(
                "agreement",
                f"{node.name} committed {block.hash.hex()[:12]} at height {block.height}, "
                f"another correct node committed {first.hex()[:12]}",
            )
        problem = self._certificate_problem(block, cert, validators)
        if problem is not None:
            self.fail("certificate", f"{node.name} at height {block.height}: {problem}")
        for record in block.records:
            if record.type is RecordType.EVIDENCE and record.body["offender"] in self.correct_keys:
                self.fail("framed", f"evidence against a correct validator at height {block.height}")

    def _certificate_problem(
        self, block: Block, cert: CommitCertificate, validators: ValidatorSet
    ) -> str | None:
        if cert.height != block.height or cert.block_hash != block.hash:
            return "certificate is for another block"
        key = cert.hash + validators.hash
        if key not in self._cert_ok:
            self._cert_ok[key] = self._verify(cert, validators)
        return self._cert_ok[key]

    def _verify(self, cert: CommitCertificate, validators: ValidatorSet) -> str | None:
        if not self.config.broken_quorum:
            try:
                cert.verify(self.chain_id, validators)
            except LedgerInputError as exc:
                return str(exc)
            return None
        # The broken protocol's certificates fail the real rule by design; check what it claims.
        message = vote_sign_bytes(self.chain_id, VoteType.PRECOMMIT, cert.height, cert.round, cert.block_hash)
        for signer, signature in cert.signatures:
            try:
                verify(signer, "vote", message, signature)
            except BadSignatureError:
                return "bad precommit signature"
        if not self.config.has_quorum(validators, validators.power_of(k for k, _ in cert.signatures)):
            return "no quorum"
        return None

    def on_signed(self, node: SimNode, domain: str, content: dict[str, Any]) -> None:
        """A correct node's key signed a vote or proposal."""
        if domain == "vote":
            slot = (node.key, content["height"], content["round"], content["type"])
            first = self._votes.setdefault(slot, content["block"])
            if first != content["block"]:
                self.fail("double_sign", f"{node.name} signed two votes for h/r/type {slot[1:]}")
        elif domain == "proposal":
            pslot = (node.key, content["height"], content["round"])
            first = self._proposals.setdefault(pslot, content["block"])
            if first != content["block"]:
                self.fail("double_propose", f"{node.name} signed two proposals for h/r {pslot[1:]}")

    def on_observer_vote(self, node: SimNode) -> None:
        """An audit node sent a vote."""
        self.fail("observer_voted", f"{node.name} is an audit node and voted")
