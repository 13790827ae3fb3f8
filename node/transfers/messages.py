"""The two p2p messages of a transfer, and their checks (values are canonical maps).

``t.offer``, sender to recipient::

    {"transfer_id": 16 bytes, "offer_id": id of the sender's TRANSFER_OFFERED record,
     "purpose": HL7 PurposeOfUse code, "mode": de-identification mode,
     "capability": token (see mftp.transfer.capability), "data_url": "https://..." (<= 512 chars),
     "sealed": the sealed manifest, or b"" when it is too large for one message
               (the recipient then fetches it from the sender's data plane),
     "record": the sender's signed TRANSFER_OFFERED record (the recipient checks its own
               tag slots in it before it fetches, see mftp.node.audit.service),
     "to_user": the recipient user named by the sender ("user:..."), or ""}

``t.receipt``, recipient to sender::

    {"transfer_id": 16 bytes, "state": "accepted" | "complete" | "refused",
     "record": id of the recipient's TRANSFER_RECEIVED record (zeros while accepted)}

Everything from a peer is checked here before the service looks at it; any fault is a
:class:`~mftp.node.errors.NodeInputError` (counted against the peer, never a crash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import CryptoError
from mftp.crypto.signing import verify
from mftp.ledger.errors import LedgerError
from mftp.ledger.pseudonyms import MAX_PARTY_ID_CHARS
from mftp.ledger.records import MODES, PURPOSES, Record, RecordType
from mftp.transfer.capability import SIGN_DOMAIN, Capability, decode_capability
from mftp.transfer.errors import TransferError

from ..errors import NodeInputError

OFFER_FIELDS: Final = frozenset(
    {"transfer_id", "offer_id", "purpose", "mode", "capability", "data_url", "sealed", "record", "to_user"}
)
MAX_OFFER_RECORD_BYTES: Final = 8 * 1024
RECEIPT_FIELDS: Final = frozenset({"transfer_id", "state", "record"})
RECEIPT_STATES: Final = ("accepted", "complete", "refused")
MAX_DATA_URL_CHARS: Final = 512
RECORD_ID_BYTES: Final = 16
NO_RECORD: Final = bytes(RECORD_ID_BYTES)


@dataclass(frozen=True)
class Offer:
    """A checked ``t.offer``."""

    transfer_id: bytes
    offer_id: bytes
    purpose: str
    mode: str
    capability: Capability
    data_url: str
    sealed: bytes
    record: Record
    to_user: str = ""

    def to_value(self) -> dict[str, Any]:
        """The message value."""
        return {
            "transfer_id": self.transfer_id,
            "offer_id": self.offer_id,
            "purpose": self.purpose,
            "mode": self.mode,
            "capability": self.capability.token,
            "data_url": self.data_url,
            "sealed": self.sealed,
            "record": self.record.to_bytes(),
            "to_user": self.to_user,
        }


def decode_offer(value: Any, *, sender: bytes, recipient: bytes) -> Offer:
    """Check an offer from member ``sender`` to us (``recipient``): fields, capability signature."""
    if not isinstance(value, dict) or set(value) != OFFER_FIELDS:
        raise NodeInputError("t.offer: malformed")
    try:
        capability = decode_capability(value["capability"])
        # The sender's data plane checks it too; checking here refuses a forged offer at once.
        verify(sender, SIGN_DOMAIN, canonical.encode(capability.body()), capability.signature)
    except (TransferError, CryptoError, TypeError) as exc:
        raise NodeInputError(f"t.offer: bad capability: {exc}") from None
    url = value["data_url"]
    ok = (
        capability.sender == sender
        and capability.recipient == recipient
        and capability.transfer_id == value["transfer_id"]
        and isinstance(value["offer_id"], bytes)
        and len(value["offer_id"]) == RECORD_ID_BYTES
        and value["purpose"] in PURPOSES
        and value["mode"] in MODES
        and isinstance(url, str)
        and url.startswith("https://")
        and len(url) <= MAX_DATA_URL_CHARS
        and isinstance(value["sealed"], bytes)
        and isinstance(value["to_user"], str)
        and len(value["to_user"]) <= MAX_PARTY_ID_CHARS
        and (not value["to_user"] or value["to_user"].startswith("user:"))
        and isinstance(value["record"], bytes)
        and len(value["record"]) <= MAX_OFFER_RECORD_BYTES
    )
    if not ok:
        raise NodeInputError("t.offer: fields invalid or not those of the capability")
    record = _offer_record(value, sender, recipient)
    return Offer(
        value["transfer_id"],
        value["offer_id"],
        value["purpose"],
        value["mode"],
        capability,
        url,
        value["sealed"],
        record,
        value["to_user"],
    )


def _offer_record(value: dict[str, Any], sender: bytes, recipient: bytes) -> Record:
    """The sender's signed ``TRANSFER_OFFERED`` record, checked against the offer it came with."""
    try:
        record = Record.decode(value["record"])
        record.verify_signature()
    except LedgerError as exc:
        raise NodeInputError(f"t.offer: bad offer record: {exc}") from None
    body = record.body
    if (
        record.type is not RecordType.TRANSFER_OFFERED
        or record.author != sender
        or record.record_id != value["offer_id"]
        or body["transfer_id"] != value["transfer_id"]
        or body["recipient"] != recipient
        or body["purpose"] != value["purpose"]
        or body["mode"] != value["mode"]
    ):
        raise NodeInputError("t.offer: the offer record does not match the offer")
    return record


def receipt_value(transfer_id: bytes, state: str, record: bytes = NO_RECORD) -> dict[str, Any]:
    """A ``t.receipt`` value."""
    return {"transfer_id": transfer_id, "state": state, "record": record}


def decode_receipt(value: Any) -> tuple[bytes, str, bytes]:
    """``(transfer_id, state, record id)`` of a ``t.receipt``; :class:`NodeInputError` if malformed."""
    if not isinstance(value, dict) or set(value) != RECEIPT_FIELDS:
        raise NodeInputError("t.receipt: malformed")
    transfer_id, state, record = value["transfer_id"], value["state"], value["record"]
    if (
        not isinstance(transfer_id, bytes)
        or len(transfer_id) != RECORD_ID_BYTES
        or state not in RECEIPT_STATES
        or not isinstance(record, bytes)
        or len(record) != RECORD_ID_BYTES
    ):
        raise NodeInputError("t.receipt: bad transfer id, state or record id")
    return transfer_id, state, record
