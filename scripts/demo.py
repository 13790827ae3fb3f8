#!/usr/bin/env python3
"""The main job of `make demo`: a local consortium on loopback, recording and proving.

Starts a devnet of four hospitals' validators and a regulator's audit-only node
as separate processes, has two hospitals record events, waits until every node
holds them, checks that all five nodes agree block by block, and verifies an
inclusion proof served by the regulator's node with nothing but the genesis
validator set.  (Later work adds a real study sent between hospitals and the
regulator's audit of it.)  Everything lives in build/demo and is stopped at the end.
"""

from __future__ import annotations

import base64
import random
import shutil
import sys
import time
from pathlib import Path

from mftp.ledger.block import BlockHeader, CommitCertificate
from mftp.ledger.genesis import Genesis
from mftp.ledger.proofs import InclusionProof, verify_record_in_ledger
from mftp.node.devnet import create_devnet, start_all, stop_all, wait_for_height

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.node.devnet_helpers import (
    TEST_CONSENSUS,
    block_hashes,
    get_json,
    is_committed,
    make_records,
    submit,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent / "build" / "demo"


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    shutil.rmtree(ROOT, ignore_errors=True)
    members = create_devnet(ROOT, validators=4, audit=1, consensus=TEST_CONSENSUS)
    say(f"devnet in {ROOT}: 4 hospital validators and 1 regulator audit node, each its own process")
    processes = start_all(members)
    try:
        for member in members:
            say(f"  {member.name:13} {member.role:9} API {member.api_url}")
        wait_for_height(processes, 1, timeout_s=60)
        a, b, regulator = members[0], members[1], members[4]
        rng = random.Random(2026)
        records = make_records(a, 3, rng) + make_records(b, 2, rng)
        for record, member in zip(records, [a, a, a, b, b], strict=True):
            result = submit(member, record)
            kind = record.type.name.lower()
            say(f"{member.name} records {kind} {record.record_id.hex()[:12]}: {result['result']}")
        wait_until(
            lambda: all(is_committed(regulator, r) for r in records), 60, "the records on the regulator"
        )
        for member in members:
            status = get_json(f"{member.api_url}/status")
            sync = status["sync"]["state"]
            say(f"  {member.name:13} height {status['height']:>4}  peers {status['peers']}  sync {sync}")
        height = min(get_json(f"{m.api_url}/status")["height"] for m in members)
        reference = block_hashes(a, height)
        agree = all(block_hashes(m, height) == reference for m in members[1:])
        say(f"all five nodes report the same hash for each of the {height} blocks: {agree}")
        proof = get_json(
            f"{regulator.api_url}/proofs/inclusion/{records[-1].record_id.hex()}?height={height}"
        )
        genesis = Genesis.load(regulator.directory / "genesis.json")
        header = _header(regulator.api_url, height)
        cert = CommitCertificate.from_value(_cert_value(proof["certificate"]))
        inclusion = InclusionProof(
            proof["ledger_index"], proof["ledger_size"], tuple(bytes.fromhex(p) for p in proof["path"])
        )
        record = verify_record_in_ledger(
            base64.b64decode(proof["record_bytes"]), inclusion, header, cert, genesis.validators
        )
        say(
            f"regulator's proof that record {record.record_id.hex()[:12]} is in the ledger of "
            f"{inclusion.ledger_size} records at height {height}: verified with the genesis validators only"
        )
        return 0 if agree else 1
    finally:
        stop_all(processes)
        say("every node stopped; logs are in build/demo/*/node.log")


def _header(api_url: str, height: int) -> BlockHeader:
    view = get_json(f"{api_url}/blocks/{height}")["header"]
    value = {k: bytes.fromhex(v) if k in _HEX_FIELDS else v for k, v in view.items() if k != "hash"}
    return BlockHeader.from_value(value)


_HEX_FIELDS = {"prev", "proposer", "records_root", "ledger_root", "validators", "last_commit"}


def _cert_value(view: dict) -> dict:
    return {
        "height": view["height"],
        "round": view["round"],
        "block": bytes.fromhex(view["block_hash"]),
        "sigs": [bytes.fromhex(s["validator"]) + bytes.fromhex(s["signature"]) for s in view["signatures"]],
    }


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    say(f"demo finished in {time.monotonic() - started:.0f} s")
    sys.exit(code)
