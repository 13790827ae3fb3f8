"""Joining and leaving a running consortium with real processes on loopback (issue 20, point 4).

4 validators and 1 audit node admit a fifth validator while records flow (no record lost, every
node agrees on every block hash), then remove one of the original four, then admit a new audit
node.  Each newcomer's config names only one bootstrap address: the chain tells it the rest.
Everything goes through the CLI, as an operator would do it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.ledger.records import Record
from mftp.node.devnet.client import (
    TEST_CONSENSUS,
    api,
    block_hashes,
    cli,
    get_json,
    is_committed,
    make_records,
    running_devnet,
    submit,
    wait_until,
)
from mftp.node.devnet.consortium import Member, NodeProcess, stop_all, wait_for_height
from mftp.node.devnet.newcomer import add_newcomer
from mftp.node.p2p.network import peer_id_from_sign_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running_devnet(tmp_path, validators=4, audit=1) as processes:
        yield processes


@pytest.fixture
def newcomers() -> Iterator[list[NodeProcess]]:
    """The processes of newcomers (outside the devnet's own): stopped however the test ends."""
    started: list[NodeProcess] = []
    yield started
    stop_all(started)


def _newcomer(
    tmp_path: Path, name: str, role: str, bootstrap: Member, started: list[NodeProcess]
) -> NodeProcess:
    member = add_newcomer(
        tmp_path / "devnet",
        name,
        role=role,
        bootstrap=bootstrap,
        bootstrap_peer_id=peer_id_from_sign_key(bootstrap.sign_key),
        consensus=dict(TEST_CONSENSUS),
    )
    process = NodeProcess(member)
    started.append(process)
    process.start()
    process.wait_ready()
    return process


def _ok(done: object) -> str:
    assert getattr(done, "returncode", 1) == 0, f"{getattr(done, 'stdout', '')}{getattr(done, 'stderr', '')}"
    return str(getattr(done, "stdout", ""))


def _admit(sponsor: Member, voters: list[Member], newcomer: Member) -> str:
    """The whole flow through the CLI: request, propose, pending everywhere, approvals."""
    request_file = newcomer.directory / "join-request.hex"
    genesis = newcomer.directory / "genesis.json"
    _ok(cli(newcomer, "member", "request", "--consortium", str(genesis), "--out", str(request_file)))
    proposal = _ok(cli(sponsor, "member", "propose", str(request_file))).strip().splitlines()[-1]
    wait_until(lambda: _pending(voters[-1], proposal), 30, "the proposal pending at a voter")
    listing = _ok(cli(voters[-1], "member", "list"))
    assert proposal in listing and "pending" in listing and "expires" in listing
    _approve(voters, proposal)
    return proposal


def _approve(voters: list[Member], proposal: str) -> None:
    """Each voter's operator approves once the proposal shows as pending at its node."""
    for voter in voters:
        wait_until(lambda v=voter: _pending(v, proposal), 30, f"the proposal pending at {voter.name}")
        assert "approve recorded" in _ok(cli(voter, "member", "approve", proposal))


def _pending(member: Member, proposal: str) -> bool:
    status, body = api(member, "GET", "/membership")
    return status == 200 and any(p["id"] == proposal and p["state"] == "pending" for p in body["proposals"])


def _state(member: Member, proposal: str) -> str:
    _, body = api(member, "GET", "/membership")
    return next((p["state"] for p in body["proposals"] if p["id"] == proposal), "")


def _validators(member: Member) -> set[str]:
    return {v["name"] for v in get_json(f"{member.api_url}/validators")["validators"]}


class Flow:
    """Records submitted in a background thread for the length of the test: none may be lost."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members
        self.records: list[Record] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(20)
        while not self.stop.is_set():
            for member in self.members:
                for record in make_records(member, 2, rng):
                    try:
                        if submit(member, record)["result"] == "accepted":
                            self.records.append(record)
                    except OSError:
                        pass
            self.stop.wait(0.3)

    def __enter__(self) -> Flow:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_admit_a_validator_remove_one_admit_an_audit_node(
    tmp_path: Path, devnet: list[NodeProcess], newcomers: list[NodeProcess]
) -> None:
    a, b, c, d, auditor = devnet
    processes = list(devnet)
    with Flow([a.member, b.member]) as flow:
        # 1. A fifth validator, its config naming only a's address.
        e = _newcomer(tmp_path, "hospital-e", "validator", a.member, newcomers)
        processes.append(e)
        proposal = _admit(a.member, [a.member, b.member, c.member], e.member)
        wait_until(lambda: "hospital-e" in _validators(a.member), 60, "hospital-e a validator")
        wait_until(lambda: _state(c.member, proposal) == "effective", 30, "the proposal effective")
        joined_at = get_json(f"{a.member.api_url}/status")["height"]
        wait_for_height(processes, joined_at + 3, timeout_s=60)  # the newcomer synced and keeps up
        wait_until(lambda: e.member.sign_key.hex() in _signers(a.member, joined_at), 60, "hospital-e voting")

        # 2. One of the original four leaves; it is cut off at once.
        removal = _ok(cli(a.member, "member", "propose", "--remove", "hospital-d")).strip().splitlines()[-1]
        _approve([a.member, b.member, c.member, e.member], removal)
        wait_until(lambda: "hospital-d" not in _validators(a.member), 60, "hospital-d removed")
        wait_until(
            lambda: all(p["name"] != "hospital-d" for p in get_json(f"{a.member.api_url}/peers")["peers"]),
            30,
            "hospital-d disconnected",
        )
        d.stop()
        processes.remove(d)

        # 3. A new audit node.
        f = _newcomer(tmp_path, "regulator-2", "audit", b.member, newcomers)
        processes.append(f)
        _admit(b.member, [a.member, b.member, c.member], f.member)
        wait_until(lambda: "regulator-2" in _names(a.member, "audit"), 60, "regulator-2 an audit node")

    # No record lost, every node agrees on every block hash.
    wait_until(
        lambda: all(is_committed(p.member, r) for p in (e, f, auditor) for r in flow.records),
        90,
        "every record on the newcomers and the audit node",
    )
    assert len(flow.records) > 20
    top = min(get_json(f"{p.member.api_url}/status")["height"] for p in processes)
    reference = block_hashes(a.member, top)
    for process in processes:
        assert block_hashes(process.member, top) == reference, process.member.name
    # A refusal says what f would become: four validators are the floor.
    refused = cli(a.member, "member", "propose", "--remove", "hospital-c")
    assert refused.returncode == 5 and "f would become 0" in refused.stderr


def _signers(member: Member, from_height: int) -> set[str]:
    """Validators whose precommits are in the certificates of blocks from ``from_height`` on."""
    body = get_json(f"{member.api_url}/blocks?from={from_height}&to={from_height + 50}")
    return {
        s["validator"] for block in body["blocks"] for s in (block["certificate"] or {}).get("signatures", [])
    }


def _names(member: Member, role: str) -> set[str]:
    _, body = api(member, "GET", "/membership")
    return {m["name"] for m in body["members"] if m["role"] == role}
