"""Cancelling a transfer, and sending a sent study again (the console's cancel and resend).

**Cancel** (``POST /transfers/{id}/cancel``) moves the transfer to ``cancelled`` through the
lifecycle table (:data:`~.state.TRANSFER_LIFECYCLE`):

* a *sent* transfer not yet delivered (``preparing``, ``offered``, ``accepted``): preparing stops
  (its task is cancelled; what was packaged is deleted as when the recipient refuses), the data
  plane answers ``410`` for it from now on and its encrypted objects are deleted.  The protocol
  has no message from sender to recipient but the offer, so the recipient learns it from that
  ``410``: it ends its side as ``failed`` ("the sender abandoned this transfer"), deletes what it
  fetched and answers ``refused``.  A recipient that had already fetched and verified everything
  keeps the study (its receipt, arriving later, is noted in ``detail``); the offer record, if it
  reached the ledger, stays there, as every record does.
* a *received* transfer still ``fetching``: fetching stops, what was fetched is deleted
  (:meth:`~.receiver.Receiver.receive` does it on the way out), and the sender is told with a
  ``refused`` receipt (``t.receipt``), so it ends its side as ``refused``.  No receipt record is
  written: the study was never received.

**Resend** (``POST /transfers/{id}/resend``) is a new send of a sent transfer's source (kept
sealed to this node's own key in its state) to the same institution and recipient user, with the
same purpose and mode, by the signed-in user; it is refused with a 400 when the transfer is still
under way, was received rather than sent, was sent before sources were kept, or when the source
is gone (the folder no longer exists or is no longer allowed, the PACS no longer holds the study).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, Final, Protocol

import aiohttp

from mftp.crypto.errors import CryptoError
from mftp.crypto.sealing import seal, unseal
from mftp.crypto.signing import PublicIdentity, SigningIdentity

from ..errors import NodeUsageError, StorageDamaged
from ..pacs import DicomWebSource
from ..pacs.common import PacsError
from ..pacs.dicomweb import DicomWebLimits
from ..pacs.dimse import DimseLimits, DimseSource
from .dimse_and_attachments import DimseStudy
from .sources import Allowed, DicomWebStudy, parse_source
from .state import ACTIVE_STATES, IN, OUT, Phase, TransferState

log = logging.getLogger("mftp.node.transfers.cancelling")

SENT_CANCELLABLE: Final = frozenset({Phase.PREPARING, Phase.OFFERED, Phase.ACCEPTED})
RECEIVED_CANCELLABLE: Final = frozenset({Phase.FETCHING})
LOOKUP_TIMEOUT_S: Final = 20.0


class UnknownTransfer(NodeUsageError):
    """No transfer of this node has that id (the API answers 404)."""


def seal_source(identity: PublicIdentity, source: str) -> str:
    """``source`` sealed to this node's own key, as the state file keeps it (base64)."""
    return base64.b64encode(seal(identity, source.encode())).decode()


def open_source(identity: SigningIdentity, sealed: str) -> str:
    """The source a state file keeps; :class:`StorageDamaged` if it does not open."""
    try:
        return unseal(identity, base64.b64decode(sealed, validate=True)).decode()
    except (CryptoError, ValueError) as exc:
        raise StorageDamaged(f"the kept source of a transfer does not open: {exc}") from None


class Cancellable(Protocol):
    """What cancelling needs of the transfer service."""

    def stop_work(self, transfer_id: str) -> None:
        """Cancel the transfer's background task (preparing or fetching), if any."""

    def withdraw(self, state: TransferState) -> None:
        """Stop serving a sent transfer (410 from now on) and delete its encrypted objects."""

    def tell_sender(self, state: TransferState) -> None:
        """Answer a received transfer's sender with our current state (``t.receipt``)."""

    def save(self, state: TransferState) -> None:
        """Persist ``state``."""


def cancel(service: Cancellable, state: TransferState | None) -> TransferState:
    """Cancel ``state`` (see the module docstring); a usage error (400) when it cannot be."""
    if state is None:
        raise UnknownTransfer("no such transfer")
    allowed = SENT_CANCELLABLE if state.direction == OUT else RECEIVED_CANCELLABLE
    if state.state not in allowed:
        what = "not yet delivered" if state.direction == OUT else "still fetching"
        raise NodeUsageError(f"this transfer is {state.state}: only a transfer {what} can be cancelled")
    # No await from the check to the move: the transfer's own task cannot move it in between.
    state.move(Phase.CANCELLED, _detail(state))
    service.stop_work(state.transfer_id)
    service.save(state)
    if state.direction == OUT:
        service.withdraw(state)
    else:
        service.tell_sender(state)
    log.info("transfer cancelled", extra={"fields": {"transfer": state.transfer_id, "peer": state.peer}})
    return state


def _detail(state: TransferState) -> str:
    if state.direction == IN:
        return "cancelled here while fetching; what was fetched is deleted and the sender was told"
    if state.state == Phase.PREPARING:
        return "cancelled here while preparing; nothing was sent"
    return "cancelled here; the recipient can no longer fetch it (unless it already had all of it)"


def resend_request(state: TransferState | None) -> TransferState:
    """The sent transfer to send again; a usage error (400) saying why one cannot be."""
    if state is None:
        raise UnknownTransfer("no such transfer")
    if state.direction != OUT:
        raise NodeUsageError("only a study this node sent can be sent again")
    if state.state in ACTIVE_STATES:
        raise NodeUsageError(f"this transfer is still {state.state}: cancel it first, or wait for it to end")
    if not state.source_sealed:
        raise NodeUsageError(
            "this transfer was sent before its source was kept: find the study and send it anew"
        )
    return state


async def check_source(source: str, allowed: Allowed) -> None:
    """Refuse (400) a source that is gone: a folder no longer there or allowed, a study the PACS
    no longer holds.  A PACS that does not answer is its fault (502), not a gone study."""
    try:
        parsed = parse_source(source, allowed)
    except NodeUsageError as exc:
        raise NodeUsageError(f"the source of this transfer is gone or no longer allowed: {exc}") from None
    if not isinstance(parsed, DicomWebStudy | DimseStudy):
        return  # a folder or file: parse_source found it
    found: list[Any]
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            if isinstance(parsed, DicomWebStudy):
                async with aiohttp.ClientSession() as session:
                    reader = DicomWebSource(parsed.base_url, session, limits=DicomWebLimits(max_studies=2))
                    found = await reader.find_studies(study_uid=parsed.study_uid)
            else:
                dimse = DimseSource(parsed.peer, limits=DimseLimits(max_studies=2))
                found = await dimse.find_studies(study_uid=parsed.study_uid)
    except TimeoutError:
        raise PacsError(f"the PACS did not answer within {LOOKUP_TIMEOUT_S:.0f} s") from None
    if not found:
        raise NodeUsageError("the source of this transfer is gone: the PACS no longer holds the study")
