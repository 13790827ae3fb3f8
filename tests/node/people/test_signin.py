"""Sign-in end to end on a FakeClock, and every refusal issue 16 point 10 lists."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyotp
import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.node.clock import FakeClock
from mftp.node.errors import NodeUsageError
from mftp.node.people import second_factor as sf
from mftp.node.people.abuse import AbuseGuard, AbusePolicy
from mftp.node.people.accounts import AccountStore, store_keys
from mftp.node.people.errors import (
    NotPermitted,
    RateLimited,
    SessionRefused,
    SignInRefused,
    StepUpRequired,
)
from mftp.node.people.events import EventKind, SecurityEvent
from mftp.node.people.passkeys import RelyingParty
from mftp.node.people.roles import Permission, Role, RouteRule
from mftp.node.people.sessions import SessionBook, SessionState, TokenBook
from mftp.node.people.signin import SignIn, acting_user
from tests.soft_authenticator import SoftAuthenticator

PASSWORD = "correct horse battery"
ADDRESS = "10.0.0.7"
MIN_MS = 60_000
SEND = RouteRule(Permission.STUDY_SEND, step_up=True)
VIEW = RouteRule(Permission.STUDY_VIEW)
RP = RelyingParty("node.st-olav.example", "St Olav MFTP", ("https://node.st-olav.example",))


@dataclass
class Node:
    signin: SignIn
    store: AccountStore
    clock: FakeClock
    events: list[SecurityEvent] = field(default_factory=list)
    secrets: dict[str, bytes] = field(default_factory=dict)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def code(self, name: str, offset_steps: int = 0) -> str:
        return sf.totp_code(self.secrets[name], sf.totp_step(self.clock.now_ms()) + offset_steps)

    def enrol(self, name: str, roles: list[Role]) -> list[str]:
        """``user add`` then the user's enrolment; returns the recovery codes."""
        self.store.add(name, roles)
        code, _ = self.issue(name)
        start = self.signin.enrol_begin(name, code, PASSWORD, ADDRESS)
        secret = base64.b32decode(pyotp.parse_uri(start.totp_uri).secret)
        self.secrets[name] = secret
        codes = self.signin.enrol_confirm(start.session_id, self.code(name), ADDRESS)
        self.clock.advance(2 * sf.TOTP_STEP_S * 1000)  # the confirming code's window is spent
        self.signin.sessions.end_all_of(name)
        return codes

    def issue(self, name: str) -> tuple[str, object]:
        holder: list[str] = []

        def change(a):  # type: ignore[no-untyped-def]
            code, changed = sf.issue_enrolment_code(a, self.clock.now_ms(), self.store.keyed_hash)
            holder.append(code)
            return changed

        account = self.store.update(name, change)
        return holder[0], account

    def sign_in(self, name: str) -> tuple[str, str]:
        session_id, _ = self.signin.password(name, PASSWORD, ADDRESS)
        session = self.signin.second_factor(session_id, self.code(name), ADDRESS)
        return session_id, session.csrf_token


@pytest.fixture
def node(tmp_path: Path, identity: SigningIdentity, clock: FakeClock, store: AccountStore) -> Node:
    events: list[SecurityEvent] = []
    tokens = TokenBook(tmp_path / "people", store_keys(identity)[0], clock)
    signin = SignIn(
        store, SessionBook(clock), tokens, AbuseGuard(clock), clock, events.append, relying_party=RP
    )
    return Node(signin, store, clock, events)


def test_enrolment_then_sign_in_with_password_and_totp(node: Node) -> None:
    codes = node.enrol("dr.hansen", [Role.CLINICIAN])
    assert len(codes) == 10
    assert node.kinds() == [EventKind.SECOND_FACTOR_ENROLLED, EventKind.SIGN_IN]
    account = node.store.get("dr.hansen")
    assert account is not None and account.password_hash and account.has_second_factor
    assert not account.enrolment_hash  # the one-time code is spent
    session_id, csrf = node.sign_in("dr.hansen")
    principal = node.signin.from_session(session_id, mutating=True, csrf_token=csrf)
    assert principal.name == "dr.hansen" and principal.roles == {Role.CLINICIAN}
    node.signin.authorize(principal, SEND)
    assert node.kinds()[-1] is EventKind.SIGN_IN and node.events[-1].factor == "totp"
    assert node.events[-1].address == ADDRESS and node.events[-1].user == "dr.hansen"


def test_the_enrolment_code_is_single_use_and_needs_a_good_password_after_a_reset(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    node.store.reset_second_factor("dr.hansen")
    code, _ = node.issue("dr.hansen")
    with pytest.raises(SignInRefused):  # a leaked code alone does not take the account over
        node.signin.enrol_begin("dr.hansen", code, "wrong password!!", ADDRESS)
    start = node.signin.enrol_begin("dr.hansen", code, PASSWORD, ADDRESS)
    with pytest.raises(SignInRefused):
        node.signin.enrol_begin("dr.hansen", code, PASSWORD, ADDRESS)
    with pytest.raises(SessionRefused, match="finish enrolment"):  # the enrol session is no sign-in
        node.signin.second_factor(start.session_id, "123456", ADDRESS)


def test_a_short_new_password_does_not_spend_the_code(node: Node) -> None:
    node.store.add("dr.berg", [Role.CLINICIAN])
    code, _ = node.issue("dr.berg")
    with pytest.raises(NodeUsageError, match="12 to 256"):
        node.signin.enrol_begin("dr.berg", code, "short", ADDRESS)
    node.signin.enrol_begin("dr.berg", code, PASSWORD, ADDRESS)


def test_a_user_who_never_enrolled_cannot_sign_in(node: Node) -> None:
    node.store.add("dr.berg", [Role.CLINICIAN])
    with pytest.raises(SignInRefused):
        node.signin.password("dr.berg", PASSWORD, ADDRESS)


def test_recovery_code_signs_in_once(node: Node) -> None:
    codes = node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, _ = node.signin.password("dr.hansen", PASSWORD, ADDRESS)
    node.signin.second_factor(session_id, codes[0], ADDRESS, recovery=True)
    assert node.kinds()[-2:] == [EventKind.SIGN_IN, EventKind.RECOVERY_CODE_USED]
    session_id, _ = node.signin.password("dr.hansen", PASSWORD, ADDRESS)
    with pytest.raises(SignInRefused):
        node.signin.second_factor(session_id, codes[0], ADDRESS, recovery=True)


# ------------------------------------------------------------------ the refusals of point 10


def test_refused_no_session(node: Node) -> None:
    with pytest.raises(SessionRefused, match="no session"):
        node.signin.from_session(None, mutating=False, csrf_token=None)
    with pytest.raises(SessionRefused):
        node.signin.authorize(None, VIEW)
    node.signin.authorize(None, RouteRule(None))  # public reads need no one


def test_refused_expired_session(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, _ = node.sign_in("dr.hansen")
    node.clock.advance(15 * MIN_MS + 1)
    with pytest.raises(SessionRefused, match="over"):
        node.signin.from_session(session_id, mutating=False, csrf_token=None)


def test_refused_wrong_role(node: Node) -> None:
    node.enrol("ops", [Role.OPERATOR])
    session_id, csrf = node.sign_in("ops")
    principal = node.signin.from_session(session_id, mutating=True, csrf_token=csrf)
    with pytest.raises(NotPermitted, match=r"study\.send needs the role clinician"):
        node.signin.authorize(principal, SEND)
    node.signin.authorize(principal, RouteRule(Permission.USERS_MANAGE, step_up=True))


def test_refused_stale_step_up_until_a_second_factor_again(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, csrf = node.sign_in("dr.hansen")
    node.clock.advance(5 * MIN_MS + 1)
    principal = node.signin.from_session(session_id, mutating=True, csrf_token=csrf)
    node.signin.authorize(principal, VIEW)  # not consequential: no step-up
    with pytest.raises(StepUpRequired):
        node.signin.authorize(principal, SEND)
    node.signin.second_factor(session_id, node.code("dr.hansen"), ADDRESS)
    assert node.kinds()[-1] is EventKind.STEP_UP
    node.signin.authorize(node.signin.from_session(session_id, mutating=True, csrf_token=csrf), SEND)


def test_refused_replayed_code(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    code = node.code("dr.hansen")
    first, _ = node.signin.password("dr.hansen", PASSWORD, ADDRESS)
    node.signin.second_factor(first, code, ADDRESS)
    second, _ = node.signin.password("dr.hansen", PASSWORD, ADDRESS)
    with pytest.raises(SignInRefused):
        node.signin.second_factor(second, code, ADDRESS)
    assert node.kinds()[-1] is EventKind.SIGN_IN_FAILED


def test_refused_locked_account_even_with_the_right_password_until_unlocked(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    policy = AbusePolicy(name_failures=100, address_failures=100, lockout_after=3)
    node.signin.guard = AbuseGuard(node.clock, policy)
    for _ in range(3):
        with pytest.raises(SignInRefused):
            node.signin.password("dr.hansen", "wrong password!!", ADDRESS)
    assert EventKind.LOCKOUT in node.kinds()
    with pytest.raises(SignInRefused):
        node.signin.password("dr.hansen", PASSWORD, ADDRESS)
    node.store.unlock("dr.hansen")
    node.sign_in("dr.hansen")


def test_lockout_lifts_after_its_delay(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    node.signin.guard = AbuseGuard(node.clock, AbusePolicy(name_failures=100, lockout_after=2))
    for _ in range(2):
        with pytest.raises(SignInRefused):
            node.signin.password("dr.hansen", "wrong password!!", ADDRESS)
    node.clock.advance(30 * MIN_MS)
    node.sign_in("dr.hansen")
    assert node.store.get("dr.hansen").failures == 0  # type: ignore[union-attr]


def test_refused_disabled_user_at_sign_in_and_in_a_live_session(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, _csrf = node.sign_in("dr.hansen")
    node.store.disable("dr.hansen")
    with pytest.raises(SessionRefused):
        node.signin.from_session(session_id, mutating=False, csrf_token=None)
    with pytest.raises(SignInRefused):
        node.signin.password("dr.hansen", PASSWORD, ADDRESS)


def test_refused_revoked_token_and_wrong_tokens_are_rate_limited(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    secret, token = node.signin.tokens.create("dr.hansen", Role.CLINICIAN, 86_400_000)
    principal = node.signin.from_token(secret, ADDRESS)
    node.signin.authorize(principal, SEND)  # a token's creation needed the second factor
    node.signin.tokens.revoke(token.token_id)
    with pytest.raises(SessionRefused, match="revoked"):
        node.signin.from_token(secret, ADDRESS)
    node.signin.guard = AbuseGuard(node.clock, AbusePolicy(token_failures=2))
    for _ in range(2):
        with pytest.raises(SessionRefused):
            node.signin.from_token("mftp_wrong", ADDRESS)
    with pytest.raises(RateLimited):
        node.signin.from_token(secret, ADDRESS)


def test_refused_token_of_a_disabled_user(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    secret, _ = node.signin.tokens.create("dr.hansen", Role.CLINICIAN, 86_400_000)
    node.store.disable("dr.hansen")
    with pytest.raises(SessionRefused):
        node.signin.from_token(secret, ADDRESS)


def test_refused_body_naming_another_user(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, csrf = node.sign_in("dr.hansen")
    principal = node.signin.from_session(session_id, mutating=True, csrf_token=csrf)
    assert acting_user(principal, None) == acting_user(principal, "Dr.Hansen") == "user:dr.hansen"
    for other in ("dr.berg", "not a name!"):
        with pytest.raises(NotPermitted, match="another user"):
            acting_user(principal, other)


def test_refused_forged_or_cross_site_request(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, csrf = node.sign_in("dr.hansen")
    for forged in (None, "", "x" * len(csrf)):  # a cross-site form sends the cookie, not the token
        with pytest.raises(SessionRefused, match="CSRF"):
            node.signin.from_session(session_id, mutating=True, csrf_token=forged)
    with pytest.raises(SessionRefused):  # a forged session id
        node.signin.from_session("forged" + session_id, mutating=False, csrf_token=None)


def test_half_signed_in_session_is_no_session(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, session = node.signin.password("dr.hansen", PASSWORD, ADDRESS)
    assert session.state is SessionState.PASSWORD_OK
    with pytest.raises(SessionRefused, match="second factor is missing"):
        node.signin.from_session(session_id, mutating=False, csrf_token=None)


# ------------------------------------------------------------------ what the answers reveal


def test_unknown_names_get_the_same_answer_and_the_same_argon2_work(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    node.store.add("dr.berg", [Role.CLINICIAN])  # exists, never enrolled
    node.store.add("dr.off", [Role.CLINICIAN])
    node.store.update("dr.off", lambda a: replace(a, password_hash=node.store.get("dr.hansen").password_hash))  # type: ignore[union-attr]
    node.store.disable("dr.off")
    calls: list[int] = []
    real = node.store.passwords._hasher

    class Counting:
        def verify(self, stored: str, password: str) -> bool:
            calls.append(1)
            return real.verify(stored, password)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(node.store.passwords, "_hasher", Counting())
    answers = {}
    for name, password in [
        ("nobody", PASSWORD),
        ("dr.hansen", "wrong password!!"),
        ("dr.berg", PASSWORD),
        ("dr.off", PASSWORD),
        ("not a valid name", PASSWORD),
    ]:
        calls.clear()
        with pytest.raises(SignInRefused) as caught:
            node.signin.password(name, password, ADDRESS)
        answers[name] = (str(caught.value), caught.value.status, len(calls))
    assert len(set(answers.values())) == 1, answers
    assert next(iter(answers.values()))[2] == 1  # one Argon2 check each
    unknown = [e for e in node.events if e.kind is EventKind.SIGN_IN_FAILED and not e.user]
    assert len(unknown) == 2  # a name that matched nothing is not kept


def test_rate_limit_applies_to_unknown_names_too(node: Node) -> None:
    for _ in range(5):
        with pytest.raises(SignInRefused):
            node.signin.password("nobody", PASSWORD, ADDRESS)
    with pytest.raises(RateLimited):
        node.signin.password("nobody", PASSWORD, "10.9.9.9")
    assert node.events[-1].factor == "password rate-limited"


def test_sign_out_is_reported(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, _ = node.sign_in("dr.hansen")
    node.signin.sign_out(session_id, ADDRESS)
    node.signin.sign_out(session_id, ADDRESS)  # twice: nothing more
    assert node.kinds()[-2:] == [EventKind.SIGN_IN, EventKind.SIGN_OUT]
    with pytest.raises(SessionRefused):
        node.signin.from_session(session_id, mutating=False, csrf_token=None)


# ------------------------------------------------------------------ passkeys through sign-in


def test_add_a_passkey_then_sign_in_with_it(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    device = SoftAuthenticator(RP.rp_id, RP.origins[0])
    session_id, csrf = node.sign_in("dr.hansen")
    options = node.signin.passkey_registration_options(session_id, csrf)
    node.signin.add_passkey(session_id, csrf, device.create(options), ADDRESS)
    assert node.events[-1].kind is EventKind.SECOND_FACTOR_ENROLLED and node.events[-1].factor == "passkey"
    node.signin.sign_out(session_id, ADDRESS)
    session_id, _ = node.signin.password("dr.hansen", PASSWORD, ADDRESS)
    options = node.signin.passkey_options(session_id)
    assertion = device.get(options)
    session = node.signin.passkey(session_id, assertion, ADDRESS)
    assert session.state is SessionState.ACTIVE and node.events[-1].factor == "passkey"
    with pytest.raises(SignInRefused):  # the challenge was single use: a replayed assertion fails
        node.signin.passkey(session_id, assertion, ADDRESS)


def test_adding_a_passkey_needs_a_fresh_step_up_and_the_csrf_token(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, csrf = node.sign_in("dr.hansen")
    with pytest.raises(SessionRefused, match="CSRF"):
        node.signin.passkey_registration_options(session_id, "forged")
    node.clock.advance(5 * MIN_MS + 1)
    with pytest.raises(StepUpRequired):
        node.signin.passkey_registration_options(session_id, csrf)


def test_a_wrong_passkey_assertion_counts_as_a_failure(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    device = SoftAuthenticator(RP.rp_id, RP.origins[0])
    session_id, csrf = node.sign_in("dr.hansen")
    node.signin.add_passkey(
        session_id, csrf, device.create(node.signin.passkey_registration_options(session_id, csrf)), ADDRESS
    )
    options = node.signin.passkey_options(session_id)
    with pytest.raises(SignInRefused):
        node.signin.passkey(session_id, device.get(options, origin="https://evil.example"), ADDRESS)
    assert node.store.get("dr.hansen").failures == 1  # type: ignore[union-attr]
    assert node.kinds()[-1] is EventKind.SIGN_IN_FAILED


def test_passkeys_need_a_configured_relying_party(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, _ = node.signin.password("dr.hansen", PASSWORD, ADDRESS)
    s = node.signin
    bare = SignIn(s.store, s.sessions, s.tokens, s.guard, node.clock, node.events.append)
    with pytest.raises(NodeUsageError, match="not configured"):
        bare.passkey_options(session_id)


def test_reprs_that_may_reach_a_log_carry_no_name_and_no_secret(node: Node) -> None:
    node.enrol("dr.hansen", [Role.CLINICIAN])
    session_id, csrf = node.sign_in("dr.hansen")
    secret, token = node.signin.tokens.create("dr.hansen", Role.CLINICIAN, 86_400_000)
    account = node.store.get("dr.hansen")
    principal = node.signin.from_session(session_id, mutating=True, csrf_token=csrf)
    session = node.signin.sessions.find(session_id)
    text = repr([account, principal, session, token])
    for leak in ("hansen", csrf, session_id, secret, "argon2", repr(node.secrets["dr.hansen"])):
        assert leak not in text
