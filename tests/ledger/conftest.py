"""Fixtures of the ledger tests: identities, a genesis, a sample chain and both block stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.genesis import Genesis
from mftp.ledger.store import BlockStore
from tests.ledger.ledger_helpers import Backend, Chain, build_chain


@pytest.fixture(scope="session")
def validators() -> list[SigningIdentity]:
    """Four validators of power 1."""
    return sample.identities(4, "ledger-tests")


@pytest.fixture(scope="session")
def genesis(validators: list[SigningIdentity]) -> Genesis:
    return sample.sample_genesis(validators, chain_id="mftp-test")


@pytest.fixture(scope="session")
def chain(genesis: Genesis, validators: list[SigningIdentity]) -> Chain:
    """A 12-block chain with empty blocks, single records and larger blocks (124 records)."""
    blocks, _ = build_chain(genesis, validators, [3, 0, 1, 17, 5, 0, 30, 2, 9, 33, 1, 23])
    return blocks


@pytest.fixture(params=["leveldb", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Every store test runs on LevelDB and in memory."""
    return Backend(request.param, tmp_path / "store", {})


@pytest.fixture
def store(backend: Backend) -> Iterator[BlockStore]:
    opened = backend.open()
    yield opened
    opened.close()
