"""The transfer messages on p2p and the source spellings: what a peer or an operator may send."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.records import Record, RecordType, make_record
from mftp.node.errors import NodeInputError, NodeUsageError
from mftp.node.transfers.messages import NO_RECORD, Offer, decode_offer, decode_receipt, receipt_value
from mftp.node.transfers.service import size_bucket
from mftp.node.transfers.sources import Allowed, DicomWebStudy, check_destination, parse_source
from mftp.node.transfers.state import TransferState, TransferStates, check_transfer_id
from mftp.transfer.capability import issue_capability

SENDER, RECIPIENT, STRANGER = (SigningIdentity.generate() for _ in range(3))


def offer_record(author: SigningIdentity = SENDER, **body_changes: object) -> Record:
    body = {
        "transfer_id": b"t" * 16,
        "recipient": RECIPIENT.public.sign_key,
        "purpose": "TREAT",
        "mode": "pseudonymised",
        "size_bucket": 20,
        "study_commitment": b"c" * 32,
        **body_changes,
    }
    return make_record(
        author,
        RecordType.TRANSFER_OFFERED,
        body,
        record_id=b"o" * 16,
        time_ms=1,
        tags=tuple(bytes([i]) * 16 for i in range(8)),
    )


def offer(issuer: SigningIdentity = SENDER, **changes: object) -> dict[str, object]:
    capability = issue_capability(
        issuer,
        recipient=RECIPIENT.public.sign_key,
        transfer_id=b"t" * 16,
        manifest_sha256=b"m" * 32,
        now_ms=1,
    )
    value = Offer(
        b"t" * 16, b"o" * 16, "TREAT", "pseudonymised", capability, "https://a:7800", b"", offer_record()
    ).to_value()
    return {**value, **changes}


def decode(value: object) -> Offer:
    return decode_offer(value, sender=SENDER.public.sign_key, recipient=RECIPIENT.public.sign_key)


def test_a_good_offer_round_trips() -> None:
    decoded = decode(offer())
    assert decoded.to_value() == offer() and decoded.capability.sender == SENDER.public.sign_key


@pytest.mark.parametrize(
    "bad",
    [
        offer(STRANGER),  # a capability another node signed
        offer(transfer_id=b"x" * 16),  # not the capability's transfer
        offer(purpose="SHOPPING"),
        offer(mode="clear"),
        offer(data_url="http://a:7800"),  # the data plane is HTTPS only
        offer(data_url="https://" + "a" * 600),
        offer(offer_id=b"short"),
        offer(capability=b"garbage"),
        offer(record=b"junk"),
        offer(record=offer_record(STRANGER).to_bytes()),  # signed by someone else
        offer(record=offer_record(purpose="HRESCH").to_bytes()),  # says another purpose
        offer(record=offer_record(recipient=STRANGER.public.sign_key).to_bytes()),
        offer(record=offer_record(transfer_id=b"x" * 16).to_bytes()),
        offer(record=offer_record().to_bytes()[:-1] + b"\x00"),  # bad signature
        offer(to_user="dr.who"),  # not a user id
        offer(to_user="user:" + "x" * 200),
        {**offer(), "extra": 1},
        [1, 2],
    ],
)
def test_bad_offers_are_input_errors(bad: object) -> None:
    with pytest.raises(NodeInputError):
        decode(bad)


def test_an_offer_for_another_recipient_is_refused() -> None:
    with pytest.raises(NodeInputError):
        decode_offer(offer(), sender=SENDER.public.sign_key, recipient=STRANGER.public.sign_key)


def test_receipts() -> None:
    assert decode_receipt(receipt_value(b"t" * 16, "complete", b"r" * 16)) == (
        b"t" * 16,
        "complete",
        b"r" * 16,
    )
    assert decode_receipt(receipt_value(b"t" * 16, "accepted"))[2] == NO_RECORD
    for bad in (
        receipt_value(b"t" * 16, "done"),
        receipt_value(b"t", "complete"),
        {"transfer_id": b"t" * 16},
    ):
        with pytest.raises(NodeInputError):
            decode_receipt(bad)


def test_sources_and_destinations(tmp_path: Path) -> None:
    rules = Allowed((tmp_path.resolve(),), (tmp_path.resolve(),), ("http://pacs:8042/", "https://pacs/"))
    assert parse_source(str(tmp_path), rules) == tmp_path.resolve()
    assert parse_source("dicomweb:http://pacs:8042/dicom-web#1.2.3", rules) == DicomWebStudy(
        "http://pacs:8042/dicom-web", "1.2.3"
    )
    for bad in ("relative/path", str(tmp_path / "missing"), "dicomweb:ftp://x#1.2", "dicomweb:http://x"):
        with pytest.raises(NodeUsageError):
            parse_source(bad, rules)
    check_destination(str(tmp_path), rules)
    check_destination("https://pacs/dicom-web", rules)
    with pytest.raises(NodeUsageError):
        check_destination("relative", rules)


def test_size_bucket_hides_the_exact_size() -> None:
    assert [size_bucket(n) for n in (0, 1, 1023, 1024, 3 << 20)] == [0, 0, 9, 10, 21]


def test_states_survive_a_restart(tmp_path: Path) -> None:
    states = TransferStates(tmp_path)
    state = TransferState("ab" * 16, "in", "b", "cd" * 32, "TREAT", "pseudonymised", "fetching", 5)
    states.save(state)
    again = TransferStates(tmp_path).get("ab" * 16)
    assert again is not None and dataclasses.asdict(again) == dataclasses.asdict(state)
    assert "capability" not in again.view()
    assert (tmp_path / f"{'ab' * 16}.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(NodeUsageError):
        check_transfer_id("../etc")
