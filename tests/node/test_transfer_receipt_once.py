"""A recipient signs one TRANSFER_RECEIVED per transfer, even across a crash after it submitted it."""

from __future__ import annotations

import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.records import TAG_BYTES, TAG_SLOTS, Record, RecordType, make_record
from mftp.node.blobstore import BlobStore
from mftp.node.transfer_receive import Receiver
from mftp.node.transfer_state import IN, TransferState, TransferStates


class Service:
    """The parts of a TransferService a Receiver uses, recording submissions."""

    def __init__(self, tmp_path: Path) -> None:
        self.host = SimpleNamespace(send_peer=lambda *args: None)
        self.store = BlobStore(tmp_path / "blobs")
        self.states = TransferStates(tmp_path / "transfers")
        self.audit = SimpleNamespace(author=self._no_new_record)
        self.submitted: list[Record] = []

    @staticmethod
    def _no_new_record(*args: Any, **kwargs: Any) -> Record:
        raise AssertionError("a second TRANSFER_RECEIVED was authored")

    async def submit(self, record: Record) -> None:
        self.submitted.append(record)


async def test_a_receipt_signed_before_a_crash_is_submitted_again_not_signed_anew(tmp_path: Path) -> None:
    service = Service(tmp_path)
    transfer_id = secrets.token_bytes(16)
    state = TransferState(
        transfer_id=transfer_id.hex(),
        direction=IN,
        peer="hospital-a",
        peer_key="00" * 32,
        purpose="TREAT",
        mode="pseudonymised",
        state="verifying",  # as a restarted node finds it
        created_ms=1,
        offer_record="11" * 16,
    )
    signed = make_record(
        SigningIdentity.generate(),
        RecordType.TRANSFER_RECEIVED,
        {
            "transfer_id": transfer_id,
            "offer_id": b"\x11" * 16,
            "manifest_hash": b"\x22" * 32,
            "outcome": "complete",
        },
        record_id=secrets.token_bytes(16),
        time_ms=2,
        tags=tuple(secrets.token_bytes(TAG_BYTES) for _ in range(TAG_SLOTS)),
    )
    service.store.put_record(f"received-record-{state.transfer_id}", signed.to_bytes())
    receiver = Receiver(service)  # type: ignore[arg-type]
    await receiver._verify_and_record(state, manifest=None, checker=None)  # type: ignore[arg-type]
    assert [r.record_id for r in service.submitted] == [signed.record_id]
    assert state.state == "complete" and state.received_record == signed.record_id.hex()
    assert service.states.get(state.transfer_id) is state
