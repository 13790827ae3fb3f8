"""The node's HTTP API (aiohttp), described by the OpenAPI document in :mod:`.openapi`.

Every route states the rule it needs (:func:`~mftp.node.people.roles.requires` or
:func:`~mftp.node.people.roles.public`) and is registered behind the :class:`~.auth.Gate`,
which enforces it: a signed-in session (cookie, with CSRF and origin checks on mutating
calls) or an API token, a role that allows the action, and for consequential actions a
second factor verified within the last minutes.  Reads of the ledger are public: it is
replicated to every member anyway, and the API listens on loopback unless configured
otherwise.  Transfers are private to the institution; views of a received study serve
patient data with ``Cache-Control: no-store``.

The acting user of every record is the signed-in principal (:func:`~mftp.node.people.signin.acting_user`):
a body may omit ``user``, and a body naming anyone else is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mftp.ledger.errors import LedgerError, LedgerUsageError, StoreError
from mftp.ledger.ledger import Ledger
from mftp.ledger.proofs import prove_extension, prove_record
from mftp.ledger.records import Record

from ..errors import NodeInputError, NodeUsageError, ResidencyRefused, StorageDamaged
from ..people.errors import AccessRefused, RateLimited
from ..people.roles import Permission, public, requires
from ..people.signin import acting_user
from . import models
from .auth import Gate, principal_of
from .ledger_json import block_view, certificate_view, header_view, stored_record_view, validators_view
from .openapi import (
    BLOCKS_FROM,
    BLOCKS_TO,
    CONSISTENCY_FROM,
    CONSISTENCY_TO,
    EXPORT_WAIT_MS,
    HEIGHT_PARAM,
    PROOF_HEIGHT,
    WAIT_MS,
    IntParam,
    openapi_document,
)

log = logging.getLogger("mftp.node.api.server")

MAX_RANGE_BLOCKS: Final = 100
MAX_WAIT_MS: Final = 30_000
"""The longest ``GET /blocks?wait_ms=`` waits for a block."""
MAX_WAITING_REQUESTS: Final = 64
"""Requests waiting for a block at once; beyond this they are answered at once (a client re-asks)."""
MAX_SUBMIT_RECORDS: Final = 1000
MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects in a request body (ours need 3)."""
LIVE_JOB_STATES: Final = frozenset({"queued", "running"})
FAILED_JOB_STATUS: Final = {"caller": 400, "storage": 500, "node": 500, "input": 502}
"""A failed job's fault as a status, as the error middleware maps the same errors."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=models.Body)


class NodeView(Protocol):
    """What the API needs from a running node."""

    ledger: Ledger
    registry: CollectorRegistry

    def status(self) -> dict[str, Any]:
        """Height, round, peers, role, sync state."""

    def peers(self) -> list[dict[str, Any]]:
        """Connected and configured peers."""

    async def submit_records(self, records: list[Record]) -> list[str]:
        """Offer signed records to the mempool; returns each admission result."""

    async def wait_for_height(self, height: int, timeout_s: float) -> None:
        """Return once block ``height`` is stored, or after ``timeout_s``."""


class StudyViews(Protocol):
    """Views of received studies (:class:`~mftp.node.transfers.access.StudyAccess`)."""

    async def open_view(self, transfer_id: str, user: str, purpose: str | None = None) -> dict[str, Any]:
        """Open a received study for ``user`` (records the access); the view and its instances."""

    async def read_instance(self, transfer_id: str, view_id: str, name: str) -> bytes:
        """One instance of an open view, restored and checked."""

    async def export_job(self, transfer_id: str, job_id: str, wait_s: float = 0.0) -> dict[str, Any] | None:
        """An export job's view (waiting up to ``wait_s`` for it to end), or ``None`` if unknown."""


class TransferView(Protocol):
    """What the transfer routes need (:class:`~mftp.node.transfers.service.TransferService`)."""

    @property
    def access(self) -> StudyViews:
        """Exports and views of received studies."""

    async def send(
        self,
        source: str,
        to_name: str,
        purpose: str,
        mode: str,
        user: str,
        to_user: str = "",
        burned_in: str | None = None,
    ) -> str:
        """Start sending a study for ``user``; returns the transfer id."""

    def list(self) -> list[dict[str, Any]]:
        """Every transfer, sent and received."""

    def get(self, transfer_id: str) -> dict[str, Any] | None:
        """One transfer."""

    def cancel(self, transfer_id: str) -> dict[str, Any]:
        """Cancel a sent transfer not yet delivered, or a received one still fetching."""

    async def resend(self, transfer_id: str, user: str) -> str:
        """Send a sent transfer's source again for ``user``; the new transfer id."""

    async def export(
        self, transfer_id: str, destination: str, purpose: str | None = None, user: str = ""
    ) -> dict[str, Any]:
        """Start exporting a received study for ``user``; the view of its export job."""


class RouteProvider(Protocol):
    """More routes (people, audit, viewing...), each registered behind the gate.

    A provider whose routes :mod:`.openapi` does not describe documents them itself with an
    ``openapi_paths()`` method (see :func:`.openapi.operation`).
    """

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Add routes to ``router``, wrapping each handler in ``authenticated``."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _int_arg(request: web.Request, param: IntParam, default: int | None = None) -> int:
    """``param`` of the request within the bounds the OpenAPI document states; 400 otherwise."""
    source = request.match_info if param.where == "path" else request.query
    raw = source.get(param.name)
    if raw is None:
        if default is None:
            raise web.HTTPBadRequest(text=f"missing {param.name}")
        return default
    try:
        value = int(raw) if raw.strip() == raw and raw.lstrip("-").isdigit() else None
    except ValueError:  # more digits than Python converts
        value = None
    if value is None:
        raise web.HTTPBadRequest(text=f"{param.name} must be an integer")
    if not param.minimum <= value <= param.maximum:
        raise web.HTTPBadRequest(text=f"{param.name} must be from {param.minimum} to {param.maximum}")
    return value


# A JSON string (escapes included): removed before counting brackets, which a string may hold.
# Possessive, and an unterminated string runs to the end: one pass, no backtracking, linear time.
_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]++|\\.?)*+"?', re.DOTALL)
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes, limit: int) -> int:
    """How deep arrays and objects nest in ``data``, counted up to ``limit + 1`` without recursion.

    Python's ``json`` parser recurses once per level, so a body nested a thousand deep raises
    ``RecursionError`` inside it: the depth is measured on the raw bytes first.  Malformed JSON
    may be miscounted; the parser refuses it afterwards anyway.
    """
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


async def read_model(request: web.Request, model: type[M]) -> M:
    """The request's body decoded into its typed model (:mod:`.models`); 400 or 413 otherwise."""
    data = await _bounded_body(request)
    return cast(M, models.decode(data, model))


async def _bounded_body(request: web.Request, max_depth: int = MAX_JSON_DEPTH) -> bytes:
    """The body, refused (400) if nested deeper than ``max_depth`` (413 beyond the size limit)."""
    data = await request.read()  # bounded by the application's client_max_size (413)
    openers = data.count(b"[") + data.count(b"{")
    if openers > max_depth and json_depth(data, max_depth) > max_depth:
        raise web.HTTPBadRequest(text=f"JSON nested deeper than {max_depth} levels")
    return data


async def read_json(request: web.Request, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The request's JSON body: 413 beyond the size limit, 400 if malformed or nested too deep."""
    data = await request.read()  # bounded by the application's client_max_size (413)
    # Fewer brackets than the bound (the common case) is counted at memchr speed.
    openers = data.count(b"[") + data.count(b"{")
    if openers > max_depth and json_depth(data, max_depth) > max_depth:
        raise web.HTTPBadRequest(text=f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError cannot happen below the depth bound
        raise web.HTTPBadRequest(text="the body is not JSON") from None


def _hex_arg(request: web.Request, name: str, size: int) -> bytes:
    raw = request.match_info.get(name, "")
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be hex") from None
    if len(value) != size:
        raise web.HTTPBadRequest(text=f"{name} must be {size} bytes")
    return value


class Api:
    """Routes of the node API over a :class:`NodeView`."""

    def __init__(
        self,
        node: NodeView,
        gate: Gate,
        *,
        max_request_bytes: int = 1 << 20,
        transfers: TransferView | None = None,
        providers: tuple[RouteProvider, ...] = (),
    ) -> None:
        self.node = node
        self.gate = gate
        self.transfers = transfers
        self.providers = providers
        self.max_request_bytes = max_request_bytes
        self._waiting = 0

    def app(self) -> web.Application:
        """The aiohttp application: every route behind the gate."""
        app = web.Application(client_max_size=self.max_request_bytes, middlewares=[self._errors])
        wrap = self.gate.wrap
        get = [
            ("/openapi.json", self.openapi),
            ("/status", self.status),
            ("/metrics", self.metrics),
            ("/validators", self.validators),
            ("/peers", self.peers),
            ("/blocks", self.blocks),
            ("/blocks/{height}", self.block),
            ("/blocks/{height}/records", self.block_records),
            ("/records/{record_id}", self.record),
            ("/proofs/inclusion/{record_id}", self.inclusion_proof),
            ("/proofs/consistency", self.consistency_proof),
        ]
        for path, handler in get:
            app.router.add_get(path, wrap(handler))
        app.router.add_post("/records", wrap(self.submit))
        app.router.add_post("/transfers", wrap(self.send))
        app.router.add_get("/transfers", wrap(self.list_transfers))
        app.router.add_get("/transfers/{transfer_id}", wrap(self.transfer))
        app.router.add_post("/transfers/{transfer_id}/cancel", wrap(self.cancel))
        app.router.add_post("/transfers/{transfer_id}/resend", wrap(self.resend))
        app.router.add_post("/transfers/{transfer_id}/export", wrap(self.export))
        app.router.add_get("/transfers/{transfer_id}/export/{job_id}", wrap(self.export_job))
        app.router.add_post("/transfers/{transfer_id}/views", wrap(self.open_view))
        # Entry names are relative paths ("series-1/0001.dcm"): the last segment may hold "/".
        app.router.add_get(
            "/transfers/{transfer_id}/views/{view_id}/instances/{name:.+}", wrap(self.view_instance)
        )
        for provider in self.providers:
            provider.add_routes(app.router, wrap)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                answer = _error(exc.status, exc.text or exc.reason)
                # Keep what the status needs (Allow on a 405), not the old body's framing.
                for name in ("Allow", "Retry-After", "WWW-Authenticate"):
                    if name in exc.headers:
                        answer.headers[name] = exc.headers[name]
                return answer
            raise
        except AccessRefused as exc:  # who asked, or how: sign-in, session, role, step-up, rate
            answer = _error(exc.status, str(exc))
            if isinstance(exc, RateLimited):
                answer.headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
            if exc.status == 401:
                answer.headers["WWW-Authenticate"] = 'Bearer realm="mftp"'
            return answer
        except NodeUsageError as exc:  # the caller's request cannot be done (residency: 403)
            return _error(403 if isinstance(exc, ResidencyRefused) else 400, str(exc))
        except NodeInputError as exc:  # a peer, a file or the PACS misbehaved
            return _error(502, str(exc))
        except (StorageDamaged, StoreError) as exc:  # our own disk: the operator restores a backup
            log.error("stored data is damaged", extra={"fields": {"path": request.path}})
            return _error(500, f"this node's stored data is damaged; its operator must restore it: {exc}")
        except LedgerUsageError as exc:  # asked for something the store does not have
            return _error(404, str(exc))
        except LedgerError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # a bug of ours: the caller gets a JSON 500, the log its type
            # The type only: a message or traceback may quote a path or a party.
            log.error(
                "internal error in an API call",
                extra={"fields": {"path": request.path, "error": type(exc).__name__}},
            )
            return _error(500, "internal error; the node's log has the error type")

    # ------------------------------------------------------------------ reads

    def document(self) -> dict[str, Any]:
        """The OpenAPI document of this application: ours, and what each provider documents."""
        extra: dict[str, Any] = {}
        for provider in self.providers:
            paths = getattr(provider, "openapi_paths", None)
            if paths is not None:
                extra.update(paths())
        return openapi_document(extra)

    @public()
    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI 3 document of this API."""
        return web.json_response(self.document())

    @public()
    async def status(self, request: web.Request) -> web.Response:
        """Node status."""
        return web.json_response(self.node.status())

    @public()
    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus metrics."""
        body = generate_latest(self.node.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @public()
    async def validators(self, request: web.Request) -> web.Response:
        """The validator set that votes on the next block, and the audit nodes."""
        state = self.node.ledger.state
        return web.json_response(
            {
                "height": state.height + 1,
                "validators": validators_view(state.validators),
                "audit_nodes": [{"name": a.name, "sign_key": a.sign_key.hex()} for a in state.auditors],
            }
        )

    @public()
    async def peers(self, request: web.Request) -> web.Response:
        """Peers of this node."""
        return web.json_response({"peers": self.node.peers()})

    @public()
    async def blocks(self, request: web.Request) -> web.Response:
        """Blocks in a range of heights (at most 100); ``wait_ms`` waits for ``from`` to be committed.

        The wait lets a client follow the chain as it grows without polling:
        asking for ``from = head + 1`` answers the moment that block is stored.
        """
        store = self.node.ledger.store
        wait_ms = min(_int_arg(request, WAIT_MS, 0), MAX_WAIT_MS)
        start = _int_arg(request, BLOCKS_FROM, max(1, store.head_height - 9))
        if wait_ms and start > store.head_height and self._waiting < MAX_WAITING_REQUESTS:
            self._waiting += 1
            try:
                await self.node.wait_for_height(start, wait_ms / 1000)
            finally:
                self._waiting -= 1
        head = store.head_height
        end = min(_int_arg(request, BLOCKS_TO, max(head, 1)), head, start + MAX_RANGE_BLOCKS - 1)
        blocks = [block_view(store.block(h), store.certificate(h)) for h in range(start, end + 1)]
        return web.json_response({"head": head, "blocks": blocks})

    @public()
    async def block(self, request: web.Request) -> web.Response:
        """One block with its certificate."""
        store = self.node.ledger.store
        height = _int_arg(request, HEIGHT_PARAM)
        if not 1 <= height <= store.head_height:
            return _error(404, f"no block at height {height} (head is {store.head_height})")
        return web.json_response(
            block_view(store.block(height), store.certificate(height), with_records=True)
        )

    @public()
    async def block_records(self, request: web.Request) -> web.Response:
        """The records of one block."""
        store = self.node.ledger.store
        height = _int_arg(request, HEIGHT_PARAM)
        if not 1 <= height <= store.head_height:
            return _error(404, f"no block at height {height}")
        block = store.block(height)
        views = []
        for record in block.records:
            found = store.record(record.record_id)
            if found is not None:
                views.append(stored_record_view(found))
        return web.json_response({"height": height, "records": views})

    @public()
    async def record(self, request: web.Request) -> web.Response:
        """One record by id, with where it is in the chain."""
        found = self.node.ledger.store.record(_hex_arg(request, "record_id", 16))
        if found is None:
            return _error(404, "no such record")
        return web.json_response(stored_record_view(found))

    @public()
    async def inclusion_proof(self, request: web.Request) -> web.Response:
        """An inclusion proof of a record in the ledger at a height, with the certified header."""
        store = self.node.ledger.store
        record_id = _hex_arg(request, "record_id", 16)
        height = _int_arg(request, PROOF_HEIGHT, store.head_height)
        if store.record(record_id) is None:
            return _error(404, "no such record")
        stored, proof = prove_record(store, record_id, height)
        return web.json_response(
            {
                "record": stored_record_view(stored),
                "record_bytes": base64.b64encode(stored.record.to_bytes()).decode(),
                "ledger_index": proof.ledger_index,
                "ledger_size": proof.ledger_size,
                "path": [p.hex() for p in proof.path],
                "header": header_view(store.header(height)),
                "certificate": certificate_view(store.certificate(height)),
            }
        )

    @public()
    async def consistency_proof(self, request: web.Request) -> web.Response:
        """A consistency proof between the ledgers of two heights."""
        store = self.node.ledger.store
        old = _int_arg(request, CONSISTENCY_FROM)
        new = _int_arg(request, CONSISTENCY_TO, max(store.head_height, 1))
        if not 1 <= old <= new <= store.head_height:
            return _error(404, f"need 1 <= from <= to <= {store.head_height}")
        proof = prove_extension(store, old, new)
        return web.json_response(
            {
                "old_size": proof.old_size,
                "new_size": proof.new_size,
                "path": [p.hex() for p in proof.path],
                "old_header": header_view(store.header(old)),
                "new_header": header_view(store.header(new)),
                "new_certificate": certificate_view(store.certificate(new)),
            }
        )

    # ----------------------------------------------------------------- writes

    @requires(Permission.NODE_SETTINGS)
    async def submit(self, request: web.Request) -> web.Response:
        """Submit signed records: ``{"record": b64}`` or ``{"records": [b64, ...]}`` (canonical bytes)."""
        body = await read_model(request, models.SubmitRecords)
        items = [body.record] if body.record is not None else list(body.records or [])
        try:
            if (body.record is None) == (body.records is None) or not 1 <= len(items) <= MAX_SUBMIT_RECORDS:
                raise ValueError("count")
            blobs = [base64.b64decode(item, validate=True) for item in items]
        except (ValueError, binascii.Error):
            return _error(
                400,
                'expected JSON {"record": b64} or {"records": [b64, ...]} with 1 to '
                f"{MAX_SUBMIT_RECORDS} canonical record encodings",
            )
        records = [Record.decode(blob) for blob in blobs]
        results = await self.node.submit_records(records)
        accepted = all(r in ("accepted", "duplicate") for r in results)
        payload: dict[str, Any]
        if body.record is not None:
            payload = {"id": records[0].record_id.hex(), "result": results[0]}
        else:
            payload = {
                "results": [
                    {"id": r.record_id.hex(), "result": x} for r, x in zip(records, results, strict=True)
                ]
            }
        return web.json_response(payload, status=202 if accepted else 422)

    # ----------------------------------------------------------------- transfers

    def _transfer_service(self) -> TransferView:
        if self.transfers is None:
            raise web.HTTPServiceUnavailable(text="this node does not run transfers")
        return self.transfers

    @requires(Permission.STUDY_SEND)
    async def send(self, request: web.Request) -> web.Response:
        """Send a study: ``{"source", "to", "purpose", "mode", "to_user"?, "burned_in"?}``.

        202 with the transfer id.  A study sent in ``identified`` mode leaves with the patient's
        identity: that needs a second factor verified within the last minutes (step-up).
        """
        body = await read_model(request, models.SendStudy)
        principal = principal_of(request)
        user = acting_user(principal, body.user)
        if body.mode == "identified":
            self.gate.require_step_up(principal)
        transfer_id = await self._transfer_service().send(
            body.source, body.to, body.purpose, body.mode, user, body.to_user, burned_in=body.burned_in
        )
        return web.json_response({"transfer_id": transfer_id}, status=202)

    @requires(Permission.STUDY_RECEIVE)
    async def list_transfers(self, request: web.Request) -> web.Response:
        """Every transfer of this node, sent (outbox) and received (inbox), newest first."""
        return web.json_response({"transfers": self._transfer_service().list()})

    @requires(Permission.STUDY_RECEIVE)
    async def transfer(self, request: web.Request) -> web.Response:
        """One transfer and its state."""
        found = self._transfer_service().get(request.match_info["transfer_id"])
        if found is None:
            return _error(404, "no such transfer")
        return web.json_response(found)

    @requires(Permission.STUDY_SEND)
    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel a sent transfer not yet delivered, or a received one still fetching; the transfer."""
        await read_model(request, models.Nothing)
        service = self._transfer_service()
        transfer_id = request.match_info["transfer_id"]
        if service.get(transfer_id) is None:
            return _error(404, "no such transfer")
        return web.json_response(service.cancel(transfer_id))

    @requires(Permission.STUDY_SEND)
    async def resend(self, request: web.Request) -> web.Response:
        """Send a sent transfer's source again, same recipient, purpose and mode; 202 with the new id.

        Like a send, one in ``identified`` mode needs a fresh second factor (step-up).
        """
        await read_model(request, models.Nothing)
        principal = principal_of(request)
        service = self._transfer_service()
        transfer_id = request.match_info["transfer_id"]
        found = service.get(transfer_id)
        if found is None:
            return _error(404, "no such transfer")
        if found["mode"] == "identified":
            self.gate.require_step_up(principal)
        new_id = await service.resend(transfer_id, acting_user(principal, None))
        return web.json_response({"transfer_id": new_id, "resent_from": transfer_id}, status=202)

    @requires(Permission.STUDY_EXPORT)
    async def export(self, request: web.Request) -> web.Response:
        """Export a received study for the signed-in user: ``{"destination", "purpose"?}``; its job, 202.

        The same request repeated returns the same job (see :mod:`mftp.node.transfers.jobs`): 200
        once it is done.  ``?wait_ms=`` waits up to that long (at most 30 s) for the job to end:
        200 if it did, the failure's status if it failed, else 202.
        """
        body = await read_model(request, models.ExportStudy)
        user = acting_user(principal_of(request), body.user)
        wait_ms = min(_int_arg(request, EXPORT_WAIT_MS, 0), MAX_WAIT_MS)
        service = self._transfer_service()
        transfer_id = request.match_info["transfer_id"]
        job = await service.export(transfer_id, body.destination, body.purpose, user)
        if wait_ms and job["state"] in LIVE_JOB_STATES:
            job = await service.access.export_job(transfer_id, job["job_id"], wait_ms / 1000) or job
        if job["state"] == "failed":
            return web.json_response(job, status=FAILED_JOB_STATUS.get(job["fault"], 502))
        return web.json_response(job, status=202 if job["state"] in LIVE_JOB_STATES else 200)

    @requires(Permission.STUDY_RECEIVE)  # following a job is a read: no second step-up
    async def export_job(self, request: web.Request) -> web.Response:
        """An export job: state, progress (``files_done`` of ``files``), record or error."""
        job = await self._transfer_service().access.export_job(
            request.match_info["transfer_id"], request.match_info["job_id"]
        )
        if job is None:
            return _error(404, "no such export job (a restarted node forgets its jobs)")
        return web.json_response(job)

    @requires(Permission.STUDY_VIEW)
    async def open_view(self, request: web.Request) -> web.Response:
        """Open a received study in a viewer for the signed-in user: ``{"purpose"?}``; 201 with the view."""
        body = await read_model(request, models.OpenView)
        user = acting_user(principal_of(request), body.user)
        view = await self._transfer_service().access.open_view(
            request.match_info["transfer_id"], user, body.purpose
        )
        return web.json_response(view, status=201)

    @requires(Permission.STUDY_VIEW)
    async def view_instance(self, request: web.Request) -> web.Response:
        """One instance of an open view, as ``application/dicom``."""
        data = await self._transfer_service().access.read_instance(
            request.match_info["transfer_id"], request.match_info["view_id"], request.match_info["name"]
        )
        # Patient data: no browser or proxy may keep a copy.
        return web.Response(
            body=data, content_type="application/dicom", headers={"Cache-Control": "no-store"}
        )


async def json_object(
    request: web.Request, *, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, str]:
    """The request's JSON object of string fields; 400 naming what is wrong."""
    body = await read_json(request)
    allowed = set(required) | set(optional)
    if (
        not isinstance(body, dict)
        or not set(required) <= body.keys() <= allowed
        or not all(isinstance(v, str) for v in body.values())
    ):
        raise web.HTTPBadRequest(
            text=f"expected a JSON object of strings with {', '.join(required) or 'no required field'}"
            + (f" and optionally {', '.join(optional)}" if optional else "")
        )
    return body
