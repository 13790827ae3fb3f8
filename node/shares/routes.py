"""HTTP routes of patient shares: the clinician's API and the patient's pages.

The clinician's JSON API (signed in; consequential actions need a fresh second factor):

* ``POST /shares`` ``{"transfer_ids": [...], "until": "YYYY-MM-DD", "from"?, "max_opens"?,
  "download"?, "mode"?, "label"?}``: 201 with ``share_id``, the ``link``, the ``code`` and
  ``qr_svg`` (a QR code of the link for the discharge sheet), shown this once only;
* ``GET /shares``, ``GET /shares/{share_id}``: the shares and their state (never a secret);
* ``POST /shares/{share_id}/revoke``: ends the share at once; 200 with its ``revoked_ms``.

The patient's pages (no account: the link's token and the code are the credentials):

* ``GET /share/{token}``: the code form, or the studies once a session of this link is open;
* ``POST /share/{token}`` (form ``code``): opens a session (cookie ``mftp_share``, HttpOnly,
  SameSite=Strict, Secure under TLS), then 303 back to the page;
* ``GET /share/{token}/download``: the ZIP (if the share allows downloads);
* ``POST /share/{token}/leave``: forgets the session;
* ``GET /share-static/share.css`` and ``share.js``: ours, served by the node.

Every patient answer carries ``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``
(:data:`~.pages.SECURITY_HEADERS`).  A link that cannot be used answers the same 404 page
whatever the reason.  The patient's POSTs are public by nature (there is no account): each
checks that it comes from our own origin, and the code form is what the share's lock guards.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import segno
from aiohttp import web

from ..api.auth import principal_of
from ..api.openapi import operation, path_param
from ..api.server import read_json
from ..errors import NodeUsageError
from ..people.errors import RateLimited
from ..people.roles import Permission, public, requires, sign_in_step
from ..people.sessions import Principal
from ..people.signin import acting_user
from .core import Share, Terms, format_code, state_at
from .pages import SCRIPT, SECURITY_HEADERS, STYLE, busy_page, code_page, study_page, unavailable_page
from .service import COOKIE_NAME, CodeRefused, ShareService, ShareSessionRefused, ShareUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("mftp.node.shares")
DAY_MS: Final = 86_400_000
MAX_FORM_BYTES: Final = 1024
CREATE_FIELDS: Final = {"transfer_ids", "from", "until", "max_opens", "download", "mode", "label", "user"}


def _day_ms(text: object, name: str) -> int:
    if not isinstance(text, str):
        raise NodeUsageError(f"{name} is a date as YYYY-MM-DD")
    try:
        day = datetime.date.fromisoformat(text.strip())
    except ValueError:
        raise NodeUsageError(f"{name} is a date as YYYY-MM-DD") from None
    return (day - datetime.date(1970, 1, 1)).days * DAY_MS


def _iso_day(time_ms: int) -> str:
    return datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def share_view(share: Share, now_ms: int) -> dict[str, Any]:
    """A share as the clinician lists it: no token, no code, no patient id."""
    t = share.terms
    return {
        "share_id": share.share_id,
        "state": state_at(share, now_ms).value,
        "transfer_ids": list(share.transfer_ids),
        "label": share.label,
        "from_ms": t.valid_from_ms,
        "until_ms": t.valid_until_ms,
        "max_opens": t.max_opens,
        "opens": share.opens,
        "failures": share.failures,
        "download": t.download,
        "mode": t.mode,
        "created_ms": share.created_ms,
        "revoked_ms": share.revoked_ms,
        "records": list(share.records),
    }


def patient_page(handler: Callable[[Any, web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """Answer a patient's request with our own pages only, whatever goes wrong.

    The node's error middleware logs the request path of a 500, and a share's path holds its
    token: so every error is answered here, logged by its type alone, as a plain page.
    """

    @functools.wraps(handler)
    async def answer(self: Any, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except NodeUsageError:  # our refusals the handler did not turn into a page (a mempool refusal)
            return _patient_html(_trouble_page(), 503)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.error("patient share page failed", extra={"fields": {"error": type(exc).__name__}})
            return _patient_html(_trouble_page(), 500)

    return answer


def _trouble_page() -> str:
    return unavailable_page().replace(
        "This link to medical images cannot be used.",
        "This page cannot be shown right now; please try later.",
    )


def _patient_html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def _same_origin(request: web.Request) -> bool:
    """Whether a browser POST comes from our own pages.

    Our pages send no referrer, so a browser's form POST carries ``Origin: null``; browsers
    that send Fetch Metadata say where the request comes from in ``Sec-Fetch-Site``, which
    is trusted first.  Without it, an ``Origin`` must be ours (none at all: not a browser form).
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


class ShareApi:
    """The share routes over a :class:`ShareService` (see the module docstring)."""

    def __init__(self, service: ShareService, *, public_url: str = "", institution: str = "") -> None:
        self.service = service
        self.public_url = public_url.rstrip("/")  # the node as patients reach it; else the request's
        self.institution = institution or "your hospital"

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Register the routes, each behind ``authenticated`` (the patient's ones are public)."""
        router.add_post("/shares", authenticated(self.create))
        router.add_get("/shares", authenticated(self.list))
        router.add_get("/shares/{share_id}", authenticated(self.get))
        router.add_post("/shares/{share_id}/revoke", authenticated(self.revoke))
        router.add_get("/share-static/{name}", authenticated(self.static))
        router.add_get("/share/{token}", authenticated(self.page))
        router.add_post("/share/{token}", authenticated(self.enter_code))
        router.add_get("/share/{token}/download", authenticated(self.download))
        router.add_post("/share/{token}/leave", authenticated(self.leave))

    def openapi_paths(self) -> dict[str, Any]:
        """The OpenAPI paths of the share routes (the patient's pages are HTML)."""
        create = {
            "type": "object",
            "required": ["transfer_ids", "until"],
            "additionalProperties": False,
            "properties": {
                "transfer_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "from": {"type": "string", "description": "first day, YYYY-MM-DD (default today)"},
                "until": {"type": "string", "description": "last day the link works, YYYY-MM-DD (UTC)"},
                "max_opens": {"type": "integer", "minimum": 1},
                "download": {"type": "boolean"},
                "mode": {
                    "type": "string",
                    "description": "identified (default), pseudonymised, deidentified",
                },
                "label": {"type": "string"},
                "user": {"type": "string", "description": "optional; refused unless the signed-in user"},
            },
        }
        share, token = path_param("share_id", "the share's id"), path_param("token", "the link's token")
        html: dict[str, Any] = {"signed_in": False, "content_type": "text/html"}
        return {
            "/shares": {
                "post": operation(
                    "Share received studies with their patient (clinicians, step-up): the link, the "
                    "code and a QR code of the link, shown once",
                    status="201",
                    body=create,
                ),
                "get": operation("Every share of this node, newest first"),
            },
            "/shares/{share_id}": {"get": operation("One share", parameters=[share])},
            "/shares/{share_id}/revoke": {
                "post": operation("End a share at once (step-up)", parameters=[share])
            },
            "/share-static/{name}": {
                "get": operation(
                    "The patient pages' stylesheet and script",
                    signed_in=False,
                    content_type="text/plain",
                    parameters=[path_param("name", "a file name")],
                )
            },
            "/share/{token}": {
                "get": operation(
                    "The patient's page: the code form, or the studies", parameters=[token], **html
                ),
                "post": operation(
                    "Enter the code (a form): opens a session, or counts a failure towards the lock",
                    status="303",
                    parameters=[token],
                    sign_in_step=True,
                    **html,
                ),
            },
            "/share/{token}/download": {
                "get": operation(
                    "The shared studies as a ZIP with a DICOMDIR (when the share allows download)",
                    parameters=[token],
                    signed_in=False,
                    content_type="application/zip",
                )
            },
            "/share/{token}/leave": {
                "post": operation(
                    "Forget this link's session", status="303", parameters=[token], sign_in_step=True, **html
                )
            },
        }

    # ------------------------------------------------------------------ the clinician's API

    def _principal(self, request: web.Request, body: dict[str, Any] | None = None) -> Principal:
        """The signed-in clinician; a body naming another user is refused (issue 16)."""
        principal = principal_of(request)
        named = (body or {}).get("user")
        acting_user(principal, named if isinstance(named, str) else None)
        return principal

    @requires(Permission.STUDY_SHARE_PATIENT)
    async def create(self, request: web.Request) -> web.Response:
        """Share received studies with their patient; the link, code and QR code, once."""
        body = await read_json(request)
        if not isinstance(body, dict) or not {"transfer_ids", "until"} <= body.keys() <= CREATE_FIELDS:
            raise web.HTTPBadRequest(
                text="expected a JSON object with transfer_ids and until, and optionally from, "
                "max_opens, download, mode, label"
            )
        ids = body["transfer_ids"]
        if not isinstance(ids, list) or not all(isinstance(t, str) for t in ids):
            raise NodeUsageError("transfer_ids is a list of transfer ids")
        principal = self._principal(request, body)
        now = self.service.host.clock.now_ms()
        start = _day_ms(body["from"], "from") if "from" in body else now
        until = _day_ms(body["until"], "until") + DAY_MS  # the end date is the last day it works
        label = body.get("label", "")
        if not isinstance(label, str):
            raise NodeUsageError("label is text")
        terms = Terms(
            start,
            until,
            max_opens=body.get("max_opens", 10),
            download=body.get("download", False),
            mode=body.get("mode", "identified"),
        )
        created = await self.service.create(principal, ids, terms, label)
        link = f"{self._base(request)}/share/{created.token}"
        qr = segno.make(link, error="m").svg_inline(scale=4, title="QR code of the link")
        view = share_view(created.share, now)
        headers = {"Cache-Control": "no-store"}  # the answer holds the secrets
        return web.json_response(
            {**view, "link": link, "code": format_code(created.code), "qr_svg": qr},
            status=201,
            headers=headers,
        )

    @requires(Permission.STUDY_VIEW)
    async def list(self, request: web.Request) -> web.Response:
        """Every share of this node, newest first."""
        now = self.service.host.clock.now_ms()
        return web.json_response({"shares": [share_view(s, now) for s in self.service.shares()]})

    @requires(Permission.STUDY_VIEW)
    async def get(self, request: web.Request) -> web.Response:
        """One share."""
        share = self.service.get(request.match_info["share_id"])
        return web.json_response(share_view(share, self.service.host.clock.now_ms()))

    @requires(Permission.STUDY_SHARE_PATIENT)
    async def revoke(self, request: web.Request) -> web.Response:
        """End a share at once; the revocation's record says when it took effect."""
        body: dict[str, Any] = {}
        if request.can_read_body:
            read = await read_json(request)
            body = read if isinstance(read, dict) else {}
        share = await self.service.revoke(self._principal(request, body), request.match_info["share_id"])
        return web.json_response(share_view(share, self.service.host.clock.now_ms()))

    def _base(self, request: web.Request) -> str:
        return self.public_url or f"{request.scheme}://{request.host}"

    # ------------------------------------------------------------------ the patient's pages

    @public()
    @patient_page
    async def static(self, request: web.Request) -> web.Response:
        """Our stylesheet and script (nothing comes from the internet)."""
        name = request.match_info["name"]
        files = {"share.css": (STYLE, "text/css"), "share.js": (SCRIPT, "application/javascript")}
        if name not in files:
            raise web.HTTPNotFound(text="no such file", headers=SECURITY_HEADERS)
        text, kind = files[name]
        return web.Response(text=text, content_type=kind, headers=SECURITY_HEADERS)

    def _open_share(
        self, request: web.Request, token: str, asking: str = "", status: int = 200
    ) -> Share | web.Response:
        """The share this request's session opened, or the page to answer instead: the code form
        (``asking``, ``status``) for a live link without a session, the plain 404 page otherwise."""
        try:
            return self.service.session(request.cookies.get(COOKIE_NAME), token)
        except ShareUnavailable:
            return _patient_html(unavailable_page(), 404)
        except ShareSessionRefused:
            try:
                self.service.find(token)
            except ShareUnavailable:
                return _patient_html(unavailable_page(), 404)
            return _patient_html(code_page(f"/share/{token}", asking), status)

    @public()
    @patient_page
    async def page(self, request: web.Request) -> web.Response:
        """The code form, or the studies once this link's session is open."""
        token = request.match_info["token"]
        share = self._open_share(request, token)
        if isinstance(share, web.Response):
            return share
        entries = await self.service.seen(share)
        return _patient_html(
            study_page(
                share,
                self.institution,
                base=f"/share/{token}",
                viewer_links=self.service.viewer_links(share),
                seen=entries,
                expires=_iso_day(share.terms.valid_until_ms - 60_000),  # the last minute it works
            )
        )

    @sign_in_step()  # a patient has no account: the link's token, the code and the share's lock guard it
    @patient_page
    async def enter_code(self, request: web.Request) -> web.Response:
        """Check the code; open a session and go back to the page, which now shows the studies."""
        token = request.match_info["token"]
        if not _same_origin(request):
            return _patient_html(unavailable_page(), 403)
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return _patient_html(code_page(f"/share/{token}", "That is not a code."), 413)
        form = await request.post()
        code = form.get("code", "")
        try:
            session_id, _ = await self.service.open(
                token, code if isinstance(code, str) else "", _address(request)
            )
        except ShareUnavailable:
            return _patient_html(unavailable_page(), 404)
        except CodeRefused as exc:
            return _patient_html(code_page(f"/share/{token}", str(exc).capitalize() + "."), 401)
        except RateLimited as exc:
            answer = _patient_html(busy_page(exc.retry_after_s), 429)
            answer.headers["Retry-After"] = str(max(1, int(exc.retry_after_s)))
            return answer
        answer = _see_other(f"/share/{token}")
        answer.set_cookie(
            COOKIE_NAME, session_id, httponly=True, samesite="Strict", secure=request.secure, path="/"
        )
        return answer

    @public()
    @patient_page
    async def download(self, request: web.Request) -> web.StreamResponse:
        """The ZIP of the shared studies, streamed as it is made."""
        token = request.match_info["token"]
        share = self._open_share(request, token, "Enter your code first.", 401)
        if isinstance(share, web.Response):
            return share
        if not share.terms.download:
            return _patient_html(unavailable_page(), 403)
        chunks = await self.service.download(share)
        answer = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "application/zip",
                "Content-Disposition": 'attachment; filename="medical-images.zip"',
            }
        )
        await answer.prepare(request)
        try:
            async for chunk in chunks:
                if chunk:
                    await answer.write(chunk)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the browser went away
        except Exception as exc:  # too late for a page: the ZIP stops short, without its directory
            log.error("patient share download failed", extra={"fields": {"error": type(exc).__name__}})
            return answer
        await answer.write_eof()
        return answer

    @sign_in_step()  # ending one's own session: same-origin only, and it can only forget
    @patient_page
    async def leave(self, request: web.Request) -> web.Response:
        """Forget the session; back to the code form."""
        token = request.match_info["token"]
        if not _same_origin(request):
            return _patient_html(unavailable_page(), 403)
        self.service.end_session(request.cookies.get(COOKIE_NAME))
        answer = _see_other(f"/share/{token}")
        answer.del_cookie(COOKIE_NAME, path="/")
        return answer


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


def _address(request: web.Request) -> str:
    return request.remote or "unknown"
