"""The institution's security events (sign-ins, lockouts, tokens, roles), kept in its vault.

Issue 16 asks that these go to the encrypted audit vault, not the log: they name users.
``<data_dir>/audit/security.log`` holds one frame per event, ``4-byte length || secretbox``
under the vault's key, appended and synced as each event happens.  A torn tail (a crash in
mid-append) is cut when the file is opened.  The newest :data:`MAX_KEPT_EVENTS` events are kept
in memory for the API; the file keeps them all, for the institution's own retention rules.

Erasing a user (:meth:`SecurityLog.erase_user`) rewrites the file without the events that
name the user, as the vault's erasure does for record details.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from pathlib import Path
from typing import Final

import nacl.exceptions
import nacl.secret

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError

from ..people.events import SecurityEvent

FRAME_HEADER: Final = struct.Struct(">I")
MAX_FRAME_BYTES: Final = 64 * 1024
MAX_KEPT_EVENTS: Final = 10_000


class SecurityLog:
    """Append-only, encrypted security events of one node."""

    def __init__(self, path: Path, box: nacl.secret.SecretBox) -> None:
        self._path = path
        self._box = box
        self._lock = threading.Lock()
        self._recent: deque[SecurityEvent] = deque(maxlen=MAX_KEPT_EVENTS)
        self.torn_bytes = self._load()

    def _frame(self, event: SecurityEvent) -> bytes:
        sealed = self._box.encrypt(canonical.encode(event.as_dict()))
        return FRAME_HEADER.pack(len(sealed)) + sealed

    def _read_frames(self, data: bytes) -> tuple[list[SecurityEvent], int]:
        """The events of ``data`` and where the readable part ends."""
        events: list[SecurityEvent] = []
        offset = 0
        while offset + FRAME_HEADER.size <= len(data):
            (size,) = FRAME_HEADER.unpack_from(data, offset)
            end = offset + FRAME_HEADER.size + size
            if size > MAX_FRAME_BYTES or end > len(data):
                break
            try:
                value = canonical.decode(
                    self._box.decrypt(data[offset + FRAME_HEADER.size : end]), max_depth=2
                )
                events.append(SecurityEvent.from_dict(value))
            except (nacl.exceptions.CryptoError, DecodeError, ValueError, TypeError, KeyError):
                break
            offset = end
        return events, offset

    def _load(self) -> int:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return 0
        events, good = self._read_frames(data)
        self._recent.extend(events)
        if good < len(data):  # a torn append: cut it so later frames stay readable
            with open(self._path, "r+b") as handle:
                handle.truncate(good)
        return len(data) - good

    def append(self, event: SecurityEvent) -> None:
        """Keep one event (synced before returning)."""
        frame = self._frame(event)
        with self._lock:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "ab") as handle:
                handle.write(frame)
                handle.flush()
                os.fsync(handle.fileno())
            self._recent.append(event)

    def security_events(self, limit: int) -> list[SecurityEvent]:
        """The newest ``limit`` events (at most :data:`MAX_KEPT_EVENTS`), oldest first."""
        with self._lock:
            kept = list(self._recent)
        return kept[-limit:] if limit > 0 else []

    def erase_user(self, name: str) -> int:
        """Rewrite the log without any event naming ``name`` (as user or actor); how many went."""
        with self._lock:
            try:
                data = self._path.read_bytes()
            except FileNotFoundError:
                return 0
            events, _ = self._read_frames(data)
            kept = [e for e in events if name not in (e.user, e.actor)]
            temporary = self._path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"".join(self._frame(e) for e in kept))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self._path)
            self._recent = deque(
                (e for e in self._recent if name not in (e.user, e.actor)), maxlen=MAX_KEPT_EVENTS
            )
            return len(events) - len(kept)
