"""Sessions (lifecycle, idle and absolute expiry, CSRF, step-up) and API tokens (hash, expiry, revocation)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.node.clock import FakeClock
from mftp.node.errors import NodeUsageError
from mftp.node.people.accounts import store_keys
from mftp.node.people.errors import SessionRefused, StepUpRequired
from mftp.node.people.roles import Role
from mftp.node.people.sessions import (
    SESSION_LIFECYCLE,
    Principal,
    SessionBook,
    SessionPolicy,
    SessionState,
    TokenBook,
    cookie_attributes,
    require_step_up,
)

MIN_MS = 60_000
DAY_MS = 24 * 3600 * 1000


def signed_in(book: SessionBook) -> tuple[str, str]:
    session_id, session = book.start("dr.hansen")
    book.second_factor_ok(session)
    return session_id, session.csrf_token


def test_lifecycle_table() -> None:
    assert SESSION_LIFECYCLE.allows(SessionState.PASSWORD_OK, SessionState.ACTIVE)
    assert not SESSION_LIFECYCLE.allows(SessionState.EXPIRED, SessionState.ACTIVE)
    assert not SESSION_LIFECYCLE.allows(SessionState.ACTIVE, SessionState.PASSWORD_OK)
    assert SESSION_LIFECYCLE.final(SessionState.ENDED) and SESSION_LIFECYCLE.final(SessionState.EXPIRED)
    with pytest.raises(NodeUsageError, match="expired -> active"):
        SESSION_LIFECYCLE.move(SessionState.EXPIRED, SessionState.ACTIVE)


def test_ids_are_random_256_bits_and_kept_only_hashed(clock: FakeClock) -> None:
    book = SessionBook(clock)
    session_id, session = book.start("dr.hansen")
    assert len(session_id) >= 43 and session_id != book.start("dr.hansen")[0]
    assert session.id_hash == hashlib.sha256(session_id.encode()).digest()
    assert session_id.encode() not in repr(book.__dict__).encode()


def test_no_session_or_an_unknown_one_is_refused(clock: FakeClock) -> None:
    book = SessionBook(clock)
    for presented in (None, "", "forged-session-id"):
        with pytest.raises(SessionRefused):
            book.check(presented, mutating=False)


def test_a_session_without_its_second_factor_is_refused(clock: FakeClock) -> None:
    book = SessionBook(clock)
    session_id, _ = book.start("dr.hansen")
    with pytest.raises(SessionRefused, match="second factor is missing"):
        book.check(session_id, mutating=False)


def test_the_second_factor_must_come_within_five_minutes(clock: FakeClock) -> None:
    book = SessionBook(clock)
    _, session = book.start("dr.hansen")
    clock.advance(5 * MIN_MS + 1)
    with pytest.raises(SessionRefused, match="over"):
        book.second_factor_ok(session)
    assert session.state is SessionState.EXPIRED


def test_idle_timeout_is_15_minutes_and_activity_renews_it(clock: FakeClock) -> None:
    book = SessionBook(clock)
    session_id, _ = signed_in(book)
    for _ in range(3):
        clock.advance(15 * MIN_MS)
        book.check(session_id, mutating=False)
    clock.advance(15 * MIN_MS + 1)
    with pytest.raises(SessionRefused, match="over"):
        book.check(session_id, mutating=False)
    with pytest.raises(SessionRefused, match="no session"):  # and it is gone
        book.check(session_id, mutating=False)


def test_absolute_lifetime_is_12_hours_however_busy(clock: FakeClock) -> None:
    book = SessionBook(clock)
    session_id, _ = signed_in(book)
    for _ in range(12 * 6):  # never idle, up to exactly 12 h
        clock.advance(10 * MIN_MS)
        book.check(session_id, mutating=False)
    clock.advance(1)
    with pytest.raises(SessionRefused, match="over"):
        book.check(session_id, mutating=False)


def test_mutating_calls_need_the_sessions_csrf_token(clock: FakeClock) -> None:
    book = SessionBook(clock)
    session_id, csrf = signed_in(book)
    other_id, other_csrf = signed_in(book)
    book.check(session_id, mutating=True, csrf_token=csrf)
    book.check(session_id, mutating=False)  # reads need none
    for forged in (None, "", other_csrf, csrf[:-1]):  # a cross-site form cannot read the token
        with pytest.raises(SessionRefused, match="CSRF"):
            book.check(session_id, mutating=True, csrf_token=forged)
    assert other_id != session_id


def test_sign_out_and_ending_all_sessions_of_an_account(clock: FakeClock) -> None:
    book = SessionBook(clock)
    first, _ = signed_in(book)
    second, _ = signed_in(book)
    book.end(first)
    book.end(first)  # twice is fine
    with pytest.raises(SessionRefused):
        book.check(first, mutating=False)
    assert book.end_all_of("dr.hansen") == 1
    with pytest.raises(SessionRefused):
        book.check(second, mutating=False)


def test_sweep_drops_expired_sessions(clock: FakeClock) -> None:
    book = SessionBook(clock)
    signed_in(book)
    clock.advance(16 * MIN_MS)
    assert len(book) == 1 and book.sweep() == 1 and len(book) == 0


def test_step_up_is_fresh_for_five_minutes_and_renewed_by_a_second_factor(clock: FakeClock) -> None:
    book = SessionBook(clock)
    session_id, _ = signed_in(book)
    session = book.check(session_id, mutating=False)
    require_step_up(book.principal(session, frozenset({Role.CLINICIAN})), clock, book.policy)
    clock.advance(5 * MIN_MS + 1)
    session = book.check(session_id, mutating=False)
    with pytest.raises(StepUpRequired):
        require_step_up(book.principal(session, frozenset({Role.CLINICIAN})), clock, book.policy)
    book.second_factor_ok(session)
    require_step_up(book.principal(session, frozenset({Role.CLINICIAN})), clock, book.policy)


def test_step_up_window_is_configurable(clock: FakeClock) -> None:
    policy = SessionPolicy(step_up_ms=MIN_MS)
    principal = Principal("dr.hansen", "session", frozenset({Role.CLINICIAN}), clock.monotonic_s())
    clock.advance(MIN_MS + 1)
    with pytest.raises(StepUpRequired):
        require_step_up(principal, clock, policy)
    with pytest.raises(StepUpRequired):
        require_step_up(Principal("x", "session", frozenset(), None), clock, policy)
    with pytest.raises(NodeUsageError):
        SessionPolicy(idle_ms=0)


def test_cookie_attributes() -> None:
    assert cookie_attributes(tls=True) == {
        "name": "__Host-mftp_session",
        "httponly": True,
        "samesite": "Strict",
        "secure": True,
        "path": "/",
    }
    plain = cookie_attributes(tls=False)
    assert plain["name"] == "mftp_session" and plain["secure"] is False and plain["httponly"] is True


@pytest.fixture
def tokens(tmp_path: Path, identity: SigningIdentity, clock: FakeClock) -> TokenBook:
    return TokenBook(tmp_path / "people", store_keys(identity)[0], clock)


def test_tokens_are_stored_hashed_and_survive_a_restart(
    tmp_path: Path, identity: SigningIdentity, clock: FakeClock, tokens: TokenBook
) -> None:
    secret, token = tokens.create("dr.hansen", Role.CLINICIAN, 30 * DAY_MS, "pacs script")
    assert secret.startswith("mftp_") and len(secret) >= 48
    assert token.token_hash == hashlib.sha256(secret.encode()).digest()
    data = (tmp_path / "people" / "tokens.bin").read_bytes()
    assert secret.encode() not in data and b"hansen" not in data and token.token_hash not in data
    again = TokenBook(tmp_path / "people", store_keys(identity)[0], clock)
    assert again.authenticate(secret) == token
    principal = again.principal(token, frozenset({Role.CLINICIAN, Role.OPERATOR}))
    assert principal.roles == {Role.CLINICIAN} and principal.via == "token"


def test_wrong_expired_and_revoked_tokens_are_refused_alike(clock: FakeClock, tokens: TokenBook) -> None:
    secret, _token = tokens.create("dr.hansen", Role.CLINICIAN, DAY_MS)
    with pytest.raises(SessionRefused, match="unknown, expired or revoked"):
        tokens.authenticate(secret + "x")
    clock.advance(DAY_MS)
    with pytest.raises(SessionRefused, match="unknown, expired or revoked"):
        tokens.authenticate(secret)
    other, record = tokens.create("dr.hansen", Role.CLINICIAN, DAY_MS)
    assert tokens.revoke(record.token_id).revoked_ms == clock.now_ms()
    with pytest.raises(SessionRefused, match="unknown, expired or revoked"):
        tokens.authenticate(other)
    with pytest.raises(NodeUsageError, match="no token"):
        tokens.revoke("0" * 16)


def test_a_token_is_refused_once_its_owner_lost_its_role(tokens: TokenBook) -> None:
    secret, _token = tokens.create("ops", Role.OPERATOR, DAY_MS)
    with pytest.raises(SessionRefused):
        tokens.principal(tokens.authenticate(secret), frozenset({Role.CLINICIAN}))


def test_revoke_all_of_an_account_and_listing(tokens: TokenBook) -> None:
    a, _ = tokens.create("dr.hansen", Role.CLINICIAN, DAY_MS)
    tokens.create("dr.hansen", Role.CLINICIAN, DAY_MS)
    c, _ = tokens.create("ops", Role.OPERATOR, DAY_MS)
    assert tokens.revoke_all_of("dr.hansen") == 2
    assert [t.name for t in tokens.tokens_of()] == ["dr.hansen", "dr.hansen", "ops"]
    with pytest.raises(SessionRefused):
        tokens.authenticate(a)
    tokens.authenticate(c)


def test_the_node_wide_token_can_become_a_named_service_account(tokens: TokenBook) -> None:
    legacy = "x" * 43  # what `mftp-node init` wrote to keys/api.token
    secret, _token = tokens.create(
        "node-service", Role.OPERATOR, 90 * DAY_MS, "was keys/api.token", secret=legacy
    )
    assert secret == legacy and tokens.authenticate(legacy).name == "node-service"
    with pytest.raises(NodeUsageError, match="held already"):
        tokens.create("other", Role.OPERATOR, DAY_MS, secret=legacy)
    with pytest.raises(NodeUsageError, match="at least 32"):
        tokens.create("other", Role.OPERATOR, DAY_MS, secret="short")


def test_token_lifetimes_are_bounded(tokens: TokenBook) -> None:
    for ttl in (0, 367 * DAY_MS):
        with pytest.raises(NodeUsageError):
            tokens.create("dr.hansen", Role.CLINICIAN, ttl)


def test_tokens_step_up_by_construction(clock: FakeClock) -> None:
    require_step_up(Principal("bridge", "token", frozenset({Role.CLINICIAN})), clock, SessionPolicy())
