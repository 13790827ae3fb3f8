"""The two p2p messages of a transfer, and their checks (values are canonical maps).

``t.offer``, sender to recipient::

    {"transfer_id": 16 bytes, "offer_id": id of the sender's TRANSFER_OFFERED record,
     "purpose": HL7 PurposeOfUse code, "mode": de-identification mode,
     "capability": token (see mftp.transfer.capability), "data_url": "https://..." (<= 512 chars),
     "sealed": the sealed manifest, or b"" when it is too large for one message
               (the recipient then fetches it from the sender's data plane)}

``t.receipt``, recipient to sender::

    {"transfer_id": 16 bytes, "state": "accepted" | "complete" | "refused",
     "record": id of the recipient's TRANSFER_RECEIVED record (zeros while accepted)}

Everything from a peer is checked here before the service looks at it; any fault is a
:class:`~.errors.NodeInputError` (counted against the peer, never a crash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import CryptoError
from mftp.crypto.signing import verify
from mftp.ledger.records import MODES, PURPOSES
from mftp.transfer.capability import SIGN_DOMAIN, Capability, decode_capability
from mftp.transfer.errors import TransferError

from .errors import NodeInputError

OFFER_FIELDS: Final = frozenset(
    {"transfer_id", "offer_id", "purpose", "mode", "capability", "data_url", "sealed"}
)
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
    )
    if not ok:
        raise NodeInputError("t.offer: fields invalid or not those of the capability")
    return Offer(
        value["transfer_id"],
        value["offer_id"],
        value["purpose"],
        value["mode"],
        capability,
        url,
        value["sealed"],
    )


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
