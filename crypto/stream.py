"""Streaming authenticated encryption for large files.

libsodium's *secretstream* (XChaCha20-Poly1305) encrypts a file as a sequence of
chunks.  Each chunk is authenticated and chained to the ones before it, and the
last one carries ``TAG_FINAL``, so a reader detects tampering, reordering,
dropped chunks and truncation without ever holding more than one chunk.

File format (what :func:`encrypt_stream` writes and :func:`decrypt_stream` reads)::

    header (24 bytes)
    repeated: length (4 bytes, big endian) || chunk ciphertext (length bytes)

Each chunk ciphertext is the plaintext chunk plus 17 bytes; the final chunk
carries ``TAG_FINAL`` and nothing may follow it.  An empty plaintext still gives
one (empty) final chunk, so "no final chunk" always means truncation.

:class:`StreamEncryptor` and :class:`StreamDecryptor` expose the same stream one
chunk at a time, without the length prefixes, for the transfer layer, which
frames chunks in its own messages.

Decryption writes each chunk as soon as it is authenticated, so a stream found
truncated or tampered later has already produced some plaintext: write to a
temporary file and discard it when :class:`DecryptionError` is raised.
"""

from __future__ import annotations

from typing import BinaryIO, Final

import nacl.bindings as sodium
import nacl.exceptions

from ._util import BytesLike
from ._util import require_bytes as _require_bytes
from .errors import CryptoUsageError, DecryptionError

KEY_BYTES: Final = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
HEADER_BYTES: Final = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
CHUNK_OVERHEAD_BYTES: Final = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
LENGTH_PREFIX_BYTES: Final = 4

DEFAULT_CHUNK_BYTES: Final = 1 << 20
MAX_CHUNK_BYTES: Final = 16 << 20
"""Largest plaintext chunk either side accepts: memory use is bounded by it."""

MAX_ASSOCIATED_DATA_BYTES: Final = 1 << 16

_TAG_MESSAGE: Final = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: Final = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


def _check_key(key: object) -> bytes:
    key = _require_bytes("key", key)
    if len(key) != KEY_BYTES:
        raise CryptoUsageError(f"a stream key is {KEY_BYTES} bytes")
    return key


def _check_associated_data(associated_data: object) -> bytes:
    data = _require_bytes("associated_data", associated_data)
    if len(data) > MAX_ASSOCIATED_DATA_BYTES:
        raise CryptoUsageError(f"associated data is at most {MAX_ASSOCIATED_DATA_BYTES} bytes")
    return data


def _check_chunk_limit(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHUNK_BYTES:
        raise CryptoUsageError(f"{name} must be an int from 1 to {MAX_CHUNK_BYTES}")
    return value


def generate_key() -> bytes:
    """A fresh random 32-byte stream key."""
    return sodium.crypto_secretstream_xchacha20poly1305_keygen()


class StreamEncryptor:
    """Encrypt one stream chunk by chunk.

    Send :attr:`header` first, then the result of each :meth:`push`; the last
    chunk must be pushed with ``final=True``.  ``associated_data`` is
    authenticated with every chunk (not encrypted, not sent).
    """

    __slots__ = ("_associated_data", "_finished", "_header", "_max_chunk_bytes", "_state")

    def __init__(
        self, key: BytesLike, *, associated_data: BytesLike = b"", max_chunk_bytes: int = MAX_CHUNK_BYTES
    ) -> None:
        key = _check_key(key)
        self._associated_data = _check_associated_data(associated_data)
        self._max_chunk_bytes = _check_chunk_limit("max_chunk_bytes", max_chunk_bytes)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self._header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._finished = False

    @property
    def header(self) -> bytes:
        """The 24-byte stream header (random; the reader needs it first)."""
        return self._header

    @property
    def finished(self) -> bool:
        """``True`` once the final chunk has been pushed."""
        return self._finished

    def push(self, chunk: BytesLike, final: bool = False) -> bytes:
        """Encrypt one chunk; returns ``len(chunk) + 17`` bytes of ciphertext."""
        if self._finished:
            raise CryptoUsageError("the stream is finished; no chunk may follow the final one")
        data = _require_bytes("chunk", chunk)
        if len(data) > self._max_chunk_bytes:
            raise CryptoUsageError(f"chunk of {len(data)} bytes exceeds {self._max_chunk_bytes}")
        tag = _TAG_FINAL if final else _TAG_MESSAGE
        ciphertext = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, data, self._associated_data, tag
        )
        if final:
            self._finished = True
        return ciphertext


class StreamDecryptor:
    """Decrypt one stream chunk by chunk, in the order the chunks were pushed.

    Every failure (wrong key, tampered, reordered or oversized chunk, a chunk
    after the final one) raises :class:`DecryptionError`, and the decryptor then
    refuses any further chunk.  Call :meth:`finish` when the sender says the
    stream is over: it raises unless the final chunk has been seen (truncation).
    """

    __slots__ = ("_associated_data", "_failed", "_finished", "_max_chunk_bytes", "_state")

    def __init__(
        self,
        key: BytesLike,
        header: BytesLike,
        *,
        associated_data: BytesLike = b"",
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
    ) -> None:
        key = _check_key(key)
        self._associated_data = _check_associated_data(associated_data)
        self._max_chunk_bytes = _check_chunk_limit("max_chunk_bytes", max_chunk_bytes)
        if not isinstance(header, bytes | bytearray | memoryview) or len(header) != HEADER_BYTES:
            raise DecryptionError(f"a stream header is {HEADER_BYTES} bytes")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        # init_pull only copies the nonce out of the header; a wrong key or header
        # shows up as an authentication failure on the first chunk.
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, bytes(header), key)
        self._finished = False
        self._failed = False

    @property
    def finished(self) -> bool:
        """``True`` once the final chunk has been authenticated."""
        return self._finished

    def pull(self, ciphertext: BytesLike) -> tuple[bytes, bool]:
        """Decrypt the next chunk; returns ``(plaintext, is_final)``."""
        if self._failed:
            raise DecryptionError("the stream already failed authentication")
        if self._finished:
            self._failed = True
            raise DecryptionError("data after the final chunk")
        if not isinstance(ciphertext, bytes | bytearray | memoryview):
            self._failed = True
            raise DecryptionError(f"a chunk is bytes, not {type(ciphertext).__name__}")
        data = bytes(ciphertext)
        if len(data) < CHUNK_OVERHEAD_BYTES:
            self._failed = True
            raise DecryptionError(f"chunk of {len(data)} bytes is shorter than its overhead")
        if len(data) - CHUNK_OVERHEAD_BYTES > self._max_chunk_bytes:
            self._failed = True
            raise DecryptionError(f"chunk exceeds the limit of {self._max_chunk_bytes} bytes")
        try:
            plaintext, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, data, self._associated_data
            )
        except nacl.exceptions.CryptoError:
            # A failed pull leaves the state unchanged, but the stream is untrustworthy
            # from here on, so the decryptor refuses to go on.
            self._failed = True
            raise DecryptionError("chunk failed authentication: tampered, reordered or wrong key") from None
        if tag == _TAG_FINAL:
            self._finished = True
        elif tag != _TAG_MESSAGE:
            # We never push PUSH or REKEY tags; a stream that has them is not ours.
            self._failed = True
            raise DecryptionError(f"unexpected chunk tag {tag}")
        return plaintext, self._finished

    def finish(self) -> None:
        """Raise :class:`DecryptionError` unless the final chunk was received."""
        if self._failed:
            raise DecryptionError("the stream failed authentication")
        if not self._finished:
            raise DecryptionError("stream truncated: the final chunk is missing")


def _read_exactly(src: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of input (raw streams may return short reads)."""
    first = src.read(size)
    if first is None:
        raise CryptoUsageError("non-blocking streams are not supported")
    if len(first) == size or not first:
        return bytes(first)
    parts = [first]
    got = len(first)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def ciphertext_size(plaintext_bytes: int, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """The exact size :func:`encrypt_stream` writes for ``plaintext_bytes`` of input."""
    if isinstance(plaintext_bytes, bool) or not isinstance(plaintext_bytes, int) or plaintext_bytes < 0:
        raise CryptoUsageError("plaintext_bytes must be a non-negative int")
    _check_chunk_limit("chunk_bytes", chunk_bytes)
    chunks = max(1, -(-plaintext_bytes // chunk_bytes))
    return HEADER_BYTES + plaintext_bytes + chunks * (LENGTH_PREFIX_BYTES + CHUNK_OVERHEAD_BYTES)


def encrypt_stream(
    key: BytesLike,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    associated_data: BytesLike = b"",
) -> int:
    """Encrypt everything readable from ``src`` into ``dst``; returns the bytes written.

    Reads ``chunk_bytes`` at a time and keeps at most two chunks in memory (one
    read ahead, to know which chunk is the final one).
    """
    chunk_bytes = _check_chunk_limit("chunk_bytes", chunk_bytes)
    encryptor = StreamEncryptor(key, associated_data=associated_data, max_chunk_bytes=chunk_bytes)
    dst.write(encryptor.header)
    written = HEADER_BYTES
    current = _read_exactly(src, chunk_bytes)
    while True:
        following = _read_exactly(src, chunk_bytes) if len(current) == chunk_bytes else b""
        final = not following
        ciphertext = encryptor.push(current, final=final)
        # Two writes rather than prefix + ciphertext, to avoid copying the chunk.
        dst.write(len(ciphertext).to_bytes(LENGTH_PREFIX_BYTES, "big"))
        dst.write(ciphertext)
        written += LENGTH_PREFIX_BYTES + len(ciphertext)
        if final:
            return written
        current = following


def decrypt_stream(
    key: BytesLike,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
    associated_data: BytesLike = b"",
) -> int:
    """Decrypt a stream written by :func:`encrypt_stream`; returns the plaintext bytes written.

    Raises :class:`DecryptionError` for a wrong key, tampering, reordered chunks,
    truncation (no final chunk), data after the final chunk, or a chunk length
    above ``max_chunk_bytes`` (checked before the chunk is read).  Plaintext
    already written to ``dst`` before the error must be discarded.
    """
    max_chunk_bytes = _check_chunk_limit("max_chunk_bytes", max_chunk_bytes)
    header = _read_exactly(src, HEADER_BYTES)
    if len(header) != HEADER_BYTES:
        raise DecryptionError(f"stream truncated: header of {len(header)} of {HEADER_BYTES} bytes")
    decryptor = StreamDecryptor(key, header, associated_data=associated_data, max_chunk_bytes=max_chunk_bytes)
    written = 0
    while not decryptor.finished:
        prefix = _read_exactly(src, LENGTH_PREFIX_BYTES)
        if len(prefix) != LENGTH_PREFIX_BYTES:
            raise DecryptionError("stream truncated: the final chunk is missing")
        length = int.from_bytes(prefix, "big")
        # Refuse a hostile length before reading, so it cannot make us buffer 4 GiB.
        if not CHUNK_OVERHEAD_BYTES <= length <= max_chunk_bytes + CHUNK_OVERHEAD_BYTES:
            raise DecryptionError(f"chunk length {length} outside 17..{max_chunk_bytes + 17}")
        ciphertext = _read_exactly(src, length)
        if len(ciphertext) != length:
            raise DecryptionError("stream truncated inside a chunk")
        plaintext, _ = decryptor.pull(ciphertext)
        dst.write(plaintext)
        written += len(plaintext)
    if _read_exactly(src, 1):
        raise DecryptionError("data after the final chunk")
    return written
