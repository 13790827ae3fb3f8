"""Units of the receiving side: one TRANSFER_RECEIVED per transfer, and short-lived capabilities renewed."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.records import TAG_BYTES, TAG_SLOTS, Record, RecordType, make_record
from mftp.node.clock import FakeClock
from mftp.node.dataplane.blobstore import BlobStore
from mftp.node.transfers.context import CAPABILITY_TTL_MS, MAX_TRANSFER_AGE_MS
from mftp.node.transfers.receiver import Receiver
from mftp.node.transfers.service import TransferService
from mftp.node.transfers.state import IN, TransferState, TransferStates
from mftp.transfer.capability import STREAMING_MANIFEST, Capability, issue_capability


class Service:
    """The parts of a TransferService a Receiver uses, recording submissions."""

    def __init__(self, tmp_path: Path) -> None:
        self.host = SimpleNamespace(send_peer=lambda *args: None, clock=FakeClock())
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


def _capability(sender: SigningIdentity, recipient: bytes, transfer_id: bytes, now_ms: int) -> Capability:
    return issue_capability(
        sender,
        recipient=recipient,
        transfer_id=transfer_id,
        manifest_sha256=STREAMING_MANIFEST,
        now_ms=now_ms,
        ttl_ms=CAPABILITY_TTL_MS,
    )


def _token(capability: Capability) -> str:
    return base64.b64encode(capability.token).decode()


def test_capabilities_are_short_lived_and_renewed_while_the_transfer_is_young(tmp_path: Path) -> None:
    clock = FakeClock()
    sender, recipient = SigningIdentity.generate(), SigningIdentity.generate()
    transfer_id = secrets.token_bytes(16)
    created = clock.now_ms()
    old = _capability(sender, recipient.public.sign_key, transfer_id, created)
    service = SimpleNamespace(
        host=SimpleNamespace(identity=sender, clock=clock), states=TransferStates(tmp_path / "t")
    )
    peer_key = recipient.public.sign_key.hex()
    state = TransferState(transfer_id.hex(), "out", "hospital-b", peer_key, "TREAT", "identified", "accepted",
                          created_ms=created, capability=_token(old))  # fmt: skip
    assert TransferService._fresh_capability(service, state) == old  # type: ignore[arg-type]
    clock.advance(CAPABILITY_TTL_MS * 3 // 4)  # a quarter of its life left: renewed
    now = clock.now_ms()
    renewed = TransferService._fresh_capability(service, state)  # type: ignore[arg-type]
    assert renewed.not_after_ms == now + CAPABILITY_TTL_MS
    assert (renewed.transfer_id, renewed.recipient) == (transfer_id, recipient.public.sign_key)
    assert state.capability == _token(renewed)
    assert TransferService._fresh_capability(service, state) == renewed  # fresh enough: kept
    clock.advance(MAX_TRANSFER_AGE_MS)  # a day after it was created: no more renewals
    state.capability = _token(old)
    assert TransferService._fresh_capability(service, state) == old

    # The recipient keeps a renewed capability for a transfer it still fetches, never an older one.
    receiver = Receiver(Service(tmp_path / "r"))  # type: ignore[arg-type]
    held = TransferState(transfer_id.hex(), IN, "hospital-a", sender.public.sign_key.hex(), "TREAT",
                         "identified", "fetching", created_ms=now, capability=_token(old))  # fmt: skip
    receiver._renew(held, renewed)
    assert held.capability == _token(renewed)
    receiver._renew(held, old)
    assert held.capability == _token(renewed)
    held.state = "complete"
    receiver._renew(held, _capability(sender, recipient.public.sign_key, transfer_id, now + 5000))
    assert held.capability == _token(renewed)
