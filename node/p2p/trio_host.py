"""The trio side of the peer network: libp2p host, membership gate, links and stream readers.

Everything in this module runs in the dedicated trio thread of
:class:`mftp.node.p2p.network.PeerNetwork`; the asyncio side reaches it only through
``TrioToken.run_sync_soon`` (see ``p2p.py``), and it answers through the
``deliver`` callback.  Counters are plain ints written only by this thread and
read by the other (an int read is atomic under the GIL).

libp2p 0.8.1 facts this code depends on (measured, see the report of the p2p work):

* ``Swarm.dial_peer`` (used by ``host.connect``) waits a fixed 250 ms "happy
  eyeballs" delay even when the first address succeeds, and blacklists a peer
  for 60 s after a failed dial; ``Swarm.dial_addr`` does neither (~8 ms on
  loopback), so links dial with it and manage their own backoff.
* The swarm's auto-connector dials any peer whose address reached the peerstore
  (identify puts them there) to keep 50-200 connections; it is switched off so
  that only our links dial, and only members.
* No peer-ID allow-list exists: :class:`_MemberNoise` checks the remote identity
  right after the Noise handshake and fails it for non-members.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any, Final

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee, IRawConnection, ISecureConn
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.security.exceptions import HandshakeFailure
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import NodeUsageError
from .frames import (
    PROTOCOL_ID,
    Backoff,
    FrameReader,
    InboundCredit,
    MalformedMessageError,
    P2PLimits,
    SendQueue,
    decode_envelope,
)

STABLE_LINK_S: Final = 5.0
"""A link that stayed up this long resets its re-dial backoff."""
READ_CHUNK_BYTES: Final = 256 * 1024
CLOSE_TIMEOUT_S: Final = 3.0
MAX_TRACKED_REFUSALS: Final = 1024

Deliver = Callable[[bytes, str, Any, int], None]
"""``deliver(sender_key, channel, value, body_bytes)``: hands a message to the asyncio side."""


@dataclass
class Counters:
    """Traffic and misbehaviour counts, kept per peer and for the whole network."""

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    malformed: int = 0
    streams_opened: int = 0
    dials: int = 0
    dial_failures: int = 0
    write_failures: int = 0

    def add(self, name: str, amount: int = 1) -> None:
        """Increment one counter."""
        setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, int]:
        """A copy of every counter."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class PeerState:
    """What the trio thread knows about one member: addresses, link, inbound credit, counters."""

    def __init__(
        self, key: bytes, peer_id: ID, queue: SendQueue, credit: InboundCredit, clock: Clock
    ) -> None:
        self.key = key
        self.clock = clock
        self.peer_id = peer_id
        self.queue = queue
        self.credit = credit  # shared with the asyncio side, which gives it back
        self.addrs: list[multiaddr.Multiaddr] = []
        self.counters = Counters()
        self.wake = trio.Event()  # frames were queued while the writer was idle
        self.changed = trio.Event()  # a new address or connection: stop waiting, retry now
        self.space = trio.Event()  # inbound credit was given back while a reader waited
        self.strikes = 0
        self.strikes_reset_at = 0.0
        self.banned_until = 0.0
        self.removed = False
        self.link_scope: trio.CancelScope | None = None
        self.inbound: list[INetStream] = []

    def poke(self) -> None:
        """Wake a link waiting for an address or sleeping off its backoff."""
        self.changed.set()
        self.changed = trio.Event()

    def banned(self) -> bool:
        """Whether the peer is still serving a ban for malformed messages."""
        # The node's monotonic clock, not trio.current_time: stats() asks from the asyncio thread.
        return self.clock.monotonic_s() < self.banned_until


class _MemberNoise(NoiseTransport):
    """Noise (XX) that fails the handshake when the authenticated remote peer is not admitted.

    libp2p has no peer-ID allow-list; failing here, before the muxer is even
    negotiated, means a non-member never gets a single stream.
    """

    def __init__(self, key_pair: Any, admit: Callable[[ID, str, Any], bool]) -> None:
        # The X25519 Noise static key is fresh per run: identity comes from the Ed25519 key signing it.
        super().__init__(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
        self._admit = admit

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        """Noise handshake as responder, then the membership check."""
        secure = await super().secure_inbound(conn)
        await self._check(secure, "inbound")
        return secure

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        """Noise handshake as initiator, then the membership check."""
        secure = await super().secure_outbound(conn, peer_id)
        await self._check(secure, "outbound")
        return secure

    async def _check(self, secure: ISecureConn, direction: str) -> None:
        if self._admit(secure.get_remote_peer(), direction, secure):
            return
        # The socket may already be gone; the refusal stands either way.
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await secure.close()
        raise HandshakeFailure("remote peer is not a member of this network")


class _Notifee(INotifee):
    """Forwards libp2p connection events to the engine (only those two matter here)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not used."""

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        """Not used."""

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        """A connection passed the gate and the muxer."""
        self._engine.on_connection_change(conn.muxed_conn.peer_id, up=True)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        """A connection closed (already removed from the swarm's table)."""
        self._engine.on_connection_change(conn.muxed_conn.peer_id, up=False)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        """Not used."""

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        """Not used."""


def _batch_yamux_window_updates() -> None:
    """Let yamux grant window credit in batches (go-yamux's way), unless the operator chose.

    py-libp2p 0.8.1 sends a WINDOW_UPDATE frame for every read by default
    (``PY_YAMUX_RELEASE_ON_READ=1``, read from the environment at each read).
    Our messages are small and each is read whole, so every message cost the
    receiver a second frame out and the sender a second frame in: through
    Noise, the socket and ~5 trio task steps each.  Measured ping-pong between
    two nodes: 29 task steps and ~1,200 µs of CPU per round trip, 24 steps and
    ~1,050 µs with batching.  Credit is then returned once half the 256 KiB
    window has been read, which leaves the sender room to keep writing.
    """
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")


async def _no_auto_dial() -> None:
    """Replaces the swarm auto-connector: our links decide whom to dial."""


class Engine:
    """The libp2p host and all per-peer tasks; lives entirely in the trio thread."""

    def __init__(
        self,
        *,
        seed: bytes,
        listen: list[multiaddr.Multiaddr],
        members: dict[ID, bytes],
        addresses: dict[bytes, list[multiaddr.Multiaddr]],
        queue_for: Callable[[bytes], SendQueue],
        credit_for: Callable[[bytes], InboundCredit],
        deliver: Deliver,
        limits: P2PLimits,
        logger: logging.Logger,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = clock
        self._seed = seed
        self._listen = listen
        self._members = dict(members)
        self._ids_by_key = {key: pid for pid, key in members.items()}
        self._initial_addresses = addresses
        self._queue_for = queue_for
        self._credit_for = credit_for
        self._deliver = deliver
        self._limits = limits
        self._log = logger
        self.peers: dict[bytes, PeerState] = {}
        self.totals = Counters()
        self.malformed_by_reason: dict[str, int] = {}
        self.rejected_handshakes = 0
        self.rejected_by_peer_id: dict[str, int] = {}
        self.connected: frozenset[bytes] = frozenset()
        self._host: IHost | None = None
        self._swarm: Swarm | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None  # made in run(): trio objects belong to the trio thread

    # ----------------------------------------------------------------- lifecycle

    async def run(self, on_ready: Callable[[list[str]], None]) -> None:
        """Listen, serve until :meth:`request_stop`, then close every connection."""
        self._stop = stop = trio.Event()
        host, swarm = self._build_host()
        self._host, self._swarm = host, swarm
        host.set_stream_handler(TProtocol(PROTOCOL_ID), self._on_stream)
        swarm.register_notifee(_Notifee(self))
        async with host.run(self._listen):
            if len(host.get_transport_addrs()) < len(self._listen):
                # Swarm.listen only logs (at debug) an address it could not bind.
                raise NodeUsageError(f"could not listen on all of {[str(a) for a in self._listen]}")
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for key, addrs in self._initial_addresses.items():
                    for addr in addrs:
                        self.add_address(key, addr)
                for peer in list(self.peers.values()):  # addresses that came in while starting
                    if peer.addrs:
                        self._ensure_link(peer)
                on_ready([str(a) for a in host.get_addrs()])
                await stop.wait()
                nursery.cancel_scope.cancel()
            self._nursery = None
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._close_all()

    def request_stop(self) -> None:
        """Ask :meth:`run` to wind down (called through the trio token, so after run() began)."""
        if self._stop is not None:
            self._stop.set()

    def _build_host(self) -> tuple[IHost, Swarm]:
        _batch_yamux_window_updates()
        key_pair = create_new_key_pair(self._seed)
        noise = _MemberNoise(key_pair, self._admit)
        config = ConnectionConfig(
            max_connections=self._limits.max_connections,
            min_connections=0,
            low_watermark=0,
            high_watermark=self._limits.max_connections,
            dial_timeout=self._limits.dial_timeout_ms / 1000,
        )
        host = new_host(
            key_pair=key_pair,
            # Noise alone: the default list also offers /plaintext/2.0.0, where a peer
            # that knows only a public key could claim to be its owner.
            sec_opt={NOISE_PROTOCOL_ID: noise},
            # yamux alone: the default also offers mplex, ~9x slower and without flow control.
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=self._listen,
            connection_config=config,
        )
        swarm = host.get_network()
        if not isinstance(swarm, Swarm):  # pragma: no cover - new_host always builds a Swarm
            raise NodeUsageError("libp2p did not build a Swarm")
        swarm.retry_config = RetryConfig(max_retries=0)  # links back off themselves
        swarm.auto_connector.maybe_connect = _no_auto_dial  # type: ignore[method-assign]  # see module doc
        return host, swarm

    async def _close_all(self) -> None:
        swarm = self._swarm
        if swarm is None:
            return
        # SwarmConn.close sleeps 100 ms each; closing peers concurrently keeps stop() short.
        async with trio.open_nursery() as nursery:
            for peer_id in list(swarm.connections):
                nursery.start_soon(self._quietly, swarm.close_peer, peer_id)

    # ---------------------------------------------------------------- membership

    def _admit(self, peer_id: ID, direction: str, secure: Any) -> bool:
        """The gate run right after each Noise handshake; counts every refusal and logs it."""
        key = self._members.get(peer_id)
        peer = self.peers.get(key) if key is not None else None
        if key is not None and (peer is None or not peer.banned()):
            return True
        reason = "not a member" if key is None else "banned for malformed messages"
        self.rejected_handshakes += 1
        label = str(peer_id)
        count = self.rejected_by_peer_id.pop(label, 0) + 1
        if len(self.rejected_by_peer_id) >= MAX_TRACKED_REFUSALS:  # forget the least recent
            del self.rejected_by_peer_id[next(iter(self.rejected_by_peer_id))]
        self.rejected_by_peer_id[label] = count
        remote = _remote_address(secure)
        # Every refusal is counted; the log gets refusals 1, 2, 4, 8... of each peer, so a
        # peer re-dialling all day cannot flood it.
        level = logging.WARNING if count & (count - 1) == 0 else logging.DEBUG
        self._log.log(
            level,
            "refused peer %s from %s after the handshake (%s, refusal %d): %s",
            label,
            remote,
            direction,
            count,
            reason,
            extra={
                "fields": {
                    "peer_id": label,
                    "remote": remote,
                    "direction": direction,
                    "reason": reason,
                    "refusals": count,
                }
            },
        )
        return False

    def set_members(self, members: dict[ID, bytes]) -> None:
        """Replace the membership; peers that left are disconnected and their queues dropped."""
        self._members = dict(members)
        self._ids_by_key = {key: pid for pid, key in members.items()}
        for key, peer in list(self.peers.items()):
            if key not in self._ids_by_key:
                self._forget(peer)
        if self._swarm is not None:
            for peer_id in list(self._swarm.connections):
                if peer_id not in self._members:
                    self.spawn(self._disconnect, peer_id)
        self._refresh_connected()

    def _forget(self, peer: PeerState) -> None:
        peer.removed = True
        del self.peers[peer.key]
        if peer.link_scope is not None:
            peer.link_scope.cancel()
        peer.queue.clear()
        peer.space.set()  # wake readers blocked on credit so they notice the removal
        self._log.info("peer %s left the membership; disconnecting", peer.peer_id)

    def peer(self, key: bytes) -> PeerState | None:
        """The state of member ``key``, created on first use; ``None`` for a non-member."""
        state = self.peers.get(key)
        if state is not None:
            return state
        peer_id = self._ids_by_key.get(key)
        if peer_id is None:
            return None
        state = self.peers[key] = PeerState(
            key, peer_id, self._queue_for(key), self._credit_for(key), self._clock
        )
        return state

    def add_address(self, key: bytes, addr: multiaddr.Multiaddr) -> None:
        """Remember a dial address of member ``key`` and make sure its link runs."""
        peer = self.peer(key)
        if peer is None:
            return
        if addr not in peer.addrs:
            peer.addrs.append(addr)
        peer.poke()
        self._ensure_link(peer)

    def wake(self, keys: list[bytes]) -> None:
        """Frames were queued for these peers: wake idle writers, start missing links."""
        for key in keys:
            peer = self.peer(key)
            if peer is not None:
                peer.wake.set()
                self._ensure_link(peer)

    def on_connection_change(self, peer_id: ID, *, up: bool) -> None:
        """Track connected members; a new connection lets a waiting link open its stream now."""
        key = self._members.get(peer_id)
        if key is None:
            if up:  # membership changed while this peer was mid-handshake
                self.spawn(self._disconnect, peer_id)
            return
        peer = self.peer(key)
        if up and peer is not None:
            peer.poke()
            self._ensure_link(peer)
        self._refresh_connected()

    def _refresh_connected(self) -> None:
        swarm = self._swarm
        if swarm is None:
            return
        self.connected = frozenset(
            self._members[pid]
            for pid, conns in list(swarm.connections.items())
            if pid in self._members and any(not c.is_closed for c in conns)
        )

    async def _disconnect(self, peer_id: ID) -> None:
        if self._swarm is not None:
            await self._swarm.close_peer(peer_id)
        self._refresh_connected()

    # ------------------------------------------------------------ outbound links

    def _ensure_link(self, peer: PeerState) -> None:
        if peer.link_scope is None and self._nursery is not None and not peer.removed:
            peer.link_scope = trio.CancelScope()
            self._nursery.start_soon(self._guarded, "link", self._link, peer)

    async def _link(self, peer: PeerState) -> None:
        """Keep one outbound message stream to ``peer`` open and feed it from the send queue."""
        assert peer.link_scope is not None
        backoff = Backoff(self._limits.redial_initial_ms, self._limits.redial_max_ms)
        try:
            with peer.link_scope:
                while True:
                    stream = await self._connect(peer)
                    if stream is None:
                        await self._pause(peer, backoff.next_s())
                        continue
                    started = trio.current_time()
                    await self._pump(peer, stream)
                    if trio.current_time() - started >= STABLE_LINK_S:
                        backoff.reset()
                    await self._pause(peer, backoff.next_s())
        finally:
            peer.link_scope = None

    async def _connect(self, peer: PeerState) -> INetStream | None:
        """An open message stream to ``peer``, dialling first if needed; ``None`` to back off."""
        if peer.banned():
            await trio.sleep(peer.banned_until - self._clock.monotonic_s())
        if not self._live(peer.peer_id):
            if not peer.addrs:
                await peer.changed.wait()  # it may still dial us; then we reuse its connection
                return None if not self._live(peer.peer_id) else await self._open_stream(peer)
            if not await self._dial(peer):
                return None
        return await self._open_stream(peer)

    def _live(self, peer_id: ID) -> bool:
        assert self._swarm is not None
        return any(not conn.is_closed for conn in self._swarm.get_connections(peer_id))

    async def _dial(self, peer: PeerState) -> bool:
        assert self._swarm is not None
        for addr in list(peer.addrs):
            peer.counters.add("dials")
            self.totals.add("dials")
            with trio.move_on_after(self._limits.dial_timeout_ms / 1000):
                try:
                    await self._swarm.dial_addr(addr, peer.peer_id)
                    return True
                except Exception as exc:  # refused, unreachable, wrong identity at that address...
                    self._log.debug("dial of %s at %s failed: %r", peer.peer_id, addr, exc)
        peer.counters.add("dial_failures")
        self.totals.add("dial_failures")
        return False

    async def _open_stream(self, peer: PeerState) -> INetStream | None:
        assert self._host is not None
        try:
            with trio.fail_after(self._limits.dial_timeout_ms / 1000):
                stream = await self._host.new_stream(peer.peer_id, [TProtocol(PROTOCOL_ID)])
        except Exception as exc:
            self._log.debug("could not open a stream to %s: %r", peer.peer_id, exc)
            return None
        peer.counters.add("streams_opened")
        self.totals.add("streams_opened")
        return stream

    async def _pause(self, peer: PeerState, seconds: float) -> None:
        """Sleep off the backoff, unless a new address or connection makes a retry worthwhile now."""
        with trio.move_on_after(seconds):
            await peer.changed.wait()

    async def _pump(self, peer: PeerState, stream: INetStream) -> None:
        """Write queued frames until the stream breaks; then reset it."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, peer, stream, nursery.cancel_scope)
                await self._write_loop(peer, stream)
        except* Exception as group:
            self._log.debug("stream to %s ended: %r", peer.peer_id, group.exceptions)
        finally:
            await self._reset(stream)

    async def _watch(self, peer: PeerState, stream: INetStream, scope: trio.CancelScope) -> None:
        """End the pump when the stream dies (nothing else notices while the queue is empty)."""
        try:
            if await stream.read(1):
                self._strike(peer, "write on a receive-only stream")
        except Exception:  # EOF or reset: the connection is gone
            pass
        scope.cancel()

    async def _write_loop(self, peer: PeerState, stream: INetStream) -> None:
        limits = self._limits
        while True:
            batch = peer.queue.take(limits.write_batch_bytes)
            if not batch:
                await peer.wake.wait()
                peer.wake = trio.Event()
                continue
            data = b"".join(batch)
            with trio.move_on_after(limits.write_timeout_ms / 1000) as scope:
                await stream.write(data)
            if scope.cancelled_caught:
                peer.counters.add("write_failures")
                self.totals.add("write_failures")
                raise TimeoutError(f"write of {len(data)} bytes timed out")
            for counters in (peer.counters, self.totals):
                counters.add("messages_out", len(batch))
                counters.add("bytes_out", len(data))

    # ---------------------------------------------------------- inbound streams

    async def _on_stream(self, stream: INetStream) -> None:
        """Handler of our protocol; never lets a peer's failure escape into libp2p's nursery."""
        try:
            await self._serve(stream)
        except* Exception as group:
            self._log.debug("inbound stream ended: %r", group.exceptions)
        finally:
            await self._reset(stream)

    async def _serve(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        key = self._members.get(peer_id)
        peer = self.peer(key) if key is not None else None
        if peer is None or peer.banned():
            self.spawn(self._disconnect, peer_id)
            return
        peer.inbound.append(stream)
        try:
            if len(peer.inbound) > self._limits.max_inbound_streams_per_peer:
                self.spawn(self._reset, peer.inbound.pop(0))  # a well-behaved peer holds one
            await self._read_frames(peer, stream)
        finally:
            if stream in peer.inbound:
                peer.inbound.remove(stream)

    async def _read_frames(self, peer: PeerState, stream: INetStream) -> None:
        max_bytes = self._limits.max_message_bytes
        reader = FrameReader(max_bytes)
        while not (peer.removed or peer.banned()):
            chunk = await stream.read(READ_CHUNK_BYTES)
            if not chunk:
                return
            reader.feed(chunk)
            while (body := self._next_body(peer, reader)) is not None:
                try:
                    channel, value = decode_envelope(body, max_bytes)
                except MalformedMessageError as exc:
                    self._strike(peer, exc.reason)
                    continue
                await self._hand_over(peer, channel, value, len(body))

    def _next_body(self, peer: PeerState, reader: FrameReader) -> bytes | None:
        try:
            return reader.next_body()
        except MalformedMessageError as exc:
            self._strike(peer, exc.reason)
            raise  # framing is lost: abandon the stream (the peer may open another)

    async def _hand_over(self, peer: PeerState, channel: str, value: Any, size: int) -> None:
        """Pass one message to asyncio, first waiting for inbound credit (backpressure)."""
        while not peer.credit.take(size):
            # While we wait we do not read: yamux's window fills and the sender's writes block.
            # No await between the refusal and this wait, so the wake-up cannot come too early.
            await peer.space.wait()
            if peer.removed:
                return
        for counters in (peer.counters, self.totals):
            counters.add("messages_in")
            counters.add("bytes_in", size)
        self._deliver(peer.key, channel, value, size)

    def release(self, keys: list[bytes]) -> None:
        """The asyncio side gave credit back to these peers while their readers waited: wake them."""
        for key in keys:
            peer = self.peers.get(key)
            if peer is not None:
                peer.space.set()
                peer.space = trio.Event()

    def _strike(self, peer: PeerState, reason: str) -> None:
        """Count a malformed message; past the budget, ban and disconnect the peer."""
        peer.counters.add("malformed")
        self.totals.add("malformed")
        self.malformed_by_reason[reason] = self.malformed_by_reason.get(reason, 0) + 1
        now = self._clock.monotonic_s()
        if now >= peer.strikes_reset_at:  # the budget is per window, so rare mistakes never add up
            peer.strikes = 0
            peer.strikes_reset_at = now + self._limits.malformed_window_ms / 1000
        peer.strikes += 1
        self._log.info("dropped a malformed message from peer %s: %s", peer.peer_id, reason)
        if peer.strikes > self._limits.malformed_budget and not peer.banned():
            peer.strikes = 0
            peer.banned_until = now + self._limits.ban_ms / 1000
            self._log.warning(
                "peer %s exceeded its malformed-message budget; disconnected for %d ms",
                peer.peer_id,
                self._limits.ban_ms,
                extra={"fields": {"peer_id": str(peer.peer_id), "ban_ms": self._limits.ban_ms}},
            )
            self.spawn(self._disconnect, peer.peer_id)

    # ------------------------------------------------------------------ helpers

    def spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start a guarded background task in the engine's nursery (dropped when not running)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._guarded, getattr(fn, "__name__", "task"), fn, *args)

    async def _guarded(self, what: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a background task; an exception from a peer must never reach the nursery and kill the host."""
        try:
            await fn(*args)
        except* Exception as group:
            self._log.error("p2p task %s failed: %r", what, group.exceptions)

    async def _reset(self, stream: INetStream) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._quietly(stream.reset)

    @staticmethod
    async def _quietly(fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        with contextlib.suppress(Exception):  # closing something already broken
            await fn(*args)


def _remote_address(secure: Any) -> str:
    try:
        host, port = secure.get_remote_address()
        return f"{host}:{port}"
    except Exception:  # not every connection type knows its remote address
        return "?"
