"""People of a running devnet: users made, enrolled and signed in through the real API.

Each member's ``keys/api.token`` belongs to its operator service account ("devnet-operator");
it adds users (``POST /users``) but cannot act as a clinician.  :func:`user_token` makes a
user if needed, enrols it exactly as a person would (one-time code, password, TOTP secret from
the enrolment URI, a first code, recovery codes), and, in the session that enrolment opened,
makes a personal API token with the role asked for.  The TOTP secrets stay in this process
(:data:`ENROLLED`), so the demo can sign in as alice and bob by computing their codes.

Tokens are cached per (node, user, role): the TOTP rules refuse a code used twice, and a
devnet user signs in once per role.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

import pyotp

from ..api_client import SessionClient, bearer_call
from ..clock import SYSTEM_CLOCK
from .consortium import Member

TIMEOUT_S: Final = 30.0


@dataclass
class DevnetUser:
    """A user enrolled on one devnet node: what a person would keep (password, authenticator)."""

    name: str
    password: str
    totp: pyotp.TOTP
    recovery_codes: list[str]
    last_step: int = -1

    def code(self) -> str:
        """The next TOTP code this user's authenticator shows (never one step used before)."""
        step = max(int(SYSTEM_CLOCK.now_ms() / 1000) // 30, self.last_step + 1)
        self.last_step = step
        return str(self.totp.at(step * 30))


ENROLLED: dict[tuple[str, str], DevnetUser] = {}
TOKENS: dict[tuple[str, str, str], str] = {}


def _service_call(
    member: Member, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """A call as the member's operator service account."""
    return bearer_call(member.api_url, member.token, method, path, body)


def enrol(
    member: Member, name: str, roles: tuple[str, ...] = ("clinician",), code: str | None = None
) -> tuple[DevnetUser, SessionClient]:
    """Enrol ``name`` on ``member`` (added with ``roles`` unless an operator's ``code`` is given).

    Returns the user (password, authenticator) and its signed-in session.
    """
    if code is None:
        status, added = _service_call(member, "POST", "/users", {"name": name, "roles": list(roles)})
        if status != 201:
            raise RuntimeError(f"POST /users: {status} {added}")
        code = str(added["enrolment_code"])
    browser = SessionClient(member.api_url)
    password = secrets.token_urlsafe(18)
    started = browser.expect("POST", "/enrolment", {"name": name, "code": code, "password": password})
    browser.csrf = started["csrf_token"]
    totp = pyotp.TOTP(pyotp.parse_uri(started["totp_uri"]).secret)
    user = DevnetUser(name, password, totp, [])
    confirmed = browser.expect("POST", "/enrolment/confirm", {"code": user.code()})
    user.recovery_codes = confirmed["recovery_codes"]
    ENROLLED[(member.api_url, name)] = user
    return user, browser


def sign_in(member: Member, user: DevnetUser) -> SessionClient:
    """Sign ``user`` in on ``member`` with password and TOTP; the session."""
    browser = SessionClient(member.api_url)
    first = browser.expect("POST", "/session", {"name": user.name, "password": user.password})
    browser.csrf = first["csrf_token"]
    browser.expect("POST", "/session/second-factor", {"code": user.code()})
    return browser


def user_token(member: Member, name: str, role: str = "clinician") -> str:
    """A personal API token of ``name`` with ``role`` on ``member`` (made, enrolled, signed in)."""
    key = (member.api_url, name, role)
    if key in TOKENS:
        return TOKENS[key]
    user = ENROLLED.get((member.api_url, name))
    if user is None:
        user, browser = enrol(member, name, (role,))
    else:
        _add_role(member, name, role)
        browser = sign_in(member, user)
    made = browser.expect("POST", "/tokens", {"role": role, "ttl_s": 24 * 3600, "label": "devnet"})
    TOKENS[key] = str(made["token"])
    return TOKENS[key]


def _add_role(member: Member, name: str, role: str) -> None:
    status, listed = _service_call(member, "GET", "/users")
    if status != 200:
        raise RuntimeError(f"GET /users: {status} {listed}")
    held: list[str] = next((u["roles"] for u in listed["users"] if u["name"] == name), [])
    if role not in held:
        status, answer = _service_call(member, "PUT", f"/users/{name}/roles", {"roles": [*held, role]})
        if status != 200:
            raise RuntimeError(f"PUT /users/.../roles: {status} {answer}")
