"""Streaming authenticated encryption (mftp.crypto.stream)."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from typing import Any

import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mftp.crypto.errors import CryptoUsageError, DecryptionError
from mftp.crypto.stream import (
    CHUNK_OVERHEAD_BYTES,
    HEADER_BYTES,
    StreamDecryptor,
    StreamEncryptor,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    generate_key,
)

KEY = bytes(range(32))
AD = b"mftp-test"

# Produced once with encrypt_stream(KEY, ..., chunk_bytes=16, associated_data=AD):
# decrypting it proves the format (header, framing, tags) stays stable.
KNOWN_PLAINTEXT = b"MFTP secretstream known answer, three chunks."
KNOWN_CIPHERTEXT = bytes.fromhex(
    "61f9aa9c31eaec7568aae58910f5884a820ea8d747fd95a3"
    "00000021"
    "8aade285f67aa46cc62494d8a5f66389594b55c5b6c99e80f286653c9c6b276df3"
    "00000021"
    "54136df0b9bfdc97e3aaeba31047391c2f6019a6a3ff2e496ead79cc1e4c385ed5"
    "0000001e"
    "3f166313f8915ae26e5e9917ce146fe7d40b16f63aeb3097d7d0ac740c82"
)


def encrypt(plaintext: bytes, *, chunk_bytes: int = 16, ad: bytes = AD, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    written = encrypt_stream(key, io.BytesIO(plaintext), out, chunk_bytes=chunk_bytes, associated_data=ad)
    assert written == len(out.getvalue()) == ciphertext_size(len(plaintext), chunk_bytes=chunk_bytes)
    return out.getvalue()


def decrypt(ciphertext: bytes, *, ad: bytes = AD, key: bytes = KEY, max_chunk_bytes: int = 1 << 20) -> bytes:
    out = io.BytesIO()
    written = decrypt_stream(
        key, io.BytesIO(ciphertext), out, associated_data=ad, max_chunk_bytes=max_chunk_bytes
    )
    assert written == len(out.getvalue())
    return out.getvalue()


def frames(ciphertext: bytes) -> tuple[bytes, list[bytes]]:
    """Split a stream into its header and its framed chunks (prefix included)."""
    header, rest, chunks = ciphertext[:HEADER_BYTES], ciphertext[HEADER_BYTES:], []
    while rest:
        length = int.from_bytes(rest[:4], "big")
        chunks.append(rest[: 4 + length])
        rest = rest[4 + length :]
    return header, chunks


def test_known_answer() -> None:
    assert decrypt(KNOWN_CIPHERTEXT) == KNOWN_PLAINTEXT


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 48, 100])
def test_round_trip_sizes(size: int) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    ciphertext = encrypt(plaintext)
    assert decrypt(ciphertext) == plaintext
    _, chunks = frames(ciphertext)
    assert len(chunks) == max(1, -(-size // 16))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 64), st.binary(max_size=16))
def test_round_trip_property(plaintext: bytes, chunk_bytes: int, ad: bytes) -> None:
    assert decrypt(encrypt(plaintext, chunk_bytes=chunk_bytes, ad=ad), ad=ad) == plaintext


def test_short_reads_from_raw_streams() -> None:
    class Dribble(io.RawIOBase):
        """Returns at most 3 bytes per read, as sockets and pipes may."""

        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = self._data.read(min(3, len(buffer)))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    plaintext = bytes(range(200))
    out = io.BytesIO()
    encrypt_stream(KEY, Dribble(plaintext), out, chunk_bytes=16)  # type: ignore[arg-type]
    back = io.BytesIO()
    decrypt_stream(KEY, Dribble(out.getvalue()), back)  # type: ignore[arg-type]
    assert back.getvalue() == plaintext
    # Chunk boundaries follow chunk_bytes, not the sizes the source happened to return.
    assert len(frames(out.getvalue())[1]) == 13


def test_wrong_key_and_wrong_associated_data() -> None:
    ciphertext = encrypt(b"secret data")
    with pytest.raises(DecryptionError):
        decrypt(ciphertext, key=bytes(32))
    with pytest.raises(DecryptionError):
        decrypt(ciphertext, ad=b"other")


def test_every_truncation_is_detected() -> None:
    ciphertext = encrypt(bytes(40))
    for cut in range(len(ciphertext)):
        with pytest.raises(DecryptionError):
            decrypt(ciphertext[:cut])


def test_dropping_the_final_chunk_is_truncation() -> None:
    header, chunks = frames(encrypt(bytes(40)))
    with pytest.raises(DecryptionError, match="final chunk is missing"):
        decrypt(header + b"".join(chunks[:-1]))


def test_every_flipped_byte_is_detected() -> None:
    ciphertext = encrypt(bytes(40))
    for position in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            decrypt(bytes(tampered))


def test_reordered_duplicated_and_dropped_chunks() -> None:
    header, chunks = frames(encrypt(bytes(range(64))))
    assert len(chunks) == 4
    for broken in (
        [chunks[1], chunks[0], chunks[2], chunks[3]],
        [chunks[0], chunks[0], chunks[1], chunks[2], chunks[3]],
        [chunks[0], chunks[2], chunks[3]],
        [chunks[3]],
    ):
        with pytest.raises(DecryptionError):
            decrypt(header + b"".join(broken))
    other_header, _ = frames(encrypt(bytes(range(64))))
    with pytest.raises(DecryptionError):
        decrypt(other_header + b"".join(chunks))


def test_trailing_data_is_refused() -> None:
    ciphertext = encrypt(b"abc")
    with pytest.raises(DecryptionError, match="after the final chunk"):
        decrypt(ciphertext + b"\x00")
    with pytest.raises(DecryptionError):
        decrypt(ciphertext + ciphertext)


def test_oversized_chunk_length_is_refused_before_reading() -> None:
    class NoBigReads(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and 0 <= size <= 64
            return super().read(size)

    hostile = bytes(HEADER_BYTES) + b"\xff\xff\xff\xff" + bytes(64)
    with pytest.raises(DecryptionError, match="chunk length"):
        decrypt_stream(KEY, NoBigReads(hostile), io.BytesIO(), max_chunk_bytes=32)
    too_short = bytes(HEADER_BYTES) + (CHUNK_OVERHEAD_BYTES - 1).to_bytes(4, "big") + bytes(16)
    with pytest.raises(DecryptionError, match="chunk length"):
        decrypt(too_short)
    # A genuine stream with 64-byte chunks is refused by a reader limited to 32.
    with pytest.raises(DecryptionError, match="chunk length"):
        decrypt(encrypt(bytes(64), chunk_bytes=64), max_chunk_bytes=32)


def test_incremental_api_matches_the_file_format() -> None:
    encryptor = StreamEncryptor(KEY, associated_data=AD)
    pieces = [b"first", b"", b"third"]
    parts = [encryptor.push(pieces[0]), encryptor.push(pieces[1]), encryptor.push(pieces[2], final=True)]
    assert encryptor.finished
    assert [len(p) for p in parts] == [len(x) + CHUNK_OVERHEAD_BYTES for x in pieces]
    framed = encryptor.header + b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    assert decrypt(framed) == b"firstthird"

    decryptor = StreamDecryptor(KEY, encryptor.header, associated_data=AD)
    assert decryptor.pull(parts[0]) == (b"first", False)
    with pytest.raises(DecryptionError):
        decryptor.finish()
    assert decryptor.pull(parts[1]) == (b"", False)
    assert decryptor.pull(parts[2]) == (b"third", True)
    decryptor.finish()
    with pytest.raises(DecryptionError, match="after the final chunk"):
        decryptor.pull(parts[2])


def test_decryptor_refuses_to_continue_after_a_failure() -> None:
    encryptor = StreamEncryptor(KEY)
    first, second = encryptor.push(b"a"), encryptor.push(b"b", final=True)
    decryptor = StreamDecryptor(KEY, encryptor.header)
    with pytest.raises(DecryptionError):
        decryptor.pull(second)  # out of order
    with pytest.raises(DecryptionError, match="already failed"):
        decryptor.pull(first)
    with pytest.raises(DecryptionError):
        decryptor.finish()


def test_foreign_tags_are_refused() -> None:
    # secretstream allows PUSH and REKEY tags; we never write them, so refuse them.
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, KEY)
    chunk = sodium.crypto_secretstream_xchacha20poly1305_push(
        state, b"x", b"", sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH
    )
    with pytest.raises(DecryptionError, match="unexpected chunk tag"):
        StreamDecryptor(KEY, header).pull(chunk)


def test_decryptor_input_errors() -> None:
    with pytest.raises(DecryptionError):
        StreamDecryptor(KEY, bytes(23))
    decryptor = StreamDecryptor(KEY, bytes(24), max_chunk_bytes=8)
    with pytest.raises(DecryptionError):
        decryptor.pull(bytes(16))
    decryptor = StreamDecryptor(KEY, bytes(24), max_chunk_bytes=8)
    with pytest.raises(DecryptionError, match="exceeds"):
        decryptor.pull(bytes(8 + CHUNK_OVERHEAD_BYTES + 1))
    with pytest.raises(DecryptionError):
        StreamDecryptor(KEY, bytes(24)).pull("text")  # type: ignore[arg-type]


def test_encryptor_misuse() -> None:
    encryptor = StreamEncryptor(KEY, max_chunk_bytes=8)
    with pytest.raises(CryptoUsageError):
        encryptor.push(bytes(9))
    encryptor.push(b"", final=True)
    with pytest.raises(CryptoUsageError, match="finished"):
        encryptor.push(b"more")
    for bad_key in (bytes(31), "k" * 32):
        with pytest.raises(CryptoUsageError):
            StreamEncryptor(bad_key)  # type: ignore[arg-type]
    with pytest.raises(CryptoUsageError):
        encrypt_stream(KEY, io.BytesIO(), io.BytesIO(), chunk_bytes=0)
    with pytest.raises(CryptoUsageError):
        encrypt_stream(KEY, io.BytesIO(), io.BytesIO(), chunk_bytes=(16 << 20) + 1)
    with pytest.raises(CryptoUsageError):
        StreamEncryptor(KEY, associated_data=bytes((1 << 16) + 1))
    with pytest.raises(CryptoUsageError):
        ciphertext_size(-1)


def test_headers_are_random() -> None:
    assert StreamEncryptor(KEY).header != StreamEncryptor(KEY).header
    assert generate_key() != generate_key()
    assert len(generate_key()) == 32


# ----------------------------------------------------------------------------- memory

_BLOCK = bytes(range(256)) * 4096  # 1 MiB pattern, allocated before tracing starts


class PatternSource(io.RawIOBase):
    """A file of ``size`` bytes generated on demand: nothing is held but one block."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        total = 0
        while total < len(view) and self._left:
            start = self._offset % len(_BLOCK)
            n = min(len(view) - total, len(_BLOCK) - start, self._left)
            view[total : total + n] = _BLOCK[start : start + n]
            total += n
            self._left -= n
            self._offset += n
        return total


class EncryptingSource(io.RawIOBase):
    """Yields the framed ciphertext of a PatternSource lazily, chunk by chunk."""

    def __init__(self, key: bytes, size: int, chunk_bytes: int) -> None:
        self._plain = PatternSource(size)
        self._encryptor = StreamEncryptor(key)
        self._chunk_bytes = chunk_bytes
        self._pending = memoryview(self._encryptor.header)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending and not self._encryptor.finished:
            chunk = self._plain.read(min(self._chunk_bytes, self._left)) or b""
            self._left -= len(chunk)
            ciphertext = self._encryptor.push(chunk, final=self._left == 0)
            self._pending = memoryview(len(ciphertext).to_bytes(4, "big") + ciphertext)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class HashingSink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def test_memory_stays_bounded_by_the_chunk_size() -> None:
    size = 64 << 20
    chunk = 1 << 20
    expected = hashlib.sha256()
    source = PatternSource(size)
    while block := source.read(chunk):
        expected.update(block)

    tracemalloc.start()
    try:
        sink = HashingSink()
        written = encrypt_stream(KEY, PatternSource(size), sink, chunk_bytes=chunk)  # type: ignore[arg-type]
        _, encrypt_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        plain = HashingSink()
        decrypted = decrypt_stream(KEY, EncryptingSource(KEY, size, chunk), plain)  # type: ignore[arg-type]
        _, decrypt_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == sink.size == ciphertext_size(size, chunk_bytes=chunk)
    assert decrypted == plain.size == size
    assert plain.hash.digest() == expected.digest()
    # A handful of chunks at most, never anything near the 64 MiB of the file.
    assert encrypt_peak < 8 * chunk, encrypt_peak
    assert decrypt_peak < 8 * chunk, decrypt_peak
