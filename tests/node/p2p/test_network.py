"""The peer network on real libp2p hosts over loopback (mftp.node.p2p.network).

Every test starts real ``PeerNetwork`` instances (each with its own trio
thread) on 127.0.0.1 with free ports, so they run in one process and mostly
wait on the network; re-dial delays are shortened with ``FAST`` limits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import runpy
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from mftp.crypto import canonical
from mftp.crypto.signing import SigningIdentity
from mftp.node.errors import NodeUsageError
from mftp.node.p2p.network import (
    PROTOCOL_ID,
    P2PLimits,
    PeerNetwork,
    dial_multiaddr,
    peer_id_from_sign_key,
)
from mftp.node.p2p.trio_host import Engine

pytestmark = pytest.mark.timeout(60)

FAST = P2PLimits(redial_initial_ms=50, redial_max_ms=400, dial_timeout_ms=3_000)
LOCAL = "/ip4/127.0.0.1/tcp/0"


class Member:
    """One node under test: its identity, its network and everything it received."""

    def __init__(self, name: str, identity: SigningIdentity | None = None) -> None:
        self.name = name
        self.identity = identity or SigningIdentity.generate()
        self.key = self.identity.public.sign_key
        self.got: list[tuple[bytes, str, Any]] = []
        self.net: PeerNetwork | None = None

    def on_message(self, sender: bytes, channel: str, value: Any) -> None:
        self.got.append((sender, channel, value))

    def values_from(self, sender: Member, channel: str | None = None) -> list[Any]:
        return [v for s, c, v in self.got if s == sender.key and (channel is None or c == channel)]

    @property
    def addr(self) -> str:
        assert self.net is not None
        return self.net.listen_addrs()[0]

    @property
    def port(self) -> int:
        return int(Multiaddr(self.addr).value_for_protocol("tcp"))


Start = Callable[..., Any]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``await start(member, roster, ...)`` starts a network; all are stopped (and checked) at teardown."""
    nets: list[PeerNetwork] = []

    async def _start(
        member: Member,
        roster: list[Member],
        *,
        listen: str = LOCAL,
        limits: P2PLimits = FAST,
        on_message: Callable[[bytes, str, Any], Any] | None = None,
    ) -> PeerNetwork:
        net = PeerNetwork(
            member.identity,
            [listen],
            {m.key: m.name for m in roster},
            on_message=on_message or member.on_message,
            limits=limits,
        )
        await net.start()
        member.net = net
        nets.append(net)
        return net

    yield _start
    await asyncio.gather(*(net.stop() for net in nets))
    assert not [t for t in threading.enumerate() if t.name.startswith("mftp-p2p")]


async def eventually(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def mesh(members: list[Member]) -> None:
    """Give every member the address of every other (both sides dial)."""
    for a in members:
        for b in members:
            if a is not b:
                assert a.net is not None
                a.net.add_peer_address(b.key, b.addr)


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


async def raw_stream_write(engine: Engine, peer_id: str, chunks: list[bytes]) -> None:
    """In a member's trio thread: open an extra message stream and write raw bytes (an attacker's view)."""
    host = engine._host
    assert host is not None
    stream = await host.new_stream(ID.from_base58(peer_id), [TProtocol(PROTOCOL_ID)])
    try:
        for chunk in chunks:
            await stream.write(chunk)
        await trio.sleep(0.3)  # let the receiver read before the reset below
    except Exception:  # the receiver may reset the stream first (oversized frame): expected
        pass
    finally:
        await stream.reset()


# ------------------------------------------------------------------- tests


async def test_members_exchange_in_order_on_one_reused_stream(start: Start) -> None:
    members = [Member(n) for n in ("a", "b", "c")]
    for m in members:
        await start(m, members)
    mesh(members)
    count = 300
    for i in range(count):
        for sender in members:
            for receiver in members:
                if sender is not receiver:
                    assert sender.net is not None
                    assert sender.net.send(receiver.key, "consensus", {"seq": i, "from": sender.name})
    for m in members:
        assert m.net is not None
        m.net.broadcast("gossip", {"record": m.name.encode()})

    def complete() -> bool:
        return all(len(m.got) == 2 * (count + 1) for m in members)

    await eventually(complete, "every message and broadcast delivered")

    def counted() -> bool:
        # The sender counts a batch once its write returns, which can be after the peer has read it.
        return all(m.net is not None and m.net.stats().messages_out == 2 * (count + 1) for m in members)

    await eventually(counted, "every write counted by its sender")
    for receiver in members:
        assert receiver.net is not None
        for sender in members:
            if sender is receiver:
                continue
            assert [v["seq"] for v in receiver.values_from(sender, "consensus")] == list(range(count))
            assert receiver.values_from(sender, "gossip") == [{"record": sender.name.encode()}]
        assert receiver.net.peers() == {m.key for m in members if m is not receiver}
        stats = receiver.net.stats()
        for sender in members:
            if sender is not receiver:
                peer = stats.peers[sender.key]
                # 301 messages each way over a single long-lived outbound stream, never re-opened
                assert peer.streams_opened == 1
                assert peer.messages_out == count + 1 and peer.messages_in == count + 1
                assert peer.malformed == 0 and peer.dropped_out == 0
        assert stats.messages_out == stats.messages_in == 2 * (count + 1)
        assert stats.bytes_out > stats.bytes_in > 0  # out counts the 4-byte prefixes too


async def test_non_member_is_refused_after_the_handshake(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mftp.node.p2p")
    a, b, intruder = Member("a"), Member("b"), Member("intruder")
    await start(a, [a, b])
    await start(b, [a, b])
    # The intruder has a valid Noise key and believes a is a fellow member.
    await start(intruder, [intruder, a])
    assert intruder.net is not None and a.net is not None and b.net is not None
    with pytest.raises(NodeUsageError):
        a.net.add_peer_address(intruder.key, intruder.addr)
    intruder.net.add_peer_address(a.key, a.addr)
    intruder.net.send(a.key, "consensus", {"forged": True})
    intruder_id = peer_id_from_sign_key(intruder.key)

    await eventually(
        lambda: a.net is not None and a.net.stats().rejected_handshakes >= 2, "repeated refusals"
    )
    stats = a.net.stats()
    assert stats.rejected_by_peer_id[intruder_id] >= 2
    assert intruder.key not in stats.peers  # never got as far as a stream
    refusals = [
        r for r in caplog.records if "refused peer" in r.getMessage() and intruder_id in r.getMessage()
    ]
    assert refusals and refusals[0].levelno == logging.WARNING and "not a member" in refusals[0].getMessage()
    assert intruder.net.stats().peers[a.key].dial_failures >= 1
    assert intruder.net.peers() == frozenset()
    # Members still talk.
    b.net.add_peer_address(a.key, a.addr)
    b.net.send(a.key, "consensus", "hello")
    await eventually(lambda: a.values_from(b) == ["hello"], "member message")
    assert not a.values_from(intruder)
    assert a.net.peers() == {b.key}


async def test_only_noise_and_yamux_are_offered(start: Start) -> None:
    a, b = Member("a"), Member("b")
    await start(a, [a, b])
    assert a.net is not None and a.net._engine is not None and a.net._engine._swarm is not None
    upgrader = a.net._engine._swarm.upgrader
    assert list(upgrader.security_multistream.transports) == ["/noise"]
    assert list(upgrader.muxer_multistream.transports) == [YAMUX_PROTOCOL_ID]
    # yamux returns window credit in batches, not one WINDOW_UPDATE frame per message read.
    assert os.environ["PY_YAMUX_RELEASE_ON_READ"] == "0"

    # A dialer offering only plaintext cannot connect, even holding a member's real key pair.
    target = Multiaddr(a.addr)
    seed = b.identity.seed

    def plaintext_dial() -> str:
        async def main() -> str:
            key_pair = create_new_key_pair(seed)
            host = new_host(
                key_pair=key_pair,
                sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)},
                muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
                listen_addrs=[Multiaddr(LOCAL)],
            )
            async with host.run([Multiaddr(LOCAL)]):
                peer_id = ID.from_base58(target.value_for_protocol("p2p"))
                try:
                    await host.get_network().dial_addr(target, peer_id)
                except Exception as exc:
                    return f"failed: {exc!r}"
                return "connected"

        return trio.run(main)

    outcome = await asyncio.to_thread(plaintext_dial)
    assert outcome.startswith("failed"), outcome
    assert a.net.peers() == frozenset()
    assert a.got == []


async def test_malformed_frames_are_dropped_and_counted(start: Start) -> None:
    a, b, evil = Member("a"), Member("b"), Member("evil")
    roster = [a, b, evil]
    for m in roster:
        await start(m, roster)
    assert a.net is not None and b.net is not None and evil.net is not None
    evil.net.add_peer_address(a.key, a.addr)
    b.net.add_peer_address(a.key, a.addr)
    evil.net.send(a.key, "consensus", "via the normal stream")
    await eventually(lambda: a.values_from(evil) == ["via the normal stream"], "first message")

    chunks = [
        frame(canonical.encode({"ch": "consensus", "v": 1})),
        frame(msgpack.packb({"v": 2, "ch": "consensus"})),  # keys not sorted: non-canonical
        frame(b"\xcc\x05"),  # 5 as a uint8: non-minimal integer, non-canonical
        frame(b"\xc1"),  # never-used msgpack byte: undecodable garbage
        frame(canonical.encode([1, 2])),  # not a map
        frame(canonical.encode({"ch": "consensus"})),  # no "v"
        frame(canonical.encode({"ch": 7, "v": 1})),  # channel not a string
        frame(canonical.encode({"ch": "consensus", "v": 1, "x": 0})),  # extra key
        frame(canonical.encode({"ch": "consensus", "v": 3})),
        (2**31).to_bytes(4, "big") + b"never buffered",  # oversized: the stream is abandoned
        frame(canonical.encode({"ch": "consensus", "v": 4})),  # lost with the framing
    ]
    await evil.net._run_in_trio(raw_stream_write, a.net.peer_id, chunks)

    await eventually(lambda: a.net is not None and a.net.stats().peers[evil.key].malformed == 8, "8 counted")
    stats = a.net.stats()
    assert stats.malformed_by_reason == {"undecodable": 3, "envelope": 4, "oversized": 1}
    assert stats.peers[b.key].malformed == 0
    assert not stats.peers[evil.key].banned  # under the default budget of 16
    assert a.values_from(evil) == ["via the normal stream", 1, 3]

    # Nothing crashed: the evil member's own stream and the good member still deliver.
    evil.net.send(a.key, "consensus", "still heard")
    b.net.send(a.key, "consensus", "fine")
    await eventually(lambda: a.values_from(evil)[-1:] == ["still heard"], "evil member heard again")
    await eventually(lambda: a.values_from(b) == ["fine"], "good member heard")


async def test_malformed_budget_disconnects_then_readmits(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mftp.node.p2p")
    a, evil = Member("a"), Member("evil")
    strict = P2PLimits(redial_initial_ms=50, redial_max_ms=300, malformed_budget=2, ban_ms=1_500)
    await start(a, [a, evil], limits=strict)
    await start(evil, [a, evil])
    assert a.net is not None and evil.net is not None
    evil.net.add_peer_address(a.key, a.addr)
    await eventually(lambda: evil.net is not None and a.key in evil.net.peers(), "connected")

    await evil.net._run_in_trio(raw_stream_write, a.net.peer_id, [frame(b"\xc1")] * 3)
    banned_at = time.monotonic()
    await eventually(lambda: a.net is not None and a.net.stats().peers[evil.key].banned, "ban")
    await eventually(lambda: a.net is not None and evil.key not in a.net.peers(), "disconnect")
    assert any("exceeded its malformed-message budget" in r.getMessage() for r in caplog.records)
    await eventually(lambda: evil.net is not None and a.key not in evil.net.peers(), "evil notices")

    evil.net.send(a.key, "consensus", "after the ban")
    await eventually(
        lambda: a.net is not None and a.net.stats().rejected_handshakes >= 1, "refused while banned"
    )
    assert any("banned" in r.getMessage() for r in caplog.records if "refused peer" in r.getMessage())
    await eventually(lambda: a.values_from(evil) == ["after the ban"], "readmitted after the ban")
    assert time.monotonic() - banned_at >= 1.0


async def test_lost_peer_is_redialled_with_backoff(start: Start) -> None:
    a, b = Member("a"), Member("b")
    await start(a, [a, b])
    await start(b, [a, b])
    assert a.net is not None and b.net is not None
    port = b.port
    a.net.add_peer_address(b.key, b.addr)
    a.net.send(b.key, "consensus", "before")
    await eventually(lambda: b.values_from(a) == ["before"], "first delivery")

    await b.net.stop()
    await eventually(lambda: a.net is not None and b.key not in a.net.peers(), "a notices the loss")
    dials_before = a.net.stats().peers[b.key].dials
    for i in range(5):  # queued while b is away
        a.net.send(b.key, "consensus", i)
    await asyncio.sleep(0.8)
    dials_down = a.net.stats().peers[b.key].dials - dials_before
    # FAST backoff: 50 ms doubling to 400 ms with jitter -> a handful of attempts, not hundreds
    assert 2 <= dials_down <= 12, dials_down

    b2 = Member("b", b.identity)  # same key, same port; it does not know a's address
    await start(b2, [a, b2], listen=f"/ip4/127.0.0.1/tcp/{port}")
    await eventually(lambda: b2.values_from(a) == [0, 1, 2, 3, 4], "queued messages after the re-dial")
    a.net.send(b.key, "consensus", "after")
    await eventually(lambda: b2.values_from(a)[-1:] == ["after"], "flow resumed")
    assert a.net.stats().peers[b.key].dial_failures >= 1
    # b2 answers over the connection a dialled
    assert b2.net is not None
    b2.net.send(a.key, "consensus", "back")
    await eventually(lambda: a.values_from(b) == ["back"], "reply without an address")


async def test_set_members_disconnects_a_removed_peer(start: Start) -> None:
    a, b, c = Member("a"), Member("b"), Member("c")
    roster = [a, b, c]
    for m in roster:
        await start(m, roster)
    mesh(roster)
    assert a.net is not None and c.net is not None
    await eventually(lambda: a.net is not None and a.net.peers() == {b.key, c.key}, "full mesh")

    a.net.set_members({a.key: "a", b.key: "b"})
    await eventually(lambda: a.net is not None and a.net.peers() == {b.key}, "c disconnected")
    with pytest.raises(NodeUsageError):
        a.net.send(c.key, "consensus", "x")
    assert c.key not in a.net.stats().peers
    # Delivery is best effort: wait until c has noticed, or this could go down the dying stream.
    await eventually(lambda: c.net is not None and a.key not in c.net.peers(), "c notices")
    c.net.send(a.key, "consensus", "from a removed member")
    await eventually(lambda: a.net is not None and a.net.stats().rejected_handshakes >= 1, "c refused")
    assert not a.values_from(c)

    # Re-admission: c's link is still re-dialling, so it comes back on its own.
    a.net.set_members({m.key: m.name for m in roster})
    await eventually(lambda: a.values_from(c) == ["from a removed member"], "c readmitted")


async def test_inbound_backpressure_bounds_unhandled_messages(start: Start) -> None:
    a, b = Member("a"), Member("b")
    gate = asyncio.Event()
    handled: list[int] = []

    async def slow(sender: bytes, channel: str, value: Any) -> None:
        await gate.wait()
        handled.append(value)

    limits = P2PLimits(inbound_queue_messages=8, redial_initial_ms=50, redial_max_ms=400)
    await start(a, [a, b], limits=limits, on_message=slow)
    await start(b, [a, b])
    assert a.net is not None and b.net is not None
    b.net.add_peer_address(a.key, a.addr)
    for i in range(200):
        b.net.send(a.key, "gossip", i)
    await eventually(lambda: a.net is not None and a.net.stats().messages_in == 8, "eight read")
    await asyncio.sleep(0.3)
    assert a.net.stats().messages_in == 8  # reading stopped at the bound
    gate.set()
    await eventually(lambda: len(handled) == 200, "all handled once released")
    assert handled == list(range(200))


async def test_full_send_queue_drops_the_oldest(start: Start) -> None:
    a, b = Member("a"), Member("b")  # b never runs: nothing drains a's queue
    await start(a, [a, b], limits=P2PLimits(send_queue_messages=4))
    assert a.net is not None
    assert all(a.net.send(b.key, "gossip", i) for i in range(4))
    assert a.net.send(b.key, "gossip", 4) is False
    stats = a.net.stats()
    assert stats.dropped_out == 1
    await eventually(lambda: a.net is not None and b.key in a.net.stats().peers, "peer state")
    assert a.net.stats().peers[b.key].queued_out == 4


async def test_handler_errors_are_counted_not_fatal(start: Start) -> None:
    a, b = Member("a"), Member("b")

    def fragile(sender: bytes, channel: str, value: Any) -> None:
        if value == "boom":
            raise RuntimeError("handler bug")
        a.on_message(sender, channel, value)

    await start(a, [a, b], on_message=fragile)
    await start(b, [a, b])
    assert a.net is not None and b.net is not None
    b.net.add_peer_address(a.key, a.addr)
    for value in ("one", "boom", "two"):
        b.net.send(a.key, "consensus", value)
    await eventually(lambda: a.values_from(b) == ["one", "two"], "messages around the failure")
    assert a.net.stats().handler_errors == 1


async def test_stop_is_clean(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    a, b = Member("a"), Member("b")
    blocked = asyncio.Event()

    async def never_returns(sender: bytes, channel: str, value: Any) -> None:
        blocked.set()
        await asyncio.Event().wait()

    net_a = PeerNetwork(a.identity, [LOCAL], {a.key: "a", b.key: "b"}, on_message=never_returns, limits=FAST)
    net_b = PeerNetwork(b.identity, [LOCAL], {a.key: "a", b.key: "b"}, on_message=b.on_message, limits=FAST)
    async with net_a, net_b:
        net_b.add_peer_address(a.key, net_a.listen_addrs()[0])
        net_b.send(a.key, "consensus", "stuck in a handler")
        await asyncio.wait_for(blocked.wait(), 10)
    await net_a.stop()  # a second stop is harmless
    with pytest.raises(NodeUsageError):
        await net_a.start()
    gc.collect()
    assert not [t for t in threading.enumerate() if t.name.startswith("mftp-p2p")]
    assert not [
        r
        for r in caplog.records
        if ("destroyed" in r.getMessage() or r.levelno >= logging.ERROR) and not _identify_cut_by_stop(r)
    ]
    assert net_a.peers() == frozenset()


async def test_cannot_listen_twice_on_one_port(start: Start) -> None:
    a, b = Member("a"), Member("b")
    await start(a, [a, b])
    clash = PeerNetwork(b.identity, [f"/ip4/127.0.0.1/tcp/{a.port}"], {a.key: "a"}, on_message=b.on_message)
    with pytest.raises(NodeUsageError, match="could not listen"):
        await clash.start()
    assert not [t for t in threading.enumerate() if t.name == f"mftp-p2p-{clash.peer_id[-8:]}"]


async def test_listen_address_names_the_signing_key(start: Start) -> None:
    a = Member("a")
    await start(a, [a])
    assert a.net is not None
    peer_id = peer_id_from_sign_key(a.key)
    assert a.net.peer_id == peer_id
    assert a.addr.endswith(f"/p2p/{peer_id}")
    assert dial_multiaddr(f"/ip4/127.0.0.1/tcp/{a.port}", a.key) == a.addr


async def test_latency_and_throughput_figures(start: Start) -> None:
    """Prints the figures of scripts/bench_p2p.py at a tiny size (no timing is asserted)."""
    bench = runpy.run_path(str(Path(__file__).resolve().parents[3] / "scripts" / "bench_p2p.py"))
    figures = await bench["measure"](round_trips=100, messages=2000, message_bytes=1024)
    print(figures)
    assert figures["rtt_p50_ms"] > 0 and figures["throughput_msgs_per_s"] > 0


async def test_messages_queued_before_start_are_delivered(start: Start) -> None:
    a, b = Member("a"), Member("b")
    await start(b, [a, b])
    net = PeerNetwork(a.identity, [LOCAL], {a.key: "a", b.key: "b"}, on_message=a.on_message, limits=FAST)
    net.add_peer_address(b.key, b.addr)
    net.send(b.key, "consensus", "early")
    async with net:
        await eventually(lambda: b.values_from(a) == ["early"], "the early message")


def _identify_cut_by_stop(record: logging.LogRecord) -> bool:
    """libp2p runs its identify protocol on every new connection and logs an ERROR when a
    stop closes the connection while that exchange is still being negotiated: a race
    inside libp2p at shutdown, not a fault of ours (seen once in CI)."""
    return record.name.startswith("libp2p") and "/ipfs/id/" in record.getMessage()
