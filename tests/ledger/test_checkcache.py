"""The per-process memories of passed checks (mftp.ledger.checkcache) and the vote cache."""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import block as block_module
from mftp.ledger.block import NIL, CommitCertificate, Validator, ValidatorSet, VoteType, sign_vote
from mftp.ledger.checkcache import CheckCache, use_check_caches
from mftp.ledger.errors import InvalidBlockError

CHAIN = "cache-test"


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    use_check_caches(True)
    yield
    use_check_caches(True)


def test_a_full_cache_forgets_its_oldest_entry_and_an_off_cache_remembers_nothing() -> None:
    cache = CheckCache(2)
    for key in (b"a", b"b", b"c"):
        cache.remember(key, key.upper())
    assert b"a" not in cache and cache.get(b"b") == b"B" and cache.get(b"c") == b"C" and len(cache) == 2
    cache.limit = 0
    cache.remember(b"d")
    assert b"d" not in cache


def test_a_precommit_is_verified_once_as_vote_and_in_certificates() -> None:
    signers = [SigningIdentity.generate() for _ in range(4)]
    validators = ValidatorSet([Validator(f"v{i}", s.public.sign_key, 1) for i, s in enumerate(signers)])
    block_hash = bytes(range(32))
    votes = [sign_vote(s, CHAIN, VoteType.PRECOMMIT, 5, 0, block_hash) for s in signers[:3]]
    cert = CommitCertificate.from_votes(votes)
    with mock.patch.object(block_module, "verify", wraps=block_module.verify) as checked:
        for vote in votes:
            vote.verify(CHAIN)
        assert checked.call_count == 3
        cert.verify(CHAIN, validators)  # the next block's last commit
        cert.verify(CHAIN, validators)  # the certificate stored with the block
        assert checked.call_count == 3
        use_check_caches(False)  # simulations: every validator checks for itself
        cert.verify(CHAIN, validators)
        assert checked.call_count == 6


def test_a_bad_signature_is_never_remembered() -> None:
    signer = SigningIdentity.generate()
    vote = sign_vote(signer, CHAIN, VoteType.PREVOTE, 1, 0, NIL)
    forged = block_module.Vote(vote.type, vote.height, vote.round, vote.block_hash, vote.validator, bytes(64))
    for _ in range(2):
        with pytest.raises(InvalidBlockError):
            forged.verify(CHAIN)
    # A key and signature of the wrong lengths cannot borrow a remembered check of the same joined bytes.
    vote.verify(CHAIN)
    longer_key, shorter_sig = vote.validator + vote.signature[:1], vote.signature[1:]
    shifted = block_module.Vote(vote.type, vote.height, vote.round, vote.block_hash, longer_key, shorter_sig)
    with pytest.raises(InvalidBlockError):
        shifted.verify(CHAIN)
