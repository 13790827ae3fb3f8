"""Node identity and domain-separated Ed25519 signatures.

A node's identity is one Ed25519 signing key (pynacl).  Its X25519 key for
sealed boxes is derived from it, so an institution publishes a single public
identity.  Every signature names a *domain* ("record", "vote", ...): the signed
bytes are ``b"MFTP-SIG-v1\\0" || len(domain) || domain || message``, so a
signature made for one purpose can never be replayed as another.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ._util import BytesLike
from ._util import is_bytes_like as _is_bytes
from .errors import BadSignatureError, CryptoUsageError

SIGNATURE_BYTES: Final = 64
PUBLIC_KEY_BYTES: Final = 32
SEED_BYTES: Final = 32

_PREFIX: Final = b"MFTP-SIG-v1\x00"

# The closed set of signature domains; a new purpose gets a new name here.
DOMAINS: Final = frozenset(
    {
        "record",  # ledger records
        "proposal",  # consensus block proposals
        "vote",  # consensus prevotes and precommits
        "capability",  # data-plane capabilities bound to a recipient
        "grant",  # audit grants
        "audit-bundle",  # an audit node's signed report bundle (verified offline)
        "membership",  # validators' approvals of a membership change
        "handshake",  # p2p membership proofs
        "member",  # a member's own directory entry or join request (off the chain)
        "test",  # test vectors only
    }
)


def _signed_bytes(domain: str, message: BytesLike) -> bytes:
    if not isinstance(domain, str) or domain not in DOMAINS:
        raise CryptoUsageError(f"unknown signature domain {domain!r}")
    # bytes(5) would silently sign five zero bytes, so accept bytes-like objects only.
    if not isinstance(message, bytes | bytearray | memoryview):
        raise CryptoUsageError(f"a signed message is bytes, not {type(message).__name__}")
    name = domain.encode("ascii")
    return _PREFIX + bytes([len(name)]) + name + bytes(message)


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """The public half of a node identity: Ed25519 verify key and derived X25519 key.

    Build it with :meth:`from_sign_key`; direct construction checks that ``box_key``
    is the one derived from ``sign_key``, so no identity can pair a verify key with
    somebody else's encryption key.
    """

    sign_key: bytes
    box_key: bytes

    def __post_init__(self) -> None:
        if not _is_bytes(self.sign_key) or len(self.sign_key) != PUBLIC_KEY_BYTES:
            raise CryptoUsageError("an Ed25519 public key is 32 bytes")
        if not _is_bytes(self.box_key) or len(self.box_key) != PUBLIC_KEY_BYTES:
            raise CryptoUsageError("an X25519 public key is 32 bytes")
        # Store plain immutable bytes so the dataclass is hashable and comparable.
        object.__setattr__(self, "sign_key", bytes(self.sign_key))
        object.__setattr__(self, "box_key", bytes(self.box_key))
        if _derive_box_key(self.sign_key) != self.box_key:
            raise CryptoUsageError("box_key is not the X25519 key derived from sign_key")

    @classmethod
    def from_sign_key(cls, sign_key: BytesLike) -> PublicIdentity:
        """Build from a 32-byte Ed25519 public key (the X25519 key is derived from it).

        Raises :class:`BadSignatureError` if the bytes are not a usable Ed25519 key
        (not on the curve, or of small order): such a key comes from outside.
        """
        if not _is_bytes(sign_key) or len(sign_key) != PUBLIC_KEY_BYTES:
            raise CryptoUsageError("an Ed25519 public key is 32 bytes")
        return cls(sign_key=bytes(sign_key), box_key=_derive_box_key(bytes(sign_key)))

    @property
    def node_id(self) -> bytes:
        """A short stable identifier: the first 16 bytes of SHA-256 of the verify key."""
        return hashlib.sha256(self.sign_key).digest()[:16]

    def verify(self, domain: str, message: BytesLike, signature: BytesLike) -> None:
        """Raise :class:`BadSignatureError` unless ``signature`` is valid for this key."""
        verify(self.sign_key, domain, message, signature)


@functools.lru_cache(maxsize=4096)
def _derive_box_key(sign_key: bytes) -> bytes:
    # Cached: the derivation is a point decompression (~50 µs), and the same peers'
    # identities are rebuilt again and again from ledger records.
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(bytes(sign_key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise BadSignatureError("not a valid Ed25519 public key") from exc


class SigningIdentity:
    """A node's private identity. Keep it in a key file of mode 0600 (see ``keyfile``)."""

    __slots__ = ("_box_private", "_signing_key", "public")

    def __init__(self, seed: BytesLike) -> None:
        if not _is_bytes(seed) or len(seed) != SEED_BYTES:
            raise CryptoUsageError("an Ed25519 seed is 32 bytes")
        self._signing_key = nacl.signing.SigningKey(bytes(seed))
        self._box_private = self._signing_key.to_curve25519_private_key()
        self.public = PublicIdentity.from_sign_key(bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls) -> SigningIdentity:
        """A new random identity."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed (write it only to a protected key file)."""
        return bytes(self._signing_key)

    @property
    def box_private_key(self) -> bytes:
        """The derived X25519 private key, for opening sealed boxes."""
        return bytes(self._box_private)

    def sign(self, domain: str, message: BytesLike) -> bytes:
        """Sign ``message`` for ``domain``; returns the 64-byte detached signature."""
        return self._signing_key.sign(_signed_bytes(domain, message)).signature

    def __repr__(self) -> str:  # never print the seed
        return f"SigningIdentity(node_id={self.public.node_id.hex()})"


def verify(public_key: BytesLike, domain: str, message: BytesLike, signature: BytesLike) -> None:
    """Raise :class:`BadSignatureError` unless ``signature`` signs ``message`` in ``domain``.

    An unknown domain or a non-bytes message is our bug (:class:`CryptoUsageError`);
    anything wrong with the key or signature, which come from peers, is a
    :class:`BadSignatureError`.
    """
    # Build the signed bytes first so a misuse (unknown domain) is reported as such
    # even when the signature is also malformed.
    signed = _signed_bytes(domain, message)
    if not (_is_bytes(signature) and _is_bytes(public_key)):
        raise BadSignatureError("signature and public key must be bytes")
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        raise BadSignatureError("signature or public key has the wrong length")
    try:
        # libsodium's verify refuses non-canonical S and small-order keys, so a valid
        # signature cannot be malleated into a second valid one.
        nacl.bindings.crypto_sign_open(bytes(signature) + signed, bytes(public_key))
    except nacl.exceptions.BadSignatureError:
        raise BadSignatureError(f"invalid {domain} signature") from None
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise BadSignatureError(f"invalid {domain} signature: {exc}") from None


def is_valid(public_key: BytesLike, domain: str, message: BytesLike, signature: BytesLike) -> bool:
    """``True`` if the signature verifies; never raises for bad input."""
    try:
        verify(public_key, domain, message, signature)
    except BadSignatureError:
        return False
    return True
