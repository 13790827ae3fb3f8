"""The peer network's wire format and thread plumbing, without any network (mftp.node.p2p.frames)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from mftp.crypto import canonical
from mftp.crypto.errors import EncodeError
from mftp.crypto.signing import SigningIdentity
from mftp.node.errors import NodeInputError, NodeUsageError
from mftp.node.p2p.frames import (
    Backoff,
    FrameReader,
    InboundCredit,
    Mailbox,
    MalformedMessageError,
    P2PLimits,
    SendQueue,
    decode_envelope,
    encode_frame,
)
from mftp.node.p2p.network import PeerNetwork, dial_multiaddr, peer_id_from_sign_key, sign_key_from_peer_id

LIMIT = 1024


def test_frames_round_trip_byte_by_byte() -> None:
    frames = [encode_frame("consensus", {"n": i, "blob": bytes(i)}, LIMIT) for i in range(5)]
    reader = FrameReader(LIMIT)
    bodies = []
    for byte in b"".join(frames):
        reader.feed(bytes([byte]))
        while (body := reader.next_body()) is not None:
            bodies.append(body)
    assert [decode_envelope(b, LIMIT) for b in bodies] == [
        ("consensus", {"n": i, "blob": bytes(i)}) for i in range(5)
    ]
    assert reader.buffered_bytes == 0


def test_oversized_length_is_refused_before_the_body_arrives() -> None:
    reader = FrameReader(LIMIT)
    reader.feed((LIMIT + 1).to_bytes(4, "big"))
    with pytest.raises(MalformedMessageError) as caught:
        reader.next_body()
    assert caught.value.reason == "oversized"
    exact = FrameReader(LIMIT)
    exact.feed(LIMIT.to_bytes(4, "big") + b"\x00" * LIMIT)
    assert exact.next_body() == b"\x00" * LIMIT


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1", "undecodable"),
        (b"", "undecodable"),
        (b"\x82\xa1v\x01\xa2ch\xa1x", "undecodable"),  # keys out of order: non-canonical
        (canonical.encode({"ch": "x"}), "envelope"),
        (canonical.encode({"ch": "", "v": 1}), "envelope"),
        (canonical.encode({"ch": "x" * 65, "v": 1}), "envelope"),
        (canonical.encode({"ch": b"x", "v": 1}), "envelope"),
        (canonical.encode("just a string"), "envelope"),
    ],
)
def test_bad_envelopes_are_malformed(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessageError) as caught:
        decode_envelope(body, LIMIT)
    assert caught.value.reason == reason
    assert isinstance(caught.value, NodeInputError)  # a peer's fault, never ours


def test_sender_side_refusals_are_usage_errors() -> None:
    with pytest.raises(NodeUsageError):
        encode_frame("consensus", b"x" * LIMIT, LIMIT)
    with pytest.raises(NodeUsageError):
        encode_frame("", 1, LIMIT)
    with pytest.raises(EncodeError):
        encode_frame("consensus", 1.5, LIMIT)


def test_send_queue_drops_the_oldest_and_wakes_once_per_idle_period() -> None:
    queue = SendQueue(max_messages=3, max_bytes=100)
    assert queue.push(b"a") == (False, 0)  # a writer that never idled needs no wake
    assert queue.take(1000) == [b"a"]
    assert queue.take(1000) == []  # now idle
    assert queue.push(b"b") == (True, 0)
    assert queue.push(b"c") == (False, 0)
    assert queue.push(b"d") == (False, 0)
    assert queue.push(b"e") == (False, 1)
    assert queue.take(2) == [b"c", b"d"]  # bounded by bytes, oldest (b) was dropped
    assert queue.push(b"x" * 100) == (False, 1)  # the byte bound drops e
    assert queue.take(10) == [b"x" * 100]  # at least one frame even when larger than the batch
    assert queue.dropped == 2
    queue.push(b"z")
    assert queue.clear() == 1 and len(queue) == 0


def test_mailbox_coalesces_cross_thread_calls() -> None:
    scheduled: list[Callable[[], None]] = []
    handled: list[list[int]] = []
    box: Mailbox[int] = Mailbox(scheduled.append, handled.append)
    for item in range(3):
        box.post(item)
    assert len(scheduled) == 1
    scheduled.pop()()
    assert handled == [[0, 1, 2]]
    box.post(3)
    assert len(scheduled) == 1

    def closed(fn: Callable[[], None]) -> None:
        raise RuntimeError("loop closed")

    broken: Mailbox[int] = Mailbox(closed, handled.append)
    for _ in range(2):  # the failed schedule is retried, not silently skipped
        with pytest.raises(RuntimeError):
            broken.post(1)


def test_inbound_credit_wakes_the_reader_only_when_it_waits() -> None:
    credit = InboundCredit(max_messages=2, max_bytes=100)
    assert credit.take(10) and credit.take(10)
    assert credit.give_back(1, 10) is False  # the reader never waited: no cross-thread wake-up
    assert credit.take(10)
    assert not credit.take(10)  # two held: the reader must wait ...
    assert credit.give_back(2, 20) is True  # ... and is woken by the next give-back
    assert credit.give_back(0, 0) is False  # once
    assert credit.take(100)  # one message always passes when nothing is held, whatever its size
    assert not credit.take(1)  # but nothing joins it beyond the byte limit
    credit.give_back(5, 500)  # more than was taken (a member removed and re-added): clamped at zero
    assert (credit.messages, credit.bytes) == (0, 0)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(100, 1000, random.Random(7))
    delays = [backoff.next_s() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(1000, 100 * 2**attempt) / 1000
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 1.0
    backoff.reset()
    assert backoff.next_s() <= 0.1


def test_limits_are_validated() -> None:
    with pytest.raises(NodeUsageError):
        P2PLimits(max_message_bytes=0)
    with pytest.raises(NodeUsageError):
        P2PLimits(redial_initial_ms=500, redial_max_ms=100)
    with pytest.raises(NodeUsageError):
        P2PLimits(send_queue_bytes=1024)
    with pytest.raises(NodeUsageError):
        P2PLimits(max_message_bytes=65 * 1024 * 1024, send_queue_bytes=2**30, inbound_queue_bytes=2**30)


def test_peer_ids_follow_from_signing_keys() -> None:
    identity = SigningIdentity.generate()
    key = identity.public.sign_key
    peer_id = peer_id_from_sign_key(key)
    assert peer_id.startswith("12D3KooW")  # an identity multihash of an Ed25519 key
    assert sign_key_from_peer_id(peer_id) == key
    assert dial_multiaddr("/ip4/10.0.0.2/tcp/7600", key) == f"/ip4/10.0.0.2/tcp/7600/p2p/{peer_id}"
    assert dial_multiaddr(f"/ip4/10.0.0.2/tcp/7600/p2p/{peer_id}", key).count("/p2p/") == 1
    other = peer_id_from_sign_key(SigningIdentity.generate().public.sign_key)
    with pytest.raises(NodeUsageError):
        dial_multiaddr(f"/ip4/10.0.0.2/tcp/7600/p2p/{other}", key)
    with pytest.raises(NodeUsageError):
        peer_id_from_sign_key(b"\x00" * 31)
    with pytest.raises(NodeInputError):
        sign_key_from_peer_id("not a peer id")


def test_constructor_refuses_bad_arguments() -> None:
    identity = SigningIdentity.generate()
    members = {identity.public.sign_key: "me"}
    with pytest.raises(NodeUsageError):
        PeerNetwork(identity, [], members, on_message=print)
    with pytest.raises(NodeUsageError):
        PeerNetwork(identity, ["127.0.0.1:7600"], members, on_message=print)
    with pytest.raises(NodeUsageError):
        PeerNetwork(identity, ["/ip4/127.0.0.1/tcp/0"], {b"\x01" * 32: "bad key"}, on_message=print)
    net = PeerNetwork(identity, ["/ip4/127.0.0.1/tcp/0"], members, on_message=print)
    assert net.members() == {}  # this node is not its own peer
    with pytest.raises(NodeUsageError):
        net.send(identity.public.sign_key, "consensus", 1)
