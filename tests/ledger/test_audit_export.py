"""Disclosed events as FHIR AuditEvent (validated with fhir.resources) and DICOM audit messages."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from fhir.resources.auditevent import AuditEvent

from mftp.ledger.audit_export import DisclosedEvent, to_dicom_audit_message, to_fhir_audit_event

EVENT = DisclosedEvent(
    record_id="00" * 16,
    record_type="transfer_offered",
    time_ms=1_763_800_000_000,
    outcome="complete",
    purpose="TREAT",
    source_institution="hospital-a",
    destination_institution="hospital-b",
    user='dr "o\'brien" <radiology> & co',
    patient_id="PSEUDO-42",
    study_uid="2.25.1234567890",
    description="CT chest, 3 instances",
)


@pytest.mark.parametrize("record_type", ["transfer_offered", "transfer_received", "study_accessed"])
def test_fhir_audit_event_validates(record_type: str) -> None:
    event = DisclosedEvent(**{**EVENT.__dict__, "record_type": record_type})
    resource = AuditEvent.model_validate(to_fhir_audit_event(event))
    codes = [c.code for c in resource.code.coding]
    assert codes == (["110103"] if record_type == "study_accessed" else ["110104"])
    assert resource.authorization[0].coding[0].code == "TREAT"
    assert resource.entity[0].role.coding[0].code == "110180"
    assert str(resource.recorded).startswith("2025-11-22")


def test_dicom_audit_message_is_well_formed_and_escaped() -> None:
    root = ET.fromstring(to_dicom_audit_message(EVENT))
    identification = root.find("EventIdentification")
    assert identification is not None
    assert identification.get("EventOutcomeIndicator") == "0"
    assert identification.find("EventID").get("csd-code") == "110104"  # type: ignore[union-attr]
    assert identification.find("PurposeOfUse").get("csd-code") == "TREAT"  # type: ignore[union-attr]
    users = [p.get("UserID") for p in root.findall("ActiveParticipant")]
    assert users == ["hospital-a", "hospital-b", EVENT.user]  # the quotes and brackets survive escaping
    roles = [p.find("RoleIDCode") for p in root.findall("ActiveParticipant")]
    assert [r.get("csd-code") for r in roles if r is not None] == ["110153", "110152"]
    objects = root.findall("ParticipantObjectIdentification")
    assert [o.get("ParticipantObjectID") for o in objects] == ["2.25.1234567890", "PSEUDO-42"]


def test_refused_transfer_is_a_minor_failure_and_unknown_types_are_refused() -> None:
    refused = DisclosedEvent(**{**EVENT.__dict__, "record_type": "transfer_received", "outcome": "refused"})
    assert (
        ET.fromstring(to_dicom_audit_message(refused))
        .find("EventIdentification")
        .get(  # type: ignore[union-attr]
            "EventOutcomeIndicator"
        )
        == "4"
    )
    with pytest.raises(ValueError, match="no audit event mapping"):
        to_fhir_audit_event(DisclosedEvent(**{**EVENT.__dict__, "record_type": "evidence"}))
