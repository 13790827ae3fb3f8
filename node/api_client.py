"""A small client of a node's API with a browser's session: cookie, CSRF token, JSON.

Signing in is a conversation (password, then a code, then the call that makes a token) held
by a session cookie and answered with a CSRF token: ``mftp-node login`` and the devnet's
users (:mod:`mftp.node.devnet.people`) hold it through this class.  Standard library only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Final

from .errors import NodeError

TIMEOUT_S: Final = 30.0
COOKIE_PREFIXES: Final = ("mftp_session=", "__Host-mftp_session=")


class ApiRefused(NodeError):
    """The node answered a call with an error status; its message is the node's."""

    def __init__(self, status: int, answer: Any) -> None:
        message = answer.get("error", answer) if isinstance(answer, dict) else answer
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def bearer_call(
    base_url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One API call with ``Authorization: Bearer token``; ``(status, JSON)`` for errors too."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base_url}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    return _send(request)


def _send(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"error": exc.reason}


class SessionClient:
    """A cookie-keeping client of one node's API: what the sign-in pages do, without a page."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cookie = ""
        self.csrf = ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """One call with the session cookie and CSRF token; ``(status, JSON)``."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.cookie:
            request.add_header("Cookie", self.cookie)
        if self.csrf:
            request.add_header("X-CSRF-Token", self.csrf)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                self._keep_cookie(response.headers.get_all("Set-Cookie") or [])
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"null")
            except ValueError:
                return exc.code, {"error": exc.reason}

    def _keep_cookie(self, headers: list[str]) -> None:
        for header in headers:
            pair = header.split(";", 1)[0]
            if pair.startswith(COOKIE_PREFIXES):
                self.cookie = pair

    def expect(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """:meth:`call`, raising unless it succeeded."""
        status, answer = self.call(method, path, body)
        if status >= 300:
            raise ApiRefused(status, answer)
        return answer
