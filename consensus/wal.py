"""Write-ahead log: framing, entry codec, an in-memory WAL and a file WAL.

Framing (pure): each record is ``length (4 bytes, big endian) || checksum (8
bytes: SHA-256 of the payload, truncated) || payload``.  :func:`read_frames`
yields payloads up to the first frame that is torn (too short) or corrupt
(bad length or checksum) and reports the offset to truncate to: a bad tail is
cut, never trusted, and nothing after it is read (a torn write can only be the
last one; anything behind a corrupt frame is unordered garbage).

Entries (pure): every input event with the time it arrived, and the
validator's own signed votes and proposals, as canonical maps.  See
:mod:`mftp.consensus.replica` for when each is written and synced.

Storage: :class:`MemoryWal` (the simulator's, with crash and torn-write
models) and :class:`FileWal` (append, fsync on demand, truncate a bad tail on
open).  Both offer ``entries`` (what was read at open), ``append(payload,
sync)`` and ``reset()`` (empty the log once a commit is durable in the store).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import msgpack

from mftp.ledger.records import Record

from .errors import ConsensusInputError, ConsensusUsageError
from .events import (
    BlockSynced,
    Event,
    OwnProposal,
    OwnVote,
    ProposalReceived,
    RecordsSubmitted,
    Start,
    Step,
    Tick,
    TimeoutFired,
    VoteReceived,
)
from .messages import Proposal, decode_block, decode_certificate, decode_vote

_HEADER = struct.Struct(">I8s")
HEADER_BYTES: Final = _HEADER.size
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024  # a 16 MiB block plus a proposal, with room to spare


# ---------------------------------------------------------------------------- framing


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()[:8]


def encode_frame(payload: bytes) -> bytes:
    """One framed record."""
    if len(payload) > MAX_FRAME_BYTES:
        raise ConsensusUsageError(f"WAL record of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(payload), _checksum(payload)) + payload


@dataclass(frozen=True, slots=True)
class FrameScan:
    """What :func:`read_frames` found: the good payloads, where they end, and why reading stopped."""

    payloads: list[bytes]
    valid_bytes: int  # truncate the log to this length
    problem: str | None  # None: the log ended cleanly


def read_frames(data: bytes) -> FrameScan:
    """Payloads up to the first torn or corrupt frame."""
    payloads: list[bytes] = []
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        if len(data) - offset < HEADER_BYTES:
            return FrameScan(payloads, offset, f"torn header at offset {offset}")
        length, checksum = _HEADER.unpack_from(view, offset)
        if length > MAX_FRAME_BYTES:
            return FrameScan(payloads, offset, f"impossible length {length} at offset {offset}")
        end = offset + HEADER_BYTES + length
        if end > len(data):
            return FrameScan(payloads, offset, f"torn record at offset {offset}")
        payload = bytes(view[offset + HEADER_BYTES : end])
        if _checksum(payload) != checksum:
            return FrameScan(payloads, offset, f"checksum mismatch at offset {offset}")
        payloads.append(payload)
        offset = end
    return FrameScan(payloads, offset, None)


# ---------------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True)
class InputEntry:
    """An input event and the time it arrived."""

    event: Event
    now_ms: int


WalEntry = InputEntry | OwnVote | OwnProposal


def encode_entry(entry: WalEntry) -> bytes:
    """The bytes of one WAL entry (MessagePack; blocks and records inside keep their canonical bytes).

    The WAL is local and checksummed, so it need not be canonical; plain
    MessagePack is several times cheaper than the canonical encoder, and every
    input passes through here.
    """
    if isinstance(entry, OwnVote):
        value: dict[str, Any] = {"k": "own_vote", "v": entry.vote.to_value()}
    elif isinstance(entry, OwnProposal):
        value = {"k": "own_proposal", "p": entry.proposal.to_value(), "b": entry.block.to_bytes()}
    else:
        value = {**_event_value(entry.event), "t": entry.now_ms}
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _event_value(event: Event) -> dict[str, Any]:
    if isinstance(event, VoteReceived):
        return {"k": "vote", "v": event.vote.to_value()}
    if isinstance(event, ProposalReceived):
        return {"k": "proposal", "p": event.proposal.to_value(), "b": event.block.to_bytes()}
    if isinstance(event, TimeoutFired):
        return {"k": "timeout", "h": event.height, "r": event.round, "s": int(event.step)}
    if isinstance(event, RecordsSubmitted):
        return {"k": "records", "r": [r.to_bytes() for r in event.records]}
    if isinstance(event, BlockSynced):
        return {"k": "synced", "b": event.block.to_bytes(), "c": event.certificate.to_value()}
    if isinstance(event, Start):
        return {"k": "start"}
    if isinstance(event, Tick):
        return {"k": "tick"}
    raise ConsensusUsageError(f"not a consensus event: {type(event).__name__}")


def decode_entry(payload: bytes) -> WalEntry:
    """Parse one WAL payload; :class:`ConsensusInputError` if it is not a valid entry."""
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
        if not isinstance(value, dict):
            raise ConsensusInputError("WAL entry is not a map")
        return _entry_from_value(value)
    except ConsensusInputError:
        raise
    except Exception as exc:  # msgpack raises many types; a bad entry must only ever be an input error
        raise ConsensusInputError(f"bad WAL entry: {type(exc).__name__}: {exc}") from None


def _entry_from_value(value: dict[str, Any]) -> WalEntry:
    kind = value["k"]
    if kind == "own_vote":
        return OwnVote(decode_vote(value["v"]))
    if kind == "own_proposal":
        return OwnProposal(Proposal.from_value(value["p"]), decode_block(value["b"]))
    now_ms = value["t"]
    if not isinstance(now_ms, int):
        raise ConsensusInputError("WAL entry time is not an integer")
    event: Event
    if kind == "vote":
        event = VoteReceived(decode_vote(value["v"]))
    elif kind == "proposal":
        event = ProposalReceived(Proposal.from_value(value["p"]), decode_block(value["b"]))
    elif kind == "timeout":
        event = TimeoutFired(int(value["h"]), int(value["r"]), Step(value["s"]))
    elif kind == "records":
        event = RecordsSubmitted(tuple(Record.decode(item) for item in value["r"]))
    elif kind == "synced":
        event = BlockSynced(decode_block(value["b"]), decode_certificate(value["c"]))
    elif kind == "start":
        event = Start()
    elif kind == "tick":
        event = Tick()
    else:
        raise ConsensusInputError(f"unknown WAL entry kind {kind!r}")
    return InputEntry(event, now_ms)


# ---------------------------------------------------------------------------- storage


class WalStorage(Protocol):
    """What :class:`~mftp.consensus.replica.Replica` needs from a WAL."""

    entries: list[bytes]  # payloads found when the log was opened
    logs_inputs: bool  # False: the replica need not even encode its inputs (see NoWal)

    def append(self, payload: bytes, *, sync: bool) -> None:
        """Append one record; if ``sync``, it and everything before it are durable on return."""

    def reset(self) -> None:
        """Empty the log; durable with the next synced append at the latest.

        A power loss before that may bring the old entries back.  That is safe
        because a reset follows the durable storing of the block those entries
        decided: replaying them decides a stored height again, which the shell
        skips, and the validator's own votes in them are for a finished height.
        """


class NoWal:
    """The log of a node that never signs (an audit node): nothing is kept.

    A WAL keeps a validator from signing twice after a crash, and replays its
    inputs.  An observer signs nothing and, restarted, catches up from its
    peers; logging its inputs wrote every proposal, whole, to disk for nothing.
    """

    logs_inputs = False

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.problem: str | None = None

    def append(self, payload: bytes, *, sync: bool) -> None:
        """Keep nothing."""

    def reset(self) -> None:
        """Nothing to empty."""

    def close(self) -> None:
        """Nothing to close."""


class SimulatedCrash(Exception):
    """Raised by :class:`MemoryWal` at a planned crash point."""


class MemoryWal:
    """An in-memory WAL with a disk model: written bytes, synced bytes, planned crashes.

    ``crash_after`` makes the n-th append (counting from 1 over this object's
    life) raise :class:`SimulatedCrash` right after writing, as a process dying
    there would.  :meth:`surviving_bytes` is what a restart finds: everything
    written (process crash) or only the synced prefix plus a torn fragment of
    the rest (power loss).  A reset is not durable until the next synced
    append: a power loss before it finds the log as it was synced before the
    reset (the worst case of a lost truncation).
    """

    logs_inputs = True

    def __init__(self, data: bytes = b"", *, crash_after: int | None = None) -> None:
        scan = read_frames(data)
        self.entries = scan.payloads
        self.problem = scan.problem
        self.data = bytearray(data[: scan.valid_bytes])
        self.synced = len(self.data)
        self.appends = 0
        self.crash_after = crash_after
        self._before_reset: bytes | None = None  # what a power loss finds until a reset is synced

    def append(self, payload: bytes, *, sync: bool) -> None:
        """Write one frame (and mark it durable if ``sync``)."""
        self.data += encode_frame(payload)
        if sync:
            self.synced = len(self.data)
            self._before_reset = None
        self.appends += 1
        if self.crash_after is not None and self.appends >= self.crash_after:
            raise SimulatedCrash(f"planned crash after WAL append {self.appends}")

    def reset(self) -> None:
        """Empty the log (not durably: see :meth:`surviving_bytes`)."""
        if self._before_reset is None:
            self._before_reset = bytes(self.data[: self.synced])
        self.data = bytearray()
        self.synced = 0

    def surviving_bytes(self, *, power_loss: bool = False, torn_bytes: int = 0) -> bytes:
        """The bytes a restart would find; ``torn_bytes`` of the unsynced tail survive a power loss."""
        if not power_loss:
            return bytes(self.data)
        if self._before_reset is not None:
            return self._before_reset
        return bytes(self.data[: self.synced + max(0, torn_bytes)])


class FileWal:
    """A WAL in one append-only file; a bad tail is truncated (and synced) on open."""

    logs_inputs = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        data = self.path.read_bytes() if self.path.exists() else b""
        scan = read_frames(data)
        self.entries = scan.payloads
        self.problem = scan.problem
        # 0600 whatever the umask (the WAL holds our votes and the records we saw), and a WAL
        # an older version left readable is narrowed when opened.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "r+b")
        if scan.valid_bytes != len(data):
            self._file.truncate(scan.valid_bytes)
            os.fsync(self._file.fileno())
        self._file.seek(scan.valid_bytes)
        if not data:
            _fsync_dir(self.path.parent)  # the new file's name must survive a crash too

    def append(self, payload: bytes, *, sync: bool) -> None:
        """Append one frame (handed to the OS at once); with ``sync``, fsync before returning."""
        self._file.write(encode_frame(payload))
        self._file.flush()  # a process crash then loses nothing; only a power loss can tear the tail
        if sync:
            os.fsync(self._file.fileno())

    def sync(self) -> None:
        """Make everything written so far durable."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def reset(self) -> None:
        """Empty the file; the next synced append makes that durable (see :class:`WalStorage`).

        Not synced here: it ran on every commit of every node, on the path to the
        next height, and a stall of the disk there stalled the chain.
        """
        self._file.flush()
        self._file.seek(0)
        self._file.truncate(0)

    def close(self) -> None:
        """Flush, sync and close."""
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> FileWal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
