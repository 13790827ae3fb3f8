"""HTTP routes of auditing (all need the API token: they name parties or hand out keys).

* ``POST /audit/users`` ``{"user"}``: register a user of this institution, so senders
  elsewhere may name it as a transfer's recipient user.
* ``POST /audit/grants`` ``{"subject", "auditor", "legal_basis", "purpose", "from", "to",
  "expires", "notify_after"?}``: sign an ``AUDIT_GRANT`` for one of our parties (months as
  ``YYYY-MM``, dates as ``YYYY-MM-DD``); 202 with its record id.
* ``POST /audit/scans`` ``{"grant_id", "format"?}``: scan the chain for a grant addressed to
  this node; ``format`` ``json`` (default), ``fhir`` (a Bundle of AuditEvent) or ``dicom``.
* ``POST /audit/reports`` ``{"grant_id"}``: scan, then sign and submit the ``AUDIT_REPORT``.
* ``GET /audit/grants/received``: the grants on the chain addressed to this node, opened (subject,
  scope, legal basis, expiry), newest first; at most :data:`MAX_GRANTS_LISTED`.
* ``POST /audit/bundles`` ``{"grant_id"}``: scan, and answer the scan as a bundle signed by this
  audit node that ``mftp-node audit verify`` checks offline (:mod:`.bundle`).
* ``POST /audit/rotations`` ``{"party", "reason"}``: rotate a party's master key from next month
  (reason ``scheduled`` or ``compromise``), or destroy its keys (``erasure``); publishes the
  ``KEY_ROTATION`` record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from mftp.ledger.audit import open_grant
from mftp.ledger.errors import LedgerError
from mftp.ledger.records import RecordType

from ..api import models
from ..api.server import read_model
from ..errors import NodeUsageError
from ..people.roles import Permission, requires
from .bundle import make_bundle
from .scan import Auditor, export, iso_ms
from .service import AuditService, parse_day_ms, parse_month, user_party

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_GRANTS_LISTED: Final = 500


def _grant_id(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 16:
        raise NodeUsageError("grant_id is 32 hex digits (the grant's record id)")
    return value


class AuditApi:
    """The ``/audit/...`` routes over a node's :class:`AuditService` and :class:`Auditor`."""

    def __init__(self, service: AuditService, auditor: Auditor) -> None:
        self.service = service
        self.auditor = auditor

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Register the routes, each behind ``authenticated``."""
        router.add_post("/audit/users", authenticated(self.add_user))
        router.add_post("/audit/grants", authenticated(self.grant))
        router.add_post("/audit/scans", authenticated(self.scan))
        router.add_post("/audit/reports", authenticated(self.report))
        router.add_post("/audit/bundles", authenticated(self.bundle))
        router.add_get("/audit/grants/received", authenticated(self.grants_received))
        router.add_post("/audit/rotations", authenticated(self.rotate))

    @requires(Permission.USERS_MANAGE)
    async def add_user(self, request: web.Request) -> web.Response:
        """Register a user of this institution (idempotent)."""
        body = await read_model(request, models.AuditUser)
        user = user_party(body.user)
        self.service.vault.party(user, "user")
        return web.json_response({"user": user})

    @requires(Permission.USERS_MANAGE)
    async def rotate(self, request: web.Request) -> web.Response:
        """Rotate a party's master key (or erase the party); 202 with the KEY_ROTATION record id."""
        body = await read_model(request, models.Rotation)
        record = await self.service.rotate(body.party, body.reason)
        return web.json_response({"record": record.record_id.hex()}, status=202)

    @requires(Permission.AUDIT_GRANT)
    async def grant(self, request: web.Request) -> web.Response:
        """Sign an audit grant for one of our parties."""
        body = await read_model(request, models.Grant)
        auditor = self.service.member_key(body.auditor)
        expires_ms = parse_day_ms(body.expires)
        record = await self.service.grant(
            subject=body.subject,
            auditor=auditor,
            legal_basis=body.legal_basis,
            purpose=body.purpose,
            epoch_from=parse_month(body.from_),
            epoch_to=parse_month(body.to),
            expires_ms=expires_ms,
            notify_after_ms=parse_day_ms(body.notify_after) if body.notify_after is not None else expires_ms,
        )
        return web.json_response({"grant_id": record.record_id.hex()}, status=202)

    @requires(Permission.AUDIT_SCAN)
    async def scan(self, request: web.Request) -> web.Response:
        """Scan the chain for a grant's subject."""
        body = await read_model(request, models.Scan)
        view = await self.auditor.scan(_grant_id(body.grant_id))
        return web.json_response(export(view, body.format))

    @requires(Permission.AUDIT_REPORT)
    async def report(self, request: web.Request) -> web.Response:
        """Scan, then post the audit report record."""
        body = await read_model(request, models.Scan)
        return web.json_response(await self.auditor.report(_grant_id(body.grant_id)), status=202)

    @requires(Permission.AUDIT_SCAN)
    async def bundle(self, request: web.Request) -> web.Response:
        """Scan, then answer the scan as a bundle signed by this node (verifiable offline)."""
        body = await read_model(request, models.Scan)
        view = await self.auditor.scan(_grant_id(body.grant_id))
        host = self.service.host
        signed = make_bundle(view, host.ledger.store, host.ledger.genesis, host.identity)
        return web.json_response(
            signed, headers={"Content-Disposition": 'attachment; filename="audit-bundle.json"'}
        )

    @requires(Permission.AUDIT_GRANTS_RECEIVED)
    async def grants_received(self, request: web.Request) -> web.Response:
        """The grants addressed to this node, opened: subject, scope, basis, expiry; newest first."""
        return web.json_response({"grants": await asyncio.to_thread(self._grants_received)})

    def _grants_received(self) -> list[dict[str, Any]]:
        host = self.service.host
        store, own = host.ledger.store, host.identity.public.sign_key
        grants: list[dict[str, Any]] = []
        for height in range(store.head_height, 0, -1):
            for record in store.block(height).records:
                if record.type is not RecordType.AUDIT_GRANT or record.body.get("auditor") != own:
                    continue
                try:
                    keys = open_grant(record, host.identity)
                except LedgerError as exc:  # a grant that does not open is listed as such
                    grants.append({"grant_id": record.record_id.hex(), "problem": str(exc)})
                    continue
                grants.append(
                    {
                        "grant_id": keys.grant_id.hex(),
                        "institution": host.member_name(keys.institution),
                        "subject_kind": keys.kind,
                        "subject": keys.subject,
                        "purpose": keys.purpose,
                        "legal_basis": keys.legal_basis,
                        "epochs": [keys.epoch_from, keys.epoch_to],
                        "granted_ms": record.time_ms,
                        "expires": iso_ms(keys.expires_ms),
                        "expires_ms": keys.expires_ms,
                    }
                )
                if len(grants) >= MAX_GRANTS_LISTED:
                    return grants
        return grants
