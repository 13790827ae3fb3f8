"""Key files and public identity files (mftp.crypto.keyfile)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mftp.crypto import canonical, keyfile
from mftp.crypto.errors import CryptoUsageError, KeyFileError, WrongPassphraseError
from mftp.crypto.keyfile import (
    KDF_MIN,
    KdfLimits,
    decode_key_file,
    encode_key_file,
    format_public_identity,
    key_file_info,
    load_identity,
    parse_public_identity,
    read_public_identity,
    read_public_identity_with_name,
    save_identity,
    write_public_identity,
)
from mftp.crypto.signing import SigningIdentity

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return SigningIdentity(bytes(range(32)))


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def with_checksum(head: bytes) -> bytes:
    return head + hashlib.sha256(head).digest()


def container(body: dict[str, Any], *, kind: int = keyfile.KIND_PLAIN, version: int = 1) -> bytes:
    encoded = canonical.encode(body)
    return with_checksum(keyfile.MAGIC + bytes([version, kind]) + len(encoded).to_bytes(4, "big") + encoded)


# ----------------------------------------------------------------------------- round trips


def test_plain_round_trip(tmp_path: Path, identity: SigningIdentity, umask_022: None) -> None:
    path = tmp_path / "node.key"
    save_identity(path, identity)
    assert mode_of(path) == 0o600
    loaded = load_identity(path)
    assert loaded.seed == identity.seed
    assert loaded.public == identity.public
    assert loaded.sign("record", b"x") == identity.sign("record", b"x")
    assert key_file_info(path) == keyfile.KeyFileInfo(sealed=False, public=identity.public)
    assert os.listdir(tmp_path) == ["node.key"]


def test_sealed_round_trip(tmp_path: Path, identity: SigningIdentity) -> None:
    path = tmp_path / "node.key"
    save_identity(path, identity, passphrase=PASSPHRASE, kdf_limits=KDF_MIN)
    assert mode_of(path) == 0o600
    assert identity.seed not in path.read_bytes()
    assert load_identity(path, passphrase=PASSPHRASE).seed == identity.seed
    assert load_identity(path, passphrase=PASSPHRASE.encode()).seed == identity.seed
    info = key_file_info(path)
    assert info.sealed and info.public == identity.public


def test_sealed_files_differ_each_time(identity: SigningIdentity) -> None:
    first = encode_key_file(identity, passphrase=PASSPHRASE, kdf_limits=KDF_MIN)
    second = encode_key_file(identity, passphrase=PASSPHRASE, kdf_limits=KDF_MIN)
    assert first != second  # fresh salt and nonce


def test_unicode_passphrase_is_normalised(tmp_path: Path, identity: SigningIdentity) -> None:
    path = tmp_path / "node.key"
    save_identity(path, identity, passphrase="caf\u00e9", kdf_limits=KDF_MIN)
    assert load_identity(path, passphrase="cafe\u0301").public == identity.public


def test_wrong_passphrase_has_its_own_error(tmp_path: Path, identity: SigningIdentity) -> None:
    path = tmp_path / "node.key"
    save_identity(path, identity, passphrase=PASSPHRASE, kdf_limits=KDF_MIN)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        load_identity(path, passphrase="Correct horse battery staple")
    with pytest.raises(KeyFileError, match="none was given"):
        load_identity(path)


def test_plain_file_with_a_passphrase_is_refused(tmp_path: Path, identity: SigningIdentity) -> None:
    path = tmp_path / "node.key"
    save_identity(path, identity)
    with pytest.raises(KeyFileError, match="not sealed"):
        load_identity(path, passphrase=PASSPHRASE)


def test_save_misuse(tmp_path: Path, identity: SigningIdentity) -> None:
    with pytest.raises(CryptoUsageError):
        save_identity(tmp_path / "a.key", identity, passphrase="")
    with pytest.raises(CryptoUsageError):
        save_identity(tmp_path / "a.key", identity, passphrase=5)  # type: ignore[arg-type]
    with pytest.raises(CryptoUsageError):
        save_identity(tmp_path / "a.key", identity.public)  # type: ignore[arg-type]
    with pytest.raises(CryptoUsageError):
        KdfLimits(opslimit=0, memlimit=KDF_MIN.memlimit)
    with pytest.raises(CryptoUsageError):
        KdfLimits(opslimit=1, memlimit=1 << 40)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- writing safely


def test_never_readable_by_others_while_written(
    tmp_path: Path, identity: SigningIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open, real_write = os.open, os.write
    created: list[tuple[int, int]] = []
    modes_at_write: list[int] = []

    def spy_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            created.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    def spy_write(fd: int, data: Any) -> int:
        modes_at_write.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    old_umask = os.umask(0)  # the most permissive umask must not matter
    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "write", spy_write)
    try:
        save_identity(tmp_path / "node.key", identity)
    finally:
        os.umask(old_umask)
    assert created and all(flags & os.O_EXCL and mode == 0o600 for flags, mode in created)
    assert modes_at_write and all(mode == 0o600 for mode in modes_at_write)
    assert mode_of(tmp_path / "node.key") == 0o600


def test_restrictive_umask_still_gives_0600(tmp_path: Path, identity: SigningIdentity) -> None:
    old_umask = os.umask(0o377)
    try:
        save_identity(tmp_path / "node.key", identity)
    finally:
        os.umask(old_umask)
    assert mode_of(tmp_path / "node.key") == 0o600
    assert load_identity(tmp_path / "node.key").public == identity.public


def test_existing_file_is_not_overwritten_by_default(tmp_path: Path, identity: SigningIdentity) -> None:
    path = tmp_path / "node.key"
    other = SigningIdentity.generate()
    save_identity(path, identity)
    with pytest.raises(KeyFileError, match="exists"):
        save_identity(path, other)
    assert load_identity(path).public == identity.public
    assert os.listdir(tmp_path) == ["node.key"]  # no temporary file left behind


def test_overwrite_replaces_and_tightens_mode(tmp_path: Path, identity: SigningIdentity) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    save_identity(path, identity, overwrite=True)
    assert mode_of(path) == 0o600
    assert load_identity(path).public == identity.public
    assert os.listdir(tmp_path) == ["node.key"]


def test_missing_directory(tmp_path: Path, identity: SigningIdentity) -> None:
    with pytest.raises(KeyFileError, match="cannot create"):
        save_identity(tmp_path / "missing" / "node.key", identity)


# ----------------------------------------------------------------------------- refusing bad files


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601, 0o610, 0o666])
def test_file_accessible_to_others_is_refused(tmp_path: Path, identity: SigningIdentity, mode: int) -> None:
    path = tmp_path / "node.key"
    save_identity(path, identity)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_identity(path)
    with pytest.raises(KeyFileError, match="chmod 600"):
        key_file_info(path)


def test_owner_only_modes_are_accepted(tmp_path: Path, identity: SigningIdentity) -> None:
    path = tmp_path / "node.key"
    save_identity(path, identity)
    path.chmod(0o400)
    assert load_identity(path).public == identity.public


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        load_identity(tmp_path / "absent.key")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_identity(tmp_path / "dir")


@pytest.mark.parametrize("sealed", [False, True])
def test_every_truncation_says_truncated(tmp_path: Path, identity: SigningIdentity, sealed: bool) -> None:
    passphrase = PASSPHRASE if sealed else None
    data = encode_key_file(identity, passphrase=passphrase, kdf_limits=KDF_MIN)
    for cut in range(len(data)):
        with pytest.raises(KeyFileError, match="truncated") as info:
            decode_key_file(data[:cut], passphrase=passphrase)
        assert not isinstance(info.value, WrongPassphraseError)
    path = tmp_path / "node.key"
    save_identity(path, identity, passphrase=passphrase, kdf_limits=KDF_MIN)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(KeyFileError, match="truncated"):
        load_identity(path, passphrase=passphrase)


@pytest.mark.parametrize("sealed", [False, True])
def test_every_corrupt_byte_is_caught_before_the_kdf(identity: SigningIdentity, sealed: bool) -> None:
    passphrase = PASSPHRASE if sealed else None
    data = encode_key_file(identity, passphrase=passphrase, kdf_limits=KDF_MIN)
    for position in range(len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x04
        with pytest.raises(KeyFileError, match=r"corrupt|magic|version|truncated") as info:
            decode_key_file(bytes(corrupt), passphrase=passphrase)
        # A damaged file must never be blamed on the passphrase.
        assert not isinstance(info.value, WrongPassphraseError)


def test_specific_corruptions(identity: SigningIdentity) -> None:
    data = encode_key_file(identity)
    with pytest.raises(KeyFileError, match="bad magic"):
        decode_key_file(b"-----BEGIN PRIVATE KEY-----\n" + data)
    with pytest.raises(KeyFileError, match="trailing data"):
        decode_key_file(data + b"\n")
    with pytest.raises(KeyFileError, match="checksum"):
        decode_key_file(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(KeyFileError, match="unsupported format version 2"):
        decode_key_file(container({"seed": identity.seed, "sign_key": identity.public.sign_key}, version=2))
    with pytest.raises(KeyFileError, match="unknown kind"):
        decode_key_file(container({"seed": identity.seed, "sign_key": identity.public.sign_key}, kind=9))
    with pytest.raises(KeyFileError, match="fields"):
        decode_key_file(container({"seed": identity.seed}))
    with pytest.raises(KeyFileError, match="field 'seed'"):
        decode_key_file(container({"seed": identity.seed[:31], "sign_key": identity.public.sign_key}))
    oversized = keyfile.MAGIC + bytes([1, 1]) + (1 << 20).to_bytes(4, "big")
    with pytest.raises(KeyFileError, match="body length"):
        decode_key_file(oversized)


def test_seed_and_public_key_must_match(identity: SigningIdentity) -> None:
    other = SigningIdentity.generate()
    forged = container({"seed": other.seed, "sign_key": identity.public.sign_key})
    with pytest.raises(KeyFileError, match="does not match"):
        decode_key_file(forged)


def test_doctored_kdf_limits_are_refused_before_running_the_kdf(identity: SigningIdentity) -> None:
    data = encode_key_file(identity, passphrase=PASSPHRASE, kdf_limits=KDF_MIN)
    _, body = keyfile._parse_container(data, "x")
    for field, value in (("memlimit", 1 << 40), ("opslimit", 10**9), ("opslimit", 0), ("memlimit", True)):
        doctored = container({**body, field: value}, kind=keyfile.KIND_SEALED)
        with pytest.raises(KeyFileError, match="KDF limits"):
            decode_key_file(doctored, passphrase=PASSPHRASE)
    with pytest.raises(KeyFileError, match="unsupported KDF"):
        decode_key_file(container({**body, "kdf": "scrypt"}, kind=keyfile.KIND_SEALED), passphrase="x")


def test_oversized_file_is_refused(tmp_path: Path, identity: SigningIdentity) -> None:
    path = tmp_path / "node.key"
    save_identity(path, identity)
    with path.open("ab") as handle:
        handle.write(bytes(1 << 16))
    with pytest.raises(KeyFileError, match="corrupt"):
        load_identity(path)


# ----------------------------------------------------------------------------- public identities


def test_public_identity_round_trip(tmp_path: Path, identity: SigningIdentity, umask_022: None) -> None:
    path = tmp_path / "hospital.json"
    name = "Hôpital Saint-Éloi, Radiologie"
    write_public_identity(path, identity.public, name=name)
    assert mode_of(path) == 0o644
    assert read_public_identity(path) == identity.public
    assert read_public_identity_with_name(path) == (identity.public, name)
    document = json.loads(path.read_text("utf-8"))
    assert document == {
        "format": "mftp-public-identity",
        "version": 1,
        "name": name,
        "node_id": identity.public.node_id.hex(),
        "sign_key": identity.public.sign_key.hex(),
        "box_key": identity.public.box_key.hex(),
    }
    assert str(identity.seed.hex()) not in path.read_text("utf-8")


def _document(identity: SigningIdentity) -> dict[str, Any]:
    return json.loads(format_public_identity(identity.public, name="Clinic"))


def test_mangled_public_identity_is_refused(identity: SigningIdentity) -> None:
    good = _document(identity)
    flipped_key = good["sign_key"][:-1] + ("0" if good["sign_key"][-1] != "0" else "1")
    cases: list[tuple[Any, str]] = [
        ({**good, "sign_key": flipped_key}, "does not match|not a valid"),
        ({**good, "node_id": "00" * 16}, "node_id does not match"),
        ({**good, "box_key": "00" * 32}, "box_key does not match"),
        ({**good, "sign_key": "zz" * 32}, "not hex"),
        ({**good, "sign_key": good["sign_key"][:-2]}, "hex digits"),
        ({**good, "format": "other"}, "format"),
        ({**good, "version": 2}, "version"),
        ({**good, "version": True}, "version"),
        ({**good, "extra": 1}, "fields"),
        ({k: v for k, v in good.items() if k != "name"}, "fields"),
        ({**good, "name": ""}, "name"),
        ({**good, "name": "a\nb"}, "control"),
        ({**good, "name": 5}, "name"),
        ([good], "not a JSON object"),
    ]
    for document, message in cases:
        with pytest.raises(KeyFileError, match=message):
            parse_public_identity(json.dumps(document))
    text = json.dumps(good)
    with pytest.raises(KeyFileError, match="duplicate"):
        parse_public_identity(text[:-1] + ', "name": "Other"}')
    with pytest.raises(KeyFileError, match="JSON"):
        parse_public_identity(text[:-1])
    with pytest.raises(KeyFileError, match="JSON"):
        parse_public_identity("[" * 60_000)
    with pytest.raises(KeyFileError):
        parse_public_identity(" " * (keyfile.MAX_PUBLIC_FILE_BYTES + 1))


def test_public_identity_file_errors(tmp_path: Path, identity: SigningIdentity) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        read_public_identity(tmp_path / "absent.json")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (keyfile.MAX_PUBLIC_FILE_BYTES + 1))
    with pytest.raises(KeyFileError, match="exceeds"):
        read_public_identity(big)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyFileError, match="UTF-8"):
        read_public_identity(binary)
    with pytest.raises(CryptoUsageError):
        write_public_identity(tmp_path / "x.json", identity.public, name="")
    with pytest.raises(CryptoUsageError):
        write_public_identity(tmp_path / "x.json", identity, name="x")  # type: ignore[arg-type]
