"""HTTP routes of people: sign-in, enrolment, sessions, API tokens, users, security events.

Sign-in (public routes; each later step carries the cookie the first one set, and the
``X-CSRF-Token`` it answered)::

    POST   /session                 {"name", "password"}            -> {"state": "password_ok", "csrf_token"}
    POST   /session/second-factor   {"code"} | {"recovery_code"}    -> the session (also a step-up)
    POST   /session/passkey/options                                 -> WebAuthn request options
    POST   /session/passkey         {"credential"}                  -> the session
    GET    /session                                                 -> name, roles, step-up freshness
    DELETE /session                                                 -> 204, signed out

Enrolment, from the one-time code an operator handed over::

    POST   /enrolment               {"name", "code", "password"}    -> {"totp_uri", "totp_qr_svg", ...}
    POST   /enrolment/confirm       {"code"}                        -> {"recovery_codes": [10]} (shown once)

Tokens (one's own; an operator's for service accounts) and passkeys::

    GET    /tokens  POST /tokens {"role", "ttl_s"?, "label"?, "owner"?}  DELETE /tokens/{token_id}
    POST   /passkeys/options  POST /passkeys {"credential"}

Users and security events (operators)::

    GET    /users   POST /users {"name", "roles", "service"?, "directory"?} -> {"enrolment_code"}
    POST   /users/{name}/disable | /enable | /unlock | /reset-mfa   PUT /users/{name}/roles {"roles"}
    GET    /security-events?format=json|fhir|dicom&limit=
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from aiohttp import web

from ..errors import NodeUsageError
from ..people.admin import Admin
from ..people.errors import NotPermitted, SessionRefused
from ..people.events import SecurityEvent, to_dicom_audit_message, to_fhir_audit_event
from ..people.roles import Permission, Role, parse_role, requires, sign_in_step
from ..people.sessions import CSRF_HEADER, Principal, Session
from ..people.signin import SignIn
from . import models
from .auth import Gate, Handler, client_address, principal_of
from .server import read_model

MAX_EVENTS: Final = 10_000


class SecurityEventLog(Protocol):
    """Where security events are kept (the institution's encrypted audit vault)."""

    def security_events(self, limit: int) -> list[SecurityEvent]:
        """The newest ``limit`` events, oldest first."""


class PeopleApi:
    """The people routes over a node's :class:`SignIn` and :class:`Admin`."""

    def __init__(
        self,
        signin: SignIn,
        admin: Admin,
        gate: Gate,
        events: SecurityEventLog | None = None,
        institution: str = "",
        on_user_added: Callable[[str], object] | None = None,
    ) -> None:
        self.signin, self.admin, self.gate, self.events = signin, admin, gate, events
        self.institution = institution
        self._on_user_added = on_user_added

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Register the routes, each behind ``authenticated`` (which enforces its rule)."""
        add = router.add_route
        for method, path, handler in (
            ("POST", "/session", self.sign_in),
            ("GET", "/session", self.whoami),
            ("DELETE", "/session", self.sign_out),
            ("POST", "/session/second-factor", self.second_factor),
            ("POST", "/session/passkey/options", self.passkey_options),
            ("POST", "/session/passkey", self.passkey),
            ("POST", "/enrolment", self.enrol),
            ("POST", "/enrolment/confirm", self.enrol_confirm),
            ("POST", "/passkeys/options", self.passkey_registration_options),
            ("POST", "/passkeys", self.add_passkey),
            ("GET", "/tokens", self.list_tokens),
            ("POST", "/tokens", self.create_token),
            ("DELETE", "/tokens/{token_id}", self.revoke_token),
            ("GET", "/users", self.list_users),
            ("POST", "/users", self.add_user),
            ("POST", "/users/{name}/disable", self.disable_user),
            ("POST", "/users/{name}/enable", self.enable_user),
            ("POST", "/users/{name}/unlock", self.unlock_user),
            ("POST", "/users/{name}/reset-mfa", self.reset_mfa),
            ("PUT", "/users/{name}/roles", self.set_roles),
            ("GET", "/security-events", self.security_events),
        ):
            add(method, path, authenticated(handler))

    # ------------------------------------------------------------------ helpers

    def _session_id(self, request: web.Request) -> str:
        session_id = self.gate.session_id(request)
        if session_id is None:
            raise SessionRefused("sign in first")
        return session_id

    def _csrf_ok(self, request: web.Request) -> str:
        """The session id of a sign-in step, checked for CSRF and origin like any mutating call."""
        self.gate.check_origin(request)
        session_id = self._session_id(request)
        session = self.signin.sessions.find(session_id)
        given = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
            raise SessionRefused("a missing or wrong CSRF token")
        return session_id

    def _session_view(self, session: Session) -> dict[str, Any]:
        account = self.signin.store.get(session.name)
        roles = sorted(r.value for r in account.roles) if account is not None else []
        fresh_s = None
        if session.second_factor_s is not None:
            left = session.second_factor_s + self.signin.sessions.policy.step_up_ms / 1000
            fresh_s = max(0.0, left - self.signin.clock.monotonic_s())
        return {
            "state": session.state.value,
            "name": session.name,
            "roles": roles,
            "csrf_token": session.csrf_token,
            "step_up_fresh_s": fresh_s,
        }

    # ------------------------------------------------------------------ sign-in

    @sign_in_step()
    async def sign_in(self, request: web.Request) -> web.Response:
        """The password step: a session awaiting its second factor (401 for any wrong answer)."""
        self.gate.check_origin(request)
        body = await read_model(request, models.SignIn)
        session_id, session = await asyncio.to_thread(
            self.signin.password, body.name, body.password, client_address(request)
        )
        answer = web.json_response({"state": session.state.value, "csrf_token": session.csrf_token})
        self.gate.set_session(answer, session_id)
        return answer

    @sign_in_step()
    async def second_factor(self, request: web.Request) -> web.Response:
        """The second step (TOTP or a recovery code); on an active session, a step-up."""
        body = await read_model(request, models.SecondFactor)
        session_id = self._csrf_ok(request)
        recovery = body.recovery_code is not None
        code = body.recovery_code if body.recovery_code is not None else body.code
        if code is None:
            raise web.HTTPBadRequest(text="give code or recovery_code")
        session = await asyncio.to_thread(
            self.signin.second_factor, session_id, code, client_address(request), recovery=recovery
        )
        return web.json_response(self._session_view(session))

    @sign_in_step()
    async def passkey_options(self, request: web.Request) -> web.Response:
        """WebAuthn request options for the second step with a passkey."""
        await read_model(request, models.Nothing)
        session_id = self._csrf_ok(request)
        options = await asyncio.to_thread(self.signin.passkey_options, session_id)
        return web.Response(text=options, content_type="application/json")

    @sign_in_step()
    async def passkey(self, request: web.Request) -> web.Response:
        """The second step with a passkey: ``{"credential": <the browser's answer as JSON text>}``."""
        body = await read_model(request, models.Credential)
        session_id = self._csrf_ok(request)
        session = await asyncio.to_thread(
            self.signin.passkey, session_id, body.credential, client_address(request)
        )
        return web.json_response(self._session_view(session))

    @requires(Permission.SELF_MANAGE)
    async def whoami(self, request: web.Request) -> web.Response:
        """The signed-in session (a token's caller gets its name and role)."""
        principal = principal_of(request)
        if principal.via != "session":
            return web.json_response(
                {"state": "token", "name": principal.name, "roles": sorted(principal.roles)}
            )
        return web.json_response(self._session_view(self.signin.sessions.find(self._session_id(request))))

    @sign_in_step()
    async def sign_out(self, request: web.Request) -> web.Response:
        """End the session (and forget the cookie)."""
        await read_model(request, models.Nothing)
        session_id = self.gate.session_id(request)
        if session_id is not None:
            self.gate.check_origin(request)
            self.signin.sign_out(session_id, client_address(request))
        answer = web.Response(status=204)
        self.gate.clear_session(answer)
        return answer

    # ------------------------------------------------------------------ enrolment

    @sign_in_step()
    async def enrol(self, request: web.Request) -> web.Response:
        """Spend the one-time enrolment code: the TOTP secret (as a URI and a QR code), once."""
        self.gate.check_origin(request)
        body = await read_model(request, models.Enrol)
        start = await asyncio.to_thread(
            self.signin.enrol_begin, body.name, body.code, body.password, client_address(request)
        )
        answer = web.json_response(
            {"totp_uri": start.totp_uri, "totp_qr_svg": start.totp_qr_svg, "csrf_token": start.csrf_token},
            headers={"Cache-Control": "no-store"},
        )
        self.gate.set_session(answer, start.session_id)
        return answer

    @sign_in_step()
    async def enrol_confirm(self, request: web.Request) -> web.Response:
        """Confirm the TOTP secret with a first code; the 10 recovery codes, shown once."""
        body = await read_model(request, models.Code)
        session_id = self._csrf_ok(request)
        codes = await asyncio.to_thread(
            self.signin.enrol_confirm, session_id, body.code, client_address(request)
        )
        return web.json_response({"recovery_codes": codes}, headers={"Cache-Control": "no-store"})

    @requires(Permission.SELF_MANAGE, step_up=True)
    async def passkey_registration_options(self, request: web.Request) -> web.Response:
        """WebAuthn creation options for adding a passkey to one's own account."""
        await read_model(request, models.Nothing)
        session_id = self._session_id(request)
        options = self.signin.passkey_registration_options(session_id, request.headers.get(CSRF_HEADER, ""))
        return web.Response(text=options, content_type="application/json")

    @requires(Permission.SELF_MANAGE, step_up=True)
    async def add_passkey(self, request: web.Request) -> web.Response:
        """Keep the passkey the browser created: ``{"credential"}``."""
        body = await read_model(request, models.Credential)
        await asyncio.to_thread(
            self.signin.add_passkey,
            self._session_id(request),
            request.headers.get(CSRF_HEADER, ""),
            body.credential,
            client_address(request),
        )
        return web.json_response({"added": True}, status=201)

    # ------------------------------------------------------------------ tokens

    @requires(Permission.SELF_MANAGE)
    async def list_tokens(self, request: web.Request) -> web.Response:
        """One's own tokens; an operator sees every token (``?all=1``)."""
        principal = principal_of(request)
        everyone = request.query.get("all") == "1"
        if everyone and Role.OPERATOR not in principal.roles:
            raise NotPermitted("tokens.manage needs the role operator")
        tokens = self.signin.tokens.tokens_of(None if everyone else principal.name)
        now = self.signin.clock.now_ms()
        return web.json_response(
            {
                "tokens": [
                    {
                        "token_id": t.token_id,
                        "owner": t.name,
                        "role": t.role.value,
                        "label": t.label,
                        "created_ms": t.created_ms,
                        "expires_ms": t.expires_ms,
                        "revoked_ms": t.revoked_ms,
                        "live": t.live(now),
                    }
                    for t in tokens
                ]
            }
        )

    @requires(Permission.SELF_MANAGE, step_up=True)
    async def create_token(self, request: web.Request) -> web.Response:
        """A personal token (or a service account's, for an operator); its secret is shown once."""
        body = await read_model(request, models.MakeToken)
        principal = principal_of(request)
        if principal.via != "session":
            raise NotPermitted("tokens are made in a signed-in session, not with another token")
        secret, token = self.admin.create_token(
            principal, body.owner or principal.name, parse_role(body.role), body.ttl_s * 1000, body.label
        )
        return web.json_response(
            {
                "token": secret,
                "token_id": token.token_id,
                "role": token.role.value,
                "expires_ms": token.expires_ms,
            },
            status=201,
            headers={"Cache-Control": "no-store"},
        )

    @requires(Permission.SELF_MANAGE)
    async def revoke_token(self, request: web.Request) -> web.Response:
        """Revoke one's own token (an operator: any); revoking takes effect at once."""
        await read_model(request, models.Nothing)
        self.admin.revoke_token(principal_of(request), request.match_info["token_id"])
        return web.Response(status=204)

    # ------------------------------------------------------------------ users

    @requires(Permission.USERS_READ)
    async def list_users(self, request: web.Request) -> web.Response:
        """Every account of this node, without secrets."""
        views = self.admin.list_users(principal_of(request))
        return web.json_response({"users": [v.__dict__ | {"roles": list(v.roles)} for v in views]})

    @requires(Permission.USERS_MANAGE)
    async def add_user(self, request: web.Request) -> web.Response:
        """A new account: its one-time enrolment code to hand over (none for a service account)."""
        body = await read_model(request, models.AddUser)
        account, code = await asyncio.to_thread(
            self.admin.add_user,
            principal_of(request),
            body.name,
            [parse_role(r) for r in body.roles],
            service=body.service,
            directory=body.directory,
        )
        if self._on_user_added is not None:
            self._on_user_added(account.name)
        return web.json_response(
            {"name": account.name, "enrolment_code": code}, status=201, headers={"Cache-Control": "no-store"}
        )

    async def _on_user(self, request: web.Request, act: Callable[[Principal, str], None]) -> web.Response:
        await read_model(request, models.Nothing)
        await asyncio.to_thread(act, principal_of(request), request.match_info["name"])
        return web.Response(status=204)

    @requires(Permission.USERS_MANAGE)
    async def disable_user(self, request: web.Request) -> web.Response:
        """Stop an account: no sign-in; its sessions end and its tokens are revoked."""
        return await self._on_user(request, self.admin.disable)

    @requires(Permission.USERS_MANAGE)
    async def enable_user(self, request: web.Request) -> web.Response:
        """Let a disabled account sign in again (its revoked tokens stay revoked)."""
        return await self._on_user(request, self.admin.enable)

    @requires(Permission.USERS_MANAGE)
    async def unlock_user(self, request: web.Request) -> web.Response:
        """End a lockout now."""
        return await self._on_user(request, self.admin.unlock)

    @requires(Permission.USERS_MANAGE)
    async def reset_mfa(self, request: web.Request) -> web.Response:
        """Forget the account's second factors: a new one-time enrolment code to hand over."""
        await read_model(request, models.Nothing)
        code = await asyncio.to_thread(
            self.admin.reset_second_factor, principal_of(request), request.match_info["name"]
        )
        return web.json_response({"enrolment_code": code}, headers={"Cache-Control": "no-store"})

    @requires(Permission.USERS_MANAGE)
    async def set_roles(self, request: web.Request) -> web.Response:
        """Replace an account's roles: ``{"roles": [...]}``."""
        body = await read_model(request, models.SetRoles)
        roles = [parse_role(r) for r in body.roles]
        account = await asyncio.to_thread(
            self.admin.set_roles, principal_of(request), request.match_info["name"], roles
        )
        return web.json_response({"name": account.name, "roles": sorted(r.value for r in account.roles)})

    @requires(Permission.USERS_READ)
    async def security_events(self, request: web.Request) -> web.Response:
        """The node's security events: ``json``, ``fhir`` (a Bundle of AuditEvent) or ``dicom``."""
        if self.events is None:
            raise NodeUsageError("this node keeps no security events")
        fmt = request.query.get("format", "json")
        raw_limit = request.query.get("limit", "1000")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_EVENTS:
            raise web.HTTPBadRequest(text=f"limit must be from 1 to {MAX_EVENTS}")
        events = await asyncio.to_thread(self.events.security_events, int(raw_limit))
        return _events_answer(events, fmt, self.institution)


def _events_answer(events: Iterable[SecurityEvent], fmt: str, institution: str) -> web.Response:
    listed = list(events)
    if fmt == "json":
        return web.json_response({"events": [e.as_dict() for e in listed]})
    if fmt == "fhir":
        entries = [
            {"resource": to_fhir_audit_event(e, institution, f"{e.time_ms}-{i}")}
            for i, e in enumerate(listed)
        ]
        return web.json_response({"resourceType": "Bundle", "type": "collection", "entry": entries})
    if fmt == "dicom":  # one XML document per event (PS3.15 A.5 has no container of messages)
        return web.json_response({"messages": [to_dicom_audit_message(e, institution) for e in listed]})
    raise web.HTTPBadRequest(text="format is json, fhir or dicom")


__all__ = ["PeopleApi", "SecurityEventLog"]
