"""``mftp-node member ...``: joining and leaving the consortium, through the chain.

* ``member request --consortium GENESIS_OR_URL --config node.toml``: on the newcomer's node,
  after ``init``: take the genesis (a file, or a member's API URL, from which it is fetched and
  saved as this node's genesis file), print its hash to compare with a member out of band, and
  write the signed join request (name, country, role, addresses, data-plane URL, key).
* ``member propose REQUEST_FILE`` (a sponsoring member), ``member propose --remove NAME``,
  ``member propose --power NAME=N``: put the proposal on the chain; prints its id.
* ``member approve ID`` / ``member reject ID``: this validator's vote, on the chain.
* ``member list``: members with their directory entries, open proposals with expiry and votes.
* ``member leave``: propose to remove this node itself.

Every call but ``request`` goes through the running node's API with the operator's token
(:func:`api_client`, the one place that chooses it).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from mftp.crypto.keyfile import load_identity
from mftp.ledger.genesis import MAX_GENESIS_BYTES, Genesis
from mftp.ledger.membership import make_join_request

from ..clock import SYSTEM_CLOCK
from ..config import load_config
from ..errors import NodeError, NodeUsageError
from .transfers import EXIT_OK, ApiClient, _refused

MAX_REQUEST_FILE_BYTES: Final = 16 * 1024


def api_client(args: argparse.Namespace) -> ApiClient:
    """The node's API with the operator's credentials (today the node's API token file).

    The one place that picks the credential, so sign-in (``mftp-node login``) can replace it.
    """
    return ApiClient(args.config, args.token_file)


def run_member(args: argparse.Namespace) -> int:
    """Dispatch to the ``member`` sub-command."""
    return int(args.member_handler(args))


# ------------------------------------------------------------------------------ request


def _fetch_genesis(url: str) -> Genesis:
    target = url.rstrip("/") + "/membership/genesis"
    try:
        with urllib.request.urlopen(target, timeout=30) as response:
            data = response.read(MAX_GENESIS_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise NodeError(f"cannot fetch the genesis from {target}: {exc}") from None
    if len(data) > MAX_GENESIS_BYTES:
        raise NodeUsageError(f"the genesis at {target} is larger than {MAX_GENESIS_BYTES} bytes")
    return Genesis.from_json(data.decode("utf-8", errors="replace"))


def _request(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    identity = load_identity(
        config.resolve("node", "identity_file"), passphrase=os.environ.get("MFTP_KEY_PASSPHRASE") or None
    )
    genesis_path = config.resolve("node", "genesis_file")
    if args.consortium.startswith(("http://", "https://")):
        genesis = _fetch_genesis(args.consortium)
        genesis.save(genesis_path)
        print(f"saved the consortium's genesis as {genesis_path}")
    else:
        genesis = Genesis.load(Path(args.consortium))
        if Path(args.consortium).resolve() != genesis_path:
            genesis.save(genesis_path)
    addresses = [a for a in config.get("p2p", "listen") if "/0.0.0.0/" not in a]
    host, _, port = config.get("transfer", "data_listen").rpartition(":")
    request = make_join_request(
        identity,
        chain_id=genesis.chain_id,
        genesis_hash=genesis.hash,
        role=config.role,
        name=config.get("node", "name"),
        country=config.get("node", "country"),
        addresses=addresses,
        data_url=f"https://{host}:{port}" if host not in ("0.0.0.0", "[::]") else "",
        time_ms=SYSTEM_CLOCK.now_ms(),
    )
    out = Path(args.out) if args.out else config.path.parent / "join-request.hex"
    out.write_text(request.hex() + "\n", encoding="utf-8")
    print(f"join request for {genesis.consortium!r} ({genesis.chain_id}) written to {out}")
    print(f"  genesis hash  {genesis.hash.hex()} (compare it with a member's before you go on)")
    print(f"  public key    {identity.public.sign_key.hex()}")
    print("  give the file to a member, who runs: mftp-node member propose <file>")
    return EXIT_OK


# ------------------------------------------------------------------------------ through the API


def _propose(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.expires_in_s is not None:
        body["expires_in_s"] = str(args.expires_in_s)
    if args.request:
        path = Path(args.request)
        if path.stat().st_size > MAX_REQUEST_FILE_BYTES:
            raise NodeUsageError(f"{path} is too large for a join request")
        body["request"] = path.read_text(encoding="utf-8").strip()
        if args.power is not None:
            body["power"] = str(args.power)
    elif args.remove or args.set_power:
        name = args.remove or args.set_power.partition("=")[0]
        body["action"] = "remove" if args.remove else "power"
        body["member"] = _member_key(args, name)
        if args.set_power:
            body["power"] = args.set_power.partition("=")[2]
    else:
        raise NodeUsageError("give a join request file, --remove NAME or --power NAME=N")
    status, answer = api_client(args).call("POST", "/membership/proposals", body)
    if status != 202:
        return _refused("member propose", status, answer)
    print(answer["proposal_id"])
    return EXIT_OK


def _member_key(args: argparse.Namespace, name: str) -> str:
    status, answer = api_client(args).call("GET", "/membership")
    if status != 200:
        raise NodeError(f"cannot list the members (HTTP {status})")
    for member in answer["members"]:
        if name in (member["name"], member["sign_key"]) and member["role"] != "candidate":
            return str(member["sign_key"])
    raise NodeUsageError(f"no member named {name!r}")


def _vote(args: argparse.Namespace, vote: str) -> int:
    proposal = args.proposal_id.strip().lower()
    status, answer = api_client(args).call("POST", f"/membership/proposals/{proposal}/votes", {"vote": vote})
    if status != 202:
        return _refused(f"member {'approve' if vote == 'approve' else 'reject'}", status, answer)
    print(f"{vote} recorded ({answer['vote_id']})")
    return EXIT_OK


def _leave(args: argparse.Namespace) -> int:
    status, answer = api_client(args).call("POST", "/membership/leave", {})
    if status != 202:
        return _refused("member leave", status, answer)
    print(answer["proposal_id"])
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    status, answer = api_client(args).call("GET", "/membership")
    if status != 200:
        return _refused("member list", status, answer)
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    print("members")
    for m in answer["members"]:
        power = f" power {m['power']}" if m["role"] == "validator" else ""
        print(f"  {m['name']:<20} {m['role']:<9}{power:<9} {m['country'] or '--':<3} {m['data_url'] or ''}")
    print("proposals")
    for p in answer["proposals"]:
        if p["state"] == "pending":
            print(
                f"  {p['id']}  pending   {p['action']} {p['role']} {p['name']}  approved "
                f"{p['approved_power']}/{p['total_power']}  expires {_when(p['expires_ms'])}"
            )
        else:
            print(f"  {p['id']}  {p['state']:<9} at height {p['height']}")
    return EXIT_OK


def _when(ms: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------ arguments


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the node's node.toml")
    parser.add_argument("--token-file", help="API token file (default keys/api.token beside node.toml)")


def add_member_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``member`` sub-commands and their arguments."""
    sub = parser.add_subparsers(dest="member_command", required=True, metavar="MEMBER_COMMAND")

    request = sub.add_parser("request", help="newcomer: write a signed join request (after init)")
    request.add_argument("--consortium", required=True, help="the genesis file, or a member's API URL")
    request.add_argument("--out", help="where to write the request (default join-request.hex)")
    request.set_defaults(member_handler=_request)
    request.add_argument("--config", required=True, help="the newcomer's node.toml")

    propose = sub.add_parser("propose", help="sponsor: propose adding, removing or re-weighting a member")
    propose.add_argument("request", nargs="?", help="a newcomer's join request file")
    propose.add_argument("--power", type=int, help="voting power of a validator added (default 1)")
    propose.add_argument("--remove", metavar="NAME", help="propose removing this member")
    propose.add_argument("--set-power", metavar="NAME=N", help="propose a validator's new power")
    propose.add_argument("--expires-in-s", type=int, help="proposal lifetime (default 7 days)")
    propose.set_defaults(member_handler=_propose)
    _common(propose)

    for verb in ("approve", "reject"):
        vote = sub.add_parser(verb, help=f"{verb} an open proposal (a validator's operator)")
        vote.add_argument("proposal_id", help="the proposal's id (see member list)")
        vote.set_defaults(member_handler=lambda a, v=verb: _vote(a, v))
        _common(vote)

    listing = sub.add_parser("list", help="members, their directory entries and open proposals")
    listing.add_argument("--json", action="store_true", help="print the raw JSON")
    listing.set_defaults(member_handler=_list)
    _common(listing)

    leave = sub.add_parser("leave", help="propose to remove this node from the consortium")
    leave.set_defaults(member_handler=_leave)
    _common(leave)
