"""Disclosed ledger events as hospital systems read them: FHIR AuditEvent and DICOM audit messages.

An auditor's scan yields records whose details were disclosed field by field and
checked against their on-chain commitments (:mod:`.audit`).  This module turns
one such event into

* a FHIR R5 ``AuditEvent`` resource (plain JSON; tests validate it with the
  ``fhir.resources`` models), and
* a DICOM PS3.15 A.5 audit message (IHE ATNA), as XML.

Both use the DICOM event codes of CID 400 (110104 Instances Transferred, 110103
Accessed, 110112 Query, ...), the participant role codes 110153 (Source) and
110152 (Destination), the study as participant object (110180 Study Instance
UID), and the HL7 v3 PurposeOfUse code of the event.  Pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from xml.sax.saxutils import escape, quoteattr

DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
PURPOSE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACTION_SYSTEM: Final = "http://hl7.org/fhir/audit-event-action"
OUTCOME_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"

# (DICOM event code, display, FHIR/ATNA action code) per ledger record type name.
EVENTS: Final = {
    "transfer_offered": ("110104", "DICOM Instances Transferred", "R"),
    "transfer_received": ("110104", "DICOM Instances Transferred", "C"),
    "study_accessed": ("110103", "DICOM Instances Accessed", "R"),
    "audit_grant": ("110114", "User Authentication", "E"),
    "audit_report": ("110112", "Query", "E"),
    "patient_share": ("110106", "Export", "C"),  # shared with the patient: a disclosure to them
}
# ATNA outcome indicator: 0 success, 4 minor failure, 8 serious failure.
OUTCOMES: Final = {
    "complete": ("0", "Success"),
    "refused": ("4", "Minor failure"),
    "failed": ("8", "Serious failure"),
}


@dataclass(frozen=True)
class DisclosedEvent:
    """One event with its disclosed details (every field checked against its commitment)."""

    record_id: str  # hex, the ledger record
    record_type: str  # e.g. "transfer_offered"
    time_ms: int
    outcome: str  # "complete", "refused" or "failed"
    purpose: str  # HL7 PurposeOfUse, e.g. "TREAT"
    source_institution: str
    destination_institution: str
    user: str
    patient_id: str
    study_uid: str
    description: str = ""


def _iso(time_ms: int) -> str:
    return (
        datetime.fromtimestamp(time_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _event(event: DisclosedEvent) -> tuple[str, str, str]:
    try:
        return EVENTS[event.record_type]
    except KeyError:
        raise ValueError(f"no audit event mapping for record type {event.record_type!r}") from None


def to_fhir_audit_event(event: DisclosedEvent) -> dict[str, Any]:
    """A FHIR R5 AuditEvent resource for ``event``."""
    code, display, action = _event(event)
    outcome_code, outcome_display = OUTCOMES.get(event.outcome, OUTCOMES["failed"])
    return {
        "resourceType": "AuditEvent",
        "id": event.record_id,
        "category": [{"coding": [{"system": DCM, "code": code, "display": display}]}],
        "code": {"coding": [{"system": DCM, "code": code, "display": display}]},
        "action": action,
        "recorded": _iso(event.time_ms),
        "outcome": {"code": {"system": OUTCOME_SYSTEM, "code": outcome_code, "display": outcome_display}},
        "authorization": [{"coding": [{"system": PURPOSE_SYSTEM, "code": event.purpose}]}],
        "patient": {"identifier": {"value": event.patient_id}},
        "agent": [
            {
                "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                "who": {"display": event.source_institution},
                "requestor": event.record_type != "transfer_received",
            },
            {
                "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
                "who": {"display": event.destination_institution},
                "requestor": event.record_type == "transfer_received",
            },
            {"who": {"identifier": {"value": event.user}}, "requestor": True},
        ],
        "source": {"observer": {"display": event.source_institution}},
        "entity": [
            {
                "what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{event.study_uid}"}},
                "role": {"coding": [{"system": DCM, "code": "110180", "display": "Study Instance UID"}]},
            },
            {"what": {"identifier": {"system": "urn:mftp:record", "value": event.record_id}}},
        ],
    }


def to_dicom_audit_message(event: DisclosedEvent) -> str:
    """A DICOM PS3.15 A.5 audit message (IHE ATNA) for ``event``, as XML."""
    code, display, action = _event(event)
    outcome_code, _ = OUTCOMES.get(event.outcome, OUTCOMES["failed"])
    destination_requests = event.record_type == "transfer_received"

    def participant(user: str, requestor: bool, role: tuple[str, str] | None = None) -> str:
        role_line = ""
        if role is not None:
            code_, name = role
            role_line = (
                f'    <RoleIDCode csd-code="{code_}" codeSystemName="DCM" originalText={quoteattr(name)}/>\n'
            )
        flag = str(requestor).lower()
        opening = f'  <ActiveParticipant UserID={quoteattr(user)} UserIsRequestor="{flag}">\n'
        return f"{opening}{role_line}  </ActiveParticipant>\n"

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<AuditMessage>\n"
        f'  <EventIdentification EventActionCode="{action}" EventDateTime="{_iso(event.time_ms)}" '
        f'EventOutcomeIndicator="{outcome_code}">\n'
        f'    <EventID csd-code="{code}" codeSystemName="DCM" originalText={quoteattr(display)}/>\n'
        f'    <PurposeOfUse csd-code={quoteattr(event.purpose)} codeSystemName="v3-ActReason" '
        f"originalText={quoteattr(event.purpose)}/>\n"
        "  </EventIdentification>\n"
        + participant(event.source_institution, not destination_requests, ("110153", "Source Role ID"))
        + participant(event.destination_institution, destination_requests, ("110152", "Destination Role ID"))
        + participant(event.user, True)
        + f"  <AuditSourceIdentification AuditSourceID={quoteattr(event.source_institution)}/>\n"
        f"  <ParticipantObjectIdentification ParticipantObjectID={quoteattr(event.study_uid)} "
        'ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3">\n'
        '    <ParticipantObjectIDTypeCode csd-code="110180" codeSystemName="DCM" '
        'originalText="Study Instance UID"/>\n'
        f"    <ParticipantObjectDescription>{escape(event.description)}</ParticipantObjectDescription>\n"
        "  </ParticipantObjectIdentification>\n"
        f"  <ParticipantObjectIdentification ParticipantObjectID={quoteattr(event.patient_id)} "
        'ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">\n'
        '    <ParticipantObjectIDTypeCode csd-code="2" originalText="Patient Number"/>\n'
        "  </ParticipantObjectIdentification>\n"
        "</AuditMessage>\n"
    )
