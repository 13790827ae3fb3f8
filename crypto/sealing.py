"""Public-key sealed boxes and symmetric key wrapping.

* :func:`seal` / :func:`unseal`: libsodium sealed boxes (X25519 + XSalsa20-Poly1305
  with an ephemeral sender key) addressed to a node's X25519 key, i.e.
  :attr:`PublicIdentity.box_key <mftp.crypto.signing.PublicIdentity.box_key>`.
  Used to hand a file key to exactly one recipient; the sender stays anonymous
  to the box itself, which is why capabilities are signed separately.
* :func:`wrap_key` / :func:`unwrap_key`: XChaCha20-Poly1305 (IETF AEAD) under a
  key-encryption key, with a random 24-byte nonce prepended.  Used for the local
  storage key.  A 24-byte nonce is safe to pick at random for any number of keys.
"""

from __future__ import annotations

from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.utils

from ._util import BytesLike
from ._util import require_bytes as _require_bytes
from .errors import CryptoUsageError, DecryptionError
from .signing import PublicIdentity, SigningIdentity

BOX_KEY_BYTES: Final = 32
SEAL_OVERHEAD_BYTES: Final = 48
"""Ephemeral public key (32) plus Poly1305 tag (16)."""

KEK_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
WRAP_NONCE_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
WRAP_TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
MAX_WRAPPED_KEY_BYTES: Final = 1024
"""Longest key :func:`wrap_key` accepts: keys are short, anything longer is a bug."""

# Binds every wrapped key to this construction, so the same KEK used elsewhere with
# XChaCha20-Poly1305 can never accept a wrapped key as its own message.
_WRAP_AD: Final = b"MFTP-WRAP-v1\x00"


def seal(recipient_box_key: BytesLike | PublicIdentity, plaintext: BytesLike) -> bytes:
    """Encrypt ``plaintext`` so only the holder of the X25519 private key can read it.

    ``recipient_box_key`` is a 32-byte X25519 public key or a :class:`PublicIdentity`
    (its ``box_key`` is used).  The result is ``len(plaintext) + 48`` bytes.
    """
    if isinstance(recipient_box_key, PublicIdentity):
        recipient_box_key = recipient_box_key.box_key
    key = _require_bytes("recipient_box_key", recipient_box_key)
    if len(key) != BOX_KEY_BYTES:
        raise CryptoUsageError(f"an X25519 public key is {BOX_KEY_BYTES} bytes")
    message = _require_bytes("plaintext", plaintext)
    try:
        return bytes(nacl.public.SealedBox(nacl.public.PublicKey(key)).encrypt(message))
    except nacl.exceptions.CryptoError as exc:
        # libsodium refuses low-order points, for which the shared secret is known.
        raise CryptoUsageError(f"cannot seal to this key: {exc}") from None


def unseal(identity_or_box_private_key: SigningIdentity | BytesLike, ciphertext: BytesLike) -> bytes:
    """Open a sealed box; raises :class:`DecryptionError` if it is not for us or was altered."""
    if isinstance(identity_or_box_private_key, SigningIdentity):
        private = identity_or_box_private_key.box_private_key
    else:
        private = _require_bytes("box private key", identity_or_box_private_key)
    if len(private) != BOX_KEY_BYTES:
        raise CryptoUsageError(f"an X25519 private key is {BOX_KEY_BYTES} bytes")
    if not isinstance(ciphertext, bytes | bytearray | memoryview):
        raise DecryptionError(f"sealed box must be bytes, not {type(ciphertext).__name__}")
    data = bytes(ciphertext)
    if len(data) < SEAL_OVERHEAD_BYTES:
        raise DecryptionError(f"sealed box of {len(data)} bytes is shorter than its overhead")
    try:
        return bytes(nacl.public.SealedBox(nacl.public.PrivateKey(private)).decrypt(data))
    except nacl.exceptions.CryptoError:
        raise DecryptionError("sealed box does not open: wrong recipient or tampered") from None


def _wrap_key_with_nonce(
    kek: BytesLike, key: BytesLike, nonce: BytesLike, associated_data: BytesLike = b""
) -> bytes:
    """:func:`wrap_key` with a caller-chosen nonce; for test vectors only."""
    kek = _require_bytes("kek", kek)
    key = _require_bytes("key", key)
    nonce = _require_bytes("nonce", nonce)
    associated_data = _require_bytes("associated_data", associated_data)
    if len(kek) != KEK_BYTES:
        raise CryptoUsageError(f"a key-encryption key is {KEK_BYTES} bytes")
    if not 1 <= len(key) <= MAX_WRAPPED_KEY_BYTES:
        raise CryptoUsageError(f"a wrapped key is 1 to {MAX_WRAPPED_KEY_BYTES} bytes")
    if len(nonce) != WRAP_NONCE_BYTES:
        raise CryptoUsageError(f"the nonce is {WRAP_NONCE_BYTES} bytes")
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        key, _WRAP_AD + associated_data, nonce, kek
    )
    return nonce + sealed


def wrap_key(kek: BytesLike, key: BytesLike, *, associated_data: BytesLike = b"") -> bytes:
    """Encrypt ``key`` under the 32-byte ``kek``: ``nonce(24) || ciphertext || tag(16)``.

    ``associated_data`` (e.g. the key's name) is authenticated, not stored; the
    same bytes must be given to :func:`unwrap_key`.
    """
    return _wrap_key_with_nonce(kek, key, nacl.utils.random(WRAP_NONCE_BYTES), associated_data)


def unwrap_key(kek: BytesLike, wrapped: BytesLike, *, associated_data: BytesLike = b"") -> bytes:
    """Reverse :func:`wrap_key`; raises :class:`DecryptionError` on a wrong KEK or tampering."""
    kek = _require_bytes("kek", kek)
    associated_data = _require_bytes("associated_data", associated_data)
    if len(kek) != KEK_BYTES:
        raise CryptoUsageError(f"a key-encryption key is {KEK_BYTES} bytes")
    if not isinstance(wrapped, bytes | bytearray | memoryview):
        raise DecryptionError(f"wrapped key must be bytes, not {type(wrapped).__name__}")
    data = bytes(wrapped)
    overhead = WRAP_NONCE_BYTES + WRAP_TAG_BYTES
    if not overhead < len(data) <= overhead + MAX_WRAPPED_KEY_BYTES:
        raise DecryptionError(f"wrapped key of {len(data)} bytes has an impossible length")
    nonce, sealed = data[:WRAP_NONCE_BYTES], data[WRAP_NONCE_BYTES:]
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed, _WRAP_AD + associated_data, nonce, kek
        )
    except nacl.exceptions.CryptoError:
        raise DecryptionError("wrapped key does not open: wrong key or tampered") from None
