"""What an operator does to accounts and tokens, each reported as a security event.

The methods behind ``mftp-node user add|list|disable|enable|unlock|reset-mfa|roles`` and the
token routes (the CLI talks to the node through its API, so the caller is always a
:class:`~.sessions.Principal`; the first operator is the service account that today's node-wide
token becomes).  Each checks its permission itself as well as the route does, ends what must end
(a disabled account's sessions and tokens, a reset account's sessions) and emits its
:class:`~.events.SecurityEvent`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..clock import Clock
from ..errors import NodeUsageError
from . import second_factor as sf
from .accounts import Account, AccountStore
from .events import EventKind, SecurityEvent
from .roles import Permission, Role, check
from .sessions import ApiToken, Principal, SessionBook, TokenBook
from .signin import Emit

DEFAULT_TOKEN_TTL_MS = 90 * 24 * 3600 * 1000


@dataclass(frozen=True)
class AccountView:
    """What ``user list`` shows of an account: no secret, no hash."""

    name: str
    roles: tuple[str, ...]
    service: bool
    directory: bool
    disabled: bool
    locked: bool
    second_factor: bool
    enrolment_pending: bool


class Admin:
    """Operator actions on one node's accounts and tokens."""

    def __init__(
        self, store: AccountStore, sessions: SessionBook, tokens: TokenBook, clock: Clock, emit: Emit
    ) -> None:
        self.store, self.sessions, self.tokens = store, sessions, tokens
        self._clock, self._emit = clock, emit

    def _event(self, kind: EventKind, actor: Principal, user: str, detail: str = "") -> None:
        self._emit(SecurityEvent(kind, self._clock.now_ms(), True, user, actor=actor.name, detail=detail))

    def _issue_code(self, name: str) -> str:
        codes: list[str] = []

        def issue(account: Account) -> Account:
            code, changed = sf.issue_enrolment_code(account, self._clock.now_ms(), self.store.keyed_hash)
            codes.append(code)
            return changed

        self.store.update(name, issue)
        return codes[0]

    def add_user(
        self,
        actor: Principal,
        name: str,
        roles: Iterable[Role],
        *,
        service: bool = False,
        directory: bool = False,
    ) -> tuple[Account, str | None]:
        """A new account and the one-time enrolment code to hand over (None for a service account)."""
        check(actor.roles, Permission.USERS_MANAGE)
        account = self.store.add(name, roles, service=service, directory=directory)
        self._event(EventKind.ACCOUNT_ADDED, actor, account.name, ",".join(sorted(account.roles)))
        if service:
            return account, None
        code = self._issue_code(account.name)
        self._event(EventKind.ENROLMENT_CODE_ISSUED, actor, account.name)
        return self.store.get(account.name) or account, code

    def list_users(self, actor: Principal) -> list[AccountView]:
        """Every account, without secrets."""
        check(actor.roles, Permission.USERS_MANAGE)
        now = self._clock.now_ms()
        return [
            AccountView(
                a.name,
                tuple(sorted(r.value for r in a.roles)),
                a.service,
                a.directory,
                a.disabled,
                a.locked(now),
                a.has_second_factor,
                bool(a.enrolment_hash) and now < a.enrolment_expires_ms,
            )
            for a in self.store.accounts()
        ]

    def disable(self, actor: Principal, name: str) -> None:
        """Stop an account: no sign-in, its sessions end and its tokens are revoked."""
        check(actor.roles, Permission.USERS_MANAGE)
        target = self.store.get(name)
        if target is not None and target.name == actor.name:  # the last operator could lock all out
            raise NodeUsageError("an operator does not disable their own account")
        account = self.store.disable(name)
        self.sessions.end_all_of(account.name)
        revoked = self.tokens.revoke_all_of(account.name)
        self._event(EventKind.ACCOUNT_DISABLED, actor, account.name, f"{revoked} token(s) revoked")

    def enable(self, actor: Principal, name: str) -> None:
        """Let a disabled account sign in again (its revoked tokens stay revoked)."""
        check(actor.roles, Permission.USERS_MANAGE)
        self._event(EventKind.ACCOUNT_ENABLED, actor, self.store.enable(name).name)

    def unlock(self, actor: Principal, name: str) -> None:
        """End a lockout now."""
        check(actor.roles, Permission.USERS_MANAGE)
        self._event(EventKind.UNLOCK, actor, self.store.unlock(name).name)

    def set_roles(self, actor: Principal, name: str, roles: Iterable[Role]) -> Account:
        """Replace an account's roles; its tokens of a role it lost stop working at once."""
        check(actor.roles, Permission.USERS_MANAGE)
        account = self.store.set_roles(name, roles)
        self._event(EventKind.ROLE_CHANGED, actor, account.name, ",".join(sorted(account.roles)))
        return account

    def reset_second_factor(self, actor: Principal, name: str) -> str:
        """Forget the account's second factors and recovery codes; a new enrolment code."""
        check(actor.roles, Permission.USERS_MANAGE)
        account = self.store.reset_second_factor(name)
        self.sessions.end_all_of(account.name)
        self._event(EventKind.SECOND_FACTOR_RESET, actor, account.name)
        code = self._issue_code(account.name)
        self._event(EventKind.ENROLMENT_CODE_ISSUED, actor, account.name)
        return code

    def create_token(
        self, actor: Principal, owner: str, role: Role, ttl_ms: int = DEFAULT_TOKEN_TTL_MS, label: str = ""
    ) -> tuple[str, ApiToken]:
        """A new API token (its secret, shown once).

        Anyone may make tokens for themselves with a role they hold; an operator may make
        them for service accounts.  Nobody mints a token for another person: it would let
        them act as that person.
        """
        account = self.store.get(owner)
        if account is None:
            raise NodeUsageError("no account of that name")
        if account.name == actor.name:
            check(actor.roles, Permission.SELF_MANAGE)
        else:
            check(actor.roles, Permission.TOKENS_MANAGE)
            if not account.service:
                raise NodeUsageError("tokens for another person are made by that person")
        if role not in account.roles or account.disabled:
            raise NodeUsageError("the token's role must be one its (enabled) owner holds")
        secret, token = self.tokens.create(account.name, role, ttl_ms, label)
        self._event(EventKind.TOKEN_CREATED, actor, account.name, f"{token.token_id} {role.value}")
        return secret, token

    def revoke_token(self, actor: Principal, token_id: str) -> None:
        """Revoke a token: one's own, or any as an operator."""
        owned = {t.token_id for t in self.tokens.tokens_of(actor.name)}
        if token_id not in owned:
            check(actor.roles, Permission.TOKENS_MANAGE)
        token = self.tokens.revoke(token_id)
        self._event(EventKind.TOKEN_REVOKED, actor, token.name, token.token_id)
