"""The auditor's side: scan the verified chain for a grant's subject, report, account, export.

:class:`Auditor` runs on any node (in practice the regulator's audit-only node, which
verifies every block it stores).  For a grant addressed to this node's key it

1. opens the grant (:func:`~mftp.ledger.audit.open_grant`) and asks the granting institution
   for the details of its records of the subject (``a.disclose?``); every disclosed field is
   checked against the record's on-chain commitment, and one that does not match is dropped
   and named in the result (the institution's fault);
2. brings the tag index up to the head (rows are appended once and kept in memory: a later
   scan reads only the new ones) and scans every record up to the head's certified ledger size
   (:func:`~mftp.ledger.audit.scan`): each match comes with its inclusion proof, verified;
3. states completeness relative to that certified size and root, and can post the
   ``AUDIT_REPORT`` record (:meth:`Auditor.report`), so the auditor is audited too.

For a patient it produces the accounting of disclosures of HIPAA 45 CFR 164.528 (date,
recipient, description, purpose), marking the disclosures that rule exempts; any result can be
exported as FHIR AuditEvent resources or DICOM PS3.15 audit messages.

The tag index holds only record ids, times and tags (public ledger data).  The scan uses one
process: forking workers from a node that runs a trio thread is not safe, and a million rows
take about two seconds in one.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, Final

from mftp.ledger.audit import GrantKeys, ScanResult, open_grant, scan
from mftp.ledger.audit_export import DisclosedEvent, to_dicom_audit_message, to_fhir_audit_event
from mftp.ledger.audit_index import TagIndex
from mftp.ledger.errors import LedgerInputError, LedgerUsageError
from mftp.ledger.pseudonyms import Disclosure, DisclosureError, check_disclosure
from mftp.ledger.records import Record, RecordType

from ..errors import NodeUsageError
from .service import AuditService

log = logging.getLogger("mftp.node.audit")

# HL7 PurposeOfUse codes of treatment, payment and health care operations: 45 CFR 164.528(a)(1)(i)
# exempts those disclosures from the accounting (they are listed, and marked so).
TPO_PURPOSES: Final = frozenset({"TREAT", "ETREAT", "HPAYMT", "HOPERAT"})
FORMATS: Final = ("json", "fhir", "dicom")


def iso_ms(time_ms: int) -> str:
    """ISO 8601 UTC with milliseconds."""
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Auditor:
    """Grant scans and reports of one node (see the module doc)."""

    def __init__(self, service: AuditService) -> None:
        self.service = service
        self.host = service.host
        self._index = TagIndex()
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ scan

    def _grant(self, grant_id: bytes) -> tuple[Record, GrantKeys]:
        found = self.host.ledger.store.record(grant_id)
        if found is None or found.record.type is not RecordType.AUDIT_GRANT:
            raise NodeUsageError(f"no audit grant {grant_id.hex()} on the chain (yet)")
        try:
            keys = open_grant(found.record, self.host.identity)
        except LedgerUsageError as exc:  # addressed to another auditor
            raise NodeUsageError(str(exc)) from None
        except LedgerInputError as exc:
            raise NodeUsageError(f"grant {grant_id.hex()} cannot be used: {exc}") from None
        keys.check_usable(self.service.host.clock.now_ms())
        return found.record, keys

    def _catch_up(self, size: int) -> None:
        """Append the index rows of ledger indexes ``len(index)..size-1`` (blocking)."""
        self._index.extend_from_store(self.host.ledger.store, size)

    def _checked(
        self, author: bytes, disclosures: list[Disclosure]
    ) -> tuple[dict[bytes, Disclosure], list[str]]:
        """Disclosures that open their records' commitments; notes on the others."""
        store = self.host.ledger.store
        good: dict[bytes, Disclosure] = {}
        notes: list[str] = []
        for disclosure in disclosures:
            found = store.record(disclosure.record_id)
            if found is None or found.record.author != author:
                notes.append(
                    f"record {disclosure.record_id.hex()}: disclosed, but not the institution's on the chain"
                )
                continue
            try:
                check_disclosure(found.record.commitments, disclosure)
            except DisclosureError as exc:
                notes.append(f"{exc} (the institution's disclosure was dropped)")
                continue
            good[disclosure.record_id] = disclosure
        return good, notes

    async def scan(self, grant_id: bytes) -> dict[str, Any]:
        """Scan the whole verified chain for the grant's subject; the result as JSON-ready data."""
        grant, keys = self._grant(grant_id)
        disclosed, note = await self.service.request_disclosures(grant.author, grant_id)
        disclosures, notes = self._checked(grant.author, disclosed)
        if note:
            notes.append(note)
        store = self.host.ledger.store
        async with self._lock:
            size = store.header(store.head_height).ledger_size
            await asyncio.to_thread(self._catch_up, size)
            result = await asyncio.to_thread(
                scan,
                store,
                keys,
                now_ms=self.service.host.clock.now_ms(),
                up_to_size=size,
                index=self._index,
                disclosures=disclosures,
            )
        log.info("audit scan", extra={"fields": {"grant": grant_id.hex(), "matches": len(result.matches)}})
        return self._view(grant, keys, result, notes)

    def _view(self, grant: Record, keys: GrantKeys, result: ScanResult, notes: list[str]) -> dict[str, Any]:
        name = self.host.member_name
        matches = [
            {
                "ledger_index": m.ledger_index,
                "record_id": m.record.record_id.hex(),
                "type": m.record.type.name.lower(),
                "time": iso_ms(m.record.time_ms),
                "time_ms": m.record.time_ms,
                "author": name(m.record.author),
                "roles": [role.name.lower() for role in m.roles],
                "body": _public_body(m.record, name),
                "proof": {
                    "ledger_index": m.proof.ledger_index,
                    "ledger_size": m.proof.ledger_size,
                    "path": [p.hex() for p in m.proof.path],
                    "verified": True,
                },
                "disclosed": dict(m.disclosed),
            }
            for m in result.matches
        ]
        view = {
            "grant_id": keys.grant_id.hex(),
            "institution": name(grant.author),
            "subject_kind": keys.kind,
            "subject": keys.subject,
            "legal_basis": keys.legal_basis,
            "purpose": keys.purpose,
            "epochs": [keys.epoch_from, keys.epoch_to],
            "expires": iso_ms(keys.expires_ms),
            "notify_after": iso_ms(keys.notify_after_ms),
            "ledger_size": result.ledger_size,
            "ledger_root": result.ledger_root.hex(),
            "height": result.height,
            "statement": result.statement,
            "match_count": len(matches),
            "matches_root": result.report_body()["matches_root"].hex(),
            "matches": matches,
            "notes": notes,
        }
        if keys.kind == "patient":
            view["accounting"] = accounting(matches)
        return view

    # ------------------------------------------------------------------ report

    async def report(self, grant_id: bytes) -> dict[str, Any]:
        """Scan, then sign and submit the ``AUDIT_REPORT``; the scan plus the report's record id."""
        view = await self.scan(grant_id)
        body = {
            "grant_id": grant_id,
            "ledger_size": view["ledger_size"],
            "ledger_root": bytes.fromhex(view["ledger_root"]),
            "matches_root": bytes.fromhex(view["matches_root"]),
            "match_count": view["match_count"],
        }
        record = self.service.author(RecordType.AUDIT_REPORT, body, fills={}, details={})
        await self.service.submit(record)
        log.info(
            "audit report made", extra={"fields": {"grant": grant_id.hex(), "report": record.record_id.hex()}}
        )
        return {**view, "report_record": record.record_id.hex()}


def _public_body(record: Record, name: Any) -> dict[str, Any]:
    """The record's public body, keys of members replaced by their names."""
    out: dict[str, Any] = {}
    for key, value in record.body.items():
        if key in ("recipient", "auditor") and isinstance(value, bytes):
            out[key] = name(value)
        elif isinstance(value, bytes):
            out[key] = value.hex() if len(value) <= 64 else f"<{len(value)} bytes>"
        else:
            out[key] = value
    return out


def accounting(matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """HIPAA 164.528 accounting rows (date, recipient, description, purpose) of a patient's transfers."""
    rows = []
    for match in matches:
        if match["type"] != "transfer_offered":
            continue
        body, disclosed = match["body"], match["disclosed"]
        purpose = body.get("purpose", "")
        rows.append(
            {
                "date": match["time"],
                "recipient": disclosed.get("recipient", body.get("recipient", "")),
                "description": disclosed.get("description", f"imaging study ({body.get('mode', '')})"),
                "purpose": purpose,
                "mode": body.get("mode", ""),
                "record_id": match["record_id"],
                "exempt": "treatment, payment or operations: 164.528(a)(1)(i)"
                if purpose in TPO_PURPOSES
                else "",
            }
        )
    return rows


def _event(match: dict[str, Any], institution: str) -> DisclosedEvent:
    body, disclosed = match["body"], match["disclosed"]
    author = match["author"]
    if match["type"] == "transfer_offered":
        source, destination = author, str(body.get("recipient", ""))
    elif match["type"] == "transfer_received":
        source, destination = str(disclosed.get("sender", "")), author
    else:
        source, destination = author, author
    return DisclosedEvent(
        record_id=match["record_id"],
        record_type=match["type"],
        time_ms=match["time_ms"],
        outcome=str(disclosed.get("outcome", body.get("outcome", "complete"))),
        purpose=str(body.get("purpose", disclosed.get("purpose", ""))),
        source_institution=source or institution,
        destination_institution=destination,
        user=str(disclosed.get("user", "(not disclosed)")),
        patient_id=str(disclosed.get("patient", "")),
        study_uid=str(disclosed.get("study", "")),
        description=str(disclosed.get("description", "")),
    )


def export(view: dict[str, Any], fmt: str) -> Any:
    """A scan view as FHIR (a Bundle of AuditEvent) or DICOM (a list of XML audit messages)."""
    events = [_event(m, view["institution"]) for m in view["matches"] if m["type"] in _EXPORTABLE]
    if fmt == "fhir":
        return {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": to_fhir_audit_event(e)} for e in events],
        }
    if fmt == "dicom":
        return {"messages": [to_dicom_audit_message(e) for e in events]}
    if fmt == "json":
        return view
    raise NodeUsageError(f"format is one of {', '.join(FORMATS)}")


_EXPORTABLE: Final = frozenset({"transfer_offered", "transfer_received", "study_accessed"})
