"""Real node processes on loopback: 4 validators and 1 audit node (issue: node, point 8).

One long scenario (starting five processes costs seconds, so the checks share it):
records commit; SIGKILL of a validator while records flow does not stop the
chain; the restarted validator catches up and every node reports the same block
hash at every height; with two of four validators killed nothing commits, and
progress resumes when one returns.  Separate tests show that a stranger's key
cannot connect and that an audit node's votes are ignored.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.crypto.keyfile import load_identity
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.block import VoteType, sign_vote
from mftp.node.devnet.client import (
    block_hashes,
    get_json,
    heights,
    is_committed,
    make_records,
    running_devnet,
    submit,
    wait_until,
)
from mftp.node.devnet.consortium import NodeProcess, wait_for_height
from mftp.node.p2p.network import PeerNetwork

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running_devnet(tmp_path, validators=4, audit=1) as processes:
        yield processes


def test_chain_survives_crashes_and_nodes_agree(devnet: list[NodeProcess]) -> None:
    a, b, c, d, auditor = devnet
    rng = random.Random(1)
    wait_for_height(devnet, 2, timeout_s=60)

    # A long poll answers with the next block as soon as the audit node stores it.
    head = get_json(f"{auditor.member.api_url}/status")["height"]
    body = get_json(f"{auditor.member.api_url}/blocks?from={head + 1}&wait_ms=20000", timeout_s=25)
    assert [block["height"] for block in body["blocks"]][:1] == [head + 1]
    started = time.monotonic()
    body = get_json(f"{auditor.member.api_url}/blocks?from={head + 10_000}&wait_ms=300")
    assert body["blocks"] == [] and 0.25 < time.monotonic() - started < 5

    first = make_records(a.member, 20, rng)
    for record in first:
        assert submit(a.member, record)["result"] == "accepted"
    wait_until(
        lambda: all(is_committed(p.member, r) for p in devnet for r in first), 60, "records on every node"
    )

    # SIGKILL one validator while records flow: the other three go on.
    flowing = make_records(a.member, 30, rng)
    for index, record in enumerate(flowing):
        if index == 10:
            b.kill()
        submit(a.member, record)
    wait_until(
        lambda: all(is_committed(auditor.member, r) for r in flowing), 60, "records committed without b"
    )

    # b comes back, catches up, and everyone agrees on every block.
    b.start()
    b.wait_ready()
    target = max(heights([a, c, d]).values())
    wait_for_height(devnet, target, timeout_s=90)
    reference = block_hashes(a.member, target)
    assert len(reference) == target
    for process in devnet[1:]:
        assert block_hashes(process.member, target) == reference, process.member.name

    # Two of four down: no quorum, nothing commits.
    c.kill()
    d.kill()
    time.sleep(1.0)
    stalled = heights([a, b, auditor])
    pending = make_records(a.member, 5, rng)
    for record in pending:
        submit(a.member, record)
    time.sleep(6.0)
    assert not any(is_committed(auditor.member, r) for r in pending)
    assert max(heights([a, b, auditor]).values()) <= max(stalled.values()) + 1  # at most one in flight

    # One returns: progress resumes and the pending records commit.
    c.start()
    c.wait_ready()
    wait_until(lambda: all(is_committed(auditor.member, r) for r in pending), 120, "progress after c returns")
    status = get_json(f"{auditor.member.api_url}/status")
    assert status["role"] == "audit" and status["consensus"].get("votes_from_non_validators", 0) == 0


def test_a_stranger_cannot_connect(devnet: list[NodeProcess]) -> None:
    a = devnet[0]
    wait_for_height(devnet, 1, timeout_s=60)
    stranger = SigningIdentity.generate()
    members = {p.member.sign_key: p.member.name for p in devnet}

    async def knock() -> int:
        async with PeerNetwork(
            stranger, ["/ip4/127.0.0.1/tcp/0"], members, on_message=lambda *_: None
        ) as net:
            net.add_peer_address(a.member.sign_key, a.member.p2p_address)
            await asyncio.sleep(4.0)
            return len(net.peers())

    assert asyncio.run(knock()) == 0
    metrics = get_json_text(f"{a.member.api_url}/metrics")
    rejected = [line for line in metrics.splitlines() if line.startswith("mftp_rejected_handshakes ")]
    assert rejected and float(rejected[0].split()[1]) >= 1


def test_votes_from_an_audit_node_are_ignored(devnet: list[NodeProcess]) -> None:
    validators, auditor = devnet[:4], devnet[4]
    wait_for_height(devnet, 2, timeout_s=60)
    auditor.stop()  # its identity is reused here by a node that tries to vote
    identity = load_identity(auditor.member.directory / "keys" / "node.key")
    chain_id = get_json(f"{validators[0].member.api_url}/status")["chain_id"]
    members = {p.member.sign_key: p.member.name for p in devnet}

    async def vote() -> None:
        async with PeerNetwork(
            identity, [auditor.member.p2p_address], members, on_message=lambda *_: None
        ) as net:
            for process in validators:
                net.add_peer_address(process.member.sign_key, process.member.p2p_address)
            await asyncio.sleep(2.0)
            for _ in range(10):
                height = max(heights(validators).values()) + 1
                for step in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                    forged = sign_vote(identity, chain_id, step, height, 0, bytes(32))
                    net.broadcast("c.vote", forged.to_value())
                await asyncio.sleep(0.3)

    asyncio.run(vote())
    counters = [get_json(f"{p.member.api_url}/status")["consensus"] for p in validators]
    assert all(c.get("votes_from_non_validators", 0) >= 1 for c in counters)
    before = max(heights(validators).values())
    wait_for_height(validators, before + 1, timeout_s=30)  # and the chain goes on


def get_json_text(url: str) -> str:
    """GET as text."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
