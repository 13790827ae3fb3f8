"""``mftp-node audit ...``: users, grants, scans and reports through a running node's API.

* ``audit add-user NAME``: register a user of this institution (a sender elsewhere may then
  name it with ``send --to-user``).
* ``audit grant --subject user:alice --auditor regulator --legal-basis ... --from 2026-01
  --to 2026-12 --expires 2027-03-31``: run at the subject's home institution; prints the grant id.
* ``audit scan --grant ID [--format json|fhir|dicom] [--out FILE]``: run at the auditor's node;
  lists every record of the subject with its proof and disclosed details, and the statement of
  completeness (for a patient, the HIPAA accounting of disclosures).
* ``audit report --grant ID``: scan, then post the ``AUDIT_REPORT`` record.
* ``audit bundle --grant ID --out FILE``: the scan as a bundle signed by the audit node.
* ``audit verify FILE --genesis genesis.json``: check a bundle offline (no node, no network):
  the audit node's signature and every proof against the genesis validators; exit 4 if not.
* ``audit rotate PARTY [--reason scheduled|compromise|erasure]``: new master key from next month,
  or crypto-shredding of the party (after its retention period); posts ``KEY_ROTATION``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from mftp.ledger.errors import LedgerError
from mftp.ledger.genesis import Genesis

from ..audit.bundle import BundleInvalid, verify_bundle
from .transfers import EXIT_CONFIG, EXIT_OK, ApiClient, _refused

EXIT_VERIFY: Final = 4  # as cli.main: verification failed

AUDIT_TIMEOUT_S: Final = 600.0  # a scan of a large chain takes a while


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.config, args.token_file, timeout_s=AUDIT_TIMEOUT_S)


def run_audit(args: argparse.Namespace) -> int:
    """Dispatch to the ``audit`` sub-command."""
    return int(args.audit_handler(args))


def _add_user(args: argparse.Namespace) -> int:
    status, answer = _client(args).call("POST", "/audit/users", {"user": args.name})
    if status != 200:
        return _refused("audit add-user", status, answer)
    print(f"registered {answer['user']}")
    return EXIT_OK


def _grant(args: argparse.Namespace) -> int:
    body = {
        "subject": args.subject,
        "auditor": args.auditor,
        "legal_basis": args.legal_basis,
        "purpose": args.purpose,
        "from": args.month_from,
        "to": args.month_to,
        "expires": args.expires,
    }
    if args.notify_after:
        body["notify_after"] = args.notify_after
    status, answer = _client(args).call("POST", "/audit/grants", body)
    if status != 202:
        return _refused("audit grant", status, answer)
    print(answer["grant_id"])
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    status, answer = _client(args).call(
        "POST", "/audit/rotations", {"party": args.party, "reason": args.reason}
    )
    if status != 202:
        return _refused("audit rotate", status, answer)
    print(f"key rotation record {answer['record']}")
    return EXIT_OK


def _print_scan(view: dict[str, Any]) -> None:
    print(f"grant {view['grant_id']} from {view['institution']}: {view['subject']} ({view['legal_basis']})")
    for match in view["matches"]:
        details = ", ".join(f"{k}={v}" for k, v in sorted(match["disclosed"].items()) if v != "")
        print(
            f"  #{match['ledger_index']:<7} {match['time']}  {match['type']:<18} by {match['author']:<12} "
            f"{'/'.join(match['roles'])}  proof ok  {details}".rstrip()
        )
    for row in view.get("accounting", []):
        exempt = f"  [exempt: {row['exempt']}]" if row["exempt"] else ""
        print(
            f"  disclosure {row['date']} to {row['recipient']}: {row['description']} "
            f"({row['purpose']}){exempt}"
        )
    for note in view["notes"]:
        print(f"  note: {note}")
    print(view["statement"])
    if view.get("report_record"):
        print(f"report record {view['report_record']}")


def _scan(args: argparse.Namespace, path: str, expected: int) -> int:
    body = {"grant_id": args.grant}
    if path == "/audit/scans":
        body["format"] = args.format
    status, answer = _client(args).call("POST", path, body)
    if status != expected:
        return _refused("audit " + ("scan" if expected == 200 else "report"), status, answer)
    if getattr(args, "out", None):
        Path(args.out).write_text(json.dumps(answer, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    elif getattr(args, "format", "json") != "json" or args.json:
        if args.format == "dicom" and not args.json:
            sys.stdout.write("".join(answer["messages"]))
        else:
            print(json.dumps(answer, indent=2))
    else:
        _print_scan(answer)
    return EXIT_OK


def _bundle(args: argparse.Namespace) -> int:
    status, answer = _client(args).call("POST", "/audit/bundles", {"grant_id": args.grant})
    if status != 200:
        return _refused("audit bundle", status, answer)
    Path(args.out).write_text(json.dumps(answer, indent=1) + "\n", encoding="utf-8")
    print(f"wrote the signed bundle of {answer['content']['scan']['match_count']} matches to {args.out}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    """Verify a bundle offline: exit 0 if it holds, 4 if not, 3 if the genesis file is unusable."""
    try:
        genesis = Genesis.load(Path(args.genesis))
    except (OSError, ValueError, LedgerError) as exc:
        print(f"audit verify: cannot read the genesis file: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"audit verify: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_VERIFY
    try:
        summary = verify_bundle(data, genesis)
    except BundleInvalid as exc:
        print(f"audit verify: NOT VERIFIED: {exc}", file=sys.stderr)
        return EXIT_VERIFY
    print(
        f"verified: {summary['matches']} matches of {summary['subject']} (grant {summary['grant_id']}), "
        f"complete to ledger size {summary['ledger_size']} at height {summary['height']}, "
        f"signed by {summary['signer']}"
    )
    return EXIT_OK


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the node's node.toml (API address)")
    parser.add_argument(
        "--token-file",
        help="an API token file to act with (default: the personal token `mftp-node login` keeps)",
    )


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``audit`` sub-commands and their arguments."""
    sub = parser.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")

    add_user = sub.add_parser("add-user", help="register a user of this institution")
    add_user.add_argument("name", help="user name or user:<id>")
    add_user.set_defaults(audit_handler=_add_user)
    _common(add_user)

    grant = sub.add_parser(
        "grant", help="grant an auditor the keys of one party (run at its home institution)"
    )
    grant.add_argument("--subject", required=True, help="user:<id>, patient:<id> or institution:<name>")
    grant.add_argument("--auditor", required=True, help="the auditor member's name")
    grant.add_argument("--legal-basis", required=True, help="regulation and case reference")
    grant.add_argument("--purpose", default="HCOMPL", help="HL7 PurposeOfUse code (default HCOMPL)")
    grant.add_argument("--from", dest="month_from", required=True, help="first month, YYYY-MM")
    grant.add_argument("--to", dest="month_to", required=True, help="last month, YYYY-MM")
    grant.add_argument("--expires", required=True, help="YYYY-MM-DD after which the grant is void")
    grant.add_argument("--notify-after", help="YYYY-MM-DD before which the subject is not told")
    grant.set_defaults(audit_handler=_grant)
    _common(grant)

    scan = sub.add_parser("scan", help="list every record of a grant's subject, with proofs (auditor's node)")
    scan.add_argument("--grant", required=True, help="the grant's record id")
    scan.add_argument("--format", default="json", choices=["json", "fhir", "dicom"], help="output format")
    scan.add_argument("--json", action="store_true", help="print the raw JSON instead of a summary")
    scan.add_argument("--out", help="write the result to this file")
    scan.set_defaults(audit_handler=lambda args: _scan(args, "/audit/scans", 200))
    _common(scan)

    rotate = sub.add_parser(
        "rotate", help="rotate a party's master key from next month, or erase the party's keys for good"
    )
    rotate.add_argument("party", help="user:<id>, patient:<id> or institution:<name>")
    rotate.add_argument("--reason", default="scheduled", choices=["scheduled", "compromise", "erasure"])
    rotate.set_defaults(audit_handler=_rotate)
    _common(rotate)

    report = sub.add_parser("report", help="scan, then post the AUDIT_REPORT record (auditor's node)")
    report.add_argument("--grant", required=True, help="the grant's record id")
    report.add_argument("--json", action="store_true", help="print the raw JSON instead of a summary")
    report.set_defaults(audit_handler=lambda args: _scan(args, "/audit/reports", 202))
    _common(report)

    bundle = sub.add_parser("bundle", help="the scan as a bundle signed by this audit node (auditor's node)")
    bundle.add_argument("--grant", required=True, help="the grant's record id")
    bundle.add_argument("--out", required=True, help="write the bundle to this file")
    bundle.set_defaults(audit_handler=_bundle)
    _common(bundle)

    verify = sub.add_parser("verify", help="verify a signed audit bundle offline, with only the genesis file")
    verify.add_argument("file", help="the bundle (JSON) to verify")
    verify.add_argument("--genesis", required=True, help="the consortium's genesis.json")
    verify.set_defaults(audit_handler=_verify)
