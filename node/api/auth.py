"""Who is calling: the API's gate in front of every route (issue 16).

Every route is registered through :meth:`Gate.wrap`, which reads the rule the handler states
(:func:`~mftp.node.people.roles.requires` or :func:`~mftp.node.people.roles.public`) and, for
a rule that is not public:

1. finds the caller: ``Authorization: Bearer <token>`` (a personal or service API token), else
   the session cookie; neither is a 401;
2. for a cookie on a mutating request (anything but GET, HEAD, OPTIONS), refuses a cross-site
   request: the ``X-CSRF-Token`` header must echo the session's CSRF token, and an ``Origin``
   (or ``Sec-Fetch-Site``) header, when the browser sends one, must be this node's own.  A
   bearer token needs neither: a browser never attaches it by itself;
3. checks the role, then the step-up (a second factor within the last minutes) for
   consequential routes;
4. hands the handler the caller (:func:`principal_of`).

A patient opening a share link has no account: the share's own session (its cookie, set by
:mod:`mftp.node.shares`) is accepted on reads whose rule is ``shared`` (the viewer's), and the
request then carries the share's scope (:data:`SHARE_SCOPE`).

Refusals are :class:`~mftp.node.people.errors.AccessRefused` errors that the API's error
middleware answers with their status (401, 403, 429 with ``Retry-After``).  The log says which
route was refused and why in a word, never who asked or with what.

Argon2 and the account file block, so the sign-in work of :mod:`.people_routes` runs in a
worker thread; the checks here are hash lookups and run on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from ..people.errors import AccessRefused, SessionRefused
from ..people.roles import RULE_ATTRIBUTE, RouteRule, rule_of
from ..people.sessions import COOKIE_NAME, CSRF_HEADER, Principal, cookie_attributes, require_step_up
from ..people.signin import SignIn

log = logging.getLogger("mftp.node.api.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL: Final = web.RequestKey("principal", Principal)
"""The request key under which a handler finds its :class:`Principal`."""
SHARE_SCOPE: Final = web.RequestKey("share_scope", object)
"""For a patient's share session: what it may see (:class:`mftp.node.shares.service.ShareScope`)."""
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
ShareResolver = Callable[[web.Request], "tuple[Principal, object] | None"]
MAX_TOKEN_CHARS: Final = 200


def principal_of(request: web.Request) -> Principal:
    """The caller of a non-public route (set by the gate; a usage error if it is missing)."""
    principal = request.get(PRINCIPAL)
    if principal is None:
        raise SessionRefused("sign in first")
    return principal


def client_address(request: web.Request) -> str:
    """The TCP peer's address (the rate limits' key); no proxy header is trusted."""
    return request.remote or ""


def route_of(request: web.Request) -> str:
    """The route's pattern (``/users/{name}``), for logs: a concrete path may name a user."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "?"


class Gate:
    """Authenticates and authorises each request against its route's rule."""

    def __init__(
        self, signin: SignIn, *, public_origin: str = "", shares: ShareResolver | None = None
    ) -> None:
        self.signin = signin
        self.shares = shares  # a patient's share session (its cookie), for the viewing routes
        self.public_origin = public_origin.rstrip("/")
        self.tls = self.public_origin.startswith("https://")
        self.cookie = cookie_attributes(self.tls)

    # ------------------------------------------------------------------ cookies

    def session_id(self, request: web.Request) -> str | None:
        """The session id the request's cookie carries, if any."""
        return request.cookies.get(str(self.cookie["name"]))

    def set_session(self, response: web.StreamResponse, session_id: str) -> None:
        """Hand the browser its session cookie (lives as long as the browser; the node expires it)."""
        attrs = {k: v for k, v in self.cookie.items() if k != "name"}
        response.set_cookie(str(self.cookie["name"]), session_id, **attrs)  # type: ignore[arg-type]

    def clear_session(self, response: web.StreamResponse) -> None:
        """Tell the browser to forget its session cookie."""
        response.del_cookie(str(self.cookie["name"]), path="/")

    # ------------------------------------------------------------------ checks

    def same_origin(self, request: web.Request) -> bool:
        """Whether a browser request comes from our own pages (absent headers: not a browser)."""
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        own = self.public_origin or f"{request.scheme}://{request.host}"
        return origin.rstrip("/").lower() == own.lower()

    def check_origin(self, request: web.Request) -> None:
        """Refuse a cross-site browser request (a forged form post or fetch)."""
        if not self.same_origin(request):
            raise SessionRefused("a cross-site request is refused")

    def principal(self, request: web.Request) -> Principal | None:
        """The caller, from a bearer token or a session cookie; None if the request has neither."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
                raise SessionRefused("unknown, expired or revoked API token")
            return self.signin.from_token(token, client_address(request))
        session_id = self.session_id(request)
        if session_id is None:
            if self.shares is not None and request.method in SAFE_METHODS:
                found = self.shares(request)
                if found is not None:
                    request[SHARE_SCOPE] = found[1]
                    return found[0]
            return None
        mutating = request.method not in SAFE_METHODS
        if mutating:
            self.check_origin(request)
        return self.signin.from_session(
            session_id, mutating=mutating, csrf_token=request.headers.get(CSRF_HEADER)
        )

    def require_step_up(self, principal: Principal) -> None:
        """Refuse unless the principal's second factor is fresh (a route that needs it sometimes)."""
        require_step_up(principal, self.signin.clock, self.signin.sessions.policy)

    def wrap(self, handler: Handler) -> Handler:
        """``handler`` behind the checks its rule asks for (the route keeps its rule)."""
        rule = rule_of(handler)
        if rule is None:
            raise TypeError(f"route handler {getattr(handler, '__name__', handler)!r} states no rule")

        async def gated(request: web.Request) -> web.StreamResponse:
            if not rule.public:
                self.authorize(request, rule)
            return await handler(request)

        setattr(gated, RULE_ATTRIBUTE, rule)
        gated.__name__ = getattr(handler, "__name__", "handler")
        gated.__doc__ = handler.__doc__
        return gated

    def authorize(self, request: web.Request, rule: RouteRule) -> Principal:
        """Check the request against ``rule``; its principal, also kept in the request."""
        try:
            principal = self.principal(request)
            self.signin.authorize(principal, rule)
        except AccessRefused as exc:
            log.warning(
                "api call refused",
                extra={
                    "fields": {
                        "route": route_of(request),
                        "method": request.method,
                        "reason": type(exc).__name__,
                    }
                },
            )
            raise
        assert principal is not None  # authorize refuses None for a non-public rule
        request[PRINCIPAL] = principal
        return principal


__all__ = ["COOKIE_NAME", "PRINCIPAL", "Gate", "client_address", "principal_of"]
