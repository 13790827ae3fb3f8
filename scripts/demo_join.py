#!/usr/bin/env python3
"""`make demo-join`: a hospital joins a running consortium, end to end, in under a minute.

A devnet of four hospital validators runs on loopback.  hospital-e, a newcomer, runs
`mftp-node init`-style set-up with a config that names a single bootstrap address, and
`mftp-node member request` writes its signed join request.  hospital-a sponsors it
(`member propose`); the proposal shows as pending at every member with its expiry; hospital-a,
-b and -c approve (`member approve`), on the chain.  Once approvals hold more than 2/3 of the
power the change commits; hospital-e, which has synced the whole chain meanwhile, votes from
the height the change takes effect.  It then sends its first study to hospital-b, which it
found (address, data-plane URL, country) in the chain's member directory.  Everything lives in
build/demo-join and is stopped at the end; the exit code is 0 only if every step worked.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from mftp.node.devnet.client import TEST_CONSENSUS, api, cli_command, get_json, make_study, wait_until
from mftp.node.devnet.consortium import (
    Member,
    NodeProcess,
    create_devnet,
    start_all,
    stop_all,
    wait_for_height,
)
from mftp.node.devnet.newcomer import add_newcomer
from mftp.node.p2p.network import peer_id_from_sign_key

ROOT = Path(__file__).resolve().parent.parent / "build" / "demo-join"


def say(text: str) -> None:
    print(text, flush=True)


def mftp_node(member: Member, *args: str, quiet: bool = False, as_user: str | None = None) -> tuple[int, str]:
    """Run ``mftp-node`` against ``member``'s node as its operator (or a signed-in ``as_user``).

    Membership votes are the operators' (the devnet's operator service account); a study is sent
    by a clinician enrolled with a second factor (see :mod:`mftp.node.devnet.people`).
    """
    done = subprocess.run(
        cli_command(member, *args, as_user=as_user), capture_output=True, text=True, check=False
    )
    if not quiet:
        for line in (done.stdout + done.stderr).strip().splitlines():
            say(f"    {line}")
    return done.returncode, done.stdout


def pending_at(member: Member, proposal: str) -> bool:
    status, body = api(member, "GET", "/membership")
    return status == 200 and any(p["id"] == proposal and p["state"] == "pending" for p in body["proposals"])


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(ROOT, ignore_errors=True)
    members = create_devnet(ROOT, validators=4, audit=0, consensus=TEST_CONSENSUS)
    processes = start_all(members)
    try:
        return run(members, processes, started)
    finally:
        stop_all(processes)


def run(members: list[Member], processes: list[NodeProcess], started: float) -> int:
    a, b, c, _d = members
    wait_for_height(processes, 1, timeout_s=60)
    say(f"a consortium of four hospitals runs in {ROOT} (each its own process)")
    newcomer = add_newcomer(
        ROOT, "hospital-e", role="validator", bootstrap=a, bootstrap_peer_id=peer_id_from_sign_key(a.sign_key)
    )
    say(f"\nhospital-e is set up; its node.toml names one bootstrap address: {a.p2p_address}/p2p/...")
    e = NodeProcess(newcomer)
    e.start()
    e.wait_ready()
    processes.append(e)
    say("\n$ mftp-node member request --consortium genesis.json   (at hospital-e)")
    code, _ = mftp_node(
        newcomer, "member", "request", "--consortium", str(newcomer.directory / "genesis.json")
    )
    if code:
        return code
    say("\n$ mftp-node member propose join-request.hex   (at hospital-a, the sponsor)")
    code, out = mftp_node(a, "member", "propose", str(newcomer.directory / "join-request.hex"))
    if code:
        return code
    proposal = out.strip().splitlines()[-1]
    wait_until(lambda: all(pending_at(m, proposal) for m in members), 30, "the proposal at every member")
    say("\n$ mftp-node member list   (at hospital-c: pending, with its expiry)")
    mftp_node(c, "member", "list")
    for voter in (a, b, c):
        say(f"\n$ mftp-node member approve {proposal[:12]}...   (at {voter.name})")
        code, _ = mftp_node(voter, "member", "approve", proposal)
        if code:
            return code
    wait_until(
        lambda: any(v["name"] == "hospital-e" for v in get_json(f"{a.api_url}/validators")["validators"]),
        60,
        "hospital-e in the validator set",
    )
    joined = get_json(f"{a.api_url}/status")["height"]
    say(f"\napproved by 3 of 4: hospital-e is a validator from height {joined}")
    wait_for_height(processes, joined + 2, timeout_s=60)
    wait_until(lambda: signed_since(a, newcomer, joined), 60, "hospital-e's first vote in a certificate")
    status = get_json(f"{newcomer.api_url}/status")
    say(f"hospital-e synced to height {status['height']} and its precommits certify blocks since {joined}")
    wait_until(lambda: knows(newcomer, "hospital-b"), 60, "hospital-b's entry in hospital-e's directory")
    make_study(ROOT / "study")
    say("\n$ mftp-node send study --to hospital-b --purpose TREAT   (at hospital-e: its first study)")
    code, _ = mftp_node(
        newcomer, "send", str(ROOT / "study"), "--to", "hospital-b", "--purpose", "TREAT", as_user="dr.eva"
    )
    if code:
        return code
    say("\n$ mftp-node inbox   (at hospital-b)")
    mftp_node(b, "inbox", as_user="dr.berg")
    say(f"\nthe joining story took {time.monotonic() - started:.0f} s")
    return 0


def signed_since(member: Member, newcomer: Member, height: int) -> bool:
    body = get_json(f"{member.api_url}/blocks?from={height}&to={height + 50}")
    signers = {
        s["validator"] for blk in body["blocks"] for s in (blk["certificate"] or {}).get("signatures", [])
    }
    return newcomer.sign_key.hex() in signers


def knows(member: Member, name: str) -> bool:
    status, body = api(member, "GET", "/membership")
    return status == 200 and any(m["name"] == name and m["data_url"] for m in body["members"])


if __name__ == "__main__":
    sys.exit(main())
