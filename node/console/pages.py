"""The console's static pages: a fixed set of our own files, served with strict headers.

The set of files is read once when the node starts (:class:`ConsolePages`): a request names one
of them or gets a 404, so no path a caller sends ever reaches the file system.  The pages are
public (they hold no data; every figure comes from the API behind the gate), and every answer
carries a Content-Security-Policy that allows scripts, styles, images, fonts and connections from
this origin only, no framing, and no referrer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from ..people.roles import public

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC_DIR: Final = Path(__file__).parent / "static"
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Pages change with the node's version; revalidate rather than run yesterday's script.
    "Cache-Control": "no-cache",
}


def security_headers(response: web.StreamResponse) -> web.StreamResponse:
    """Add the console's security headers to ``response``."""
    response.headers.update(SECURITY_HEADERS)
    return response


class ConsolePages:
    """``GET /`` (a redirect), ``GET /console/`` and ``GET /console/{name}``."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        for path in sorted(directory.rglob("*")):
            content_type = CONTENT_TYPES.get(path.suffix)
            if path.is_file() and content_type is not None:
                self.files[path.relative_to(directory).as_posix()] = (path.read_bytes(), content_type)

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Register the routes, each behind ``authenticated`` (public: the pages hold no data)."""
        router.add_get("/", authenticated(self.root))
        router.add_get("/console", authenticated(self.root))
        router.add_get("/console/", authenticated(self.index))
        router.add_get("/console/{name:.+}", authenticated(self.page))

    @public()
    async def root(self, request: web.Request) -> web.Response:
        """Redirect to the console."""
        return security_headers(web.Response(status=302, headers={"Location": "/console/"}))  # type: ignore[return-value]

    @public()
    async def index(self, request: web.Request) -> web.Response:
        """The sign-in page."""
        return self._answer("index.html")

    @public()
    async def page(self, request: web.Request) -> web.Response:
        """One of the console's files (404 for any other name)."""
        return self._answer(request.match_info["name"])

    def _answer(self, name: str) -> web.Response:
        found = self.files.get(name)
        if found is None:
            raise web.HTTPNotFound(text="no such page")
        body, content_type = found
        response = web.Response(body=body, headers={"Content-Type": content_type})
        security_headers(response)
        return response
