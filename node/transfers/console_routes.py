"""Routes the web console needs from transfers: find a study in the PACS, a study's history.

* ``GET /pacs/sources``: where this node may read studies from (``transfer.dicomweb_urls``,
  ``transfer.dimse_peers``, ``transfer.source_dirs``), as the send page offers them.
* ``POST /pacs/search`` ``{"source", "patient_id"? | "accession"? | "study_uid"?}``: studies on
  one of them, by exact keys: QIDO-RS against a DICOMweb server, C-FIND against a DIMSE peer,
  or the folders directly under a source folder (a folder is a study: no key is needed).
* ``GET /transfers/{transfer_id}/history``: the ledger's records of one transfer (the offer, the
  receipt, every access), each with its inclusion proof verified against a certified header
  and the validator set, and the details this institution holds in its vault (who sent,
  received, opened it); the other side's records say only which institution signed them.
* ``GET /transfers/{transfer_id}/views/{view_id}/study``: the Study Instance UID of an open
  view (from its first instance), so the console can open it in the viewer.

Every answer is bounded: a search returns at most :data:`MAX_MATCHES` studies, a folder listing
:data:`MAX_FOLDERS` names, a history :data:`MAX_HISTORY` records.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
import pydicom
import pydicom.errors
from aiohttp import web

from mftp.ledger.errors import LedgerError
from mftp.ledger.ledger import Ledger
from mftp.ledger.proofs import prove_record, verify_record_in_ledger
from mftp.ledger.records import Record

from ..api import models
from ..api.ledger_json import record_view
from ..api.server import read_model
from ..errors import NodeUsageError
from ..pacs import DicomWebSource
from ..pacs.common import PacsError, is_safe_uid
from ..pacs.dicomweb import DicomWebLimits
from ..pacs.dimse import DimseLimits, DimseSource
from ..people.roles import Permission, requires
from .dimse_and_attachments import DIMSE_PREFIX, parse_dimse_source
from .sources import DICOMWEB_PREFIX, Allowed
from .state import check_transfer_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_MATCHES: Final = 100
MAX_FOLDERS: Final = 500
MAX_HISTORY: Final = 200
MAX_KEY_CHARS: Final = 64
FOLDER_PREFIX: Final = "folder:"
SEARCH_TIMEOUT_S: Final = 20.0


class HistoryVault(Protocol):
    """The details this institution keeps of its own records (the audit vault)."""

    def disclose(self, record_id: bytes, fields: Any = None) -> Any:
        """The openings of one of our records, or None."""


class ConsoleTransfers(Protocol):
    """What these routes need of the transfer service."""

    allowed: Allowed

    def get(self, transfer_id: str) -> dict[str, Any] | None:
        """One transfer's view."""

    @property
    def access(self) -> Any:
        """Views of received studies (``read_instance``, ``views``)."""


class TransferConsoleApi:
    """The console's routes over the transfer service, the ledger and the audit vault."""

    def __init__(
        self,
        transfers: ConsoleTransfers,
        ledger: Ledger,
        vault: HistoryVault,
        member_name: Callable[[bytes], str],
    ) -> None:
        self.transfers = transfers
        self.ledger = ledger
        self.vault = vault
        self.member_name = member_name

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Register the routes, each behind ``authenticated``."""
        router.add_get("/pacs/sources", authenticated(self.sources))
        router.add_post("/pacs/search", authenticated(self.search))
        router.add_get("/transfers/{transfer_id}/history", authenticated(self.history))
        router.add_get("/transfers/{transfer_id}/views/{view_id}/study", authenticated(self.view_study))

    # ------------------------------------------------------------------ PACS

    @requires(Permission.STUDY_SEND)
    async def sources(self, request: web.Request) -> web.Response:
        """The PACS and folders a study may be sent from."""
        allowed = self.transfers.allowed
        return web.json_response(
            {
                "sources": [
                    *({"kind": "dicomweb", "source": DICOMWEB_PREFIX + u} for u in allowed.dicomweb_urls),
                    *({"kind": "dimse", "source": DIMSE_PREFIX + p} for p in allowed.dimse_peers),
                    *({"kind": "folder", "source": FOLDER_PREFIX + str(d)} for d in allowed.source_dirs),
                ]
            }
        )

    @requires(Permission.STUDY_SEND)
    async def search(self, request: web.Request) -> web.Response:
        """Studies on one source, by exact keys (at least one, except for a folder)."""
        body = await read_model(request, models.PacsSearch)
        given = {"patient_id": body.patient_id, "accession": body.accession, "study_uid": body.study_uid}
        keys = {k: v.strip() for k, v in given.items() if v.strip()}
        if any(len(v) > MAX_KEY_CHARS or any(c in v for c in "*?\\") for v in keys.values()):
            raise NodeUsageError(f"search keys are exact (no wildcards), at most {MAX_KEY_CHARS} characters")
        if "study_uid" in keys and not is_safe_uid(keys["study_uid"]):
            raise NodeUsageError("study_uid must be a DICOM UID")
        source = body.source
        if source.startswith(FOLDER_PREFIX):
            return web.json_response({"studies": await self._folders(source.removeprefix(FOLDER_PREFIX))})
        if not keys:
            raise NodeUsageError("give a patient ID, an accession number or a study UID")
        try:
            async with asyncio.timeout(SEARCH_TIMEOUT_S):
                matches, base = await self._find(source, keys)
        except TimeoutError:
            raise PacsError(f"the PACS did not answer within {SEARCH_TIMEOUT_S:.0f} s") from None
        studies = [
            {
                "study_uid": m.study_instance_uid,
                "accession": m.accession_number,
                "study_date": m.study_date,
                "modalities": list(m.modalities),
                "instances": m.instance_count,
                "source": f"{base}#{m.study_instance_uid}",
            }
            for m in matches[:MAX_MATCHES]
        ]
        return web.json_response({"studies": studies})

    async def _find(self, source: str, keys: dict[str, str]) -> tuple[list[Any], str]:
        allowed = self.transfers.allowed
        if source.startswith(DICOMWEB_PREFIX):
            url = allowed.check_url(source.removeprefix(DICOMWEB_PREFIX))
            async with aiohttp.ClientSession() as session:
                reader = DicomWebSource(url, session, limits=DicomWebLimits(max_studies=MAX_MATCHES))
                found = await reader.find_studies(
                    patient_id=keys.get("patient_id"),
                    accession=keys.get("accession"),
                    study_uid=keys.get("study_uid"),
                )
            return found, DICOMWEB_PREFIX + url
        if source.startswith(DIMSE_PREFIX):
            # The same allow-list check as a send from it (a dummy UID: only the peer is checked).
            peer = parse_dimse_source(source + "#1.2", allowed.dimse_peers, allowed.dimse_aet).peer
            dimse = DimseSource(peer, limits=DimseLimits(max_studies=MAX_MATCHES))
            found = await dimse.find_studies(
                patient_id=keys.get("patient_id"),
                accession=keys.get("accession"),
                study_uid=keys.get("study_uid"),
            )
            return found, source
        raise NodeUsageError("source is dicomweb:<URL>, dimse:<AET@host:port> or folder:<path>")

    async def _folders(self, path: str) -> list[dict[str, Any]]:
        """The folders directly under an allowed source folder: each may be sent as a study."""
        allowed = self.transfers.allowed
        root = allowed.check_path(Path(path), allowed.source_dirs, "source_dirs", must_exist=True)

        def listing() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            with os.scandir(root) as entries:
                for entry in entries:
                    if len(out) >= MAX_FOLDERS:
                        break
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        out.append({"name": entry.name, "source": str(root / entry.name)})
            return sorted(out, key=lambda item: item["name"])

        return await asyncio.to_thread(listing)

    # ------------------------------------------------------------------ history

    @requires(Permission.STUDY_RECEIVE)
    async def history(self, request: web.Request) -> web.Response:
        """The ledger's records of one transfer, each proven against a certified header."""
        transfer_id = check_transfer_id(request.match_info["transfer_id"])
        found = self.transfers.get(transfer_id)
        if found is None:
            raise web.HTTPNotFound(text="no such transfer")
        ids = [
            found.get("offer_record", ""),
            found.get("received_record", ""),
            *found.get("access_records", []),
        ]
        known = [bytes.fromhex(i) for i in ids if i]
        records = await asyncio.to_thread(self._history, bytes.fromhex(transfer_id), known)
        return web.json_response({"transfer_id": transfer_id, "records": records})

    def _history(self, transfer_id: bytes, known: list[bytes]) -> list[dict[str, Any]]:
        """Our records of the transfer and the other side's, found from the offer onwards."""
        store = self.ledger.store
        ids = list(dict.fromkeys(known))
        offer = store.record(known[0]) if known else None
        if offer is not None:  # the other side's receipt and accesses name the same transfer id
            for height in range(offer.height, min(store.head_height, offer.height + 2000) + 1):
                for record in store.block(height).records:
                    if record.body.get("transfer_id") == transfer_id and record.record_id not in ids:
                        ids.append(record.record_id)
                if len(ids) >= MAX_HISTORY:
                    break
        out = [self._proven(record_id) for record_id in ids[:MAX_HISTORY]]
        return sorted((r for r in out if r is not None), key=lambda r: r["time_ms"])

    def _proven(self, record_id: bytes) -> dict[str, Any] | None:
        store = self.ledger.store
        stored = store.record(record_id)
        if stored is None:
            return {"id": record_id.hex(), "time_ms": 0, "committed": False, "verified": False}
        height = store.head_height
        try:
            _, proof = prove_record(store, record_id, height)
            verify_record_in_ledger(
                stored.record.to_bytes(), proof, store.header(height), store.certificate(height),
                self.ledger.state.validators,
            )  # fmt: skip
            verified, why = True, ""
        except LedgerError as exc:
            verified, why = False, str(exc)
        disclosed = self.vault.disclose(record_id)
        details = {k: v[1] for k, v in disclosed.fields.items()} if disclosed is not None else {}
        view = record_view(stored.record)
        return {
            "id": view["id"],
            "type": view["type"],
            "time_ms": stored.record.time_ms,
            "institution": self.member_name(stored.record.author),
            "action": _action(stored.record),
            "user": str(details.get("user", "")).removeprefix("user:"),
            "purpose": str(details.get("purpose", stored.record.body.get("purpose", ""))),
            "ours": disclosed is not None,
            "committed": True,
            "height": stored.height,
            "ledger_index": stored.ledger_index,
            "proof": {
                "height": height,
                "ledger_size": proof.ledger_size if verified else None,
                "path_length": len(proof.path) if verified else None,
            },
            "verified": verified,
            "problem": why,
        }

    # ------------------------------------------------------------------ viewer

    @requires(Permission.STUDY_VIEW)
    async def view_study(self, request: web.Request) -> web.Response:
        """The Study Instance UID of an open view (read from its first DICOM instance)."""
        transfer_id = check_transfer_id(request.match_info["transfer_id"])
        view_id = request.match_info["view_id"]
        access = self.transfers.access
        view = access.views.get(transfer_id, view_id)
        for name in list(view.entries)[:20]:  # attachments first would be odd; a few tries suffice
            data = await access.read_instance(transfer_id, view_id, name)
            try:
                ds = pydicom.dcmread(
                    io.BytesIO(data), stop_before_pixels=True, specific_tags=["StudyInstanceUID"]
                )
            except (pydicom.errors.InvalidDicomError, ValueError, EOFError):
                continue
            uid = str(ds.get("StudyInstanceUID", ""))
            if is_safe_uid(uid):
                return web.json_response({"transfer_id": transfer_id, "view_id": view_id, "study_uid": uid})
        raise NodeUsageError("the study holds no DICOM instance with a Study Instance UID")


def _action(record: Record) -> str:
    kind = record.type.name.lower()
    if kind == "study_accessed":
        return str(record.body.get("action", "access"))
    return {"transfer_offered": "sent", "transfer_received": str(record.body.get("outcome", "received"))}.get(
        kind, kind
    )
