"""The study manifest (mftp.transfer.manifest): encoding, checks, limits, sealing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mftp.crypto import canonical
from mftp.transfer.errors import TransferInputError, TransferUsageError
from mftp.transfer.manifest import (
    Manifest,
    ManifestLimits,
    check_restored,
    decode_manifest,
    name_problem,
    open_manifest,
    seal_manifest,
    sealed_manifest_header,
)
from tests.transfer.package_helpers import RECIPIENT, SENDER, STRANGER, make_files, package_files

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    result, _ = package_files(make_files([2 * MIB, 1000, 2000, 0, 3 * MIB]))
    return result.manifest


def _value(manifest: Manifest) -> dict[str, Any]:
    return canonical.decode(manifest.encode(), max_depth=8)


def _mutated(manifest: Manifest, change: Any) -> bytes:
    value = _value(manifest)
    change(value)
    return canonical.encode(value)


def test_encode_decode_round_trip(manifest: Manifest) -> None:
    again = decode_manifest(manifest.encode())
    assert again == manifest
    assert again.sha256 == manifest.sha256
    assert again.encode() == manifest.encode()
    assert manifest.total_original_bytes == 5 * MIB + 3000


def test_seal_and_open(manifest: Manifest) -> None:
    sealed = seal_manifest(manifest, SENDER)
    assert open_manifest(sealed, RECIPIENT, sender=SENDER.public) == manifest
    header = sealed_manifest_header(sealed)
    assert header == {"transfer_id": manifest.transfer_id, "sender": SENDER.public.sign_key,
                      "recipient": RECIPIENT.public.sign_key}  # fmt: skip


def test_only_the_sender_may_seal(manifest: Manifest) -> None:
    with pytest.raises(TransferUsageError):
        seal_manifest(manifest, RECIPIENT)


def test_open_refuses_wrong_recipient_sender_and_tampering(manifest: Manifest) -> None:
    sealed = seal_manifest(manifest, SENDER)
    with pytest.raises(TransferInputError, match="another node"):
        open_manifest(sealed, STRANGER, sender=SENDER.public)
    with pytest.raises(TransferInputError, match="another sender"):
        open_manifest(sealed, RECIPIENT, sender=STRANGER.public)
    envelope = canonical.decode(sealed)
    body = bytearray(envelope["body"])
    body[100] ^= 1
    with pytest.raises(TransferInputError, match="sealed manifest"):
        open_manifest(canonical.encode({**envelope, "body": bytes(body)}), RECIPIENT, sender=SENDER.public)
    # A recipient re-addressing the envelope does not get past the sealed key.
    forged = canonical.encode({**envelope, "recipient": STRANGER.public.sign_key})
    with pytest.raises(TransferInputError):
        open_manifest(forged, STRANGER, sender=SENDER.public)
    with pytest.raises(TransferInputError):
        open_manifest(b"\x00" + sealed, RECIPIENT, sender=SENDER.public)


def test_a_stranger_cannot_sign_for_the_sender(manifest: Manifest) -> None:
    """A manifest sealed to the recipient and signed by someone else is refused."""
    forged_manifest = dataclasses.replace(manifest, sender=STRANGER.public.sign_key)
    sealed = seal_manifest(forged_manifest, STRANGER)
    envelope = canonical.decode(sealed)
    claimed = canonical.encode({**envelope, "sender": SENDER.public.sign_key})
    with pytest.raises(TransferInputError):
        open_manifest(claimed, RECIPIENT, sender=SENDER.public)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.update(v=2), "version"),
        (lambda v: v.update(extra=1), "fields"),
        (lambda v: v.update(transfer_id=b"short"), "transfer_id"),
        (lambda v: v.update(recipient=v["sender"]), "same node"),
        (lambda v: v["entries"][0].update(name="../x"), "parts"),
        (lambda v: v["entries"][1].update(name=v["entries"][0]["name"].upper()), "duplicate name"),
        (lambda v: v["entries"][0].update(kind="patient"), "kind"),
        (lambda v: v["entries"][0].update(codec="Bad Codec"), "codec"),
        (lambda v: v["entries"][1].update(length=10**9), "outside its object"),
        (lambda v: v["entries"][1].update(offset=-1), "outside its object"),
        (lambda v: v["entries"][0].update(object=bytes(32)), "not in the manifest"),
        (lambda v: v["entries"][0].update(size=True), "expected int"),
        (lambda v: v["objects"][0].update(size=v["objects"][0]["size"] + 1), "ciphertext size"),
        (lambda v: v["objects"][0].update(hashes=v["objects"][0]["hashes"][:-1]), "hashes"),
        (lambda v: v["objects"][0].update(chunk=100), "chunk must be"),
        (lambda v: v["objects"][0].update(key=b"k"), "sealed key"),
        (lambda v: v["objects"].append(v["objects"][0]), "duplicate object"),
        (lambda v: v.update(entries=[]), "entries"),
    ],
)
def test_decode_refuses_inconsistent_manifests(manifest: Manifest, change: Any, message: str) -> None:
    with pytest.raises(TransferInputError, match=message):
        decode_manifest(_mutated(manifest, change))


def test_an_object_without_entries_is_refused(manifest: Manifest) -> None:
    def drop_large(value: dict[str, Any]) -> None:
        large = value["objects"][0]["id"]
        value["entries"] = [e for e in value["entries"] if e["object"] != large]

    with pytest.raises(TransferInputError, match="holds no entry"):
        decode_manifest(_mutated(manifest, drop_large))


def test_decode_limits(manifest: Manifest) -> None:
    data = manifest.encode()
    with pytest.raises(TransferInputError, match="entries"):
        decode_manifest(data, ManifestLimits(max_entries=2))
    with pytest.raises(TransferInputError, match="exceeds"):
        decode_manifest(data, ManifestLimits(max_encoded_bytes=len(data) - 1))
    with pytest.raises(TransferInputError, match="in all exceed"):
        decode_manifest(data, ManifestLimits(max_total_bytes=MIB))
    with pytest.raises(TransferInputError):
        decode_manifest(data[:-1])
    with pytest.raises(TransferInputError, match=r"non-canonical|malformed"):
        decode_manifest(data + b"\x00")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/abs",
        "a//b",
        "a/",
        ".hidden",
        "a/../b",
        "a/./b",
        "CON",
        "lpt1.txt",
        "ø.dcm",
        "a b",
        "a\\b",
        "x" * 300,
    ],
)
def test_unsafe_names(name: str) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["a", "series-1/0001.dcm", "model.stl", "report_v2.pdf", "A/b/c/d.e.f"])
def test_safe_names(name: str) -> None:
    assert name_problem(name) is None


def test_check_restored(manifest: Manifest) -> None:
    entry = manifest.entries[1]
    files = make_files([2 * MIB, 1000])
    check_restored(entry, files[1][1])
    with pytest.raises(TransferInputError, match="differs"):
        check_restored(entry, files[1][1][:-1] + b"?")
