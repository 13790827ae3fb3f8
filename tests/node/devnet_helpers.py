"""Helpers for tests that run a devnet of real node processes on loopback."""

from __future__ import annotations

import base64
import json
import os
import random
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from mftp.crypto.keyfile import load_identity
from mftp.ledger.records import TAG_SLOTS, Record, RecordType, make_record
from mftp.node.devnet import Member, NodeProcess

# Fast but not hair-trigger timeouts for 5 processes on 2 shared cores.
TEST_CONSENSUS = {
    "timeout_propose_ms": 1500,
    "timeout_propose_delta_ms": 500,
    "timeout_prevote_ms": 500,
    "timeout_prevote_delta_ms": 500,
    "timeout_precommit_ms": 500,
    "timeout_precommit_delta_ms": 500,
    "timeout_commit_ms": 300,
}


def get_json(url: str, timeout_s: float = 5.0) -> Any:
    """GET and decode JSON."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def make_records(member: Member, count: int, rng: random.Random) -> list[Record]:
    """``count`` records signed with ``member``'s node key."""
    identity = load_identity(member.directory / "keys" / "node.key")
    now = int(time.time() * 1000)
    return [
        make_record(
            identity,
            RecordType.STUDY_ACCESSED,
            {"transfer_id": rng.randbytes(16), "action": "view", "purpose": "TREAT"},
            record_id=rng.randbytes(16),
            time_ms=now,
            tags=tuple(rng.randbytes(16) for _ in range(TAG_SLOTS)),
        )
        for _ in range(count)
    ]


def submit(member: Member, record: Record) -> dict[str, Any]:
    """POST one record to ``member``'s API with its token."""
    body = json.dumps({"record": base64.b64encode(record.to_bytes()).decode()}).encode()
    request = urllib.request.Request(f"{member.api_url}/records", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {member.token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def is_committed(member: Member, record: Record) -> bool:
    """Whether ``member``'s node has ``record`` in a stored block."""
    try:
        get_json(f"{member.api_url}/records/{record.record_id.hex()}")
    except OSError:
        return False
    return True


def block_hashes(member: Member, up_to: int) -> list[str]:
    """Block hashes 1..up_to as ``member``'s node reports them."""
    hashes: list[str] = []
    start = 1
    while start <= up_to:
        end = min(up_to, start + 99)
        body = get_json(f"{member.api_url}/blocks?from={start}&to={end}")
        hashes += [b["header"]["hash"] for b in body["blocks"]]
        start = end + 1
    return hashes


def heights(processes: Sequence[NodeProcess]) -> dict[str, int]:
    """Heights of the running processes that answer."""
    out = {}
    for process in processes:
        status = process.status()
        if status is not None:
            out[process.member.name] = int(status["height"])
    return out


def environment_without_passphrase() -> dict[str, str]:
    """The environment for child processes (no key passphrase: devnet keys are plain)."""
    env = dict(os.environ)
    env.pop("MFTP_KEY_PASSPHRASE", None)
    return env
