"""The OHIF viewer, served by the node under ``/ohif/`` beside its DICOMweb root ``/dicom-web``.

``make viewer`` unpacks the prebuilt ``@ohif/app`` (version pinned in the Makefile) into
``.ohif/dist`` (git-ignored) and gzips each text and wasm file beside it (``.gz``), so static
answers are compressed without spending the node's CPU per request.

Why a sub-path, and the files changed on the way: the prebuilt app is built for the root
(``window.PUBLIC_URL="/"`` in ``index.html``, webpack's public path ``"/"`` in ``app.bundle`` and
in each bundle that runs a runtime of its own (the web workers), the font URL in
``app.bundle.css``), and the node's JSON API owns the root (``/status``, ``/transfers``...), where
"every unknown path is the app" would turn a mistyped API call into a 200 of HTML.  So those
files are rewritten in memory to ``/ohif/`` (each replacement checked: an app whose files do not
hold the expected text is refused at start, not served half-working), and ``routerBasename`` is
``/ohif``: the viewer of a study is ``/ohif/viewer?StudyInstanceUIDs=<uid>``.

``app-config.js`` is generated: its only data source is this node's DICOMweb root, on the origin
the browser used; OHIF's first-visit tour is off (:func:`app_config` says why).  Files whose
names carry a content hash get a year of cache lifetime (immutable); other files a day;
``index.html`` and the configuration are revalidated each time.  Paths without an extension
that name no file serve ``index.html`` (the app's own routes).
"""

from __future__ import annotations

import gzip
import json
import mimetypes
import re
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ..errors import NodeUsageError

BASE: Final = "/ohif/"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
A_DAY: Final = "public, max-age=86400"
REVALIDATE: Final = "no-cache"
_HASHED: Final = re.compile(r"(^|[./])[0-9a-f]{16,}\.(js|css|wasm|woff2?|map)$")
_PUBLIC_PATH: Final = b'__webpack_require__.p = "/";'  # webpack's public path, as the app is built
_TYPES: Final = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}


def default_dist() -> Path:
    """Where ``make viewer`` puts the app: ``.ohif/dist`` at the top of the source tree."""
    return Path(__file__).resolve().parent.parent.parent / ".ohif" / "dist"


def app_config(base: str = BASE) -> str:
    """The generated ``app-config.js``: one DICOMweb data source, this node, on the page's origin."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "mftp",
        "configuration": {
            "friendlyName": "This MFTP node",
            "name": "mftp",
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": True,
            "singlepart": "bulkdata,video",
            "acceptHeader": ["multipart/related; type=application/octet-stream; transfer-syntax=*"],
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config: dict[str, Any] = {
        "routerBasename": base.rstrip("/") or "/",
        "showStudyList": True,
        "investigationalUseDialog": {"option": "never"},
        # No first-visit tour: it opens over the image in every browser profile that has not
        # seen it (shared workstations often reset profiles at sign-out), and while it shows its
        # overlay is moved on every animation frame: in Chromium without a GPU, 0.7 of a core
        # (renderer 0.3, GPU process 0.4; 10 s measured) for as long as nobody closes it.
        "customizationService": {"ohif.tours": {"$set": []}},
        "extensions": [],
        "modes": [],
        "defaultDataSourceName": "mftp",
        "dataSources": [source],
    }
    roots = "".join(
        f"window.config.dataSources[0].configuration.{name} = window.location.origin + '/dicom-web';\n"
        for name in ("qidoRoot", "wadoRoot", "wadoUriRoot")
    )
    return f"window.config = {json.dumps(config, indent=1)};\n{roots}{SOFTWARE_GPU_JS}"


SOFTWARE_GPU_JS: Final = """(function () {
  // Without a GPU (virtual desktops, thin clients, headless browsers) WebGL is emulated on the
  // CPU, and OHIF's own CPU path draws a 2D stack sooner: use it there.  Where there is no WebGL
  // at all (Chrome >= 139 without a GPU, unless a policy allows SwiftShader) OHIF's WebGL path
  // fails outright and the CPU path is the only one that shows images.  A real GPU keeps WebGL,
  // which MPR and 3D need; `?viewportRendering=webgl` forces WebGL for one session.
  var key = 'mftp.viewer.softwareGpu', agent = navigator.userAgent, known = null;
  try { known = JSON.parse(localStorage.getItem(key) || 'null'); } catch (e) {}
  var software = known && known.agent === agent ? known.software : null;
  if (software === null) {
    software = true;  // no WebGL context at all: the CPU path too
    try {
      var canvas = document.createElement('canvas');
      var gl = canvas.getContext('webgl2') || canvas.getContext('webgl');
      if (gl) {
        var debug = gl.getExtension('WEBGL_debug_renderer_info');
        var renderer = String(gl.getParameter(debug ? debug.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
        software = /swiftshader|llvmpipe|softpipe|software|basic render/i.test(renderer);
        var lose = gl.getExtension('WEBGL_lose_context');
        if (lose) lose.loseContext();
        // Kept only when a context was made: a GPU process that failed once must not pin this
        // browser to the CPU path.
        localStorage.setItem(key, JSON.stringify({agent: agent, software: software}));
      }
    } catch (e) {}
  }
  if (software) window.config.useCPURendering = true;
})();
"""
"""Appended to ``app-config.js``: CPU rendering where WebGL is software-emulated or absent (without
WebGL, OHIF 3.13's WebGL path stops with "Something went wrong"; tested in Chromium).  Measured in
Chromium with SwiftShader on the 2-core test machine, medians of 4 openings of each kind with the
app's files fetched each time: a 2D stack's first image 5.4 s instead of 7.2 s on a first opening,
3.1 s instead of 5.3 s on the next.  The finding is kept per browser in ``localStorage`` (the
browser's name and one boolean) because a first WebGL context cost up to 0.7 s there."""


class OhifApp:
    """The static files of the prebuilt viewer under :data:`BASE` (see the module docstring)."""

    def __init__(self, dist: Path, base: str = BASE) -> None:
        self.dist = dist.resolve()
        self.base = base
        self._patched: dict[str, bytes] = {}
        self._gzipped: dict[str, bytes] = {}
        self.config = app_config(base).encode()
        index = self.dist / "index.html"
        if not index.is_file():
            raise NodeUsageError(f"the OHIF viewer is not installed at {self.dist}: run `make viewer`")
        self._patched["index.html"] = self._patch_index(index.read_bytes())
        public_path = f'__webpack_require__.p = "{base}";'.encode()
        for pattern, old, new in (
            ("app.bundle.*.js", _PUBLIC_PATH, public_path),
            ("app.bundle.css", b"url(/", f"url({base}".encode()),
        ):
            for path in self.dist.glob(pattern):
                data = path.read_bytes()
                if old not in data:
                    raise NodeUsageError(f"{path.name} of the OHIF viewer is not the expected build")
                self._patched[path.name] = data.replace(old, new)
        # The web workers (histogram, compute, interpolation...) carry a runtime of their own,
        # with the root as public path too: their chunks would be asked of the API, not the app.
        for path in self.dist.glob("*.js"):
            if path.name not in self._patched and _PUBLIC_PATH in (data := path.read_bytes()):
                self._patched[path.name] = data.replace(_PUBLIC_PATH, public_path)

    def _patch_index(self, html: bytes) -> bytes:
        marker = b'window.PUBLIC_URL="/"'
        if marker not in html:
            raise NodeUsageError("index.html of the OHIF viewer is not the expected build")
        html = html.replace(marker, f'window.PUBLIC_URL="{self.base}"'.encode())
        # Absolute references of the page itself (scripts, styles, icons) move under the base.
        return re.sub(rb'(href|src)="/(?!/)', lambda m: m.group(1) + f'="{self.base}'.encode(), html)

    def _file(self, tail: str) -> Path | None:
        """The file ``tail`` names inside the app, or ``None`` (no escaping the folder, no links)."""
        if not tail or "\\" in tail or "\0" in tail:
            return None
        parts = tail.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        path = self.dist.joinpath(*parts)
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_file() or not resolved.is_relative_to(self.dist) or path.is_symlink():
            return None
        return resolved

    def _cache_control(self, name: str) -> str:
        if name in ("index.html", "app-config.js"):
            return REVALIDATE
        return IMMUTABLE if _HASHED.search(name) else A_DAY

    def _memory(self, request: web.Request, name: str, data: bytes, content_type: str) -> web.Response:
        headers = {"Cache-Control": self._cache_control(name), "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", "") and len(data) > 1024:
            packed = self._gzipped.get(name)
            if packed is None:
                packed = self._gzipped[name] = gzip.compress(data, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
            data = packed
        return web.Response(body=data, headers={**headers, "Content-Type": content_type})

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """Answer ``GET /ohif/{tail}``."""
        tail = request.match_info.get("tail", "")
        if tail == "app-config.js":
            return self._memory(request, tail, self.config, "text/javascript")
        if tail in self._patched:
            suffix = Path(tail).suffix
            kind = _TYPES.get(suffix) or mimetypes.guess_type(tail)[0] or "application/octet-stream"
            return self._memory(request, tail, self._patched[tail], kind)
        path = self._file(tail)
        if path is None:
            if "." in tail.rsplit("/", 1)[-1]:
                raise web.HTTPNotFound(text="no such file of the viewer")
            return self._memory(request, "index.html", self._patched["index.html"], "text/html")
        headers = {"Cache-Control": self._cache_control(path.name)}
        if path.suffix in _TYPES:
            headers["Content-Type"] = _TYPES[path.suffix]
        response = web.FileResponse(path, headers=headers)  # serves the .gz beside it when accepted
        return response

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        """``/ohif`` -> ``/ohif/``."""
        raise web.HTTPPermanentRedirect(self.base)
