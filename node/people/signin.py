"""Sign-in, enrolment and request authentication: the parts of this room put together.

No HTTP here: the API wiring calls these methods with what a request carries (a typed name and
password, a code, a session cookie and CSRF header, a bearer token, the client address) and
turns the refusals (:mod:`.errors`) into answers.  Every step reports :class:`~.events.SecurityEvent`
values through ``emit`` (the wiring writes them to the audit vault), including the failures.

Sign-in::

    password(name, password)        -> session "password_ok"   (no event: half a sign-in)
    second_factor(session, code)    -> session "active"          SIGN_IN
    passkey(session, assertion)     -> the same, with a WebAuthn passkey
    second_factor(active session)   -> step-up fresh again       STEP_UP

Enrolment (after ``user add`` or ``user reset-mfa`` handed over a one-time code)::

    enrol_begin(name, code, password) -> TOTP secret as URI + QR, session "password_ok" (enrol)
    enrol_confirm(session, totp code) -> 10 recovery codes (shown once), session "active"

Every refusal of a sign-in step is the same :class:`~.errors.SignInRefused`, whether the name
is unknown, the password or code wrong, the account disabled, locked or not enrolled; and an
unknown name costs the same Argon2 check as a known one, so neither the answer nor its time
says who exists.  Argon2 blocks: an asyncio caller runs these methods in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from ..clock import Clock
from ..errors import NodeUsageError
from . import passkeys as pk
from . import second_factor as sf
from .abuse import AbuseGuard
from .accounts import Account, AccountStore, check_password_shape, normalize_name
from .errors import AccessRefused, NotPermitted, SessionRefused, SignInRefused
from .events import EventKind, SecurityEvent
from .roles import RouteRule, check
from .sessions import Principal, Session, SessionBook, SessionState, TokenBook, require_step_up

Emit = Callable[[SecurityEvent], None]


class PasswordDirectory(Protocol):
    """A hospital directory that checks passwords (LDAP bind); the second factor stays ours."""

    def check_password(self, name: str, password: str) -> bool:
        """Whether the directory accepts ``password`` for ``name`` (False on any refusal)."""
        ...


@dataclass(frozen=True)
class EnrolmentStart:
    """What the enrolment page shows: the session to continue with and the TOTP secret, once."""

    session_id: str
    csrf_token: str
    totp_uri: str
    totp_qr_svg: str


def name_key(name: str) -> str:
    """The key a typed name is rate-limited under (any string, known or not)."""
    try:
        return normalize_name(name)
    except NodeUsageError:
        return name.strip().lower()[:64]


class SignIn:
    """Sign-in, enrolment and authentication of requests for one node."""

    def __init__(
        self,
        store: AccountStore,
        sessions: SessionBook,
        tokens: TokenBook,
        guard: AbuseGuard,
        clock: Clock,
        emit: Emit,
        directory: PasswordDirectory | None = None,
        relying_party: pk.RelyingParty | None = None,
    ) -> None:
        self.store, self.sessions, self.tokens, self.guard = store, sessions, tokens, guard
        self._clock, self._emit, self._directory = clock, emit, directory
        self.clock = clock
        self._rp = relying_party
        self.challenges = pk.Challenges(clock)

    # ------------------------------------------------------------------ helpers

    def _event(
        self, kind: EventKind, success: bool, account: Account | None, address: str, factor: str
    ) -> None:
        user = account.name if account is not None else ""
        self._emit(SecurityEvent(kind, self._clock.now_ms(), success, user, address, factor))

    def _password_ok(self, account: Account | None, password: str) -> bool:
        """The first factor, at the cost of one Argon2 check whoever asks."""
        if account is not None and account.directory:
            self.store.passwords.dummy_verify(password)  # directory users cost the same locally
            return self._directory is not None and self._directory.check_password(account.name, password)
        return self.store.check_password(account, password)

    def _refuse(self, account: Account | None, key: str, address: str, factor: str) -> SignInRefused:
        """Count a failure everywhere it counts, report it, and return the one refusal."""
        self.guard.failed(key, address)
        if account is not None:
            now = self._clock.now_ms()
            before = self.store.get(account.name) or account
            after = self.store.update(account.name, lambda a: self.guard.after_failure(a, now))
            if self.guard.just_locked(before, after, now):
                self._event(EventKind.LOCKOUT, True, account, address, factor)
        else:
            self.store.resave()  # the same disk work as counting a known account's failure
        self._event(EventKind.SIGN_IN_FAILED, False, account, address, factor)
        return SignInRefused()

    def _limit(self, key: str, account: Account | None, address: str, factor: str) -> None:
        try:
            self.guard.check(key, address)
        except AccessRefused:
            self._event(EventKind.SIGN_IN_FAILED, False, account, address, factor + " rate-limited")
            raise

    def _may_sign_in(self, account: Account | None) -> bool:
        now = self._clock.now_ms()
        return (
            account is not None and not account.disabled and not account.service and not account.locked(now)
        )

    # ------------------------------------------------------------------ sign-in

    def password(self, name: str, password: str, address: str) -> tuple[str, Session]:
        """The first step: a session waiting for its second factor, or :class:`SignInRefused`."""
        key = name_key(name)
        account = self.store.get(name)
        self._limit(key, account, address, "password")
        ok = self._password_ok(account, password)
        if not (ok and self._may_sign_in(account) and account is not None and account.has_second_factor):
            raise self._refuse(account, key, address, "password")
        return self.sessions.start(account.name)

    def second_factor(self, session_id: str, code: str, address: str, *, recovery: bool = False) -> Session:
        """The second step (TOTP or a recovery code): the session becomes active, step-up fresh.

        On an active session this is a step-up.  A refused code counts towards lockout like a
        wrong password.
        """
        now = self._clock.now_ms()
        if recovery:
            return self._second_step(
                session_id,
                address,
                "recovery",
                lambda a: sf.use_recovery_code(a, code, self.store.keyed_hash),
            )
        return self._second_step(session_id, address, "totp", lambda a: sf.verify_totp(a, code, now))

    def passkey_options(self, session_id: str) -> str:
        """The WebAuthn request options for signing in (or stepping up) with a passkey."""
        rp = self._relying_party()
        session = self.sessions.find(session_id)
        account = self.store.get(session.name)
        if account is None or not account.passkeys or session.purpose != "sign-in":
            raise SignInRefused()
        challenge = self.challenges.issue(session.id_hash, "authenticate")
        return pk.authentication_options(rp, account, challenge)

    def passkey(self, session_id: str, credential_json: str, address: str) -> Session:
        """The second step with a passkey: the browser's answer to :meth:`passkey_options`."""
        rp = self._relying_party()
        session = self.sessions.find(session_id)
        challenge = self.challenges.take(session.id_hash, "authenticate")
        return self._second_step(
            session_id, address, "passkey", lambda a: pk.authenticate(rp, a, credential_json, challenge)
        )

    def _second_step(
        self, session_id: str, address: str, factor: str, verify: Callable[[Account], Account]
    ) -> Session:
        session = self.sessions.find(session_id)
        if session.purpose != "sign-in":
            raise SessionRefused("finish enrolment first")
        account = self.store.get(session.name)
        self._limit(session.name, account, address, factor)
        if account is None or not self._may_sign_in(account):
            self.sessions.end(session_id)
            raise self._refuse(account, session.name, address, factor)
        try:
            account = self.store.update(account.name, verify)  # saved only if it verifies
        except SignInRefused:
            raise self._refuse(account, session.name, address, factor) from None
        self.store.update(account.name, self.guard.after_success)
        self.guard.succeeded(session.name)
        stepping_up = session.state is SessionState.ACTIVE
        self.sessions.second_factor_ok(session)
        self._event(EventKind.STEP_UP if stepping_up else EventKind.SIGN_IN, True, account, address, factor)
        if factor == "recovery":
            self._event(EventKind.RECOVERY_CODE_USED, True, account, address, factor)
        return session

    def passkey_registration_options(self, session_id: str, csrf_token: str) -> str:
        """WebAuthn creation options for adding a passkey: an active session with a fresh step-up."""
        rp = self._relying_party()
        principal = self.from_session(session_id, mutating=True, csrf_token=csrf_token)
        require_step_up(principal, self._clock, self.sessions.policy)  # a new factor is consequential
        session = self.sessions.find(session_id)
        account = self.store.get(principal.name)
        if account is None:
            raise SessionRefused("the session is over; sign in again")
        challenge = self.challenges.issue(session.id_hash, "register")
        handle = self.store.keyed_hash("webauthn-user:" + account.name)[:16]
        return pk.registration_options(rp, account, handle, challenge)

    def add_passkey(self, session_id: str, csrf_token: str, credential_json: str, address: str) -> None:
        """Keep the passkey the browser created in answer to :meth:`passkey_registration_options`."""
        rp = self._relying_party()
        principal = self.from_session(session_id, mutating=True, csrf_token=csrf_token)
        require_step_up(principal, self._clock, self.sessions.policy)
        session = self.sessions.find(session_id)
        challenge = self.challenges.take(session.id_hash, "register")
        now = self._clock.now_ms()
        try:
            account = self.store.update(
                principal.name, lambda a: pk.register(rp, a, credential_json, challenge, now)
            )
        except SignInRefused:
            self._event(
                EventKind.SECOND_FACTOR_ENROLLED, False, self.store.get(principal.name), address, "passkey"
            )
            raise
        self._event(EventKind.SECOND_FACTOR_ENROLLED, True, account, address, "passkey")

    def _relying_party(self) -> pk.RelyingParty:
        if self._rp is None:
            raise NodeUsageError("passkeys are not configured on this node (no relying party)")
        return self._rp

    def sign_out(self, session_id: str, address: str) -> None:
        """End a session (unknown ones are ignored) and report it."""
        try:
            session = self.sessions.find(session_id)
        except SessionRefused:
            return
        self.sessions.end(session_id)
        self._event(EventKind.SIGN_OUT, True, self.store.get(session.name), address, "")

    # ------------------------------------------------------------------ enrolment

    def enrol_begin(self, name: str, enrolment_code: str, password: str, address: str) -> EnrolmentStart:
        """Spend the operator's one-time code, set or check the password, start TOTP enrolment.

        A new local account sets ``password`` here; one that has a password (after a second
        factor reset) or a directory account proves it instead, so a leaked code alone is not
        enough to take over an account.
        """
        key = name_key(name)
        account = self.store.get(name)
        self._limit(key, account, address, "enrolment-code")
        setting = account is not None and not account.directory and not account.password_hash
        if setting:
            self.store.passwords.dummy_verify(password)  # the same cost as checking a password
        elif not self._password_ok(account, password):
            raise self._refuse(account, key, address, "password")
        if account is None or not self._may_sign_in(account):
            raise self._refuse(account, key, address, "enrolment-code")
        now = self._clock.now_ms()
        try:
            sf.redeem_enrolment_code(account, enrolment_code, now, self.store.keyed_hash)  # a check only
        except SignInRefused:
            raise self._refuse(account, key, address, "enrolment-code") from None
        if setting:
            # Only the code's holder learns the password rule, and a typo does not spend the code.
            check_password_shape(password)
        self.store.update(
            account.name, lambda a: sf.redeem_enrolment_code(a, enrolment_code, now, self.store.keyed_hash)
        )
        if setting:
            self.store.set_password(account.name, password)
        secret = sf.new_totp_secret()
        self.store.update(account.name, lambda a: sf.begin_totp(a, secret))
        self.sessions.end_all_of(account.name)
        session_id, session = self.sessions.start(account.name, purpose="enrol")
        uri = sf.totp_uri(secret, account.name)
        return EnrolmentStart(session_id, session.csrf_token, uri, sf.totp_qr_svg(uri))

    def enrol_confirm(self, session_id: str, code: str, address: str) -> list[str]:
        """Confirm the TOTP secret with a first code; the 10 recovery codes, to show once."""
        session = self.sessions.find(session_id)
        if session.purpose != "enrol" or session.state is not SessionState.PASSWORD_OK:
            raise SessionRefused("no enrolment under way in this session")
        account = self.store.get(session.name)
        self._limit(session.name, account, address, "totp")
        if account is None or not self._may_sign_in(account):
            self.sessions.end(session_id)
            raise self._refuse(account, session.name, address, "totp")
        now = self._clock.now_ms()
        try:
            account = self.store.update(account.name, lambda a: sf.confirm_totp(a, code, now))
        except (SignInRefused, NodeUsageError):
            raise self._refuse(account, session.name, address, "totp") from None
        codes, with_codes = sf.new_recovery_codes(account, self.store.keyed_hash)
        hashes = with_codes.recovery_hashes
        self.store.update(
            account.name, lambda a: self.guard.after_success(replace(a, recovery_hashes=hashes))
        )
        self.guard.succeeded(session.name)
        session.purpose = "sign-in"
        self.sessions.second_factor_ok(session)
        self._event(EventKind.SECOND_FACTOR_ENROLLED, True, account, address, "totp")
        self._event(EventKind.SIGN_IN, True, account, address, "totp")
        return codes

    # ------------------------------------------------------------------ requests

    def from_session(self, session_id: str | None, *, mutating: bool, csrf_token: str | None) -> Principal:
        """The principal of a browser request, with its account's current roles."""
        session = self.sessions.check(session_id, mutating=mutating, csrf_token=csrf_token)
        account = self.store.get(session.name)
        if account is None or account.disabled:
            self.sessions.end_all_of(session.name)
            raise SessionRefused("the session is over; sign in again")
        return self.sessions.principal(session, account.roles)

    def from_token(self, secret: str, address: str) -> Principal:
        """The principal of a script's request (``Authorization: Bearer``); wrong tokens are limited."""
        self.guard.check_token(address)
        try:
            token = self.tokens.authenticate(secret)
            account = self.store.get(token.name)
            if account is None or account.disabled:
                raise SessionRefused("unknown, expired or revoked API token")
            return self.tokens.principal(token, account.roles)
        except SessionRefused:
            self.guard.token_failed(address)
            raise

    def authorize(self, principal: Principal | None, rule: RouteRule) -> None:
        """Refuse unless ``principal`` may take a route with ``rule`` (role, then step-up)."""
        if rule.public:
            return
        if principal is None or rule.permission is None:
            raise SessionRefused("sign in first")
        if principal.via == "share":  # a patient: only the viewing routes, of the shared studies
            if not rule.shared:
                raise NotPermitted("a share link opens its studies only")
            return
        check(principal.roles, rule.permission)
        if rule.step_up:
            require_step_up(principal, self._clock, self.sessions.policy)


def acting_user(principal: Principal, named: str | None) -> str:
    """The ledger's user of a request: always the principal; a body naming another is refused.

    Point 7 of issue 16: the "who" of a record is the authenticated principal, never a free
    string in the request body.  A body may still name the user (older clients do) if it is
    the principal itself.
    """
    if named is not None and named.strip():
        try:
            same = normalize_name(named) == principal.name
        except NodeUsageError:
            same = False
        if not same:
            raise NotPermitted("the request names another user than the one signed in")
    return principal.party_id
