"""Fixtures of the people room: a store on a FakeClock with the cheapest Argon2 parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.node.clock import FakeClock
from mftp.node.people.accounts import TEST_COST, AccountStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def identity() -> SigningIdentity:
    return SigningIdentity.generate()


@pytest.fixture
def store(tmp_path: Path, identity: SigningIdentity, clock: FakeClock) -> AccountStore:
    return AccountStore(tmp_path / "people", identity, clock, TEST_COST)
