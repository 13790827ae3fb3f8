"""The members' peer network on libp2p, for asyncio callers.

:class:`PeerNetwork` runs a libp2p 0.8.1 host (TCP, Noise only, yamux only)
in a dedicated thread under ``trio.run`` and bridges it to the asyncio loop
that created it: calls go to trio through its ``TrioToken.run_sync_soon``,
messages come back with ``loop.call_soon_threadsafe`` (both coalesced by
:class:`~mftp.node.p2p.frames.Mailbox`).

* **Identity.** The libp2p peer key *is* the node's Ed25519 signing key, so a
  member's peer ID follows from the public key in the genesis file
  (:func:`peer_id_from_sign_key`).
* **Membership.** Only members may connect.  Any other peer is refused right
  after the Noise handshake, which is logged and counted; :meth:`set_members`
  applies a membership change at run time and disconnects peers that left.
* **Messages.** ``send``/``broadcast`` encode ``{"ch": channel, "v": value}``
  canonically and queue one length-prefixed frame per message on the single
  long-lived outbound stream of each peer (order is preserved per peer).
  Inbound frames are size-limited and decoded with the canonical decoder; a
  malformed one is dropped and counted against its sender, and a sender past
  its budget is disconnected and banned for a while.  Nothing a peer sends can
  raise out of the network.
* **Delivery** is best effort: a lost connection loses the batch being written,
  and a full send queue drops its oldest message.  Consensus re-requests what it
  misses and records are re-gossiped from mempools, so neither needs more.
* **Re-dial.** Lost connections are re-dialled with capped exponential backoff
  and jitter.

Usage::

    net = PeerNetwork(identity, ["/ip4/0.0.0.0/tcp/7600"], members, on_message=handle)
    await net.start()
    net.add_peer_address(other_key, "/ip4/10.0.0.2/tcp/7600")
    net.send(other_key, "consensus", {"type": "vote", ...})
    ...
    await net.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, Self

import multiaddr
import trio
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from mftp.crypto.errors import CryptoError
from mftp.crypto.signing import PublicIdentity, SigningIdentity

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import NodeInputError, NodeUsageError
from ..lifecycle import Lifecycle
from .frames import PROTOCOL_ID, InboundCredit, Mailbox, P2PLimits, SendQueue, encode_frame
from .trio_host import Engine

__all__ = [
    "PROTOCOL_ID",
    "MessageHandler",
    "NetworkStats",
    "P2PLimits",
    "PeerNetwork",
    "PeerStats",
    "dial_multiaddr",
    "peer_id_from_sign_key",
    "sign_key_from_peer_id",
]

MessageHandler = Callable[[bytes, str, Any], Awaitable[None] | None]
"""``on_message(sender_sign_key, channel, value)``; may be a coroutine function."""

STOP_TIMEOUT_S: Final = 15.0
_RELEASE_BATCH: Final = 64

log = logging.getLogger("mftp.node.p2p")


# ---------------------------------------------------------------- identities


def _libp2p_id(sign_key: bytes) -> ID:
    try:
        PublicIdentity.from_sign_key(sign_key)  # length and curve checks
    except CryptoError as exc:
        raise NodeUsageError(f"not an Ed25519 public key: {exc}") from None
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(bytes(sign_key)))


def peer_id_from_sign_key(sign_key: bytes) -> str:
    """The libp2p peer ID (base58, ``12D3KooW...``) of a member's Ed25519 signing key."""
    return _libp2p_id(sign_key).to_base58()


def sign_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 signing key inside a peer ID; :class:`NodeInputError` if it holds none."""
    try:
        key = ID.from_base58(peer_id).extract_public_key()
    except Exception as exc:  # base58 and protobuf errors of every kind
        raise NodeInputError(f"not a peer ID: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise NodeInputError("peer ID does not embed an Ed25519 key")
    return key.to_bytes()


def dial_multiaddr(address: str, sign_key: bytes) -> str:
    """``address`` (e.g. ``/ip4/10.0.0.2/tcp/7600``) with ``/p2p/<peer id>`` of ``sign_key`` appended."""
    return (
        str(_strip_p2p(_parse_multiaddr(address), _libp2p_id(sign_key)))
        + f"/p2p/{peer_id_from_sign_key(sign_key)}"
    )


def _parse_multiaddr(address: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(address)
    except Exception as exc:  # multiaddr raises several unrelated types
        raise NodeUsageError(f"not a multiaddr: {address!r} ({exc})") from None


def _strip_p2p(addr: multiaddr.Multiaddr, peer_id: ID) -> multiaddr.Multiaddr:
    """``addr`` without its ``/p2p/...`` part, which must name ``peer_id`` if present."""
    if "p2p" not in [p.name for p in addr.protocols()]:
        return addr
    named = addr.value_for_protocol("p2p")
    if named != peer_id.to_base58():
        raise NodeUsageError(f"address {addr} names peer {named}, not {peer_id}")
    return addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{named}"))


def _check_port_free(addr: multiaddr.Multiaddr) -> None:
    """Refuse a TCP port another socket already listens on.

    libp2p 0.8.1 listens with SO_REUSEPORT (for hole punching), so a second
    node started on the same port would *succeed* and the kernel would split
    incoming connections between the two.  A probe bound without SO_REUSEPORT
    fails in that case (SO_REUSEADDR still lets a restarted node reuse a port
    left in TIME_WAIT).
    """
    names = [p.name for p in addr.protocols()]
    if "tcp" not in names or not {"ip4", "ip6"} & set(names) or int(addr.value_for_protocol("tcp")) == 0:
        return
    family = socket.AF_INET6 if "ip6" in names else socket.AF_INET
    host = addr.value_for_protocol("ip6" if "ip6" in names else "ip4")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(addr.value_for_protocol("tcp"))))
        except OSError as exc:
            raise NodeUsageError(f"could not listen on {addr}: {exc.strerror}") from None


def _check_members(members: Mapping[bytes, str]) -> dict[bytes, str]:
    checked: dict[bytes, str] = {}
    for key, name in members.items():
        if not isinstance(name, str):
            raise NodeUsageError("member names are strings")
        _libp2p_id(key)
        checked[bytes(key)] = name
    return checked


# ---------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True)
class PeerStats:
    """Counters of one member since this network started."""

    name: str
    connected: bool
    banned: bool
    queued_out: int
    dropped_out: int
    messages_in: int
    bytes_in: int
    messages_out: int
    bytes_out: int
    malformed: int
    streams_opened: int
    dials: int
    dial_failures: int
    write_failures: int


@dataclass(frozen=True, slots=True)
class NetworkStats:
    """A snapshot of :meth:`PeerNetwork.stats`; byte counts are frame bodies in, frames out."""

    messages_in: int
    bytes_in: int
    messages_out: int
    bytes_out: int
    malformed: int
    malformed_by_reason: dict[str, int]
    dropped_out: int
    handler_errors: int
    streams_opened: int
    rejected_handshakes: int
    rejected_by_peer_id: dict[str, int]
    peers: dict[bytes, PeerStats]


# -------------------------------------------------------------------- network


class NetworkPhase(StrEnum):
    """Where a :class:`PeerNetwork` is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


NETWORK_LIFECYCLE: Final = Lifecycle(
    "peer network",
    {
        NetworkPhase.NEW: frozenset({NetworkPhase.STARTING, NetworkPhase.STOPPED}),
        # a failed start ends stopped; stop() may come while it starts
        NetworkPhase.STARTING: frozenset({NetworkPhase.RUNNING, NetworkPhase.STOPPING, NetworkPhase.STOPPED}),
        NetworkPhase.RUNNING: frozenset({NetworkPhase.STOPPING}),
        NetworkPhase.STOPPING: frozenset({NetworkPhase.STOPPING, NetworkPhase.STOPPED}),  # stop() twice
        NetworkPhase.STOPPED: frozenset({NetworkPhase.STOPPED}),  # stop() is safe to call twice
    },
)


class PeerNetwork:
    """A node's connections to its fellow members; see the module documentation.

    All methods must be called from the asyncio loop that ran :meth:`start`
    (``send`` and ``broadcast`` also work before it: messages wait in the queues),
    and :meth:`stop` only after :meth:`start` returned.
    """

    def __init__(
        self,
        identity: SigningIdentity,
        listen: Sequence[str],
        members: Mapping[bytes, str],
        *,
        on_message: MessageHandler,
        limits: P2PLimits | None = None,
        logger: logging.Logger | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = clock
        self._identity = identity
        self._self_key = identity.public.sign_key
        self._peer_id = _libp2p_id(self._self_key)
        self._listen = [_parse_multiaddr(a) for a in listen]
        if not self._listen:
            raise NodeUsageError("a peer network needs at least one listen address")
        self._limits = limits or P2PLimits()
        self._log = logger or log
        self._on_message = on_message
        self._members: dict[bytes, str] = {}
        self._ids: dict[ID, bytes] = {}
        self._set_member_maps(members)
        self._addresses: dict[bytes, list[multiaddr.Multiaddr]] = {}
        self._queues: dict[bytes, SendQueue] = {}
        self._credits: dict[bytes, InboundCredit] = {}  # kept for members that leave and come back
        self._queues_lock = threading.Lock()
        self._state = NetworkPhase.NEW
        self._engine: Engine | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._wakes: Mailbox[bytes] | None = None
        self._releases: Mailbox[bytes] | None = None
        self._inbound: Mailbox[tuple[bytes, str, Any, int]] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: asyncio.Future[None] | None = None
        self._listen_addrs: list[str] = []
        self._inboxes: dict[bytes, asyncio.Queue[tuple[str, Any, int]]] = {}
        self._consumers: dict[bytes, asyncio.Task[None]] = {}
        self._dropped_out = 0
        self._handler_errors = 0

    # ------------------------------------------------------------- lifecycle

    @property
    def peer_id(self) -> str:
        """This node's libp2p peer ID."""
        return self._peer_id.to_base58()

    def listen_addrs(self) -> list[str]:
        """The bound addresses with ``/p2p/<peer id>`` (ports resolved when listening on port 0)."""
        return list(self._listen_addrs)

    async def start(self) -> None:
        """Start the libp2p thread and return once it listens; raises if it cannot."""
        if self._state != "new":
            raise NodeUsageError("a PeerNetwork starts once")
        for addr in self._listen:
            _check_port_free(addr)
        self._move(NetworkPhase.STARTING)
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[list[str]] = self._loop.create_future()
        self._finished = self._loop.create_future()
        self._inbound = Mailbox(self._loop.call_soon_threadsafe, self._accept)
        self._engine = Engine(
            seed=self._identity.seed,
            listen=self._listen,
            members=dict(self._ids),
            addresses={key: list(addrs) for key, addrs in self._addresses.items()},
            queue_for=self._queue,
            credit_for=self._credit,
            deliver=self._deliver_from_trio,
            limits=self._limits,
            logger=self._log,
            clock=self._clock,
        )
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"mftp-p2p-{self.peer_id[-8:]}", daemon=True
        )
        self._thread.start()
        try:
            self._listen_addrs = await ready
        except BaseException:
            await self._wait_thread()
            self._move(NetworkPhase.STOPPED)
            raise
        self._move(NetworkPhase.RUNNING)
        with self._queues_lock:
            pending = [key for key, queue in self._queues.items() if len(queue)]
        for key in pending:  # send() before start() queued these
            self._post_wake(key)

    async def stop(self) -> None:
        """Close every connection and end the thread; safe to call twice."""
        if self._state in (NetworkPhase.NEW, NetworkPhase.STOPPED):
            self._move(NetworkPhase.STOPPED)
            return
        self._move(NetworkPhase.STOPPING)
        if self._token is not None and self._engine is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._engine.request_stop)
        await self._wait_thread()
        consumers = list(self._consumers.values())
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        self._consumers.clear()
        self._inboxes.clear()
        self._move(NetworkPhase.STOPPED)

    def _move(self, target: NetworkPhase) -> None:
        self._state = NETWORK_LIFECYCLE.move(self._state, target)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _wait_thread(self) -> None:
        assert self._finished is not None and self._thread is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._finished), STOP_TIMEOUT_S)
        except TimeoutError:
            self._log.error("the p2p thread did not stop within %.0f s", STOP_TIMEOUT_S)
            return
        self._thread.join(timeout=STOP_TIMEOUT_S)  # it has already left trio.run

    def _thread_main(self, ready: asyncio.Future[list[str]]) -> None:
        """Body of the trio thread: run the engine, report readiness and the end to asyncio."""
        assert self._loop is not None and self._engine is not None
        loop, engine = self._loop, self._engine
        error: BaseException | None = None

        def on_ready(addrs: list[str]) -> None:
            loop.call_soon_threadsafe(_resolve, ready, addrs, None)

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._wakes = Mailbox(self._token.run_sync_soon, self._never_raises(engine.wake))
            self._releases = Mailbox(self._token.run_sync_soon, self._never_raises(engine.release))
            await engine.run(on_ready)

        try:
            trio.run(main)
        except BaseException as exc:  # reported to asyncio; a thread has nowhere else to raise
            error = _unwrap(exc)
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(self._on_thread_exit, ready, error)

    def _on_thread_exit(self, ready: asyncio.Future[list[str]], error: BaseException | None) -> None:
        if error is not None and ready.done() and self._state == "running":
            self._log.error("the p2p thread failed", exc_info=error)
        _resolve(ready, None, error or NodeUsageError("the p2p thread ended before listening"))
        assert self._finished is not None
        _resolve(self._finished, None, None)

    # ------------------------------------------------------------ membership

    def _set_member_maps(self, members: Mapping[bytes, str]) -> None:
        checked = _check_members(members)
        checked.pop(self._self_key, None)
        self._members = checked
        self._ids = {_libp2p_id(key): key for key in checked}

    def set_members(self, members: Mapping[bytes, str]) -> None:
        """Replace the membership (sign key -> name); peers no longer listed are disconnected.

        Their queued messages and addresses are dropped; later handshakes from them are refused.
        """
        self._set_member_maps(members)
        for key in [k for k in self._addresses if k not in self._members]:
            del self._addresses[key]
        with self._queues_lock:
            for key in [k for k in self._queues if k not in self._members]:
                self._queues.pop(key).clear()
        self._call_trio(self._engine.set_members if self._engine else None, dict(self._ids))

    def members(self) -> dict[bytes, str]:
        """The current membership, without this node."""
        return dict(self._members)

    def add_peer_address(self, sign_key: bytes, address: str) -> None:
        """Dial member ``sign_key`` at ``address`` (kept dialled; may carry ``/p2p/<its peer id>``)."""
        key = self._member_key(sign_key)
        addr = _strip_p2p(_parse_multiaddr(address), _libp2p_id(key))
        addrs = self._addresses.setdefault(key, [])
        if addr not in addrs:
            addrs.append(addr)
        self._call_trio(self._engine.add_address if self._engine else None, key, addr)

    def _member_key(self, sign_key: bytes) -> bytes:
        key = bytes(sign_key)
        if key == self._self_key:
            raise NodeUsageError("that is this node's own key")
        if key not in self._members:
            raise NodeUsageError("not a member of this network")
        return key

    def _call_trio(self, fn: Callable[..., None] | None, *args: Any) -> None:
        """Run ``fn(*args)`` in the trio thread if it runs (before start the engine reads our state)."""
        if fn is None or self._token is None or self._state not in ("starting", "running"):
            return
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._never_raises(fn), *args)

    def _never_raises(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` made safe for ``run_sync_soon``: trio turns an exception there into
        TrioInternalError and cancels the whole run, i.e. the host."""

        def safe(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                self._log.exception("p2p call %s failed", getattr(fn, "__name__", fn))

        return safe

    # ----------------------------------------------------------------- sending

    def send(self, peer_key: bytes, channel: str, value: Any) -> bool:
        """Queue ``value`` for member ``peer_key`` on ``channel``.

        Returns ``False`` if the peer's send queue was full and its *oldest*
        message was dropped to make room (counted in :meth:`stats`).  Raises
        :class:`NodeUsageError` for a non-member, a bad channel or an oversized
        message, and ``EncodeError`` for a value canonical encoding refuses.
        """
        key = self._member_key(peer_key)
        return self._enqueue(key, encode_frame(channel, value, self._limits.max_message_bytes))

    def broadcast(self, channel: str, value: Any, *, to: Iterable[bytes] | None = None) -> int:
        """Queue one message for every member (or the members in ``to``); returns how many peers.

        It is encoded once.  Members that are not connected get it when their link comes up.
        """
        frame = encode_frame(channel, value, self._limits.max_message_bytes)
        keys = list(self._members) if to is None else [self._member_key(k) for k in to]
        for key in keys:
            self._enqueue(key, frame)
        return len(keys)

    def _queue(self, key: bytes) -> SendQueue:
        """The send queue of ``key``, created on first use (called from both threads)."""
        with self._queues_lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = SendQueue(
                    self._limits.send_queue_messages, self._limits.send_queue_bytes
                )
            return queue

    def _credit(self, key: bytes) -> InboundCredit:
        """The inbound credit of ``key``, created on first use and kept (called from both threads)."""
        with self._queues_lock:
            credit = self._credits.get(key)
            if credit is None:
                limits = self._limits
                credit = self._credits[key] = InboundCredit(
                    limits.inbound_queue_messages, limits.inbound_queue_bytes
                )
            return credit

    def _enqueue(self, key: bytes, frame: bytes) -> bool:
        with self._queues_lock:
            fresh = key not in self._queues
        queue = self._queue(key)
        wake, dropped = queue.push(frame)
        self._dropped_out += dropped
        if wake or fresh:  # a fresh queue may have no link yet: the wake starts one
            self._post_wake(key)
        return dropped == 0

    def _post_wake(self, key: bytes) -> None:
        if self._wakes is not None and self._state == "running":
            with contextlib.suppress(trio.RunFinishedError):
                self._wakes.post(key)

    # --------------------------------------------------------------- receiving

    def _deliver_from_trio(self, key: bytes, channel: str, value: Any, size: int) -> None:
        """Called in the trio thread for each accepted message."""
        assert self._inbound is not None
        with contextlib.suppress(RuntimeError):  # loop closed: we are shutting down
            self._inbound.post((key, channel, value, size))

    def _accept(self, items: list[tuple[bytes, str, Any, int]]) -> None:
        """In the loop: route messages to per-peer inboxes, one consumer task per peer keeps order."""
        if self._state not in ("running", "starting"):
            return
        assert self._loop is not None
        for key, channel, value, size in items:
            inbox = self._inboxes.get(key)
            if inbox is None:
                inbox = self._inboxes[key] = asyncio.Queue()
                self._consumers[key] = self._loop.create_task(
                    self._consume(key, inbox), name="mftp-p2p-inbox"
                )
            inbox.put_nowait((channel, value, size))

    async def _consume(self, key: bytes, inbox: asyncio.Queue[tuple[str, Any, int]]) -> None:
        """Hand a peer's messages to ``on_message`` one at a time, then return their inbound credit."""
        credit = self._credit(key)
        released_messages = released_bytes = 0
        while True:
            channel, value, size = await inbox.get()
            try:
                if key in self._members:  # it may have left since the message was read
                    result = self._on_message(key, channel, value)
                    if inspect.isawaitable(result):
                        await result
            except Exception:  # a handler bug must not stop this peer's messages
                self._handler_errors += 1
                self._log.exception("on_message failed for a %s message", channel)
            released_messages += 1
            released_bytes += size
            if inbox.empty() or released_messages >= _RELEASE_BATCH:
                if credit.give_back(released_messages, released_bytes) and self._releases is not None:
                    with contextlib.suppress(trio.RunFinishedError):
                        self._releases.post(key)  # its reader waits for this credit
                released_messages = released_bytes = 0

    # ------------------------------------------------------------------- views

    def peers(self) -> frozenset[bytes]:
        """Sign keys of the members this node currently holds a connection to."""
        return (
            self._engine.connected if self._engine is not None and self._state == "running" else frozenset()
        )

    def stats(self) -> NetworkStats:
        """Counters: messages and bytes each way, refusals, malformed messages per peer, drops."""
        engine = self._engine
        peers: dict[bytes, PeerStats] = {}
        totals: dict[str, int] = {}
        if engine is not None:
            connected = engine.connected
            # list() copies the dict in one step under the GIL while the trio thread may add peers.
            for key, state in list(engine.peers.items()):
                peers[key] = PeerStats(
                    name=self._members.get(key, ""),
                    connected=key in connected,
                    banned=state.banned(),
                    queued_out=len(state.queue),
                    dropped_out=state.queue.dropped,
                    **state.counters.as_dict(),
                )
            totals = engine.totals.as_dict()
        return NetworkStats(
            messages_in=totals.get("messages_in", 0),
            bytes_in=totals.get("bytes_in", 0),
            messages_out=totals.get("messages_out", 0),
            bytes_out=totals.get("bytes_out", 0),
            malformed=totals.get("malformed", 0),
            malformed_by_reason=dict(engine.malformed_by_reason) if engine else {},
            dropped_out=self._dropped_out,
            handler_errors=self._handler_errors,
            streams_opened=totals.get("streams_opened", 0),
            rejected_handshakes=engine.rejected_handshakes if engine else 0,
            rejected_by_peer_id=dict(engine.rejected_by_peer_id) if engine else {},
            peers=peers,
        )

    # -------------------------------------------------------- test/bench hooks

    async def _run_in_trio(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``await fn(engine, *args)`` in the trio thread and return its result (tests, benchmarks)."""
        assert self._loop is not None and self._engine is not None and self._token is not None
        loop, engine = self._loop, self._engine
        future: asyncio.Future[Any] = loop.create_future()

        async def job() -> None:
            try:
                result = await fn(engine, *args)
            except Exception as exc:
                loop.call_soon_threadsafe(_resolve, future, None, exc)
            else:
                loop.call_soon_threadsafe(_resolve, future, result, None)

        self._token.run_sync_soon(self._never_raises(engine.spawn), job)
        return await future


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _unwrap(exc: BaseException) -> BaseException:
    """The single real error inside trio's exception groups, for a readable start() failure."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
