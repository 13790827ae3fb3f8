"""The DICOMweb routes (``/dicom-web/...``, QIDO-RS and WADO-RS) and the OHIF app (``/ohif/...``).

Every DICOMweb route needs :attr:`~mftp.node.people.roles.Permission.STUDY_VIEW` and answers
only within the caller's :class:`~.catalog.Scope`: a study the caller may not see is a 404 on
every route, exactly like one that does not exist.  The first WADO-RS read of a study's
metadata, instances, frames, bulk data or renderings by a session or token signs one
``STUDY_ACCESSED`` record (action ``view``) before anything is served (:meth:`.catalog.Catalog.opened`);
QIDO searches, which list studies without opening one, record nothing.

Answers carry patient data: ``Cache-Control: no-store``.  The viewer's static files are public
(code, no data: :mod:`.ohif`).

QIDO: ``/studies``, ``/series``, ``/instances``, ``/studies/{st}/series``,
``/studies/{st}/instances``, ``/studies/{st}/series/{se}/instances`` (:mod:`.qido`).
WADO: ``/studies/{st}[/series/{se}[/instances/{sop}]]`` (instances, ``multipart/related;
type="application/dicom"``, as stored: a ``transfer-syntax`` other than ``*`` or the stored one
is 406, nothing is transcoded), the same with ``/metadata``, ``.../frames/{list}`` (as stored
with ``transfer-syntax=*``, else decoded to Explicit VR Little Endian), ``.../bulkdata/{tag}``,
``.../rendered``, ``.../frames/{list}/rendered`` and ``/thumbnail`` at each level.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import pydicom
from aiohttp import web
from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from mftp.crypto.signing import SigningIdentity

from ..api.auth import PRINCIPAL, SHARE_SCOPE
from ..api.openapi import operation, path_param
from ..people.roles import RULE_ATTRIBUTE, Permission, public, requires, rule_of
from ..people.sessions import Principal
from ..transfers.service import TransferService
from . import dicomjson, frames, index, qido
from .catalog import Catalog, NotFound, Scope, credential_key
from .frames import CannotDecode
from .index import InstanceInfo
from .multipart import NotAcceptable, Part, encode_multipart, multipart_parts, parse_accept
from .ohif import OhifApp, default_dist

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ScopeOf = Callable[[Principal], Scope]
ROOT: Final = "/dicom-web"
NO_STORE: Final = {"Cache-Control": "no-store"}
COMPRESS_JSON_MIN_BYTES: Final = 1024
DICOM_JSON: Final = "application/dicom+json"
OCTETS: Final = "application/octet-stream"
# The media type of a compressed frame as stored (PS3.18 table 8.7.3-5), by transfer syntax.
FRAME_TYPES: Final = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}


_ST, _SE, _SOP = "/studies/{study}", "/series/{series}", "/instances/{sop}"
_MULTIPART = "multipart/related"
_DOCUMENTED: Final = (
    ("/studies", "QIDO-RS: search the studies you may see", "json"),
    ("/series", "QIDO-RS: search series", "json"),
    ("/instances", "QIDO-RS: search instances", "json"),
    (f"{_ST}/series", "QIDO-RS: the series of a study", "json"),
    (f"{_ST}/instances", "QIDO-RS: the instances of a study", "json"),
    (f"{_ST}{_SE}/instances", "QIDO-RS: the instances of a series", "json"),
    (_ST, "WADO-RS: a study's instances (multipart/related; application/dicom)", _MULTIPART),
    (f"{_ST}{_SE}", "WADO-RS: a series' instances", _MULTIPART),
    (f"{_ST}{_SE}{_SOP}", "WADO-RS: one instance, byte for byte", _MULTIPART),
    (f"{_ST}/metadata", "WADO-RS: a study's metadata (DICOM JSON, bulk data by URI)", "json"),
    (f"{_ST}{_SE}/metadata", "WADO-RS: a series' metadata, computed once at receipt", "json"),
    (f"{_ST}{_SE}{_SOP}/metadata", "WADO-RS: an instance's metadata", "json"),
    (
        f"{_ST}{_SE}{_SOP}/frames/{{frames}}",
        "WADO-RS: frames (transfer-syntax=*, or raw)",
        _MULTIPART,
    ),
    (f"{_ST}{_SE}{_SOP}/bulkdata/{{tag}}", "WADO-RS: one bulk data value", _MULTIPART),
    (f"{_ST}{_SE}{_SOP}/rendered", "WADO-RS: the instance rendered (PNG or JPEG)", "image/png"),
    (f"{_ST}{_SE}{_SOP}/frames/{{frames}}/rendered", "WADO-RS: a frame rendered", "image/png"),
    (f"{_ST}/thumbnail", "WADO-RS: a study's thumbnail", "image/png"),
    (f"{_ST}{_SE}/thumbnail", "WADO-RS: a series' thumbnail", "image/png"),
    (f"{_ST}{_SE}{_SOP}/thumbnail", "WADO-RS: an instance's thumbnail", "image/png"),
)


def default_scope(principal: Principal) -> Scope:
    """A clinician sees their own and the institution's studies; a share sees nothing until issue 19."""
    if principal.via == "share":
        return Scope.share(())
    return Scope.clinician(principal.party_id)


def _statuses(handler: Handler) -> Handler:
    """``handler`` with the viewer's refusals as their HTTP statuses (404, 406), its rule kept."""

    async def translated(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except NotFound as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        except (NotAcceptable, CannotDecode) as exc:
            raise web.HTTPNotAcceptable(text=str(exc)) from None

    rule = rule_of(handler)
    if rule is not None:
        setattr(translated, RULE_ATTRIBUTE, rule)
    return translated


def _principal(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if principal is None:
        raise web.HTTPUnauthorized(text="sign in to view studies")
    return principal


def _parse(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


class ViewingRoutes:
    """DICOMweb over a :class:`~.catalog.Catalog`, and the OHIF app (see the module docstring)."""

    def __init__(
        self, catalog: Catalog, *, ohif: OhifApp | None = None, scope_of: ScopeOf = default_scope
    ) -> None:
        self.catalog = catalog
        self.ohif = ohif
        self.scope_of = scope_of

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Register the routes, each behind ``authenticated``."""
        st, se, sop = "/studies/{study}", "/series/{series}", "/instances/{sop}"
        routes: list[tuple[str, Handler]] = [
            ("/studies", self.search_studies),
            ("/series", self.search_series),
            ("/instances", self.search_instances),
            (f"{st}/series", self.search_series),
            (f"{st}/instances", self.search_instances),
            (f"{st}{se}/instances", self.search_instances),
            (st, self.retrieve),
            (f"{st}{se}", self.retrieve),
            (f"{st}{se}{sop}", self.retrieve),
            (f"{st}/metadata", self.metadata),
            (f"{st}{se}/metadata", self.metadata),
            (f"{st}{se}{sop}/metadata", self.metadata),
            (f"{st}{se}{sop}/frames/{{frames}}", self.frames),
            (f"{st}{se}{sop}/bulkdata/{{tag}}", self.bulkdata),
            (f"{st}{se}{sop}/rendered", self.rendered),
            (f"{st}{se}{sop}/frames/{{frames}}/rendered", self.rendered),
            (f"{st}/thumbnail", self.thumbnail),
            (f"{st}{se}/thumbnail", self.thumbnail),
            (f"{st}{se}{sop}/thumbnail", self.thumbnail),
        ]
        for path, handler in routes:
            router.add_get(ROOT + path, authenticated(_statuses(handler)))
        if self.ohif is not None:
            router.add_get("/ohif", authenticated(self.ohif_redirect))
            router.add_get("/ohif/{tail:.*}", authenticated(self.ohif_file))

    def openapi_paths(self) -> dict[str, Any]:
        """The OpenAPI paths of DICOMweb (PS3.18) and of the OHIF app."""
        names = {
            "study": "Study Instance UID",
            "series": "Series Instance UID",
            "sop": "SOP Instance UID",
            "frames": "frame numbers, from 1, comma-separated",
            "tag": "the attribute's tag, 8 hex digits",
        }
        dicom_json = "application/dicom+json"
        paths: dict[str, Any] = {}
        for path, summary, kind in _DOCUMENTED:
            params = [
                path_param(n, names[n])
                for n in ("study", "series", "sop", "frames", "tag")
                if f"{{{n}}}" in path
            ]
            op = operation(summary, parameters=params, content_type=kind if kind != "json" else dicom_json)
            op["responses"]["406"] = {"description": "a media type or transfer syntax this node cannot give"}
            paths[ROOT + path] = {"get": op}
        if self.ohif is not None:
            app: dict[str, Any] = {"signed_in": False, "content_type": "text/html"}
            paths["/ohif"] = {"get": operation("The OHIF viewer (a redirect to /ohif/)", status="302", **app)}
            paths["/ohif/{tail}"] = {
                "get": operation(
                    "The OHIF viewer's files; unknown paths without an extension serve the app",
                    parameters=[path_param("tail", "a file of the app, or an app route")],
                    **app,
                )
            }
        return paths

    @classmethod
    def for_node(
        cls, transfers: TransferService, identity: SigningIdentity, ohif_dist: Path | None = None
    ) -> ViewingRoutes:
        """The viewing of a running node: its catalog, told of arriving files, and OHIF if installed.

        The wiring in :mod:`mftp.node.process` is ``viewing = ViewingRoutes.for_node(transfers,
        identity)`` at start and ``viewing.add_routes(app.router, authenticated)`` with the API.
        """
        catalog = Catalog(
            store=transfers.store,
            states=transfers.states,
            identity=identity,
            record_access=transfers.access.record_access,
            workers=transfers.pool,
        )
        transfers.receiver.verified_listeners.append(catalog.on_verified)
        dist = ohif_dist or default_dist()
        return cls(catalog, ohif=OhifApp(dist) if (dist / "index.html").is_file() else None)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def base(request: web.Request) -> str:
        """The DICOMweb root as the client reached it (bulk data URIs point there).

        Some clients (dicomweb-client) send a Host header without the port; when the host is
        the very address the client connected to, the port it connected to is added.  A name
        without a port is left alone: behind a proxy it means the default port of the scheme.
        """
        host = request.host
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname and ":" not in host.rsplit("]", 1)[-1] and host.strip("[]") == str(sockname[0]):
            address = f"[{sockname[0]}]" if ":" in str(sockname[0]) else str(sockname[0])
            host = f"{address}:{sockname[1]}"
        return f"{request.scheme}://{host}{ROOT}"

    def _scope(self, request: web.Request) -> Scope:
        principal = _principal(request)
        shared = request.get(SHARE_SCOPE)
        if principal.via == "share" and shared is not None:  # a patient's share: its studies only
            return Scope.share(getattr(shared, "study_uids", ()), getattr(shared, "transfer_ids", ()))
        return self.scope_of(principal)

    async def _selected(self, request: web.Request) -> list[tuple[str, InstanceInfo]]:
        """The visible instances the path names (study, series, instance); 404 if none."""
        m = request.match_info
        found = await self.catalog.instances(self._scope(request), m["study"])
        if "series" in m:
            found = [(t, i) for t, i in found if i.series == m["series"]]
        if "sop" in m:
            found = [(t, i) for t, i in found if i.sop == m["sop"]]
        if not found:
            raise NotFound("no such series or instance")
        return sorted(found, key=lambda ti: (ti[1].series, ti[1].number, ti[1].sop))

    async def _opened(self, request: web.Request, found: list[tuple[str, InstanceInfo]]) -> None:
        if _principal(request).via == "share":
            return  # a patient's opening was recorded when the code opened the share (share-view)
        credential = credential_key(request.headers, request.cookies)
        await self.catalog.opened(credential, _principal(request).party_id, {t for t, _ in found})

    @staticmethod
    def _json(request: web.Request, data: bytes, extra: dict[str, str] | None = None) -> web.Response:
        ranges = parse_accept(request.headers.get("Accept"))
        if not any(r.matches(DICOM_JSON) or r.matches("application/json") for r in ranges):
            raise NotAcceptable("this resource is application/dicom+json")
        headers = {**NO_STORE, "Content-Type": DICOM_JSON, "Vary": "Accept-Encoding", **(extra or {})}
        response = web.Response(body=data, headers=headers)
        if len(data) >= COMPRESS_JSON_MIN_BYTES:
            # Gzip where the client accepts it, as Orthanc does: DICOM JSON repeats itself (the
            # metadata of a 100-slice CT series, 331 KB, is 7 KB gzipped in 1.7 ms), which a
            # clinician on a hospital's wide-area link waits for.  aiohttp compresses large
            # bodies in a thread.
            response.enable_compression()
        return response

    # ------------------------------------------------------------------ QIDO-RS

    async def _search(self, request: web.Request, level: str) -> web.Response:
        query = qido.parse_query(request.query.items(), level)
        scope, base = self._scope(request), self.base(request)
        study = request.match_info.get("study")
        series = request.match_info.get("series")
        everything: dict[str, InstanceInfo] = {}
        for idx in await self.catalog.indexes(scope):
            for info in idx.instances.values():
                wanted = study in (None, info.study) and series in (None, info.series)
                if wanted and scope.sees_study(info.study):
                    everything.setdefault(info.sop, info)
        if study is not None and not everything:
            raise NotFound("no such study or series")
        # Lower levels carry their study's attributes (and an instance its series'), as Orthanc does.
        by_study: dict[str, list[InstanceInfo]] = {}
        by_series: dict[tuple[str, str], list[InstanceInfo]] = {}
        for info in everything.values():
            by_study.setdefault(info.study, []).append(info)
            by_series.setdefault((info.study, info.series), []).append(info)
        studies = {uid: index.study_attributes(found, base) for uid, found in by_study.items()}
        if level == qido.STUDY:
            items = list(studies.values())
        elif level == qido.SERIES:
            items = [{**studies[k[0]], **index.series_attributes(g, base)} for k, g in by_series.items()]
        else:
            series_attrs = {k: index.series_attributes(g, base) for k, g in by_series.items()}
            items = [
                {
                    **studies[i.study],
                    **series_attrs[(i.study, i.series)],
                    **index.instance_attributes(i, base),
                }
                for i in everything.values()
            ]
        matching = [a for a in items if qido.matches(a, query)]
        matching.sort(key=_sort_key)
        headers = {"Warning": "299 mftp: " + "; ".join(query.warnings)} if query.warnings else None
        return self._json(request, dicomjson.encode(qido.page(matching, query)), headers)

    @requires(Permission.STUDY_VIEW, shared=True)
    async def search_studies(self, request: web.Request) -> web.Response:
        """QIDO-RS: studies."""
        return await self._search(request, qido.STUDY)

    @requires(Permission.STUDY_VIEW, shared=True)
    async def search_series(self, request: web.Request) -> web.Response:
        """QIDO-RS: series (of all studies, or of one)."""
        return await self._search(request, qido.SERIES)

    @requires(Permission.STUDY_VIEW, shared=True)
    async def search_instances(self, request: web.Request) -> web.Response:
        """QIDO-RS: instances (of all studies, of one study, or of one series)."""
        return await self._search(request, qido.INSTANCE)

    # ------------------------------------------------------------------ WADO-RS

    @requires(Permission.STUDY_VIEW, shared=True)
    async def metadata(self, request: web.Request) -> web.Response:
        """WADO-RS metadata of a study, series or instance (series arrays joined from stored bytes)."""
        found = await self._selected(request)
        await self._opened(request, found)
        base = self.base(request)
        if "sop" in request.match_info:
            body = dicomjson.json_array([found[0][1].meta])
        else:
            parts: list[bytes] = []
            done: set[tuple[str, str]] = set()
            for tid, info in found:
                if (tid, info.series) in done:
                    continue
                done.add((tid, info.series))
                idx = self.catalog.index_of(tid)
                if idx is None:
                    continue
                array = idx.series_metadata(info.study, info.series)
                if len(array) > 2:
                    parts.append(array[1:-1])
            body = b"[" + b",".join(parts) + b"]"
        return self._json(request, dicomjson.with_base(body, base))

    @requires(Permission.STUDY_VIEW, shared=True)
    async def retrieve(self, request: web.Request) -> web.Response:
        """WADO-RS instances of a study, series or instance, as stored (``application/dicom`` parts)."""
        found = await self._selected(request)  # first: what the caller may not see is a 404, whatever it asks
        choices = multipart_parts(parse_accept(request.headers.get("Accept")))
        for media, part in choices:
            if part in (None, "application/dicom"):
                wanted = media.param("transfer-syntax")
                break
        else:
            raise NotAcceptable('instances are served as multipart/related; type="application/dicom"')
        await self._opened(request, found)
        parts = []
        for tid, info in found:
            data = await self.catalog.read(tid, info)
            if wanted not in (None, "*"):
                syntax = await asyncio.to_thread(_syntax_of, data)
                if syntax != wanted:
                    raise NotAcceptable(f"instances are served in the syntax they were stored in ({syntax})")
            parts.append(Part(data, "application/dicom"))
        body, content_type = encode_multipart(parts, "application/dicom")
        return web.Response(body=body, headers={**NO_STORE, "Content-Type": content_type})

    async def _dataset(self, request: web.Request) -> Dataset:
        found = await self._selected(request)
        await self._opened(request, found)
        tid, info = found[0]
        return await asyncio.to_thread(_parse, await self.catalog.read(tid, info))

    @requires(Permission.STUDY_VIEW, shared=True)
    async def frames(self, request: web.Request) -> web.Response:
        """WADO-RS frames: as stored for ``transfer-syntax=*`` (or its own media type), else uncompressed."""
        ds = await self._dataset(request)
        choices = multipart_parts(parse_accept(request.headers.get("Accept")))
        if not choices:
            raise NotAcceptable("frames are served as multipart/related")
        numbers = frames.parse_frame_list(request.match_info["frames"], frames.frame_count(ds))
        stored_syntax = frames.transfer_syntax(ds)
        as_stored = False
        for media, part in choices:
            syntax = media.param("transfer-syntax")
            if part in (None, OCTETS) and syntax == "*":
                as_stored = True
                break
            if part in (None, OCTETS) and syntax in (None, ExplicitVRLittleEndian):
                break
            if (
                part is not None
                and part == FRAME_TYPES.get(str(stored_syntax))
                and syntax in (None, "*", stored_syntax)
            ):
                as_stored = True
                break
        else:
            raise NotAcceptable("frames are served as stored (transfer-syntax=*) or uncompressed")
        body, content_type = await asyncio.to_thread(_frame_parts, ds, numbers, as_stored)
        return web.Response(body=body, headers={**NO_STORE, "Content-Type": content_type})

    @requires(Permission.STUDY_VIEW, shared=True)
    async def bulkdata(self, request: web.Request) -> web.Response:
        """WADO-RS bulk data of one top-level attribute (Pixel Data: every frame as stored)."""
        try:
            tag = dicomjson.bulk_tag(request.match_info["tag"])
        except ValueError:
            raise NotFound("no such bulk data") from None
        ds = await self._dataset(request)
        if tag not in ds or ds[tag].value is None or not dicomjson.is_bulk(ds[tag]):
            raise NotFound("no such bulk data")  # only what the metadata names by a BulkDataURI
        ranges = parse_accept(request.headers.get("Accept"))
        single = next((r for r in ranges if r.matches(OCTETS) and r.media_type != "multipart/related"), None)
        if int(tag) in dicomjson.PIXEL_TAGS and frames.transfer_syntax(ds).is_encapsulated:
            body, content_type = await asyncio.to_thread(
                _frame_parts, ds, range(1, frames.frame_count(ds) + 1), True
            )
            return web.Response(body=body, headers={**NO_STORE, "Content-Type": content_type})
        value = bytes(ds[tag].value)
        if single is not None and not multipart_parts([r for r in ranges if r.q >= single.q]):
            return web.Response(body=value, headers={**NO_STORE, "Content-Type": OCTETS})
        if not multipart_parts(ranges):
            raise NotAcceptable("bulk data is application/octet-stream")
        body, content_type = encode_multipart([Part(value, OCTETS)], OCTETS)
        return web.Response(body=body, headers={**NO_STORE, "Content-Type": content_type})

    async def _render(
        self, request: web.Request, ds: Dataset, number: int, default_size: int | None
    ) -> web.Response:
        ranges = parse_accept(request.headers.get("Accept"))
        media = next((t for r in ranges for t in ("image/jpeg", "image/png") if r.matches(t)), None)
        if media is None:
            raise NotAcceptable("renderings are image/jpeg or image/png")
        quality_text = request.query.get("quality", "90")
        if not quality_text.isdigit() or not 1 <= int(quality_text) <= 100:
            raise web.HTTPBadRequest(text="quality runs from 1 to 100")
        viewport = frames.parse_viewport(request.query.get("viewport"), default_size)
        body = await asyncio.to_thread(frames.render, ds, number, media, viewport, int(quality_text))
        return web.Response(body=body, headers={**NO_STORE, "Content-Type": media})

    @requires(Permission.STUDY_VIEW, shared=True)
    async def rendered(self, request: web.Request) -> web.Response:
        """A rendered frame (JPEG or PNG) of an instance: the first, or the first of ``{frames}``."""
        ds = await self._dataset(request)
        count = frames.frame_count(ds)
        if not count:
            raise NotFound("this instance has no image")
        number = frames.parse_frame_list(request.match_info.get("frames", "1"), count)[0]
        return await self._render(request, ds, number, None)

    @requires(Permission.STUDY_VIEW, shared=True)
    async def thumbnail(self, request: web.Request) -> web.Response:
        """A small rendering: of the instance, or of the middle image of the series or study."""
        found = await self._selected(request)
        images = [(t, i) for t, i in found if "7FE00010" in i.meta.decode(errors="replace")]
        if not images:
            raise NotFound("no image here")
        await self._opened(request, images)
        tid, info = images[len(images) // 2]
        ds = await asyncio.to_thread(_parse, await self.catalog.read(tid, info))
        return await self._render(request, ds, 1, frames.DEFAULT_THUMBNAIL)

    # ------------------------------------------------------------------ OHIF

    @public()
    async def ohif_file(self, request: web.Request) -> web.StreamResponse:
        """The viewer's files (code, no patient data)."""
        assert self.ohif is not None
        return await self.ohif.serve(request)

    @public()
    async def ohif_redirect(self, request: web.Request) -> web.StreamResponse:
        """``/ohif`` -> ``/ohif/``."""
        assert self.ohif is not None
        return await self.ohif.redirect(request)


def _sort_key(attrs: dict[str, Any]) -> tuple[str, ...]:
    def first(tag: str) -> str:
        values = attrs.get(tag, {}).get("Value") or [""]
        return json.dumps(values[0]) if not isinstance(values[0], str) else values[0]

    # Newest study first, then series and instance numbers; UIDs settle ties (stable paging).
    return (
        "".join(chr(0x10FFFF - ord(c)) for c in first("00080020")),
        first("0020000D"),
        first("00200011").zfill(12),
        first("0020000E"),
        first("00200013").zfill(12),
        first("00080018"),
    )


def _syntax_of(data: bytes) -> UID:
    return frames.transfer_syntax(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))


def _frame_parts(ds: Dataset, numbers: Any, as_stored: bool) -> tuple[bytes, str]:
    parts = []
    for number in numbers:
        if as_stored:
            data, syntax = frames.stored_frame(ds, number)
        else:
            data, syntax = frames.decoded_frame(ds, number), ExplicitVRLittleEndian
        parts.append(Part(data, f"{OCTETS}; transfer-syntax={syntax}"))
    return encode_multipart(parts, OCTETS)
