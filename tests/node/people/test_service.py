"""The people of a node built from node.toml: the old node-wide token is a named service account."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.node.clock import FakeClock
from mftp.node.config import parse_config
from mftp.node.errors import ConfigError
from mftp.node.people.errors import NotPermitted
from mftp.node.people.roles import Permission, Role, check
from mftp.node.people.service import build_people

TOKEN = "a-service-token-of-at-least-32-characters"


def _config(tmp_path: Path, **api: object) -> object:
    raw = {
        "node": {"name": "hospital-a", "country": "SE"},
        "api": {"token_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()], **api},
        "people": {"password_memory_kib": 8},
    }
    return parse_config(raw, tmp_path / "node.toml")


def test_the_node_wide_token_is_a_named_service_account_with_one_role(tmp_path: Path) -> None:
    identity, clock = SigningIdentity.generate(), FakeClock()
    people = build_people(_config(tmp_path), identity, clock, lambda e: None, tmp_path / "people")  # type: ignore[arg-type]
    principal = people.signin.from_token(TOKEN, "127.0.0.1")
    assert principal.name == "node-service" and principal.roles == {Role.OPERATOR}
    assert principal.party_id == "user:node-service"  # what it does is recorded as that account
    with pytest.raises(NotPermitted):
        check(principal.roles, Permission.STUDY_SEND)  # no study access: not all-powerful
    account = people.store.get("node-service")
    assert account is not None and account.service and not account.has_second_factor
    # The operator changes its role in node.toml: the account follows at the next start.
    again = build_people(
        _config(tmp_path, service_role="clinician"),
        identity,
        clock,
        lambda e: None,
        tmp_path / "people",  # type: ignore[arg-type]
    )
    assert again.signin.from_token(TOKEN, "127.0.0.1").roles == {Role.CLINICIAN}
    assert [t.token_id.startswith("cfg-") for t in again.tokens.tokens_of("node-service")] == [True]


def test_a_service_account_name_that_is_a_person_is_refused(tmp_path: Path) -> None:
    identity, clock = SigningIdentity.generate(), FakeClock()
    people = build_people(_config(tmp_path), identity, clock, lambda e: None, tmp_path / "people")  # type: ignore[arg-type]
    people.store.add("dr.ana", [Role.CLINICIAN])
    with pytest.raises(ConfigError, match="person"):
        build_people(
            _config(tmp_path, service_account="dr.ana"), identity, clock, lambda e: None, tmp_path / "people"
        )  # type: ignore[arg-type]
