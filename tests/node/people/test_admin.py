"""Operator actions: each checks its role, ends what must end and reports a security event."""

from __future__ import annotations

from pathlib import Path

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.node.clock import FakeClock
from mftp.node.errors import NodeUsageError
from mftp.node.people.abuse import AbuseGuard
from mftp.node.people.accounts import AccountStore, store_keys
from mftp.node.people.admin import Admin
from mftp.node.people.errors import NotPermitted, SessionRefused
from mftp.node.people.events import EventKind, SecurityEvent
from mftp.node.people.roles import Role
from mftp.node.people.sessions import Principal, SessionBook, TokenBook
from mftp.node.people.signin import SignIn

OPS = Principal("ops", "token", frozenset({Role.OPERATOR}))
PASSWORD = "correct horse battery"


@pytest.fixture
def events() -> list[SecurityEvent]:
    return []


@pytest.fixture
def admin(
    tmp_path: Path,
    identity: SigningIdentity,
    clock: FakeClock,
    store: AccountStore,
    events: list[SecurityEvent],
) -> Admin:
    tokens = TokenBook(tmp_path / "people", store_keys(identity)[0], clock)
    store.add("ops", [Role.OPERATOR], service=True)
    return Admin(store, SessionBook(clock), tokens, clock, events.append)


def test_add_user_hands_over_a_working_enrolment_code(
    admin: Admin, clock: FakeClock, events: list[SecurityEvent]
) -> None:
    account, code = admin.add_user(OPS, "dr.hansen", [Role.CLINICIAN])
    assert code is not None and account.enrolment_hash
    signin = SignIn(admin.store, admin.sessions, admin.tokens, AbuseGuard(clock), clock, events.append)
    signin.enrol_begin("dr.hansen", code, PASSWORD, "10.0.0.1")
    assert [e.kind for e in events][:2] == [EventKind.ACCOUNT_ADDED, EventKind.ENROLMENT_CODE_ISSUED]
    assert events[0].actor == "ops" and events[0].user == "dr.hansen" and events[0].detail == "clinician"
    _, none = admin.add_user(OPS, "pacs-bridge", [Role.CLINICIAN], service=True)
    assert none is None


def test_only_operators_manage_users(admin: Admin) -> None:
    clinician = Principal("dr.hansen", "session", frozenset({Role.CLINICIAN}), 0.0)
    for action in (
        lambda: admin.add_user(clinician, "x", [Role.CLINICIAN]),
        lambda: admin.list_users(clinician),
        lambda: admin.disable(clinician, "ops"),
        lambda: admin.set_roles(clinician, "ops", [Role.CLINICIAN]),
        lambda: admin.reset_second_factor(clinician, "ops"),
    ):
        with pytest.raises(NotPermitted):
            action()


def test_list_shows_no_secret(admin: Admin) -> None:
    admin.add_user(OPS, "dr.hansen", [Role.CLINICIAN, Role.OPERATOR])
    views = admin.list_users(OPS)
    assert [v.name for v in views] == ["dr.hansen", "ops"]
    assert views[0].roles == ("clinician", "operator") and views[0].enrolment_pending
    assert "hash" not in repr(views) and "secret" not in repr(views)


def test_disable_ends_sessions_and_revokes_tokens(admin: Admin, events: list[SecurityEvent]) -> None:
    admin.add_user(OPS, "dr.hansen", [Role.CLINICIAN])
    session_id, session = admin.sessions.start("dr.hansen")
    me = Principal("dr.hansen", "session", frozenset({Role.CLINICIAN}), 0.0)
    secret, _ = admin.create_token(me, "dr.hansen", Role.CLINICIAN)
    admin.disable(OPS, "dr.hansen")
    with pytest.raises(SessionRefused):
        admin.sessions.find(session_id)
    with pytest.raises(SessionRefused):
        admin.tokens.authenticate(secret)
    assert events[-1].kind is EventKind.ACCOUNT_DISABLED and events[-1].detail == "1 token(s) revoked"
    admin.enable(OPS, "dr.hansen")
    with pytest.raises(SessionRefused):  # enabling does not bring a revoked token back
        admin.tokens.authenticate(secret)
    with pytest.raises(NodeUsageError, match="own account"):
        admin.disable(OPS, "ops")
    assert session.name == "dr.hansen"


def test_reset_second_factor_ends_sessions_and_issues_a_new_code(admin: Admin) -> None:
    admin.add_user(OPS, "dr.hansen", [Role.CLINICIAN])
    session_id, _ = admin.sessions.start("dr.hansen")
    code = admin.reset_second_factor(OPS, "dr.hansen")
    account = admin.store.get("dr.hansen")
    assert account is not None and not account.has_second_factor and code
    with pytest.raises(SessionRefused):
        admin.sessions.find(session_id)


def test_role_change_is_reported_and_stops_tokens_of_a_lost_role(
    admin: Admin, events: list[SecurityEvent]
) -> None:
    admin.add_user(OPS, "dr.hansen", [Role.CLINICIAN, Role.OPERATOR])
    me = Principal("dr.hansen", "session", frozenset({Role.CLINICIAN, Role.OPERATOR}), 0.0)
    secret, _ = admin.create_token(me, "dr.hansen", Role.OPERATOR)
    admin.set_roles(OPS, "dr.hansen", [Role.CLINICIAN])
    assert events[-1].kind is EventKind.ROLE_CHANGED and events[-1].detail == "clinician"
    account = admin.store.get("dr.hansen")
    assert account is not None
    with pytest.raises(SessionRefused):
        admin.tokens.principal(admin.tokens.authenticate(secret), account.roles)


def test_token_rules(admin: Admin, events: list[SecurityEvent]) -> None:
    admin.add_user(OPS, "dr.hansen", [Role.CLINICIAN])
    admin.add_user(OPS, "bridge", [Role.CLINICIAN], service=True)
    me = Principal("dr.hansen", "session", frozenset({Role.CLINICIAN}), 0.0)
    with pytest.raises(NodeUsageError, match="made by that person"):
        admin.create_token(OPS, "dr.hansen", Role.CLINICIAN)
    with pytest.raises(NodeUsageError, match="role must be one"):
        admin.create_token(me, "dr.hansen", Role.OPERATOR)
    with pytest.raises(NotPermitted):
        admin.create_token(me, "bridge", Role.CLINICIAN)
    _, bridge_token = admin.create_token(OPS, "bridge", Role.CLINICIAN, label="PACS bridge")
    _, mine = admin.create_token(me, "dr.hansen", Role.CLINICIAN)
    assert events[-1].kind is EventKind.TOKEN_CREATED and events[-1].detail == f"{mine.token_id} clinician"
    with pytest.raises(NotPermitted):  # not one's own, and not an operator
        admin.revoke_token(me, bridge_token.token_id)
    admin.revoke_token(me, mine.token_id)
    admin.revoke_token(OPS, bridge_token.token_id)
    assert [e.kind for e in events[-2:]] == [EventKind.TOKEN_REVOKED] * 2


def test_unlock_is_reported(admin: Admin, events: list[SecurityEvent]) -> None:
    admin.add_user(OPS, "dr.hansen", [Role.CLINICIAN])
    admin.unlock(OPS, "dr.hansen")
    assert events[-1].kind is EventKind.UNLOCK
    with pytest.raises(NodeUsageError, match="no account"):
        admin.unlock(OPS, "nobody")
