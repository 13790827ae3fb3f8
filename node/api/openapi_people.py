"""The OpenAPI paths of people (:mod:`.people_routes`): sign-in, tokens, users.

Kept apart from :mod:`.openapi` (which merges them in) so that each stays a readable size; the
bodies are the typed models of :mod:`.models`.
The public steps of sign-in carry ``x-sign-in``: the document adds their 401, 403 and 429.
"""

from __future__ import annotations

from typing import Any, Final

from . import models

SIGNED_IN: Final[list[dict[str, list[str]]]] = [{"token": []}, {"session": []}]
NAME: Final = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "an account name",
    "schema": {"type": "string"},
}


def _schema(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    status: str = "200",
    *,
    signed_in: bool = True,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {status: ok}}
    if signed_in:
        op["security"] = SIGNED_IN
    else:
        op["x-sign-in"] = True
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = parameters
    return op


NO_CONTENT: Final = {"description": "done"}
EMPTY: Final = models.request_body(models.Nothing, required=False)
"""The optional (empty) body of a call that needs none: any body is still parsed and bounded."""
SESSION: Final = _answer(_schema("Session"), "the session")


def _sign_in_paths() -> dict[str, Any]:
    started = _answer(_schema("SignInStarted"), "the password was right: give the second factor")
    return {
        "/session": {
            "post": _op(
                "Sign in, first step: name and password (a hospital directory's, if the account is "
                "one); sets the session cookie. Every wrong answer is the same 401",
                started,
                signed_in=False,
                body=models.request_body(models.SignIn),
            ),
            "get": _op("The signed-in session (or token): name, roles, step-up freshness", SESSION),
            "delete": _op("Sign out (forgets the cookie)", NO_CONTENT, "204", signed_in=False, body=EMPTY),
        },
        "/session/second-factor": {
            "post": _op(
                "Sign in, second step: a TOTP code or a recovery code (X-CSRF-Token from the first "
                "step). On an active session, a step-up: consequential actions need one within the "
                "last minutes",
                SESSION,
                signed_in=False,
                body=models.request_body(models.SecondFactor),
            )
        },
        "/session/passkey/options": {
            "post": _op(
                "WebAuthn request options for the second step with a passkey",
                _answer({"type": "object"}, "PublicKeyCredentialRequestOptions (JSON)"),
                signed_in=False,
                body=EMPTY,
            )
        },
        "/session/passkey": {
            "post": _op(
                "Sign in, second step with a passkey: the browser's answer",
                SESSION,
                signed_in=False,
                body=models.request_body(models.Credential),
            )
        },
        "/enrolment": {
            "post": _op(
                "Enrol: spend the one-time code an operator handed over, set (or prove) the password; "
                "the TOTP secret is shown once, as a URI and a QR code",
                _answer(_schema("EnrolmentStarted"), "confirm with a first code"),
                signed_in=False,
                body=models.request_body(models.Enrol),
            )
        },
        "/enrolment/confirm": {
            "post": _op(
                "Confirm the TOTP secret with a first code: 10 recovery codes, shown once; signed in",
                _answer(_schema("RecoveryCodes"), "enrolled and signed in"),
                signed_in=False,
                body=models.request_body(models.Code),
            )
        },
        "/passkeys/options": {
            "post": _op(
                "WebAuthn creation options for adding a passkey to one's own account (step-up)",
                _answer({"type": "object"}, "PublicKeyCredentialCreationOptions (JSON)"),
                body=EMPTY,
            )
        },
        "/passkeys": {
            "post": _op(
                "Keep the passkey the browser created (step-up)",
                _answer({"type": "object"}, "added"),
                "201",
                body=models.request_body(models.Credential),
            )
        },
    }


def _token_and_user_paths() -> dict[str, Any]:
    return {
        "/tokens": {
            "get": _op(
                "One's own API tokens (all=1: every token, for an operator); never their secrets",
                _answer(_schema("Tokens"), "the tokens"),
                parameters=[
                    {
                        "name": "all",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["1"]},
                    }
                ],
            ),
            "post": _op(
                "A personal API token with one role one holds (or a service account's, for an "
                "operator), made in a signed-in session with a fresh second factor; its secret is "
                "shown once",
                _answer(_schema("TokenCreated"), "the token"),
                "201",
                body=models.request_body(models.MakeToken),
            ),
        },
        "/tokens/{token_id}": {
            "delete": _op(
                "Revoke a token (one's own; an operator: any), at once",
                NO_CONTENT,
                "204",
                parameters=[
                    {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            )
        },
        "/users": {
            "get": _op(
                "Every account (operators), without secrets", _answer(_schema("Users"), "the accounts")
            ),
            "post": _op(
                "Add an account (operators, step-up): its one-time enrolment code to hand over",
                _answer(_schema("UserAdded"), "added"),
                "201",
                body=models.request_body(models.AddUser),
            ),
        },
        **{
            f"/users/{{name}}/{action}": {
                "post": _op(summary, NO_CONTENT, "204", parameters=[NAME], body=EMPTY)
            }
            for action, summary in (
                ("disable", "Disable an account: its sessions end and its tokens are revoked"),
                ("enable", "Enable a disabled account (its revoked tokens stay revoked)"),
                ("unlock", "End a lockout now"),
            )
        },
        "/users/{name}/reset-mfa": {
            "post": _op(
                "Forget an account's second factors: a new one-time enrolment code",
                _answer(_schema("UserAdded"), "the new code"),
                parameters=[NAME],
                body=EMPTY,
            )
        },
        "/users/{name}/roles": {
            "put": _op(
                "Replace an account's roles (its tokens of a role it lost stop working)",
                _answer(_schema("UserAdded"), "the account"),
                parameters=[NAME],
                body=models.request_body(models.SetRoles),
            )
        },
        "/security-events": {
            "get": _op(
                "Security events of this node (sign-ins, failures, lockouts, enrolments, tokens, "
                "roles) from the encrypted vault: json, fhir (Bundle of AuditEvent) or dicom (audit "
                "messages, DCM 110114 User Authentication)",
                _answer({"type": "object"}, "the events"),
                parameters=[
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["json", "fhir", "dicom"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10_000},
                    },
                ],
            )
        },
    }


def people_paths() -> dict[str, Any]:
    """Every path of :mod:`.people_routes`."""
    return {**_sign_in_paths(), **_token_and_user_paths()}
