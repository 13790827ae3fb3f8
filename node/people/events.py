"""Security events (issue 16, point 8), and their export as FHIR AuditEvent and DICOM audit messages.

A :class:`SecurityEvent` is what sign-in, enrolment and operator actions report: plain data,
destined for the institution's encrypted audit vault (the wiring puts it there), never for
the logs, since it names users and client addresses.

Exports follow :mod:`mftp.ledger.audit_export` (same code systems and outcome codes):

- sign-in (good, failed), sign-out and step-up are DICOM **User Authentication** (110114),
  with the event type Login (110122) or Logout (110123), as IHE ATNA asks;
- everything else (lockout and unlock, second-factor enrolment and reset, tokens, roles,
  accounts) is a **Security Alert** (110113) of type Security Roles Changed (110136) when roles
  changed, else User Security Attributes Changed (110137).

Pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final
from xml.sax.saxutils import escape, quoteattr

from mftp.ledger.audit_export import DCM, OUTCOME_SYSTEM, OUTCOMES


class EventKind(StrEnum):
    """What happened."""

    SIGN_IN = "sign-in"  # both factors passed
    SIGN_IN_FAILED = "sign-in-failed"  # a factor failed, or the account may not sign in
    STEP_UP = "step-up"  # a second factor again, for a consequential action
    SIGN_OUT = "sign-out"
    LOCKOUT = "lockout"
    UNLOCK = "unlock"
    RECOVERY_CODE_USED = "recovery-code-used"
    ENROLMENT_CODE_ISSUED = "enrolment-code-issued"
    SECOND_FACTOR_ENROLLED = "second-factor-enrolled"
    SECOND_FACTOR_RESET = "second-factor-reset"
    TOKEN_CREATED = "token-created"
    TOKEN_REVOKED = "token-revoked"
    ROLE_CHANGED = "role-changed"
    ACCOUNT_ADDED = "account-added"
    ACCOUNT_DISABLED = "account-disabled"
    ACCOUNT_ENABLED = "account-enabled"


AUTHENTICATION: Final = {EventKind.SIGN_IN, EventKind.SIGN_IN_FAILED, EventKind.STEP_UP, EventKind.SIGN_OUT}


@dataclass(frozen=True)
class SecurityEvent:
    """One security event of this institution's node.

    ``user`` is the account concerned ("" when a typed name matched no account: the name is not
    kept, since people type passwords into name fields); ``actor`` the operator who acted, if not
    the user; ``factor`` what was presented ("password", "totp", "recovery", "passkey",
    "enrolment-code", "directory", "token"); ``detail`` a short, secret-free note (roles, a
    token's public id).
    """

    kind: EventKind
    time_ms: int
    success: bool
    user: str = ""
    address: str = ""
    factor: str = ""
    actor: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The event as plain values (for the vault and the API)."""
        return {
            "kind": self.kind.value,
            "time_ms": self.time_ms,
            "success": self.success,
            "user": self.user,
            "address": self.address,
            "factor": self.factor,
            "actor": self.actor,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> SecurityEvent:
        """The event :meth:`as_dict` wrote."""
        return cls(
            EventKind(value["kind"]),
            int(value["time_ms"]),
            bool(value["success"]),
            str(value["user"]),
            str(value["address"]),
            str(value["factor"]),
            str(value["actor"]),
            str(value["detail"]),
        )


def _iso(time_ms: int) -> str:
    moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _codes(event: SecurityEvent) -> tuple[tuple[str, str], tuple[str, str]]:
    """((event id, display), (event type, display)) of DICOM CID 400 / 401."""
    if event.kind in AUTHENTICATION:
        kind = ("110123", "Logout") if event.kind is EventKind.SIGN_OUT else ("110122", "Login")
        return ("110114", "User Authentication"), kind
    if event.kind is EventKind.ROLE_CHANGED:
        return ("110113", "Security Alert"), ("110136", "Security Roles Changed")
    return ("110113", "Security Alert"), ("110137", "User Security Attributes Changed")


def _outcome(event: SecurityEvent) -> tuple[str, str]:
    return OUTCOMES["complete"] if event.success else OUTCOMES["refused"]


def to_fhir_audit_event(event: SecurityEvent, institution: str, event_id: str) -> dict[str, Any]:
    """A FHIR R5 AuditEvent for ``event`` observed by ``institution``'s node."""
    (code, display), (type_code, type_display) = _codes(event)
    outcome_code, outcome_display = _outcome(event)
    user_agent: dict[str, Any] = {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"value": event.user or "unknown"}},
        "requestor": not event.actor,
    }
    if event.address:
        user_agent["networkString"] = event.address
    agents = [user_agent]
    if event.actor:
        agents.append({"who": {"identifier": {"value": event.actor}}, "requestor": True})
    agents.append({"who": {"display": institution}, "requestor": False})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "category": [{"coding": [{"system": DCM, "code": code, "display": display}]}],
        "code": {"coding": [{"system": DCM, "code": type_code, "display": type_display}]},
        "action": "E",
        "recorded": _iso(event.time_ms),
        "outcome": {"code": {"system": OUTCOME_SYSTEM, "code": outcome_code, "display": outcome_display}},
        "agent": agents,
        "source": {"observer": {"display": institution}},
    }
    note = " ".join(part for part in (event.kind.value, event.factor, event.detail) if part)
    resource["entity"] = [{"what": {"display": "mftp security event"}, "detail": [_detail(note)]}]
    return resource


def _detail(text: str) -> dict[str, Any]:
    return {"type": {"text": "description"}, "valueString": text}


def to_dicom_audit_message(event: SecurityEvent, institution: str) -> str:
    """A DICOM PS3.15 A.5 audit message (IHE ATNA) for ``event``, as XML."""
    (code, display), (type_code, type_display) = _codes(event)
    outcome_code, _ = _outcome(event)

    def participant(user_id: str, requestor: bool, address: str = "") -> str:
        where = ""
        if address:
            where = f' NetworkAccessPointID={quoteattr(address)} NetworkAccessPointTypeCode="2"'
        flag = str(requestor).lower()
        return (
            f"  <ActiveParticipant UserID={quoteattr(user_id)} UserIsRequestor={quoteattr(flag)}{where}/>\n"
        )

    note = " ".join(part for part in (event.kind.value, event.factor, event.detail) if part)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<AuditMessage>\n"
        f'  <EventIdentification EventActionCode="E" EventDateTime="{_iso(event.time_ms)}" '
        f'EventOutcomeIndicator="{outcome_code}">\n'
        f'    <EventID csd-code="{code}" codeSystemName="DCM" originalText={quoteattr(display)}/>\n'
        f'    <EventTypeCode csd-code="{type_code}" codeSystemName="DCM" '
        f"originalText={quoteattr(type_display)}/>\n"
        f"    <EventOutcomeDescription>{escape(note)}</EventOutcomeDescription>\n"
        "  </EventIdentification>\n"
        + participant(event.user or "unknown", not event.actor, event.address)
        + (participant(event.actor, True) if event.actor else "")
        + participant(institution, False)
        + f"  <AuditSourceIdentification AuditSourceID={quoteattr(institution)}/>\n"
        "</AuditMessage>\n"
    )
