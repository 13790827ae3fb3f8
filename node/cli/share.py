"""``mftp-node share``: share received studies with their patient through a running node's API.

* ``share create TRANSFER_ID [...] --until YYYY-MM-DD [--from D] [--max-opens N] [--download]
  [--mode M] [--label TEXT] [--qr FILE]``: prints the link and the code once (the node keeps
  only their hashes); ``--qr`` writes a QR code of the link (SVG, mode 0600) for the discharge
  sheet.  The node records the share on the ledger before it answers.
* ``share list``: every share of the node, with its state and opens (never a link or a code).
* ``share revoke SHARE_ID``: ends the share at once; prints when it took effect.

Exit codes as every command: 5 when the node refused (an unknown transfer, another patient's
study in the set, bad dates), 1 when it could not be reached.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import NodeUsageError
from ..private_files import write_private
from .transfers import EXIT_OK, _client, _common, _refused


def add_share_arguments(parser: argparse.ArgumentParser) -> None:
    """``share create|list|revoke``."""
    actions = parser.add_subparsers(dest="share_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="share received studies of one patient with that patient")
    create.add_argument("transfer_ids", nargs="+", metavar="TRANSFER_ID", help="received studies (1 to 16)")
    create.add_argument("--until", required=True, help="the last day the link works (YYYY-MM-DD, UTC)")
    create.add_argument("--from", dest="start", help="the first day it works (default: now)")
    create.add_argument("--max-opens", type=int, default=10, help="how many times the code may open it")
    create.add_argument("--download", action="store_true", help="allow downloading the files (ZIP)")
    create.add_argument(
        "--mode",
        default="identified",
        choices=("identified", "pseudonymised", "deidentified", "anonymous"),
        help="de-identification of what the patient gets (default identified: it is their own data)",
    )
    create.add_argument("--label", default="", help="a note the patient sees, e.g. 'CT of 12 March'")
    create.add_argument("--qr", help="write a QR code of the link to this SVG file (mode 0600)")
    _common(create)
    listing = actions.add_parser("list", help="the node's shares and their states")
    _common(listing)
    revoke = actions.add_parser("revoke", help="end a share at once (recorded on the ledger)")
    revoke.add_argument("share_id", help="the share's id (from create or list)")
    _common(revoke)


def run_share(args: argparse.Namespace) -> int:
    """The body of ``share``."""
    client = _client(args)
    if args.share_action == "create":
        qr = Path(args.qr) if args.qr else None
        if qr is not None and (qr.exists() or not qr.parent.is_dir()):
            raise NodeUsageError(f"--qr {qr}: exists already, or its folder does not")
        body: dict[str, Any] = {
            "transfer_ids": list(args.transfer_ids),
            "until": args.until,
            "max_opens": args.max_opens,
            "download": bool(args.download),
            "mode": args.mode,
            "label": args.label,
        }
        if args.start:
            body["from"] = args.start
        status, answer = client.call("POST", "/shares", body)
        if status != 201:
            return _refused("share create", status, answer)
        print(f"share {answer['share_id']}: {len(answer['transfer_ids'])} study(ies), {_terms(answer)}")
        print(f"  link  {answer['link']}")
        print(f"  code  {answer['code']}   (give it to the patient apart from the link)")
        if qr is not None:
            write_private(qr, answer["qr_svg"])
            print(f"  QR code of the link written to {qr}")
        return EXIT_OK
    if args.share_action == "list":
        status, answer = client.call("GET", "/shares")
        if status != 200:
            return _refused("share list", status, answer)
        for share in answer["shares"]:
            print(
                f"{share['share_id']}  {share['state']:<9}  opens {share['opens']}/{share['max_opens']}  "
                f"{_terms(share)}  {share['label']}"
            )
        return EXIT_OK
    status, answer = client.call("POST", f"/shares/{quote(args.share_id, safe='')}/revoke", {})
    if status != 200:
        return _refused("share revoke", status, answer)
    print(f"share {answer['share_id']} revoked at {_when(answer['revoked_ms'])}; its links no longer open")
    return EXIT_OK


def _when(time_ms: int) -> str:
    return datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _terms(share: dict[str, Any]) -> str:
    what = "view and download" if share["download"] else "view only"
    return f"{what}, {share['mode']}, until {_when(share['until_ms'] - 60_000)}"
