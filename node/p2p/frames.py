"""Wire format and thread-safe plumbing of the peer network (no libp2p, no event loop).

A peer message travels as one *frame* on a long-lived libp2p stream::

    length (4 bytes, big endian) || canonical.encode({"ch": channel, "v": value})

The length is checked against a hard maximum before anything is buffered, and
the body must decode with the canonical decoder into exactly that envelope, so
a peer can neither make us allocate unbounded memory nor smuggle a
non-canonical encoding past the layers above.

The rest of this module holds the small pieces shared by the two threads of
:class:`mftp.node.p2p.network.PeerNetwork` (asyncio callers, the trio thread running
libp2p): the limits, the bounded send queue, the cross-thread mailbox and the
re-dial backoff.  They are kept free of libp2p so they can be tested alone.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError

from ..errors import NodeInputError, NodeUsageError

PROTOCOL_ID: Final = "/mftp/p2p/1.0.0"
"""The libp2p protocol of MFTP's message streams (one outbound stream per peer and direction)."""

FRAME_HEADER_BYTES: Final = 4
MAX_CHANNEL_BYTES: Final = 64
MAX_FRAME_BYTES_CEILING: Final = 64 * 1024 * 1024
"""No configuration may raise the per-message limit above this."""

T = TypeVar("T")


class MalformedMessageError(NodeInputError):
    """A peer sent a frame that is oversized, undecodable or not a ``{"ch", "v"}`` envelope."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        """A short stable label for counting (``"oversized"``, ``"undecodable"``, ``"envelope"``)."""


@dataclass(frozen=True, slots=True)
class P2PLimits:
    """Every bound the peer network applies; the defaults suit a validator of a few dozen members.

    Queues are per peer.  Times are in milliseconds, sizes in bytes.
    """

    max_message_bytes: int = 4 * 1024 * 1024
    """Largest encoded envelope accepted from, or sent to, a peer."""
    send_queue_messages: int = 4096
    send_queue_bytes: int = 64 * 1024 * 1024
    """Outbound queue bounds; when full, the *oldest* queued message is dropped (see ``PeerNetwork.send``)."""
    inbound_queue_messages: int = 1024
    inbound_queue_bytes: int = 32 * 1024 * 1024
    """Messages read from a peer but not yet handled; at the bound we stop reading (yamux backpressure)."""
    malformed_budget: int = 16
    malformed_window_ms: int = 60_000
    """More than ``malformed_budget`` malformed messages from one peer within one window get it
    disconnected and banned."""
    ban_ms: int = 60_000
    """How long a peer that exhausted its malformed budget is refused (then it may connect again)."""
    redial_initial_ms: int = 250
    redial_max_ms: int = 30_000
    """Re-dial backoff: doubles from the initial delay up to the cap, with jitter."""
    dial_timeout_ms: int = 10_000
    write_timeout_ms: int = 15_000
    """A write blocked this long (peer not reading) drops the batch and re-opens the stream."""
    max_inbound_streams_per_peer: int = 4
    """Concurrent message streams one peer may hold open to us; the oldest is reset beyond that."""
    max_connections: int = 256
    write_batch_bytes: int = 256 * 1024
    """Queued frames are coalesced into writes of up to this size."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NodeUsageError(f"P2PLimits.{name} must be a positive integer, not {value!r}")
        if self.max_message_bytes > MAX_FRAME_BYTES_CEILING:
            raise NodeUsageError(f"max_message_bytes may not exceed {MAX_FRAME_BYTES_CEILING}")
        if self.send_queue_bytes < self.max_message_bytes + FRAME_HEADER_BYTES:
            raise NodeUsageError("send_queue_bytes must hold at least one message of max_message_bytes")
        if self.inbound_queue_bytes < self.max_message_bytes:
            raise NodeUsageError("inbound_queue_bytes must hold at least one message of max_message_bytes")
        if self.redial_max_ms < self.redial_initial_ms:
            raise NodeUsageError("redial_max_ms must be at least redial_initial_ms")


def check_channel(channel: object) -> str:
    """Return ``channel`` if it is a usable channel name, else raise :class:`NodeUsageError`."""
    if (
        not isinstance(channel, str)
        or not channel
        or len(channel.encode("utf-8", "replace")) > MAX_CHANNEL_BYTES
    ):
        raise NodeUsageError(f"a channel is a non-empty str of at most {MAX_CHANNEL_BYTES} bytes")
    return channel


def encode_frame(channel: str, value: Any, max_message_bytes: int) -> bytes:
    """The frame carrying ``value`` on ``channel``.

    Raises :class:`mftp.crypto.errors.EncodeError` for a value the canonical
    encoding refuses, and :class:`NodeUsageError` for a bad channel or a body
    over ``max_message_bytes`` (the receiver would drop it and count it against us).
    """
    body = canonical.encode({"ch": check_channel(channel), "v": value})
    if len(body) > max_message_bytes:
        raise NodeUsageError(f"message of {len(body)} bytes exceeds the limit of {max_message_bytes}")
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


def decode_envelope(body: bytes, max_message_bytes: int) -> tuple[str, Any]:
    """``(channel, value)`` of a frame body; raises :class:`MalformedMessageError` for anything else."""
    try:
        envelope = canonical.decode(body, max_bytes=max_message_bytes)
    except DecodeError as exc:
        raise MalformedMessageError("undecodable", str(exc)) from None
    if not isinstance(envelope, dict) or set(envelope) != {"ch", "v"}:
        raise MalformedMessageError("envelope", "expected a map with exactly the keys ch and v")
    channel = envelope["ch"]
    if not isinstance(channel, str) or not channel or len(channel.encode("utf-8")) > MAX_CHANNEL_BYTES:
        raise MalformedMessageError("envelope", "ch must be a short non-empty string")
    return channel, envelope["v"]


class FrameReader:
    """Splits a byte stream into frame bodies, refusing any length over the limit before buffering it.

    After :class:`MalformedMessageError` (``reason == "oversized"``) the framing
    is lost: the caller must abandon the stream.
    """

    __slots__ = ("_buffer", "_max_message_bytes")

    def __init__(self, max_message_bytes: int) -> None:
        self._buffer = bytearray()
        self._max_message_bytes = max_message_bytes

    def feed(self, data: bytes) -> None:
        """Append bytes read from the stream."""
        self._buffer += data

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer)

    def next_body(self) -> bytes | None:
        """The next complete frame body, or ``None`` until more bytes arrive."""
        if len(self._buffer) < FRAME_HEADER_BYTES:
            return None
        length = int.from_bytes(self._buffer[:FRAME_HEADER_BYTES], "big")
        if length > self._max_message_bytes:
            raise MalformedMessageError(
                "oversized", f"frame of {length} bytes, limit {self._max_message_bytes}"
            )
        end = FRAME_HEADER_BYTES + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[FRAME_HEADER_BYTES:end])
        del self._buffer[:end]
        return body


class SendQueue:
    """A bounded FIFO of encoded frames, pushed from any thread and drained by one writer task.

    When full, the *oldest* frames are dropped: consensus messages are
    superseded by newer rounds and re-requested by the consensus layer, and
    records are re-gossiped from mempools, so the newest traffic is the most
    useful.  The writer marks itself idle when it finds the queue empty; the
    next push then reports that the writer needs a wake-up, so exactly one
    cross-thread wake is sent per idle period.
    """

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._writer_idle = False
        self.dropped = 0
        """Frames dropped because the queue was full (written under the lock, read anywhere)."""

    def push(self, frame: bytes) -> tuple[bool, int]:
        """Queue ``frame``; returns ``(writer needs a wake-up, frames dropped to make room)``."""
        with self._lock:
            self._frames.append(frame)
            self._bytes += len(frame)
            dropped = 0
            while len(self._frames) > self._max_messages or self._bytes > self._max_bytes:
                self._bytes -= len(self._frames.popleft())
                dropped += 1
            self.dropped += dropped
            wake, self._writer_idle = self._writer_idle, False
            return wake, dropped

    def take(self, max_bytes: int) -> list[bytes]:
        """Remove frames totalling at most ``max_bytes`` (at least one); empty marks the writer idle."""
        with self._lock:
            batch: list[bytes] = []
            size = 0
            while self._frames and (not batch or size + len(self._frames[0]) <= max_bytes):
                frame = self._frames.popleft()
                size += len(frame)
                batch.append(frame)
            self._bytes -= size
            if not batch:
                self._writer_idle = True
            return batch

    def clear(self) -> int:
        """Drop everything queued (the peer left the membership); returns how many frames."""
        with self._lock:
            count = len(self._frames)
            self._frames.clear()
            self._bytes = 0
            return count

    def __len__(self) -> int:
        return len(self._frames)


class InboundCredit:
    """How many messages (and bytes) of one peer the asyncio side still holds; shared by both threads.

    The reader in the trio thread takes credit for each message it hands over
    and, when there is none left, waits instead of reading (yamux's window then
    fills and the peer's writes block: backpressure).  The asyncio side gives
    credit back as it finishes messages.  Only a give-back that finds the
    reader waiting needs a cross-thread wake-up, so a peer within its limits
    costs none: waking the trio thread after every batch of finished messages
    cost a socket write and a scheduler pass on each side.
    """

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self.messages = 0
        self.bytes = 0
        self._waiting = False

    def take(self, size: int) -> bool:
        """Take credit for one message of ``size`` bytes; ``False`` (the reader must wait) if none is left.

        One message is always allowed when nothing is held, whatever its size
        (the frame limit bounds it), or a large message could never pass.
        """
        with self._lock:
            if self.messages >= self._max_messages or (self.messages and self.bytes + size > self._max_bytes):
                self._waiting = True
                return False
            self.messages += 1
            self.bytes += size
            return True

    def give_back(self, messages: int, size: int) -> bool:
        """Return credit for finished messages; ``True`` if the reader is waiting and must be woken."""
        with self._lock:
            # max(): credit taken before the peer was removed and re-added may come back late
            self.messages = max(0, self.messages - messages)
            self.bytes = max(0, self.bytes - size)
            waiting, self._waiting = self._waiting, False
            return waiting


class Mailbox(Generic[T]):
    """Hands items to another thread's event loop, one cross-thread call per burst.

    ``schedule(fn)`` must run ``fn()`` soon in the target thread (asyncio's
    ``call_soon_threadsafe`` or trio's ``run_sync_soon``); ``handle`` then gets
    every item posted since, in order.  Each of those calls writes to a wake-up
    pipe, so coalescing them matters at thousands of messages a second.
    """

    def __init__(
        self, schedule: Callable[[Callable[[], None]], object], handle: Callable[[list[T]], None]
    ) -> None:
        self._lock = threading.Lock()
        self._items: list[T] = []
        self._scheduled = False
        self._schedule = schedule
        self._handle = handle

    def post(self, item: T) -> None:
        """Queue ``item`` for the target thread; raises what ``schedule`` raises once the target is gone."""
        with self._lock:
            self._items.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._schedule(self._drain)
        except BaseException:
            with self._lock:
                self._scheduled = False
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        if items:
            self._handle(items)


class Backoff:
    """Exponential re-dial delay with jitter, capped; :meth:`reset` after a connection proved stable."""

    def __init__(self, initial_ms: int, max_ms: int, rng: random.Random | None = None) -> None:
        self._initial_ms = initial_ms
        self._max_ms = max_ms
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_s(self) -> float:
        """Seconds to wait before the next attempt: uniform in [d/2, d], d doubling up to the cap.

        Half the delay is random so members that lost the same validator do not
        re-dial it in lock-step.
        """
        delay_ms = min(self._max_ms, self._initial_ms * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return self._rng.uniform(delay_ms / 2, delay_ms) / 1000.0

    def reset(self) -> None:
        """Start again from the initial delay."""
        self._attempt = 0
