"""Key files: a node's private identity on disk, and public identity files.

Private key file layout (all integers big endian)::

    magic    8 bytes   b"MFTPKEY\\0"
    version  1 byte    1
    kind     1 byte    1 = plain, 2 = argon2id-sealed
    length   4 bytes   length of body
    body     length    canonical encoding of a map (see below)
    checksum 32 bytes  SHA-256 of everything before it

The checksum tells a truncated or corrupt file from a wrong passphrase: only a
file whose checksum matches is ever given to the KDF, so a failing MAC then
means the passphrase is wrong.  The body of a plain file is
``{"seed", "sign_key"}``; of a sealed file ``{"kdf", "opslimit", "memlimit",
"salt", "nonce", "box", "sign_key"}`` where ``box`` is a SecretBox
(XSalsa20-Poly1305) of ``encode({"seed": seed})`` under the Argon2id key.  The
public ``sign_key`` is stored in clear so a node's id can be shown without the
passphrase, and is checked against the decrypted seed.

Files are written atomically (temporary file created with mode 0600, fsync,
rename, fsync of the directory), so a crash leaves the old file or the new one,
and no other user can read the key at any instant.  Loading refuses a file that
group or others may access.

Public identity files are small JSON documents that institutions exchange.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from . import canonical
from .errors import CryptoError, CryptoUsageError, DecodeError, KeyFileError, WrongPassphraseError
from .signing import PUBLIC_KEY_BYTES, SEED_BYTES, PublicIdentity, SigningIdentity

MAGIC: Final = b"MFTPKEY\x00"
FORMAT_VERSION: Final = 1
KIND_PLAIN: Final = 1
KIND_SEALED: Final = 2
_KIND_NAMES: Final = {KIND_PLAIN: "plain", KIND_SEALED: "argon2id-sealed"}

_HEADER_BYTES: Final = len(MAGIC) + 1 + 1 + 4
_CHECKSUM_BYTES: Final = 32
MAX_BODY_BYTES: Final = 4096
MAX_KEY_FILE_BYTES: Final = _HEADER_BYTES + MAX_BODY_BYTES + _CHECKSUM_BYTES

MAX_PUBLIC_FILE_BYTES: Final = 64 * 1024
MAX_NAME_CHARS: Final = 200
PUBLIC_FORMAT: Final = "mftp-public-identity"

_SALT_BYTES: Final = argon2id.SALTBYTES
_NONCE_BYTES: Final = nacl.secret.SecretBox.NONCE_SIZE
_BOX_KEY_BYTES: Final = nacl.secret.SecretBox.KEY_SIZE


@dataclass(frozen=True, slots=True)
class KdfLimits:
    """Argon2id cost: ``opslimit`` passes over ``memlimit`` bytes of memory."""

    opslimit: int
    memlimit: int

    def __post_init__(self) -> None:
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= argon2id.OPSLIMIT_SENSITIVE:
            raise CryptoUsageError("opslimit outside libsodium's Argon2id range")
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= argon2id.MEMLIMIT_SENSITIVE:
            raise CryptoUsageError("memlimit outside libsodium's Argon2id range")


KDF_MIN: Final = KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
"""Cheapest limits: for tests only, they protect nothing."""
KDF_INTERACTIVE: Final = KdfLimits(argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)
"""64 MiB, about 0.1 s: for machines short of memory."""
KDF_MODERATE: Final = KdfLimits(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
"""256 MiB, about 0.7 s: the default, the key is opened once per start."""


@dataclass(frozen=True, slots=True)
class KeyFileInfo:
    """What a key file tells without its passphrase."""

    sealed: bool
    public: PublicIdentity


# --------------------------------------------------------------------------- writing


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL: never reuse a file someone else prepared; mode 0600 from the very
    # creation (umask can only remove bits), so the secret is never exposed.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create a file in {directory}: {exc.strerror}") from exc
    try:
        try:
            os.fchmod(fd, mode)  # exact mode whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
            # Drop the second name before the directory is synced, so a crash cannot
            # leave a stray copy of the key behind.
            tmp.unlink(missing_ok=True)
        _fsync_dir(directory)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    # link() fails if the target exists, which makes "create unless present" atomic;
    # rename() would silently replace an existing identity.
    try:
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # File systems without hard links: check then rename (racy, but only there).
        if path.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
        os.replace(tmp, path)


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        # NFC so the same passphrase typed on different systems gives the same bytes.
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if isinstance(passphrase, bytes | bytearray):
        return bytes(passphrase)
    raise CryptoUsageError(f"a passphrase is str or bytes, not {type(passphrase).__name__}")


def _derive_box_key(passphrase: bytes, salt: bytes, limits: KdfLimits) -> bytes:
    return argon2id.kdf(_BOX_KEY_BYTES, passphrase, salt, opslimit=limits.opslimit, memlimit=limits.memlimit)


def encode_key_file(
    identity: SigningIdentity,
    *,
    passphrase: str | bytes | None = None,
    kdf_limits: KdfLimits = KDF_MODERATE,
) -> bytes:
    """The bytes of a key file for ``identity``, sealed if a passphrase is given."""
    if not isinstance(identity, SigningIdentity):
        raise CryptoUsageError("encode_key_file wants a SigningIdentity")
    body: dict[str, Any]
    if passphrase is None:
        kind = KIND_PLAIN
        body = {"seed": identity.seed, "sign_key": identity.public.sign_key}
    else:
        secret = _passphrase_bytes(passphrase)
        if not secret:
            raise CryptoUsageError("an empty passphrase protects nothing; pass None for a plain file")
        kind = KIND_SEALED
        salt = nacl.utils.random(_SALT_BYTES)
        nonce = nacl.utils.random(_NONCE_BYTES)
        box = nacl.secret.SecretBox(_derive_box_key(secret, salt, kdf_limits))
        sealed = box.encrypt(canonical.encode({"seed": identity.seed}), nonce).ciphertext
        body = {
            "kdf": "argon2id",
            "opslimit": kdf_limits.opslimit,
            "memlimit": kdf_limits.memlimit,
            "salt": salt,
            "nonce": nonce,
            "box": bytes(sealed),
            "sign_key": identity.public.sign_key,
        }
    encoded = canonical.encode(body)
    head = MAGIC + bytes([FORMAT_VERSION, kind]) + len(encoded).to_bytes(4, "big") + encoded
    return head + hashlib.sha256(head).digest()


def save_identity(
    path: str | os.PathLike[str],
    identity: SigningIdentity,
    *,
    passphrase: str | bytes | None = None,
    kdf_limits: KdfLimits = KDF_MODERATE,
    overwrite: bool = False,
) -> None:
    """Write ``identity`` to a key file of mode 0600, atomically.

    With a ``passphrase`` the seed is sealed (Argon2id with ``kdf_limits``, then
    SecretBox).  An existing file is replaced only with ``overwrite=True``,
    because losing a node's identity cannot be undone.
    """
    data = encode_key_file(identity, passphrase=passphrase, kdf_limits=kdf_limits)
    _write_atomic(Path(path), data, mode=0o600, overwrite=overwrite)


# --------------------------------------------------------------------------- reading


def _read_private_file(path: Path) -> bytes:
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang us; it is then refused
        # below as not a regular file (the flag changes nothing for regular files).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} not found") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from exc
    try:
        # fstat the descriptor we read from, so the file cannot be swapped in between.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_KEY_FILE_BYTES:
            chunk = os.read(fd, MAX_KEY_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return b"".join(chunks)


def _parse_container(data: bytes, where: str) -> tuple[int, dict[str, Any]]:
    """Check magic, version, length and checksum; returns (kind, body map)."""
    if len(data) < _HEADER_BYTES:
        if MAGIC.startswith(data[: len(MAGIC)]):
            raise KeyFileError(f"key file {where} is truncated ({len(data)} bytes, header incomplete)")
        raise KeyFileError(f"{where} is not an MFTP key file (bad magic)")
    if data[: len(MAGIC)] != MAGIC:
        raise KeyFileError(f"{where} is not an MFTP key file (bad magic)")
    version, kind = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version != FORMAT_VERSION:
        raise KeyFileError(f"key file {where} has unsupported format version {version}")
    if kind not in _KIND_NAMES:
        raise KeyFileError(f"key file {where} is corrupt (unknown kind {kind})")
    length = int.from_bytes(data[len(MAGIC) + 2 : _HEADER_BYTES], "big")
    if length > MAX_BODY_BYTES:
        raise KeyFileError(f"key file {where} is corrupt (body length {length} exceeds {MAX_BODY_BYTES})")
    expected = _HEADER_BYTES + length + _CHECKSUM_BYTES
    if len(data) < expected:
        raise KeyFileError(f"key file {where} is truncated ({len(data)} of {expected} bytes)")
    if len(data) > expected:
        raise KeyFileError(f"key file {where} is corrupt ({len(data) - expected} bytes of trailing data)")
    head, checksum = data[:-_CHECKSUM_BYTES], data[-_CHECKSUM_BYTES:]
    if hashlib.sha256(head).digest() != checksum:
        raise KeyFileError(f"key file {where} is corrupt (checksum mismatch)")
    try:
        body = canonical.decode(head[_HEADER_BYTES:], max_bytes=MAX_BODY_BYTES, max_depth=1)
    except DecodeError as exc:
        raise KeyFileError(f"key file {where} is corrupt (body: {exc})") from None
    if not isinstance(body, dict):
        raise KeyFileError(f"key file {where} is corrupt (body is not a map)")
    fields = {KIND_PLAIN: {"seed", "sign_key"}, KIND_SEALED: _SEALED_FIELDS}[kind]
    if set(body) != fields:
        raise KeyFileError(f"key file {where} is corrupt (fields {sorted(body)})")
    return kind, body


_SEALED_FIELDS: Final = frozenset({"kdf", "opslimit", "memlimit", "salt", "nonce", "box", "sign_key"})


def _field_bytes(body: dict[str, Any], name: str, size: int | None, where: str) -> bytes:
    value = body[name]
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise KeyFileError(f"key file {where} is corrupt (field {name!r})")
    return value


def _public_from_body(body: dict[str, Any], where: str) -> PublicIdentity:
    sign_key = _field_bytes(body, "sign_key", PUBLIC_KEY_BYTES, where)
    try:
        return PublicIdentity.from_sign_key(sign_key)
    except CryptoError:
        raise KeyFileError(f"key file {where} is corrupt (invalid public key)") from None


def _open_sealed(body: dict[str, Any], passphrase: bytes, where: str) -> bytes:
    if body["kdf"] != "argon2id":
        raise KeyFileError(f"key file {where} uses unsupported KDF {body['kdf']!r}")
    opslimit, memlimit = body["opslimit"], body["memlimit"]
    if not (isinstance(opslimit, int) and isinstance(memlimit, int)) or isinstance(opslimit, bool):
        raise KeyFileError(f"key file {where} is corrupt (KDF limits)")
    try:
        # Bounded by libsodium's SENSITIVE preset, so a doctored file cannot make the
        # KDF take all memory or hours.
        limits = KdfLimits(opslimit, memlimit)
    except CryptoUsageError:
        raise KeyFileError(f"key file {where} is corrupt (KDF limits out of range)") from None
    salt = _field_bytes(body, "salt", _SALT_BYTES, where)
    nonce = _field_bytes(body, "nonce", _NONCE_BYTES, where)
    sealed = _field_bytes(body, "box", None, where)
    box = nacl.secret.SecretBox(_derive_box_key(passphrase, salt, limits))
    try:
        inner = box.decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError:
        # The checksum matched, so the file is as written: the passphrase is wrong.
        raise WrongPassphraseError(f"wrong passphrase for key file {where}") from None
    try:
        secret = canonical.decode(inner, max_bytes=MAX_BODY_BYTES, max_depth=1)
    except DecodeError:
        raise KeyFileError(f"key file {where} is corrupt (sealed contents)") from None
    if not isinstance(secret, dict) or set(secret) != {"seed"}:
        raise KeyFileError(f"key file {where} is corrupt (sealed contents)")
    return _field_bytes(secret, "seed", SEED_BYTES, where)


def decode_key_file(
    data: bytes, *, passphrase: str | bytes | None = None, where: str = "<bytes>"
) -> SigningIdentity:
    """Parse key file bytes (see :func:`load_identity`); ``where`` names it in errors."""
    kind, body = _parse_container(bytes(data), where)
    public = _public_from_body(body, where)
    if kind == KIND_PLAIN:
        if passphrase is not None:
            # Refuse rather than ignore: the operator believes the key is sealed.
            raise KeyFileError(f"key file {where} is not sealed, but a passphrase was given")
        seed = _field_bytes(body, "seed", SEED_BYTES, where)
    else:
        if passphrase is None:
            raise KeyFileError(f"key file {where} is sealed with a passphrase; none was given")
        seed = _open_sealed(body, _passphrase_bytes(passphrase), where)
    identity = SigningIdentity(seed)
    if identity.public != public:
        raise KeyFileError(f"key file {where} is corrupt (seed does not match its public key)")
    return identity


def load_identity(path: str | os.PathLike[str], *, passphrase: str | bytes | None = None) -> SigningIdentity:
    """Load a node identity from a key file written by :func:`save_identity`.

    Raises :class:`KeyFileError` if the file is missing, accessible by group or
    others, truncated, corrupt, sealed but no passphrase is given (or plain but
    one is), and :class:`WrongPassphraseError` (a ``KeyFileError``) if the
    passphrase does not open an intact sealed file.
    """
    where = str(path)
    return decode_key_file(_read_private_file(Path(path)), passphrase=passphrase, where=where)


def key_file_info(path: str | os.PathLike[str]) -> KeyFileInfo:
    """Whether a key file is sealed, and its public identity (no passphrase needed)."""
    where = str(path)
    kind, body = _parse_container(_read_private_file(Path(path)), where)
    return KeyFileInfo(sealed=kind == KIND_SEALED, public=_public_from_body(body, where))


# --------------------------------------------------------------------------- public identities


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        raise CryptoUsageError(f"a name is a str of 1 to {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise CryptoUsageError("a name must not contain control characters")
    return name


def format_public_identity(identity: PublicIdentity, *, name: str) -> str:
    """The JSON text of a public identity file (keys hex-encoded, one field a line)."""
    if not isinstance(identity, PublicIdentity):
        raise CryptoUsageError("format_public_identity wants a PublicIdentity")
    document = {
        "format": PUBLIC_FORMAT,
        "version": FORMAT_VERSION,
        "name": _check_name(name),
        "node_id": identity.node_id.hex(),
        "sign_key": identity.sign_key.hex(),
        "box_key": identity.box_key.hex(),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate field {key!r}")
        result[key] = value
    return result


def _hex_field(document: dict[str, Any], name: str, size: int, where: str) -> bytes:
    value = document.get(name)
    if not isinstance(value, str) or len(value) != 2 * size:
        raise KeyFileError(f"public identity {where}: {name!r} must be {2 * size} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise KeyFileError(f"public identity {where}: {name!r} is not hex") from None


def parse_public_identity(text: str, *, where: str = "<text>") -> tuple[PublicIdentity, str]:
    """Parse the text of a public identity file; returns ``(identity, name)``.

    The ``node_id`` and ``box_key`` fields must match the ones derived from
    ``sign_key``, which catches a key mangled when it was copied.
    """
    if not isinstance(text, str) or len(text) > MAX_PUBLIC_FILE_BYTES:
        raise KeyFileError(f"public identity {where} is not text or is too long")
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise KeyFileError(f"public identity {where} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KeyFileError(f"public identity {where} is not a JSON object")
    if document.get("format") != PUBLIC_FORMAT:
        raise KeyFileError(f"{where} is not an MFTP public identity (format field)")
    if document.get("version") != FORMAT_VERSION or isinstance(document.get("version"), bool):
        raise KeyFileError(f"public identity {where} has unsupported version {document.get('version')!r}")
    expected = {"format", "version", "name", "node_id", "sign_key", "box_key"}
    if set(document) != expected:
        raise KeyFileError(f"public identity {where} has fields {sorted(document)}, not {sorted(expected)}")
    try:
        name = _check_name(document["name"])
    except CryptoUsageError as exc:
        raise KeyFileError(f"public identity {where}: {exc}") from None
    sign_key = _hex_field(document, "sign_key", PUBLIC_KEY_BYTES, where)
    try:
        identity = PublicIdentity.from_sign_key(sign_key)
    except CryptoError:
        raise KeyFileError(f"public identity {where}: sign_key is not a valid Ed25519 key") from None
    if _hex_field(document, "node_id", len(identity.node_id), where) != identity.node_id:
        raise KeyFileError(f"public identity {where}: node_id does not match sign_key")
    if _hex_field(document, "box_key", PUBLIC_KEY_BYTES, where) != identity.box_key:
        raise KeyFileError(f"public identity {where}: box_key does not match sign_key")
    return identity, name


def write_public_identity(
    path: str | os.PathLike[str], identity: PublicIdentity, *, name: str, overwrite: bool = True
) -> None:
    """Write a public identity file (mode 0644, atomically) to give to other institutions."""
    text = format_public_identity(identity, name=name)
    _write_atomic(Path(path), text.encode("utf-8"), mode=0o644, overwrite=overwrite)


def read_public_identity_with_name(path: str | os.PathLike[str]) -> tuple[PublicIdentity, str]:
    """Read a public identity file; returns ``(identity, name)``; :class:`KeyFileError` if bad."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PUBLIC_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"public identity {where} not found") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read public identity {where}: {exc.strerror}") from exc
    if len(raw) > MAX_PUBLIC_FILE_BYTES:
        raise KeyFileError(f"public identity {where} exceeds {MAX_PUBLIC_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"public identity {where} is not UTF-8 text") from None
    return parse_public_identity(text, where=where)


def read_public_identity(path: str | os.PathLike[str]) -> PublicIdentity:
    """Read a public identity file written by :func:`write_public_identity`."""
    return read_public_identity_with_name(path)[0]
