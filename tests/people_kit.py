"""People for API tests: a node's sign-in on cheap Argon2, and tokens or sessions for named users.

``kit = PeopleKit(tmp_path)`` gives a :class:`Gate` for ``Api(node, kit.gate, ...)``;
``kit.token("alice", Role.CLINICIAN)`` makes the account (if needed) and a personal API token;
``await kit.sign_in(client, "bob")`` runs the real browser flow (enrolment code, password,
TOTP) through a test client and returns the CSRF token of the active session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyotp
from aiohttp.test_utils import TestClient

from mftp.crypto.signing import SigningIdentity
from mftp.node.api.auth import Gate
from mftp.node.clock import Clock, SystemClock
from mftp.node.people.abuse import AbuseGuard
from mftp.node.people.accounts import TEST_COST, AccountStore, store_keys
from mftp.node.people.admin import Admin
from mftp.node.people.events import SecurityEvent
from mftp.node.people.roles import Role
from mftp.node.people.sessions import Principal, SessionBook, TokenBook
from mftp.node.people.signin import SignIn

PASSWORD = "correct horse battery staple"
HOUR_MS = 3600 * 1000


class PeopleKit:
    """A node's people on a temporary folder (see the module doc)."""

    def __init__(self, folder: Path, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        identity = SigningIdentity.generate()
        self.events: list[SecurityEvent] = []
        self.store = AccountStore(folder / "people", identity, self.clock, TEST_COST)
        self.sessions = SessionBook(self.clock)
        self.tokens = TokenBook(folder / "people", store_keys(identity)[0], self.clock)
        self.guard = AbuseGuard(self.clock)
        self.signin = SignIn(
            self.store, self.sessions, self.tokens, self.guard, self.clock, self.events.append
        )
        self.admin = Admin(self.store, self.sessions, self.tokens, self.clock, self.events.append)
        self.gate = Gate(self.signin)
        self.totp: dict[str, pyotp.TOTP] = {}
        self.operator = Principal("kit-operator", "token", frozenset({Role.OPERATOR}))

    def account(self, name: str, *roles: Role) -> None:
        """Make ``name`` with ``roles`` (default clinician) unless it exists."""
        if self.store.get(name) is None:
            self.store.add(name, roles or (Role.CLINICIAN,))

    def token(self, name: str, role: Role = Role.CLINICIAN, ttl_ms: int = HOUR_MS) -> str:
        """A personal API token of ``name`` with ``role`` (the account is made if needed)."""
        self.account(name, role)
        if role not in (account := self.store.get(name)).roles:  # type: ignore[union-attr]
            self.store.set_roles(name, {*account.roles, role})  # type: ignore[union-attr]
        return self.tokens.create(name, role, ttl_ms)[0]

    def bearer(self, name: str, role: Role = Role.CLINICIAN) -> dict[str, str]:
        """The Authorization header of a fresh token of ``name``."""
        return {"Authorization": f"Bearer {self.token(name, role)}"}

    def code(self, name: str) -> str:
        """The current TOTP code of an enrolled ``name``, one step past the last one used."""
        totp = self.totp[name]
        account = self.store.get(name)
        assert account is not None
        step = max(int(self.clock.now_ms() / 1000) // 30, account.totp_last_step + 1)
        return totp.at(step * 30)

    async def enrol(self, client: TestClient, name: str, *roles: Role) -> dict[str, Any]:
        """Add ``name`` and enrol it through the API (password, TOTP); the confirm answer."""
        self.account(name, *roles)
        code = self.admin.reset_second_factor(self.operator, name)
        answer = await client.post("/enrolment", json={"name": name, "code": code, "password": PASSWORD})
        assert answer.status == 200, await answer.text()
        started = await answer.json()
        self.totp[name] = pyotp.TOTP(pyotp.parse_uri(started["totp_uri"]).secret)
        confirm = await client.post(
            "/enrolment/confirm",
            json={"code": self.code(name)},
            headers={"X-CSRF-Token": started["csrf_token"]},
        )
        assert confirm.status == 200, await confirm.text()
        return {"csrf_token": started["csrf_token"], **(await confirm.json())}

    async def sign_in(self, client: TestClient, name: str, *roles: Role) -> str:
        """Enrol ``name`` if needed, then sign in with password and TOTP; the session's CSRF token."""
        if name not in self.totp:
            await self.enrol(client, name, *roles)
            client.session.cookie_jar.clear()
        first = await client.post("/session", json={"name": name, "password": PASSWORD})
        assert first.status == 200, await first.text()
        csrf = (await first.json())["csrf_token"]
        second = await client.post(
            "/session/second-factor", json={"code": self.code(name)}, headers={"X-CSRF-Token": csrf}
        )
        assert second.status == 200, await second.text()
        return str(csrf)
