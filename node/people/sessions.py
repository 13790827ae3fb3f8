"""Browser sessions and personal API tokens: who a request is, and for how long.

**Sessions** (in memory: a restart signs everyone out, and no session secret is ever on disk)
move through :data:`SESSION_LIFECYCLE`::

    password_ok --second factor--> active --idle 15 min / 12 h / sign-out--> expired | ended
         `-- 5 min without a second factor, or sign-out -------------------> expired | ended

A session id is 256 random bits, handed to the browser once in a cookie
(:func:`cookie_attributes`: HttpOnly, SameSite=Strict, Secure and the ``__Host-`` prefix under
TLS) and kept here only as its SHA-256, so a memory dump does not hold usable cookies.  Each
session has its own CSRF token, which every mutating request must echo in a header
(:meth:`SessionBook.check`).  Durations are read from the clock's monotonic reading (they are
this machine's, and a wall clock can jump).  A consequential action needs a second factor
verified within :attr:`SessionPolicy.step_up_ms` (:func:`require_step_up`).

**API tokens** (for scripts) are 256 random bits, stored as SHA-256 in ``tokens.bin``
(encrypted beside the accounts).  Not Argon2: a password is slow to hash because it has little
entropy; a 256-bit random token cannot be guessed at any speed, and an Argon2 check on every API
call would hand anyone a way to burn our CPU.  Each token has one role (which its owner must
still hold when it is used), a wall-clock expiry and can be revoked.  Lookups go by hash, and the
stored hash is then compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Final

from ..clock import Clock
from ..errors import NodeUsageError
from ..lifecycle import Lifecycle
from .accounts import AccountsCorrupt, SealedFile
from .errors import SessionRefused, StepUpRequired
from .roles import Role

SESSION_ID_BYTES: Final = 32
CSRF_BYTES: Final = 32
TOKEN_BYTES: Final = 32
TOKEN_PREFIX: Final = "mftp_"
COOKIE_NAME: Final = "mftp_session"
CSRF_HEADER: Final = "X-CSRF-Token"
MAX_SESSIONS: Final = 10_000
MAX_TOKENS: Final = 10_000
MAX_TOKEN_TTL_MS: Final = 366 * 24 * 3600 * 1000
TOKENS_VERSION: Final = 1


class SessionState(Enum):
    """Where a browser session stands."""

    PASSWORD_OK = "password_ok"  # the first factor passed; the second is awaited
    ACTIVE = "active"  # both factors passed
    EXPIRED = "expired"  # idle too long, past its lifetime, or the second factor never came
    ENDED = "ended"  # signed out, or ended because the account was disabled


SESSION_LIFECYCLE: Final = Lifecycle(
    "session",
    {
        SessionState.PASSWORD_OK: frozenset({SessionState.ACTIVE, SessionState.EXPIRED, SessionState.ENDED}),
        SessionState.ACTIVE: frozenset({SessionState.EXPIRED, SessionState.ENDED}),
        SessionState.EXPIRED: frozenset(),
        SessionState.ENDED: frozenset(),
    },
)


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions last (issue 16: 15 min idle, 12 h in all, step-up within 5 min)."""

    idle_ms: int = 15 * 60 * 1000
    absolute_ms: int = 12 * 3600 * 1000
    step_up_ms: int = 5 * 60 * 1000
    second_factor_wait_ms: int = 5 * 60 * 1000  # from a good password to the second factor

    def __post_init__(self) -> None:
        if min(self.idle_ms, self.absolute_ms, self.step_up_ms, self.second_factor_wait_ms) <= 0:
            raise NodeUsageError("session durations are positive")


def _sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def cookie_attributes(tls: bool) -> dict[str, object]:
    """The session cookie's name and attributes (aiohttp ``set_cookie`` keywords).

    Under TLS the ``__Host-`` prefix makes browsers refuse the cookie unless it is Secure,
    host-only and for path ``/``: no sibling host can plant or read it.
    """
    return {
        "name": ("__Host-" if tls else "") + COOKIE_NAME,
        "httponly": True,
        "samesite": "Strict",
        "secure": tls,
        "path": "/",
    }


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: an account name, by a session or by an API token."""

    name: str = field(repr=False)  # a repr may end up in a log
    via: str = "session"  # or "token"
    roles: frozenset[Role] = frozenset()  # a session: the account's roles; a token: its one role
    second_factor_s: float | None = None  # monotonic time of the session's last second factor

    @property
    def party_id(self) -> str:
        """The ledger's and the vault's id of this user (the record's "who")."""
        return f"user:{self.name}"


@dataclass
class Session:
    """One browser session (its id is known only to the browser)."""

    id_hash: bytes = field(repr=False)
    name: str = field(repr=False)  # a repr may end up in a log
    state: SessionState
    created_s: float
    last_seen_s: float
    csrf_token: str = field(repr=False)  # not a credential alone: it proves the page came from us
    second_factor_s: float | None = None
    purpose: str = "sign-in"  # or "enrol": a first second factor is being set up

    def move(self, target: SessionState) -> None:
        """Change state through :data:`SESSION_LIFECYCLE` only."""
        self.state = SESSION_LIFECYCLE.move(self.state, target)


def require_step_up(principal: Principal, clock: Clock, policy: SessionPolicy) -> None:
    """Raise :class:`StepUpRequired` unless a second factor was verified recently enough.

    A token passes: its creation needed a fresh second factor, a script cannot answer a
    challenge, and its reach is already one role until its expiry.
    """
    if principal.via == "token":
        return
    at = principal.second_factor_s
    if at is None or clock.monotonic_s() - at > policy.step_up_ms / 1000:
        raise StepUpRequired("this action needs your second factor again")


class SessionBook:
    """The live sessions of this node, keyed by the SHA-256 of their ids."""

    def __init__(self, clock: Clock, policy: SessionPolicy = SessionPolicy()) -> None:
        self._clock = clock
        self.policy = policy
        self._sessions: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self, name: str, purpose: str = "sign-in") -> tuple[str, Session]:
        """A new session after a good password: its id (for the cookie, once) and the session.

        ``purpose`` "enrol" marks a session whose second factor is being set up, so that the
        enrolment steps and the sign-in steps cannot be mixed.
        """
        now = self._clock.monotonic_s()
        if len(self._sessions) >= MAX_SESSIONS:
            self.sweep()
            if len(self._sessions) >= MAX_SESSIONS:
                raise SessionRefused("too many sessions on this node; try again later")
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        session = Session(
            _sha256(session_id),
            name,
            SessionState.PASSWORD_OK,
            now,
            now,
            secrets.token_urlsafe(CSRF_BYTES),
            purpose=purpose,
        )
        self._sessions[session.id_hash] = session
        return session_id, session

    def second_factor_ok(self, session: Session) -> Session:
        """Record a verified second factor: the session becomes (or stays) active, step-up fresh."""
        self._expire_if_due(session)
        if session.state is SessionState.PASSWORD_OK:
            session.move(SessionState.ACTIVE)
        elif session.state is not SessionState.ACTIVE:
            raise SessionRefused("the session is over; sign in again")
        session.second_factor_s = session.last_seen_s = self._clock.monotonic_s()
        return session

    def find(self, session_id: str) -> Session:
        """The session of ``session_id`` in any live state, or :class:`SessionRefused`."""
        session = self._sessions.get(_sha256(session_id))
        if session is None or not hmac.compare_digest(session.id_hash, _sha256(session_id)):
            raise SessionRefused("no session; sign in")
        self._expire_if_due(session)
        if session.state not in (SessionState.PASSWORD_OK, SessionState.ACTIVE):
            del self._sessions[session.id_hash]
            raise SessionRefused("the session is over; sign in again")
        return session

    def check(self, session_id: str | None, *, mutating: bool, csrf_token: str | None = None) -> Session:
        """The active session a request presents, touched; refused if absent, over or forged.

        A mutating request must carry the session's CSRF token (a cross-site form cannot read
        it); a session still waiting for its second factor may not be used at all.
        """
        if not session_id:
            raise SessionRefused("no session; sign in")
        session = self.find(session_id)
        if session.state is not SessionState.ACTIVE:
            raise SessionRefused("sign-in is not complete: the second factor is missing")
        if mutating and not hmac.compare_digest(
            (csrf_token or "").encode("utf-8"), session.csrf_token.encode("utf-8")
        ):
            raise SessionRefused("missing or wrong CSRF token")
        session.last_seen_s = self._clock.monotonic_s()
        return session

    def end(self, session_id: str) -> None:
        """Sign out (unknown or finished sessions are ignored: signing out twice is fine)."""
        session = self._sessions.pop(_sha256(session_id), None)
        if session is not None and not SESSION_LIFECYCLE.final(session.state):
            session.move(SessionState.ENDED)

    def end_all_of(self, name: str) -> int:
        """End every session of an account (disabled, second factor reset); how many."""
        ended = [s for s in self._sessions.values() if s.name == name]
        for session in ended:
            if not SESSION_LIFECYCLE.final(session.state):
                session.move(SessionState.ENDED)
            del self._sessions[session.id_hash]
        return len(ended)

    def sweep(self) -> int:
        """Drop every session that is over; how many."""
        for session in list(self._sessions.values()):
            self._expire_if_due(session)
        over = [h for h, s in self._sessions.items() if SESSION_LIFECYCLE.final(s.state)]
        for id_hash in over:
            del self._sessions[id_hash]
        return len(over)

    def _expire_if_due(self, session: Session) -> None:
        if SESSION_LIFECYCLE.final(session.state):
            return
        now = self._clock.monotonic_s()
        policy = self.policy
        idle = now - session.last_seen_s > policy.idle_ms / 1000
        old = now - session.created_s > policy.absolute_ms / 1000
        waited = (
            session.state is SessionState.PASSWORD_OK
            and now - session.created_s > policy.second_factor_wait_ms / 1000
        )
        if idle or old or waited:
            session.move(SessionState.EXPIRED)

    def principal(self, session: Session, roles: frozenset[Role]) -> Principal:
        """The principal of an active session, with the account's current ``roles``."""
        return Principal(session.name, "session", roles, session.second_factor_s)


# ------------------------------------------------------------------------------- API tokens


@dataclass(frozen=True)
class ApiToken:
    """One personal (or service) API token, without its secret."""

    token_id: str  # public handle for listing and revoking (16 hex digits)
    token_hash: bytes = field(repr=False)  # SHA-256 of the secret
    name: str = field(repr=False)  # the owning account (a repr may end up in a log)
    role: Role
    label: str
    created_ms: int
    expires_ms: int
    revoked_ms: int = 0

    def live(self, now_ms: int) -> bool:
        """Not revoked and not expired at ``now_ms``."""
        return not self.revoked_ms and now_ms < self.expires_ms


class TokenBook:
    """The API tokens of this node, kept encrypted on disk (``tokens.bin``) beside the accounts."""

    def __init__(self, folder: Path, box_key: bytes, clock: Clock) -> None:
        self._file = SealedFile(folder / "tokens.bin", box_key)
        self._clock = clock
        self._tokens: dict[bytes, ApiToken] = {}
        self._declared: dict[bytes, ApiToken] = {}  # from node.toml: never saved here
        value = self._file.read()
        if value is not None:
            if not isinstance(value, dict) or value.get("v") != TOKENS_VERSION:
                raise AccountsCorrupt("tokens.bin has an unknown format")
            try:
                for i, h, n, r, lab, c, e, rv in value["tokens"]:
                    self._tokens[h] = ApiToken(i, h, n, Role(r), lab, c, e, rv)
            except (TypeError, ValueError) as exc:
                raise AccountsCorrupt(f"tokens.bin is damaged: {type(exc).__name__}") from None

    def _save(self, tokens: dict[bytes, ApiToken]) -> None:
        rows = [
            [
                t.token_id,
                t.token_hash,
                t.name,
                t.role.value,
                t.label,
                t.created_ms,
                t.expires_ms,
                t.revoked_ms,
            ]
            for t in tokens.values()
        ]
        self._file.write({"v": TOKENS_VERSION, "tokens": rows})
        self._tokens = tokens

    def create(
        self, name: str, role: Role, ttl_ms: int, label: str = "", *, secret: str | None = None
    ) -> tuple[str, ApiToken]:
        """A new token for ``name`` with ``role``: its secret (shown once) and its record.

        ``secret`` adopts an existing token (today's node-wide token, moved to a named service
        account) instead of making a new one; it must be as long as ours.
        """
        if not 0 < ttl_ms <= MAX_TOKEN_TTL_MS:
            raise NodeUsageError(f"a token lives from 1 ms to {MAX_TOKEN_TTL_MS // 86_400_000} days")
        if len(label) > 100:
            raise NodeUsageError("a token label has at most 100 characters")
        if secret is None:
            secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        elif len(secret) < 32:
            raise NodeUsageError("an adopted token has at least 32 characters")
        live = {h: t for h, t in self._tokens.items() if t.live(self._clock.now_ms())}
        if len(live) >= MAX_TOKENS:
            raise NodeUsageError(f"this node holds {MAX_TOKENS} live tokens already")
        now = self._clock.now_ms()
        token = ApiToken(secrets.token_hex(8), _sha256(secret), name, role, label, now, now + ttl_ms)
        if token.token_hash in self._tokens:
            raise NodeUsageError("that token is held already")
        self._save({**live, token.token_hash: token})  # expired and revoked ones are dropped here
        return secret, token

    def declare(self, name: str, role: Role, token_sha256: str, label: str = "node.toml") -> ApiToken:
        """Accept a service account's token known by its SHA-256 from the configuration.

        The configuration is its source of truth: it lives until removed from ``node.toml``
        (``api.token_sha256``), and its secret was never seen by this node.
        """
        digest = bytes.fromhex(token_sha256)
        token = ApiToken("cfg-" + digest.hex()[:12], digest, name, role, label, 0, 2**62)
        self._declared[digest] = token
        return token

    def authenticate(self, secret: str) -> ApiToken:
        """The live token whose secret this is, or :class:`SessionRefused`."""
        digest = _sha256(secret)
        token = self._tokens.get(digest) or self._declared.get(digest)
        if token is None or not hmac.compare_digest(token.token_hash, digest):
            raise SessionRefused("unknown, expired or revoked API token")
        if not token.live(self._clock.now_ms()):
            raise SessionRefused("unknown, expired or revoked API token")
        return token

    def revoke(self, token_id: str) -> ApiToken:
        """Revoke a token by its public id (revoking twice keeps the first time)."""
        if any(hmac.compare_digest(t.token_id.encode(), token_id.encode()) for t in self._declared.values()):
            raise NodeUsageError("that token is declared in node.toml (api.token_sha256): remove it there")
        for token in self._tokens.values():
            if hmac.compare_digest(token.token_id.encode(), token_id.encode()):
                if token.revoked_ms:
                    return token
                revoked = replace(token, revoked_ms=self._clock.now_ms())
                self._save({**self._tokens, token.token_hash: revoked})
                return revoked
        raise NodeUsageError("no token of that id")

    def revoke_all_of(self, name: str) -> int:
        """Revoke every live token of an account (disabled, removed); how many."""
        now = self._clock.now_ms()
        changed = {
            h: replace(t, revoked_ms=now) for h, t in self._tokens.items() if t.name == name and t.live(now)
        }
        if changed:
            self._save({**self._tokens, **changed})
        return len(changed)

    def tokens_of(self, name: str | None = None) -> list[ApiToken]:
        """Every token (of one account, if named), oldest first."""
        every = [*self._tokens.values(), *self._declared.values()]
        found = [t for t in every if name is None or t.name == name]
        return sorted(found, key=lambda t: t.created_ms)

    def principal(self, token: ApiToken, account_roles: frozenset[Role]) -> Principal:
        """The principal a token acts as; refused if its owner no longer holds its role."""
        if token.role not in account_roles:
            raise SessionRefused("unknown, expired or revoked API token")
        return Principal(token.name, "token", frozenset({token.role}))
