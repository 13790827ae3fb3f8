"""What the parts of the transfer service share: the node they run in, and the service's face.

:class:`TransferHost` is what the transfer service needs of the running node (the node's one
clock among it); :class:`TransferContext` is what the receiving side (:mod:`.receiver`) and the
access side (:mod:`.access`) need of the service.  Kept apart so that :mod:`.service` imports its
parts and no part imports the service: no import cycle.
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final, Protocol

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.records import Record
from mftp.transfer.manifest import ObjectInfo

from ..audit.service import AuditService
from ..clock import Clock
from ..config import Config, Peer
from ..dataplane.blobstore import BlobStore
from .sources import Allowed
from .state import TransferState, TransferStates

CAPABILITY_TTL_MS: Final = 60 * 60 * 1000
"""An hour; renewed with the re-offers while the recipient still fetches (see ``_fresh_capability``)."""
MAX_TRANSFER_AGE_MS: Final = 24 * 60 * 60 * 1000
"""A day: a fetch interrupted by a restart of either node resumes within it (else it fails)."""


class TransferHost(Protocol):
    """What the service needs from the running node."""

    config: Config
    identity: SigningIdentity
    data_dir: Path
    clock: Clock

    def is_member(self, sign_key: bytes) -> bool:
        """Whether ``sign_key`` is a member of the consortium now."""

    def send_peer(self, sign_key: bytes, channel: str, value: Any) -> None:
        """Queue a p2p message to a member."""

    async def submit_records(self, records: list[Record]) -> list[str]:
        """Offer signed records to the mempool."""

    def known_peers(self) -> tuple[Peer, ...]:
        """Members with addresses, data URL and country, as the chain's directory (else the config) says."""


class TransferContext(Protocol):
    """What the receiving and the access sides need of the transfer service."""

    host: TransferHost
    store: BlobStore
    states: TransferStates
    audit: AuditService
    allowed: Allowed

    def object_key(self, obj: ObjectInfo) -> bytes:
        """The key that opens one of a received study's objects."""

    def fail(self, state: TransferState, reason: str) -> None:
        """End ``state`` as failed, with ``reason`` for the operator."""

    async def submit(self, record: Record) -> None:
        """Submit one of our records to the ledger (a usage error if the mempool refuses it)."""

    def spawn(self, transfer_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as the background task of one transfer."""
