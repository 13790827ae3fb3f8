#!/usr/bin/env python3
"""The main job of `make demo`: a local consortium on loopback, recording and proving.

Starts a devnet of four hospitals' validators and a regulator's audit-only node
as separate processes, has two hospitals record events, waits until every node
holds them, checks that all five nodes agree block by block, and verifies an
inclusion proof served by the regulator's node with nothing but the genesis
validator set.  Then hospital-a sends a real study (pydicom-data CT, MR, US and
secondary-capture images) to hospital-b in pseudonymised mode with `mftp-node send`,
hospital-b's inbox shows it verified, `mftp-node export` delivers it to
build/demo/export, and the three records (offered, received, accessed) are read back
from the regulator's node.  Finally the audit: alice and bob, two users of hospital-a,
have sent studies (alice twice); the records carry only unlinkable tags.  hospital-a grants
the regulator alice's keys (`mftp-node audit grant`); the regulator's audit-only node scans
the whole verified chain (`mftp-node audit scan`), finds exactly alice's records with their
proofs and disclosed details, and posts its report on the chain (`mftp-node audit report`).
Nobody acts through a shared token: each hospital's operator adds its people (`mftp-node user
add`), each person enrols a TOTP authenticator from a one-time code (the demo computes their
codes from the enrolled secrets, as their phone would) and signs in with `mftp-node login`;
every record names the signed-in user.  Everything lives in build/demo and is stopped at the end.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mftp.ledger.block import BlockHeader, CommitCertificate
from mftp.ledger.genesis import Genesis
from mftp.ledger.proofs import InclusionProof, verify_record_in_ledger
from mftp.node.api_client import bearer_call
from mftp.node.cli.tokens import personal_token_path
from mftp.node.devnet.client import (
    TEST_CONSENSUS,
    api,
    block_hashes,
    get_json,
    is_committed,
    make_records,
    make_study,
    submit,
    wait_until,
)
from mftp.node.devnet.consortium import Member, create_devnet, start_all, stop_all, wait_for_height
from mftp.node.devnet.people import DevnetUser, enrol

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
        # On every node, not only the regulator's: the proof below is asked at the lowest height
        # any node reports, which must already hold the records.
        wait_until(
            lambda: all(is_committed(m, r) for m in members for r in records), 60, "the records on every node"
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
        if not people(a, b, regulator):
            return 1
        sent = send_study(a, b, regulator)
        audited = sent and audit(a, b, regulator)
        return 0 if agree and sent and audited else 1
    finally:
        stop_all(processes)
        say("every node stopped; logs are in build/demo/*/node.log")


PEOPLE = {"alice": 0, "bob": 0, "dr.bea": 1, "inspector": 4}
"""Who works where (index of the member): two senders at hospital-a, a radiologist at hospital-b,
an auditor at the regulator."""


def home(user: str) -> dict[str, str]:
    """The environment of ``user``'s own shell: their config folder keeps their login token."""
    return {**os.environ, "XDG_CONFIG_HOME": str(ROOT / "home" / user)}


def mftp_node(member: Member, *args: str, user: str | None = None, env: dict[str, str] | None = None) -> int:
    """Run ``mftp-node`` against ``member``'s node as ``user`` (signed in), its output shown as is."""
    command = [sys.executable, "-m", "mftp.node.cli.main", *args, "--config", str(member.config_path)]
    return subprocess.run(command, check=False, env=env or (home(user) if user else None)).returncode


def operator(member: Member, *args: str) -> subprocess.CompletedProcess[str]:
    """``mftp-node`` as the hospital's operator service account (keys/api.token)."""
    command = [sys.executable, "-m", "mftp.node.cli.main", *args, "--config", str(member.config_path),
               "--token-file", str(member.directory / "keys" / "api.token")]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=False)


def people(a: Member, b: Member, regulator: Member) -> bool:
    """Each operator adds its people; each enrols a TOTP authenticator and signs in with the CLI."""
    members = {0: a, 1: b, 4: regulator}
    say("\nno shared token: each institution's operator adds its people, who sign in with a second factor")
    for name, where in PEOPLE.items():
        member, role = members[where], "auditor" if name == "inspector" else "clinician"
        say(f"$ mftp-node user add {name} --role {role}   (the operator of {member.name})")
        added = operator(member, "user", "add", name, "--role", role)
        if added.returncode != 0:
            say(added.stderr)
            return False
        code = added.stdout.split()[-1]  # the one-time code the operator hands over in person
        user, _ = enrol(member, name, code=code)  # the code, a password, the TOTP secret
        say(f"  {name} enrolled an authenticator app and got 10 recovery codes")
        if not login(member, user):
            return False
    return True


def login(member: Member, user: DevnetUser) -> bool:
    """``mftp-node login`` with the password and the code the user's authenticator shows now."""
    code = user.code()  # what the phone shows: computed from the enrolled secret
    say(f"$ mftp-node login --name {user.name}   (password, then code {code})")
    env = {**home(user.name), "MFTP_PASSWORD": user.password, "MFTP_CODE": code}
    return mftp_node(member, "login", "--name", user.name, env=env) == 0


def token_of(member: Member, user: str) -> str:
    """The personal token ``mftp-node login`` keeps for ``user``."""
    env = home(user)["XDG_CONFIG_HOME"]
    previous = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = env
    try:
        return personal_token_path(member.api_url).read_text().strip()
    finally:
        if previous is None:
            del os.environ["XDG_CONFIG_HOME"]
        else:
            os.environ["XDG_CONFIG_HOME"] = previous


def send_study(a: Member, b: Member, regulator: Member) -> bool:
    """Send a real study from a to b, show b's inbox, export it, print the three records."""
    originals = make_study(ROOT / "study")
    size = sum(p.stat().st_size for p in (ROOT / "study").iterdir())
    say(f"\n{a.name} sends a study of {len(originals)} images ({size / 1e6:.1f} MB) to {b.name}:")
    say(f"$ mftp-node send {ROOT / 'study'} --to {b.name} --purpose TREAT   (alice, signed in)")
    started = time.monotonic()
    if mftp_node(a, "send", str(ROOT / "study"), "--to", b.name, "--purpose", "TREAT", user="alice") != 0:
        return False
    say(f"sent, fetched and verified in {time.monotonic() - started:.1f} s")
    say(f"\n$ mftp-node inbox   (dr.bea at {b.name})")
    mftp_node(b, "inbox", user="dr.bea")
    _, body = api(b, "GET", "/transfers")
    received = body["transfers"][0]
    say(f"\n$ mftp-node export {received['transfer_id']} {ROOT / 'export'}   (dr.bea at {b.name})")
    if mftp_node(b, "export", received["transfer_id"], str(ROOT / "export"), user="dr.bea") != 0:
        return False
    _, sent = api(a, "GET", f"/transfers/{received['transfer_id']}")
    _, held = api(b, "GET", f"/transfers/{received['transfer_id']}")
    ids = [sent["offer_record"], held["received_record"], held["access_records"][-1]]
    wait_until(lambda: all(_committed(regulator, rid) for rid in ids), 60, "the transfer records")
    say("\nthe transfer's records, as the regulator's node holds them:")
    for rid in ids:
        view = get_json(f"{regulator.api_url}/records/{rid}")
        body_text = ", ".join(f"{k}={str(v)[:16]}" for k, v in sorted(view["body"].items()))
        say(f"  height {view['height']:>3}  {view['type']:<18} by {_name(view['author'], a, b)}  {body_text}")
    return True


def audit(a: Member, b: Member, regulator: Member) -> bool:
    """Two more sends (bob, alice), then the regulator's audit of alice under a grant."""
    offers = {}
    for user, folder, patient in (("bob", "study-2", "PAT-0100"), ("alice", "study-3", "PAT-0200")):
        make_study(ROOT / folder, patient_id=patient)
        say(f"\n$ mftp-node send {ROOT / folder} --to {b.name} --no-wait   ({user}, signed in)")
        body = {"source": str(ROOT / folder), "to": b.name, "purpose": "TREAT", "mode": "pseudonymised"}
        status, answer = bearer_call(a.api_url, token_of(a, user), "POST", "/transfers", body)
        if status != 202:
            say(f"refused: {answer}")
            return False
        offers[answer["transfer_id"]] = user
    wait_until(
        lambda: all(api(a, "GET", f"/transfers/{t}")[1]["state"] == "delivered" for t in offers),
        90,
        "delivery",
    )
    _, listing = api(a, "GET", "/transfers")
    records = [t["offer_record"] for t in listing["transfers"]]
    wait_until(lambda: all(_committed(regulator, r) for r in records), 60, "the offers")
    tags = [tag for r in records for tag in get_json(f"{regulator.api_url}/records/{r}")["tags"]]
    say(
        f"\nwithout a grant: the {len(records)} offer records (alice 2, bob 1) carry {len(tags)} tags, "
        f"{len(set(tags))} distinct: nothing on the chain links a user's records"
    )
    today = time.strftime("%Y-%m")
    expires = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 90 * 86400))
    say(f"\n$ mftp-node audit grant --subject user:alice --auditor {regulator.name} ...   (at {a.name})")
    grant = operator(
        a, "audit", "grant", "--subject", "user:alice", "--auditor", regulator.name,
        "--legal-basis", "GDPR Art. 58(1)(b); inspection 2026-17", "--from", today, "--to", today,
        "--expires", expires,
    )  # fmt: skip
    if grant.returncode != 0:
        say(grant.stderr)
        return False
    grant_id = grant.stdout.strip()
    say(f"grant {grant_id}")
    wait_until(lambda: _committed(regulator, grant_id), 60, "the grant on the regulator's node")
    say(f"\n$ mftp-node audit report --grant {grant_id}   (inspector at {regulator.name})")
    if mftp_node(regulator, "audit", "report", "--grant", grant_id, user="inspector") != 0:
        return False
    _, scan = bearer_call(
        regulator.api_url, token_of(regulator, "inspector"), "POST", "/audit/scans", {"grant_id": grant_id}
    )
    alice = {t["offer_record"] for t in listing["transfers"] if t["user"] == "user:alice"}
    exact = {m["record_id"] for m in scan["matches"] if m["type"] == "transfer_offered"} == alice
    say(f"the regulator found every offer of alice and none of bob's: {exact}")
    return exact


def _committed(member: Member, record_id: str) -> bool:
    try:
        get_json(f"{member.api_url}/records/{record_id}")
    except OSError:
        return False
    return True


def _name(author: str, *members: Member) -> str:
    return next((m.name for m in members if m.sign_key.hex() == author), author[:12])


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
