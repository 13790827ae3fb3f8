"""The study manifest: what a transfer holds, and how the recipient checks every byte of it.

A manifest lists the **entries** (DICOM instances and attachments) and the encrypted
**objects** that carry them.  It is canonical-encoded (:mod:`mftp.crypto.canonical`),
so its SHA-256 (:attr:`Manifest.sha256`) names it on the ledger and in capabilities::

    {"type": "mftp-manifest", "v": 1,
     "transfer_id": 16 bytes, "sender": 32-byte Ed25519 key, "recipient": 32-byte Ed25519 key,
     "created_ms": int,
     "entries": [{"name": "series-1/0001.dcm", "kind": "instance" | "attachment",
                  "size": original bytes, "sha256": of the original bytes the recipient must end with,
                  "codec": "mftp-dcm" (how the stored bytes decompress),
                  "object": object id, "offset": int, "length": int}, ...],
     "objects": [{"id": SHA-256 of the whole ciphertext, "size": ciphertext bytes,
                  "plain": plaintext bytes, "aead_chunk": plaintext bytes per secretstream chunk,
                  "chunk": ciphertext bytes per fetch chunk, "hashes": SHA-256 of each fetch chunk,
                  concatenated, "key": the object key sealed to the recipient's X25519 key}, ...],
     "partial": true}   (only in a partial manifest; absent in the final one)

A **partial** manifest lists what the sender has packaged so far, while it still prepares the
study: the recipient may fetch and verify those objects early, and completes the transfer only
on the final manifest.  Every manifest is self-contained and
checked alone; nothing carries over from a partial one except objects already verified against
their content address.

``offset``/``length`` locate an entry's *compressed* bytes in its object's plaintext
(a large file fills one object alone; small files share a bucket object).  Names
are safe relative paths chosen by the sender's study builder (``series-3/0012.dcm``),
never patient data: the recipient may write them to disk as they are.

Every manifest, built or decoded, passes :func:`check_manifest`: the sizes agree
with the secretstream layout, every entry lies inside its object, names are safe
and unique, and everything has a limit (:class:`ManifestLimits`).

On the wire the manifest travels **sealed** (:func:`seal_manifest`): signed by the
sender (domain ``capability``, over a typed message holding the manifest hash, so
it can never pass for a capability or a fetch proof), then encrypted with a fresh
secretstream key sealed to the recipient::

    {"type": "mftp-sealed-manifest", "v": 1, "transfer_id", "sender", "recipient",
     "key": sealed 32-byte key, "body": secretstream(encode({"manifest": bytes, "sig": bytes}))}

:func:`open_manifest` checks all of it and refuses anything not addressed to us or
not signed by the expected sender.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import BadSignatureError, DecodeError, DecryptionError
from mftp.crypto.sealing import SEAL_OVERHEAD_BYTES, seal, unseal
from mftp.crypto.signing import PUBLIC_KEY_BYTES, PublicIdentity, SigningIdentity
from mftp.crypto.stream import (
    CHUNK_OVERHEAD_BYTES,
    HEADER_BYTES,
    KEY_BYTES,
    MAX_CHUNK_BYTES,
    decrypt_stream,
    encrypt_stream,
    generate_key,
)

from .errors import TransferError, TransferInputError, TransferUsageError

MANIFEST_TYPE: Final = "mftp-manifest"
SEALED_TYPE: Final = "mftp-sealed-manifest"
SIGNATURE_TYPE: Final = "mftp-manifest-signature"
VERSION: Final = 1
SIGN_DOMAIN: Final = "capability"

TRANSFER_ID_BYTES: Final = 16
HASH_BYTES: Final = 32
SEALED_KEY_BYTES: Final = KEY_BYTES + SEAL_OVERHEAD_BYTES
KINDS: Final = ("instance", "attachment")

MIN_AEAD_CHUNK_BYTES: Final = 4096
MAX_AEAD_CHUNK_BYTES: Final = MAX_CHUNK_BYTES
MIN_FETCH_CHUNK_BYTES: Final = 4096
MAX_FETCH_CHUNK_BYTES: Final = 256 * 1024 * 1024
"""As ``transfer.chunk_bytes`` allows; the fetcher lowers its parallelism to stay in memory."""

MAX_NAME_CHARS: Final = 255
MAX_NAME_PART_CHARS: Final = 128
MAX_NAME_PARTS: Final = 8
_NAME_PART: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_CODEC: Final = re.compile(r"[a-z0-9][a-z0-9.+-]{0,31}")
# Names Windows refuses whatever the extension; the recipient may export to such a disk.
_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
)

MAX_SEAL_BODY_CHUNK_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class ManifestLimits:
    """Bounds on a manifest from outside (and on what we build, so peers accept it)."""

    max_entries: int = 200_000
    max_objects: int = 200_000
    max_object_bytes: int = 1 << 40
    max_total_bytes: int = 1 << 40
    max_encoded_bytes: int = 64 << 20
    max_entry_bytes: int = 1 << 40


DEFAULT_LIMITS: Final = ManifestLimits()


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """What the study builder knows of one file before packaging."""

    name: str
    kind: str
    size: int
    sha256: bytes
    codec: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the study: where its compressed bytes are and what they must restore to."""

    name: str
    kind: str
    size: int
    sha256: bytes
    codec: str
    object_id: bytes
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One encrypted, content-addressed object and everything needed to fetch and verify it."""

    object_id: bytes
    size: int
    plain_bytes: int
    aead_chunk_bytes: int
    chunk_bytes: int
    chunk_hashes: bytes
    sealed_key: bytes

    @property
    def chunk_count(self) -> int:
        """How many fetch chunks the ciphertext is cut into (the last may be short)."""
        return -(-self.size // self.chunk_bytes)

    def chunk_span(self, index: int) -> tuple[int, int]:
        """``(start, end)`` ciphertext offsets of fetch chunk ``index`` (end exclusive)."""
        if not 0 <= index < self.chunk_count:
            raise TransferUsageError(f"chunk {index} outside 0..{self.chunk_count - 1}")
        start = index * self.chunk_bytes
        return start, min(start + self.chunk_bytes, self.size)

    def chunk_hash(self, index: int) -> bytes:
        """The SHA-256 fetch chunk ``index`` must have."""
        self.chunk_span(index)
        return self.chunk_hashes[index * HASH_BYTES : (index + 1) * HASH_BYTES]


def object_ciphertext_bytes(plain_bytes: int, aead_chunk_bytes: int) -> int:
    """Ciphertext size of an object: header, then each plaintext chunk plus its 17-byte tag.

    Objects carry no length prefixes: chunks have a fixed plaintext size (the last
    one shorter, an empty object one empty final chunk), so chunk ``i`` sits at a
    known ciphertext offset (:func:`aead_chunk_span`).
    """
    chunks = max(1, -(-plain_bytes // aead_chunk_bytes))
    return HEADER_BYTES + plain_bytes + chunks * CHUNK_OVERHEAD_BYTES


def aead_chunk_span(obj: ObjectInfo, index: int) -> tuple[int, int]:
    """``(offset, length)`` in the ciphertext of secretstream chunk ``index`` of ``obj``."""
    step = obj.aead_chunk_bytes + CHUNK_OVERHEAD_BYTES
    plain = min(obj.aead_chunk_bytes, obj.plain_bytes - index * obj.aead_chunk_bytes)
    return HEADER_BYTES + index * step, max(plain, 0) + CHUNK_OVERHEAD_BYTES


@dataclass(frozen=True)
class Manifest:
    """A checked manifest; build it with :meth:`build` or :func:`decode_manifest`."""

    transfer_id: bytes
    sender: bytes
    recipient: bytes
    created_ms: int
    entries: tuple[Entry, ...]
    objects: tuple[ObjectInfo, ...]
    partial: bool = False
    _by_id: dict[bytes, ObjectInfo] = field(init=False, repr=False, compare=False)
    _encoded: bytes = field(init=False, repr=False, compare=False)
    _sha256: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen, so computed once: the encoding of a big study runs to megabytes.
        object.__setattr__(self, "_by_id", {obj.object_id: obj for obj in self.objects})
        object.__setattr__(self, "_encoded", canonical.encode(_to_value(self)))
        object.__setattr__(self, "_sha256", canonical.sha256(self._encoded))

    @classmethod
    def build(
        cls,
        *,
        transfer_id: bytes,
        sender: bytes,
        recipient: bytes,
        created_ms: int,
        entries: Iterable[Entry],
        objects: Iterable[ObjectInfo],
        limits: ManifestLimits = DEFAULT_LIMITS,
        partial: bool = False,
    ) -> Manifest:
        """A manifest from our own parts; raises :class:`TransferUsageError` if they are inconsistent."""
        manifest = cls(transfer_id, sender, recipient, created_ms, tuple(entries), tuple(objects), partial)
        check_manifest(manifest, limits, error=TransferUsageError)
        return manifest

    def object(self, object_id: bytes) -> ObjectInfo:
        """The object with this id; :class:`TransferUsageError` if the manifest has none."""
        try:
            return self._by_id[object_id]
        except KeyError:
            raise TransferUsageError(f"object {object_id.hex()[:16]} is not in this manifest") from None

    def encode(self) -> bytes:
        """The canonical bytes (what is hashed, signed and sealed)."""
        return self._encoded

    @property
    def sha256(self) -> bytes:
        """SHA-256 of :meth:`encode`: names this manifest in capabilities and on the ledger."""
        return self._sha256

    @property
    def total_ciphertext_bytes(self) -> int:
        """Bytes a recipient fetches for the whole transfer."""
        return sum(obj.size for obj in self.objects)

    @property
    def total_original_bytes(self) -> int:
        """Bytes of the files the recipient ends up with."""
        return sum(entry.size for entry in self.entries)


# --------------------------------------------------------------------------- encoding


def _to_value(manifest: Manifest) -> dict[str, Any]:
    value = {
        "type": MANIFEST_TYPE,
        "v": VERSION,
        "transfer_id": manifest.transfer_id,
        "sender": manifest.sender,
        "recipient": manifest.recipient,
        "created_ms": manifest.created_ms,
        "entries": [
            {
                "name": e.name,
                "kind": e.kind,
                "size": e.size,
                "sha256": e.sha256,
                "codec": e.codec,
                "object": e.object_id,
                "offset": e.offset,
                "length": e.length,
            }
            for e in manifest.entries
        ],
        "objects": [
            {
                "id": o.object_id,
                "size": o.size,
                "plain": o.plain_bytes,
                "aead_chunk": o.aead_chunk_bytes,
                "chunk": o.chunk_bytes,
                "hashes": o.chunk_hashes,
                "key": o.sealed_key,
            }
            for o in manifest.objects
        ],
    }
    if manifest.partial:  # absent when final, so a final manifest encodes as before
        value["partial"] = True
    return value


_TOP_FIELDS: Final = {"type", "v", "transfer_id", "sender", "recipient", "created_ms", "entries", "objects"}
_ENTRY_FIELDS: Final[dict[str, type]] = {
    "name": str,
    "kind": str,
    "size": int,
    "sha256": bytes,
    "codec": str,
    "object": bytes,
    "offset": int,
    "length": int,
}
_OBJECT_FIELDS: Final[dict[str, type]] = {
    "id": bytes,
    "size": int,
    "plain": int,
    "aead_chunk": int,
    "chunk": int,
    "hashes": bytes,
    "key": bytes,
}


def decode_manifest(data: bytes, limits: ManifestLimits = DEFAULT_LIMITS) -> Manifest:
    """Parse and check manifest bytes from outside; every problem is a :class:`TransferInputError`."""
    try:
        value = canonical.decode(
            data,
            max_bytes=limits.max_encoded_bytes,
            max_depth=3,
            max_containers=limits.max_entries + limits.max_objects + 3,
        )
    except DecodeError as exc:
        raise TransferInputError(f"manifest: {exc}") from None
    partial = isinstance(value, dict) and "partial" in value
    if partial and value.pop("partial") is not True:  # canonical: absent (final) or true
        raise TransferInputError("manifest: partial, when present, must be true")
    top = _fields(value, _TOP_FIELDS, "manifest")
    if top["type"] != MANIFEST_TYPE or top["v"] != VERSION:
        raise TransferInputError(f"manifest: unsupported type {top['type']!r} version {top['v']!r}")
    entries, objects = top["entries"], top["objects"]
    if not isinstance(entries, list) or not isinstance(objects, list):
        raise TransferInputError("manifest: entries and objects must be arrays")
    if len(entries) > limits.max_entries or len(objects) > limits.max_objects:
        raise TransferInputError(
            f"manifest: {len(entries)} entries / {len(objects)} objects exceed "
            f"{limits.max_entries} / {limits.max_objects}"
        )
    try:
        manifest = Manifest(
            transfer_id=_typed(top["transfer_id"], bytes, "transfer_id"),
            sender=_typed(top["sender"], bytes, "sender"),
            recipient=_typed(top["recipient"], bytes, "recipient"),
            created_ms=_typed(top["created_ms"], int, "created_ms"),
            entries=tuple(_decode_entry(item, i) for i, item in enumerate(entries)),
            objects=tuple(_decode_object(item, i) for i, item in enumerate(objects)),
            partial=partial,
        )
    except TransferError:
        raise
    except Exception as exc:  # a value our own types refuse, e.g. an out-of-range int
        raise TransferInputError(f"manifest: {exc}") from None
    check_manifest(manifest, limits, error=TransferInputError)
    return manifest


def _decode_entry(item: Any, index: int) -> Entry:
    where = f"manifest: entries[{index}]"
    f = _fields(item, set(_ENTRY_FIELDS), where)
    for key, kind in _ENTRY_FIELDS.items():
        _typed(f[key], kind, f"{where}.{key}")
    return Entry(
        f["name"], f["kind"], f["size"], f["sha256"], f["codec"], f["object"], f["offset"], f["length"]
    )


def _decode_object(item: Any, index: int) -> ObjectInfo:
    where = f"manifest: objects[{index}]"
    f = _fields(item, set(_OBJECT_FIELDS), where)
    for key, kind in _OBJECT_FIELDS.items():
        _typed(f[key], kind, f"{where}.{key}")
    return ObjectInfo(f["id"], f["size"], f["plain"], f["aead_chunk"], f["chunk"], f["hashes"], f["key"])


def _fields(value: Any, expected: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != expected:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise TransferInputError(f"{where}: expected fields {sorted(expected)}, got {got}")
    return value


def _typed(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TransferInputError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- checks


def check_manifest(
    manifest: Manifest,
    limits: ManifestLimits = DEFAULT_LIMITS,
    *,
    error: type[TransferError] = TransferInputError,
) -> None:
    """Raise ``error`` at the first inconsistency (sizes, hashes, names, references, limits)."""
    problem = _first_problem(manifest, limits)
    if problem:
        raise error(f"manifest: {problem}")


def _first_problem(m: Manifest, limits: ManifestLimits) -> str | None:
    if len(m.transfer_id) != TRANSFER_ID_BYTES:
        return f"transfer_id must be {TRANSFER_ID_BYTES} bytes"
    if len(m.sender) != PUBLIC_KEY_BYTES or len(m.recipient) != PUBLIC_KEY_BYTES:
        return "sender and recipient are 32-byte Ed25519 keys"
    if m.sender == m.recipient:
        return "sender and recipient are the same node"
    if not 0 <= m.created_ms < 2**63:
        return "created_ms out of range"
    if (not m.entries and not m.partial) or len(m.entries) > limits.max_entries:
        return f"1 to {limits.max_entries} entries (none only in a partial manifest)"
    if len(m.objects) > limits.max_objects:
        return f"more than {limits.max_objects} objects"
    if len(m._by_id) != len(m.objects):
        return "duplicate object id"
    for obj in m.objects:
        problem = _object_problem(obj, limits)
        if problem:
            return f"object {obj.object_id.hex()[:16]}: {problem}"
    if m.total_ciphertext_bytes > limits.max_total_bytes:
        return f"{m.total_ciphertext_bytes} bytes in all exceed {limits.max_total_bytes}"
    return _entries_problem(m, limits)


def _object_problem(obj: ObjectInfo, limits: ManifestLimits) -> str | None:
    if len(obj.object_id) != HASH_BYTES:
        return "id must be a SHA-256"
    if not MIN_AEAD_CHUNK_BYTES <= obj.aead_chunk_bytes <= MAX_AEAD_CHUNK_BYTES:
        return f"aead_chunk must be {MIN_AEAD_CHUNK_BYTES}..{MAX_AEAD_CHUNK_BYTES}"
    if not MIN_FETCH_CHUNK_BYTES <= obj.chunk_bytes <= MAX_FETCH_CHUNK_BYTES:
        return f"chunk must be {MIN_FETCH_CHUNK_BYTES}..{MAX_FETCH_CHUNK_BYTES}"
    if not 0 <= obj.plain_bytes <= limits.max_object_bytes:
        return f"plain size must be 0..{limits.max_object_bytes}"
    if obj.size != object_ciphertext_bytes(obj.plain_bytes, obj.aead_chunk_bytes):
        return "ciphertext size does not match its plaintext size"
    if len(obj.chunk_hashes) != obj.chunk_count * HASH_BYTES:
        return f"{obj.chunk_count} chunks need {obj.chunk_count * HASH_BYTES} bytes of hashes"
    if len(obj.sealed_key) != SEALED_KEY_BYTES:
        return f"sealed key must be {SEALED_KEY_BYTES} bytes"
    return None


def _entries_problem(m: Manifest, limits: ManifestLimits) -> str | None:
    names: set[str] = set()
    used: set[bytes] = set()
    for entry in m.entries:
        where = f"entry {entry.name!r}"
        problem = name_problem(entry.name)
        if problem:
            return f"{where}: {problem}"
        folded = entry.name.casefold()
        if folded in names:  # case-insensitive file systems would merge them
            return f"{where}: duplicate name"
        names.add(folded)
        if entry.kind not in KINDS:
            return f"{where}: kind must be one of {KINDS}"
        if not _CODEC.fullmatch(entry.codec):
            return f"{where}: codec must match {_CODEC.pattern}"
        if len(entry.sha256) != HASH_BYTES or not 0 <= entry.size <= limits.max_entry_bytes:
            return f"{where}: bad size or sha256"
        obj = m._by_id.get(entry.object_id)
        if obj is None:
            return f"{where}: refers to an object not in the manifest"
        if entry.offset < 0 or entry.length < 0 or entry.offset + entry.length > obj.plain_bytes:
            return f"{where}: lies outside its object"
        used.add(entry.object_id)
    if len(used) != len(m.objects):
        return "an object holds no entry"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative path (``None`` if it is).

    Parts of ASCII letters, digits, ``._-`` joined by ``/``; no part starts with a
    dot (no ``..``, no hidden files), none is a reserved Windows device name.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        return f"a name is 1 to {MAX_NAME_CHARS} characters"
    parts = name.split("/")
    if len(parts) > MAX_NAME_PARTS:
        return f"at most {MAX_NAME_PARTS} path parts"
    for part in parts:
        if len(part) > MAX_NAME_PART_CHARS or not _NAME_PART.fullmatch(part):
            return "parts are [A-Za-z0-9_][A-Za-z0-9._-]* joined by '/'"
        if part.split(".")[0].upper() in _RESERVED:
            return f"{part!r} is a reserved device name"
    return None


def check_restored(entry: Entry, original: bytes) -> None:
    """Raise :class:`TransferInputError` unless ``original`` is what the sender listed for ``entry``."""
    if len(original) != entry.size or canonical.sha256(original) != entry.sha256:
        raise TransferInputError("restored file differs from the manifest", name=entry.name)


# --------------------------------------------------------------------------- sealing


def _signed_message(manifest_sha256: bytes) -> bytes:
    return canonical.encode({"type": SIGNATURE_TYPE, "v": VERSION, "manifest_sha256": manifest_sha256})


def _body_ad(transfer_id: bytes, sender: bytes, recipient: bytes) -> bytes:
    # Binds the encrypted body to the envelope's clear fields.
    return b"MFTP-MANIFEST-v1\x00" + transfer_id + sender + recipient


def seal_manifest(manifest: Manifest, identity: SigningIdentity) -> bytes:
    """Sign ``manifest`` as its sender and encrypt it to its recipient; returns the envelope bytes."""
    if identity.public.sign_key != manifest.sender:
        raise TransferUsageError("only the manifest's sender may seal it")
    recipient = PublicIdentity.from_sign_key(manifest.recipient)
    encoded = manifest.encode()
    signature = identity.sign(SIGN_DOMAIN, _signed_message(manifest.sha256))
    inner = canonical.encode({"manifest": encoded, "sig": signature})
    key = generate_key()
    body = io.BytesIO()
    ad = _body_ad(manifest.transfer_id, manifest.sender, manifest.recipient)
    encrypt_stream(key, io.BytesIO(inner), body, chunk_bytes=MAX_SEAL_BODY_CHUNK_BYTES, associated_data=ad)
    return canonical.encode(
        {
            "type": SEALED_TYPE,
            "v": VERSION,
            "transfer_id": manifest.transfer_id,
            "sender": manifest.sender,
            "recipient": manifest.recipient,
            "key": seal(recipient, key),
            "body": body.getvalue(),
        }
    )


def sealed_manifest_header(data: bytes, limits: ManifestLimits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """The clear fields of an envelope (``transfer_id``, ``sender``, ``recipient``), unverified."""
    envelope = _decode_envelope(data, limits)
    return {k: envelope[k] for k in ("transfer_id", "sender", "recipient")}


def _decode_envelope(data: bytes, limits: ManifestLimits) -> dict[str, Any]:
    try:
        value = canonical.decode(data, max_bytes=limits.max_encoded_bytes + (1 << 20), max_depth=1)
    except DecodeError as exc:
        raise TransferInputError(f"sealed manifest: {exc}") from None
    fields = {"type", "v", "transfer_id", "sender", "recipient", "key", "body"}
    envelope = _fields(value, fields, "sealed manifest")
    if envelope["type"] != SEALED_TYPE or envelope["v"] != VERSION:
        raise TransferInputError("sealed manifest: unsupported type or version")
    for key in fields - {"type", "v"}:
        _typed(envelope[key], bytes, f"sealed manifest.{key}")
    return envelope


def open_manifest(
    data: bytes,
    identity: SigningIdentity,
    *,
    sender: PublicIdentity,
    limits: ManifestLimits = DEFAULT_LIMITS,
) -> Manifest:
    """Decrypt, verify and decode a sealed manifest sent to ``identity`` by ``sender``.

    ``sender`` is the member the offer came from (checked against the genesis by
    the caller).  Raises :class:`TransferInputError` if the envelope is malformed,
    not for us, not from ``sender``, tampered with, or the manifest is invalid.
    """
    envelope = _decode_envelope(data, limits)
    if envelope["recipient"] != identity.public.sign_key:
        raise TransferInputError("sealed manifest is addressed to another node")
    if envelope["sender"] != sender.sign_key:
        raise TransferInputError("sealed manifest names another sender than the one it came from")
    try:
        key = unseal(identity, envelope["key"])
        plain = io.BytesIO()
        ad = _body_ad(envelope["transfer_id"], envelope["sender"], envelope["recipient"])
        decrypt_stream(key, io.BytesIO(envelope["body"]), plain, associated_data=ad)
        inner = _fields(
            canonical.decode(plain.getvalue(), max_bytes=limits.max_encoded_bytes + 1024, max_depth=1),
            {"manifest", "sig"},
            "sealed manifest body",
        )
        encoded = _typed(inner["manifest"], bytes, "sealed manifest body.manifest")
        sender.verify(SIGN_DOMAIN, _signed_message(canonical.sha256(encoded)), inner["sig"])
    except (DecryptionError, DecodeError, BadSignatureError) as exc:
        raise TransferInputError(f"sealed manifest: {exc}") from None
    manifest = decode_manifest(encoded, limits)
    clear = (envelope["transfer_id"], envelope["sender"], envelope["recipient"])
    if (manifest.transfer_id, manifest.sender, manifest.recipient) != clear:
        raise TransferInputError("sealed manifest: envelope and manifest disagree")
    return manifest
