"""Capabilities: who may fetch which objects from a node's data plane, until when.

A **capability** is issued by the sender's node and bound to one recipient node::

    token = encode({"cap": body, "sig": Ed25519 signature by the sender over encode(body)})
    body  = {"type": "mftp-capability", "v": 1, "transfer_id": 16 bytes,
             "sender": 32-byte key, "recipient": 32-byte key, "manifest_sha256": 32 bytes,
             "issued_ms": int, "not_after_ms": int}

It covers every object of the manifest named by ``manifest_sha256`` (the server
looks the objects up in its record of that transfer), which keeps the token a
few hundred bytes whatever the study size.  ``manifest_sha256`` equal to
:data:`STREAMING_MANIFEST` (32 zero bytes) names no manifest yet: the sender offers
the study while still preparing it and publishes signed partial manifests, then
the final one; such a capability covers the objects of whichever manifest of that
transfer the server serves at the time of the request.

Each request carries the token and a **proof** that the caller holds the
recipient's key: a signature by the recipient over::

    encode({"type": "mftp-fetch-proof", "v": 1, "method": "GET", "path": "/v1/objects/<hex>",
            "range": "bytes=0-4194303" or "", "ts_ms": int, "nonce": 16 bytes,
            "cap_sha256": SHA-256 of the token})

Both signatures use the ``capability`` domain; the ``type`` field inside the
signed bytes keeps a capability, a proof and a manifest signature
(:mod:`.manifest`) from ever passing for one another.

The HTTP header is ``Authorization: MFTP-Cap cap=<b64url>, ts=<ms>, nonce=<b64url>,
proof=<b64url>`` (base64url without padding; :func:`format_authorization`).

:func:`authorize` makes the server's checks, in this order (cheap and
unauthenticated first): header well formed (else 401); capability signed by this
server and not expired; proof signed by the capability's recipient over this
very request; timestamp within ``skew_ms`` of the server clock; proof not seen
before (:class:`ReplayCache`).  Then :func:`check_object` checks that the
requested object is in the transfer (:func:`check_transfer` for the manifest).
Every refusal is an :class:`AuthError` carrying its HTTP status and a short
reason code.

Pure code: time is always passed in as ``now_ms``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import BadSignatureError, DecodeError
from mftp.crypto.primitives import random_bytes
from mftp.crypto.signing import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, PublicIdentity, SigningIdentity, verify

from .errors import TransferInputError, TransferUsageError
from .manifest import HASH_BYTES, TRANSFER_ID_BYTES

CAPABILITY_TYPE: Final = "mftp-capability"
PROOF_TYPE: Final = "mftp-fetch-proof"
VERSION: Final = 1
SIGN_DOMAIN: Final = "capability"
AUTH_SCHEME: Final = "MFTP-Cap"
NONCE_BYTES: Final = 16

STREAMING_MANIFEST: Final = bytes(HASH_BYTES)
"""``manifest_sha256`` of a capability issued before the manifest exists (see above)."""
DEFAULT_TTL_MS: Final = 60 * 60 * 1000
"""An hour: enough for a study at modest speed; a resumed transfer asks for a new one."""
MAX_TTL_MS: Final = 7 * 24 * 60 * 60 * 1000
DEFAULT_SKEW_MS: Final = 60_000
MAX_TOKEN_BYTES: Final = 1024
MAX_HEADER_CHARS: Final = 2048
MAX_PATH_CHARS: Final = 256
MAX_RANGE_CHARS: Final = 128
DEFAULT_REPLAY_ENTRIES: Final = 100_000


class AuthError(TransferInputError):
    """A data-plane request is refused; ``status`` is 401, 403 or 503 and ``reason`` a short code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Capability:
    """A decoded capability token (:func:`decode_capability` does not check the signature)."""

    transfer_id: bytes
    sender: bytes
    recipient: bytes
    manifest_sha256: bytes
    issued_ms: int
    not_after_ms: int
    signature: bytes

    def body(self) -> dict[str, Any]:
        """The signed map."""
        return {
            "type": CAPABILITY_TYPE,
            "v": VERSION,
            "transfer_id": self.transfer_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "manifest_sha256": self.manifest_sha256,
            "issued_ms": self.issued_ms,
            "not_after_ms": self.not_after_ms,
        }

    @property
    def token(self) -> bytes:
        """The bytes that travel (in the offer, and in each request header)."""
        return canonical.encode({"cap": self.body(), "sig": self.signature})

    @property
    def sha256(self) -> bytes:
        """SHA-256 of :attr:`token`; what each proof signs."""
        return hashlib.sha256(self.token).digest()


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """The parts of an HTTP request a proof binds."""

    method: str
    path: str
    range: str
    ts_ms: int
    nonce: bytes


def issue_capability(
    identity: SigningIdentity,
    *,
    recipient: bytes,
    transfer_id: bytes,
    manifest_sha256: bytes,
    now_ms: int,
    ttl_ms: int = DEFAULT_TTL_MS,
) -> Capability:
    """A capability for ``recipient`` (its Ed25519 key) to fetch the objects of one transfer."""
    if len(recipient) != PUBLIC_KEY_BYTES or recipient == identity.public.sign_key:
        raise TransferUsageError("the recipient is another node's 32-byte Ed25519 key")
    if len(transfer_id) != TRANSFER_ID_BYTES or len(manifest_sha256) != HASH_BYTES:
        raise TransferUsageError("bad transfer_id or manifest_sha256 length")
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise TransferUsageError(f"ttl_ms must be 1..{MAX_TTL_MS}")
    unsigned = Capability(
        transfer_id, identity.public.sign_key, recipient, manifest_sha256, now_ms, now_ms + ttl_ms, b""
    )
    signature = identity.sign(SIGN_DOMAIN, canonical.encode(unsigned.body()))
    return dataclasses.replace(unsigned, signature=signature)


_BODY_TYPES: Final[dict[str, type]] = {
    "type": str,
    "v": int,
    "transfer_id": bytes,
    "sender": bytes,
    "recipient": bytes,
    "manifest_sha256": bytes,
    "issued_ms": int,
    "not_after_ms": int,
}
_BODY_LENGTHS: Final = {
    "transfer_id": TRANSFER_ID_BYTES,
    "sender": PUBLIC_KEY_BYTES,
    "recipient": PUBLIC_KEY_BYTES,
    "manifest_sha256": HASH_BYTES,
}


def decode_capability(token: bytes) -> Capability:
    """Parse a token from outside; :class:`TransferInputError` if malformed (signature unchecked)."""
    try:
        value = canonical.decode(token, max_bytes=MAX_TOKEN_BYTES, max_depth=2)
    except DecodeError as exc:
        raise TransferInputError(f"capability: {exc}") from None
    if not isinstance(value, dict) or set(value) != {"cap", "sig"} or not isinstance(value["cap"], dict):
        raise TransferInputError("capability: expected {cap, sig}")
    body, signature = value["cap"], value["sig"]
    if set(body) != set(_BODY_TYPES):
        raise TransferInputError(f"capability: fields {sorted(body)}")
    for key, kind in _BODY_TYPES.items():
        if not isinstance(body[key], kind) or isinstance(body[key], bool):
            raise TransferInputError(f"capability: {key} must be {kind.__name__}")
    if body["type"] != CAPABILITY_TYPE or body["v"] != VERSION:
        raise TransferInputError("capability: unsupported type or version")
    if any(len(body[key]) != length for key, length in _BODY_LENGTHS.items()):
        raise TransferInputError("capability: a key or hash has the wrong length")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise TransferInputError("capability: signature must be 64 bytes")
    if not 0 < body["not_after_ms"] - body["issued_ms"] <= MAX_TTL_MS:
        # issue_capability never makes longer ones: a peer must not keep our retries alive for ever
        raise TransferInputError(f"capability: lifetime outside 1..{MAX_TTL_MS} ms")
    return Capability(
        body["transfer_id"],
        body["sender"],
        body["recipient"],
        body["manifest_sha256"],
        body["issued_ms"],
        body["not_after_ms"],
        signature,
    )


def proof_message(capability_sha256: bytes, request: FetchRequest) -> bytes:
    """The bytes a recipient signs to prove it makes ``request`` under a capability."""
    return canonical.encode(
        {
            "type": PROOF_TYPE,
            "v": VERSION,
            "method": request.method,
            "path": request.path,
            "range": request.range,
            "ts_ms": request.ts_ms,
            "nonce": request.nonce,
            "cap_sha256": capability_sha256,
        }
    )


def authorization_header(
    identity: SigningIdentity,
    capability: Capability,
    *,
    method: str,
    path: str,
    range_header: str,
    now_ms: int,
    nonce: bytes | None = None,
) -> str:
    """The ``Authorization`` value for one request: the token plus a fresh proof by ``identity``."""
    if identity.public.sign_key != capability.recipient:
        raise TransferUsageError("only the capability's recipient can prove it")
    request = FetchRequest(method, path, range_header, now_ms, nonce or random_bytes(NONCE_BYTES))
    proof = identity.sign(SIGN_DOMAIN, proof_message(capability.sha256, request))
    return format_authorization(capability.token, request.ts_ms, request.nonce, proof)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AuthError(401, "malformed", f"{what} is not base64url") from None
    if _b64(data) != text:  # one encoding per value, like everything signed in MFTP
        raise AuthError(401, "malformed", f"{what} is not canonical base64url")
    return data


def format_authorization(token: bytes, ts_ms: int, nonce: bytes, proof: bytes) -> str:
    """``MFTP-Cap cap=..., ts=..., nonce=..., proof=...``."""
    return f"{AUTH_SCHEME} cap={_b64(token)}, ts={ts_ms}, nonce={_b64(nonce)}, proof={_b64(proof)}"


def parse_authorization(value: str | None) -> tuple[bytes, int, bytes, bytes]:
    """``(token, ts_ms, nonce, proof)`` of a header; :class:`AuthError` 401 if absent or malformed."""
    if not value:
        raise AuthError(401, "missing", f"an {AUTH_SCHEME} Authorization header is required")
    if len(value) > MAX_HEADER_CHARS:
        raise AuthError(401, "malformed", "Authorization header too long")
    scheme, _, rest = value.partition(" ")
    if scheme != AUTH_SCHEME:
        raise AuthError(401, "malformed", f"Authorization scheme must be {AUTH_SCHEME}")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep or key in params:
            raise AuthError(401, "malformed", "Authorization parameters must be key=value, once each")
        params[key] = val
    if set(params) != {"cap", "ts", "nonce", "proof"}:
        raise AuthError(401, "malformed", "Authorization needs cap, ts, nonce and proof")
    ts = params["ts"]
    if not ts.isdigit() or len(ts) > 18 or (len(ts) > 1 and ts[0] == "0"):
        raise AuthError(401, "malformed", "ts must be a decimal timestamp in milliseconds")
    nonce = _unb64(params["nonce"], "nonce")
    proof = _unb64(params["proof"], "proof")
    if len(nonce) != NONCE_BYTES or len(proof) != SIGNATURE_BYTES:
        raise AuthError(401, "malformed", "nonce or proof has the wrong length")
    return _unb64(params["cap"], "cap"), int(ts), nonce, proof


class ReplayCache:
    """Proof signatures seen within the skew window, so a captured request cannot be replayed.

    Entries older than ``window_ms`` are dropped: their timestamps are refused anyway.
    When full of fresh entries the cache refuses new requests (503) rather than
    forgetting one that might then be replayed.
    """

    def __init__(
        self, window_ms: int = 2 * DEFAULT_SKEW_MS, max_entries: int = DEFAULT_REPLAY_ENTRIES
    ) -> None:
        self._window_ms = window_ms
        self._max = max_entries
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, proof: bytes, now_ms: int) -> None:
        """Remember ``proof``; :class:`AuthError` if it was seen or the cache is full."""
        while self._seen:
            oldest, seen_ms = next(iter(self._seen.items()))
            if now_ms - seen_ms <= self._window_ms:
                break
            del self._seen[oldest]
        if proof in self._seen:
            raise AuthError(403, "replayed", "this request was already made (replayed proof)")
        if len(self._seen) >= self._max:
            raise AuthError(503, "busy", "too many requests in the replay window; retry later")
        self._seen[proof] = now_ms


def authorize(
    header: str | None,
    *,
    method: str,
    path: str,
    range_header: str,
    server: PublicIdentity,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
    replay: ReplayCache | None = None,
) -> Capability:
    """Check a request's ``Authorization`` header; returns its verified capability.

    Raises :class:`AuthError` (401 malformed or missing, 403 refused, 503 busy).
    The caller then checks the object with :func:`check_object`.
    """
    if len(path) > MAX_PATH_CHARS or len(range_header) > MAX_RANGE_CHARS:
        raise AuthError(401, "malformed", "path or range too long")
    token, ts_ms, nonce, proof = parse_authorization(header)
    try:
        capability = decode_capability(token)
    except TransferInputError as exc:
        raise AuthError(401, "malformed", str(exc)) from None
    if capability.sender != server.sign_key:
        raise AuthError(403, "wrong-issuer", "capability was not issued by this node")
    try:
        verify(server.sign_key, SIGN_DOMAIN, canonical.encode(capability.body()), capability.signature)
    except BadSignatureError:
        raise AuthError(403, "bad-signature", "capability signature is not valid") from None
    if now_ms > capability.not_after_ms:
        raise AuthError(403, "expired", "capability has expired; ask the sender for a new one")
    request = FetchRequest(method, path, range_header, ts_ms, nonce)
    try:
        verify(capability.recipient, SIGN_DOMAIN, proof_message(capability.sha256, request), proof)
    except BadSignatureError:
        raise AuthError(403, "bad-proof", "proof is not signed by the capability's recipient") from None
    if abs(ts_ms - now_ms) > skew_ms:
        raise AuthError(403, "stale", f"request timestamp is more than {skew_ms} ms from the server clock")
    if replay is not None:
        replay.check_and_add(proof, now_ms)
    return capability


def covers_manifest(capability: Capability, manifest_sha256: bytes) -> bool:
    """Whether ``capability`` covers the manifest of that hash (its own, or any when streaming)."""
    return capability.manifest_sha256 in (manifest_sha256, STREAMING_MANIFEST)


def check_transfer(capability: Capability, transfer_id: bytes, *, manifest_sha256: bytes | None) -> None:
    """:class:`AuthError` 403 unless the capability is for ``transfer_id``, served with this manifest.

    ``manifest_sha256`` is the server's record of the transfer (``None`` if it has none); a
    streaming capability (:data:`STREAMING_MANIFEST`) accepts whatever manifest the server serves.
    """
    if capability.transfer_id != transfer_id:
        raise AuthError(403, "not-covered", "capability is for another transfer")
    if manifest_sha256 is None or capability.manifest_sha256 not in (manifest_sha256, STREAMING_MANIFEST):
        raise AuthError(403, "unknown-transfer", "capability names a transfer this node does not serve")


def check_object(
    capability: Capability, object_id: bytes, *, manifest_sha256: bytes | None, objects: Collection[bytes]
) -> None:
    """:class:`AuthError` 403 unless ``object_id`` belongs to the capability's transfer.

    ``manifest_sha256`` and ``objects`` are the server's record of that transfer
    (``None`` and empty if it has none).
    """
    check_transfer(capability, capability.transfer_id, manifest_sha256=manifest_sha256)
    if object_id not in objects:
        raise AuthError(403, "not-covered", "object is not part of the capability's transfer")
