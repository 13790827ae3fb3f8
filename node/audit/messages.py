"""Peer messages of the audit protocol, as canonical values, each decoded and bounded.

Slot exchange (before a sender signs a ``TRANSFER_OFFERED`` record, see :mod:`.service`)::

    a.slots?  {"record_id": 16 bytes, "time_ms": int, "user": "user:..." or ""}
    a.slots   {"record_id": 16 bytes, "fills": [[slot, tag (16), escrow box], ...], "error": str}

Disclosure (an auditor asks a grant's institution for the details of its records), in pages::

    a.disclose?  {"grant_id": 16 bytes, "after": int}
    a.disclose   {"grant_id": 16 bytes, "after": int, "items": [[record id, [[name, salt, value], ...]], ...],
                  "next": int, "error": str}

``after`` is a position in the institution's own list of the records it holds details of
(0: from the start); ``next`` is where the following page starts, or -1 when there is
none.  A page holds at most :data:`MAX_DISCLOSED_RECORDS` records, and the institution
looks at no more than :data:`MAX_DISCLOSURE_WALK` of its records for one page, so
``items`` may be empty while ``next`` is not -1.

Anything malformed raises :class:`~mftp.node.errors.NodeInputError` (the peer's fault, counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mftp.ledger.pseudonyms import (
    ESCROW_BOX_BYTES,
    MAX_FIELD_NAME_CHARS,
    MAX_PARTY_ID_CHARS,
    SALT_BYTES,
    Disclosure,
    Role,
    SlotFill,
)
from mftp.ledger.records import MAX_COMMITMENTS, RECORD_ID_BYTES, TAG_BYTES

from ..errors import NodeInputError, NodeUsageError

MAX_ERROR_CHARS: Final = 200
MAX_DISCLOSED_RECORDS: Final = 2000  # ~1.5 MB at most per answer, under p2p.max_message_bytes
# Records an institution looks at for one page (a store read and a tag check each): this, not
# the number it finds, bounds how long one auditor's request holds the institution's event loop.
MAX_DISCLOSURE_WALK: Final = 5000
MAX_DISCLOSURE_POSITION: Final = 2**40
MAX_DETAIL_VALUE_CHARS: Final = 256
RECEIVER_ROLES: Final = (Role.RECEIVER_INSTITUTION, Role.RECEIVER_USER)


def _id(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != RECORD_ID_BYTES:
        raise NodeInputError(f"{what}: must be {RECORD_ID_BYTES} bytes")
    return value


def _error_text(value: Any, channel: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_ERROR_CHARS:
        raise NodeInputError(f"{channel}: bad error field")
    return value


# --- slot exchange ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotRequest:
    """A sender's request for our side's tags and escrow in its coming record."""

    record_id: bytes
    time_ms: int
    user: str

    def to_value(self) -> dict[str, Any]:
        """The canonical value sent on ``a.slots?``."""
        return {"record_id": self.record_id, "time_ms": self.time_ms, "user": self.user}


def decode_slot_request(value: Any) -> SlotRequest:
    """A checked ``a.slots?``."""
    if not isinstance(value, dict) or set(value) != {"record_id", "time_ms", "user"}:
        raise NodeInputError("a.slots?: malformed")
    time_ms, user = value["time_ms"], value["user"]
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms < 0:
        raise NodeInputError("a.slots?: bad time")
    if not isinstance(user, str) or len(user) > MAX_PARTY_ID_CHARS or (user and not user.startswith("user:")):
        raise NodeInputError("a.slots?: bad user")
    return SlotRequest(_id(value["record_id"], "a.slots? record_id"), time_ms, user)


def slot_answer(record_id: bytes, fills: dict[Role, SlotFill], error: str = "") -> dict[str, Any]:
    """The canonical value sent on ``a.slots``."""
    return {
        "record_id": record_id,
        "fills": [[int(role), fill.tag, fill.box] for role, fill in sorted(fills.items())],
        "error": error[:MAX_ERROR_CHARS],
    }


def decode_slot_answer(value: Any) -> tuple[bytes, dict[Role, SlotFill], str]:
    """``(record id, fills, error)`` of an ``a.slots``; only receiver-side slots are accepted."""
    if not isinstance(value, dict) or set(value) != {"record_id", "fills", "error"}:
        raise NodeInputError("a.slots: malformed")
    fills: dict[Role, SlotFill] = {}
    items = value["fills"]
    if not isinstance(items, list) or len(items) > len(RECEIVER_ROLES):
        raise NodeInputError("a.slots: bad fills")
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or item[0] not in {int(r) for r in RECEIVER_ROLES}
            or Role(item[0]) in fills
            or not isinstance(item[1], bytes)
            or len(item[1]) != TAG_BYTES
            or not isinstance(item[2], bytes)
            or len(item[2]) != ESCROW_BOX_BYTES
        ):
            raise NodeInputError("a.slots: a fill is malformed or not for a receiver slot")
        fills[Role(item[0])] = SlotFill(item[1], item[2])
    return _id(value["record_id"], "a.slots record_id"), fills, _error_text(value["error"], "a.slots")


# --- disclosure -----------------------------------------------------------------------------------


def disclose_request(grant_id: bytes, after: int = 0) -> dict[str, Any]:
    """The canonical value sent on ``a.disclose?``: the page of grant ``grant_id`` from ``after``."""
    return {"grant_id": grant_id, "after": after}


def _position(value: Any, what: str, *, minimum: int) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not minimum <= value <= MAX_DISCLOSURE_POSITION
    ):
        raise NodeInputError(f"{what}: bad position")
    return value


def decode_disclose_request(value: Any) -> tuple[bytes, int]:
    """``(grant id, after)`` of an ``a.disclose?``."""
    if not isinstance(value, dict) or set(value) != {"grant_id", "after"}:
        raise NodeInputError("a.disclose?: malformed")
    return _id(value["grant_id"], "a.disclose? grant_id"), _position(value["after"], "a.disclose?", minimum=0)


def disclose_answer(
    grant_id: bytes, after: int, disclosures: list[Disclosure], *, next_after: int = -1, error: str = ""
) -> dict[str, Any]:
    """The canonical value sent on ``a.disclose``; ``next_after`` -1: no page follows."""
    if len(disclosures) > MAX_DISCLOSED_RECORDS:
        raise NodeUsageError(f"a page holds at most {MAX_DISCLOSED_RECORDS} records")
    return {
        "grant_id": grant_id,
        "after": after,
        "items": [
            [d.record_id, [[name, salt, value] for name, (salt, value) in sorted(d.fields.items())]]
            for d in disclosures
        ],
        "next": next_after,
        "error": error[:MAX_ERROR_CHARS],
    }


@dataclass(frozen=True)
class DisclosurePage:
    """One ``a.disclose`` answer, checked."""

    grant_id: bytes
    after: int
    disclosures: list[Disclosure]
    next_after: int  # -1: the last page
    error: str


def _detail_value(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_DETAIL_VALUE_CHARS
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _disclosure(item: Any) -> Disclosure:
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
        raise NodeInputError("a.disclose: an item is malformed")
    record_id = _id(item[0], "a.disclose record id")
    fields: dict[str, tuple[bytes, Any]] = {}
    if len(item[1]) > MAX_COMMITMENTS:
        raise NodeInputError("a.disclose: too many fields")
    for entry in item[1]:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not 0 < len(entry[0]) <= MAX_FIELD_NAME_CHARS
            or entry[0] in fields
            or not isinstance(entry[1], bytes)
            or len(entry[1]) != SALT_BYTES
            or not _detail_value(entry[2])
        ):
            raise NodeInputError("a.disclose: a field is malformed")
        fields[entry[0]] = (entry[1], entry[2])
    return Disclosure(record_id, fields)


def decode_disclose_answer(value: Any) -> DisclosurePage:
    """The page an ``a.disclose`` carries; a page that does not move forward is malformed."""
    if not isinstance(value, dict) or set(value) != {"grant_id", "after", "items", "next", "error"}:
        raise NodeInputError("a.disclose: malformed")
    items = value["items"]
    if not isinstance(items, list) or len(items) > MAX_DISCLOSED_RECORDS:
        raise NodeInputError("a.disclose: items must be a bounded list")
    after = _position(value["after"], "a.disclose after", minimum=0)
    next_after = _position(value["next"], "a.disclose next", minimum=-1)
    if next_after != -1 and next_after <= after:
        raise NodeInputError("a.disclose: the next page must start after this one")
    disclosures = [_disclosure(item) for item in items]
    if len({d.record_id for d in disclosures}) != len(disclosures):
        raise NodeInputError("a.disclose: a record is disclosed twice")
    grant_id = _id(value["grant_id"], "a.disclose grant_id")
    return DisclosurePage(grant_id, after, disclosures, next_after, _error_text(value["error"], "a.disclose"))
