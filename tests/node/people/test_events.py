"""Security events as FHIR AuditEvent (validated with fhir.resources) and DICOM audit messages."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from fhir.resources.auditevent import AuditEvent

from mftp.node.people.events import EventKind, SecurityEvent, to_dicom_audit_message, to_fhir_audit_event

SIGN_IN = SecurityEvent(EventKind.SIGN_IN, 1_767_225_600_000, True, "dr.hansen", "10.0.0.7", "totp")


@pytest.mark.parametrize("kind", list(EventKind))
@pytest.mark.parametrize("success", [True, False])
def test_every_kind_exports_a_valid_fhir_audit_event(kind: EventKind, success: bool) -> None:
    event = SecurityEvent(kind, SIGN_IN.time_ms, success, "dr.hansen", "10.0.0.7", "totp", "ops", "roles")
    resource = AuditEvent.model_validate(to_fhir_audit_event(event, "St Olav", "ev-1"))
    assert resource.recorded.isoformat().startswith("2026-01-01T00:00:00")


def test_sign_in_is_user_authentication_login() -> None:
    fhir = to_fhir_audit_event(SIGN_IN, "St Olav", "ev-1")
    assert fhir["category"][0]["coding"][0]["code"] == "110114"
    assert fhir["code"]["coding"][0]["code"] == "110122"
    assert fhir["outcome"]["code"]["code"] == "0"
    assert fhir["agent"][0]["who"]["identifier"]["value"] == "dr.hansen"
    assert fhir["agent"][0]["networkString"] == "10.0.0.7"
    failed = to_fhir_audit_event(SecurityEvent(EventKind.SIGN_IN_FAILED, 0, False), "St Olav", "ev-2")
    assert failed["outcome"]["code"]["code"] == "4"
    assert failed["agent"][0]["who"]["identifier"]["value"] == "unknown"


def test_dicom_message_for_sign_in_and_sign_out() -> None:
    root = ET.fromstring(to_dicom_audit_message(SIGN_IN, "St Olav"))
    ident = root.find("EventIdentification")
    assert ident is not None and ident.get("EventOutcomeIndicator") == "0"
    assert root.find("EventIdentification/EventID").get("csd-code") == "110114"  # type: ignore[union-attr]
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "110122"  # type: ignore[union-attr]
    users = root.findall("ActiveParticipant")
    assert [u.get("UserID") for u in users] == ["dr.hansen", "St Olav"]
    assert users[0].get("NetworkAccessPointID") == "10.0.0.7" and users[0].get("UserIsRequestor") == "true"
    out = ET.fromstring(to_dicom_audit_message(SecurityEvent(EventKind.SIGN_OUT, 0, True, "dr.hansen"), "X"))
    assert out.find("EventIdentification/EventTypeCode").get("csd-code") == "110123"  # type: ignore[union-attr]


def test_operator_actions_are_security_alerts_naming_the_operator() -> None:
    role = SecurityEvent(
        EventKind.ROLE_CHANGED, 0, True, "dr.hansen", actor="ops", detail="clinician,operator"
    )
    root = ET.fromstring(to_dicom_audit_message(role, "St Olav & Co <x>"))
    assert root.find("EventIdentification/EventID").get("csd-code") == "110113"  # type: ignore[union-attr]
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "110136"  # type: ignore[union-attr]
    assert [u.get("UserIsRequestor") for u in root.findall("ActiveParticipant")] == ["false", "true", "false"]
    assert root.find("AuditSourceIdentification").get("AuditSourceID") == "St Olav & Co <x>"  # type: ignore[union-attr]
    reset = to_fhir_audit_event(
        SecurityEvent(EventKind.SECOND_FACTOR_RESET, 0, True, "dr.hansen", actor="ops"), "St Olav", "e"
    )
    assert reset["code"]["coding"][0]["code"] == "110137"
