"""``mftp-node send``, ``inbox`` and ``export``: transfers through a running node's API.

These commands never touch the node's keys or data: they call the authenticated HTTP API
(``api.listen`` of ``--config``) with the personal token that ``mftp-node login`` keeps for the
signed-in user (or ``--token-file``), so the study is read and written by the node process, on
the node's host, and every record names the signed-in user.  ``send`` shows a
progress bar (rich) by polling ``GET /transfers/{id}``: files prepared, then the recipient's
acknowledgement and verified receipt.  ``export`` starts an export job and follows it the same
way (``GET /transfers/{id}/export/{job_id}``): the node answers at once, so no client timeout
cuts a long export short, and running the same command again returns the same job instead of
exporting (and recording the access) twice.

Exit codes of these commands (and of ``view`` and ``audit``), from the node's answer:

* 0: done.
* 5: the node refused the request (HTTP 400, 403, 404, 409, 413, 422): data residency, a bad
  source (such as a study whose every instance has burned-in annotation in a de-identifying
  mode), a destination off the allow-lists, an unknown transfer; also a transfer that failed
  because the node refused its study after accepting the request (``fault`` ``caller``), and one
  the recipient refused.  Not retryable as is.
* 3: not signed in, or the token was not accepted (401), or the node's stored data is damaged (500).
* 1: anything else (a peer, the PACS, the network; 502, 503; a job still running at ``--timeout``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from ..clock import SYSTEM_CLOCK
from ..config import load_config
from ..errors import NodeError, NodeUsageError, sentences
from .tokens import NotSignedIn, personal_token_path

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 3
EXIT_REFUSED: Final = 5
"""The node refused the request (data residency, bad source): not retryable as is."""
REFUSED_STATUSES: Final = frozenset({400, 403, 404, 409, 413, 422})
CONFIG_STATUSES: Final = frozenset({401, 500})
EXIT_BY_FAULT: Final = {"caller": EXIT_REFUSED, "storage": EXIT_CONFIG}
"""A failed transfer's or job's ``fault`` (:func:`mftp.node.transfers.jobs.fault_of`) as an exit code."""
POLL_S: Final = 0.3
DONE_OUT: Final = frozenset({"delivered", "refused", "failed", "cancelled"})
DONE_JOB: Final = frozenset({"done", "failed"})


def api_base(config_path: str) -> str:
    """The base URL of the node's API (its ``api.listen``)."""
    return "http://" + load_config(config_path).get("api", "listen")


class ApiClient:
    """A node's API, as the signed-in user (a token read from a 0600 file, never printed)."""

    def __init__(self, config_path: str, token_file: str | None, timeout_s: float = 30.0) -> None:
        self.base = api_base(config_path)
        path = Path(token_file) if token_file else personal_token_path(self.base)
        try:
            self.token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if token_file:
                raise NodeUsageError(f"no API token file {path}") from None
            raise NotSignedIn(f"sign in first: mftp-node login --config {config_path}") from None
        except OSError as exc:
            raise NodeUsageError(f"cannot read the API token {path}: {exc.strerror}") from None
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """``(status, decoded JSON)``; :class:`NodeError` if the node does not answer."""
        data = json.dumps(body).encode() if body is not None else None
        answer = self.open(method, path, data)
        if isinstance(answer, tuple):
            return answer
        with answer as response:
            try:
                return response.status, json.loads(response.read())
            except (OSError, ValueError) as exc:
                raise NodeError(f"the node's API at {self.base} does not answer: {exc}") from None

    def open(
        self, method: str, path: str, data: bytes | None = None
    ) -> http.client.HTTPResponse | tuple[int, Any]:
        """The open response of a successful call (to read or stream), else ``(status, error body)``."""
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read())
            except ValueError:
                return exc.code, {"error": exc.reason}
        except (OSError, ValueError) as exc:
            raise NodeError(f"the node's API at {self.base} does not answer: {exc}") from None
        return response


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.config, args.token_file)


def exit_code(status: int) -> int:
    """The exit code for an HTTP error answer of the node (see the module docstring)."""
    if status in REFUSED_STATUSES:
        return EXIT_REFUSED
    return EXIT_CONFIG if status in CONFIG_STATUSES else EXIT_FAILURE


def _refused(command: str, status: int, answer: Any) -> int:
    message = answer.get("error", answer) if isinstance(answer, dict) else answer
    what = "the node refused the request" if 400 <= status < 500 else "the node could not do it"
    # The node's message as it wrote it (scripts match on it), after a colon: one clause, not two
    # sentences run together.
    print(f"mftp-node {command}: {what} (HTTP {status}): {str(message).strip()}", file=sys.stderr)
    return exit_code(status)


def failure_exit(state: str, fault: str) -> int:
    """The exit code of a transfer or job that ended ``state`` (not done) for ``fault``."""
    if state == "refused":  # the recipient refused the offer: the request cannot succeed as is
        return EXIT_REFUSED
    return EXIT_BY_FAULT.get(fault, EXIT_FAILURE)


# ---------------------------------------------------------------------------------- send


def run_send(args: argparse.Namespace) -> int:
    """Send a study and follow it until the recipient has verified it (or ``--no-wait``)."""
    client = _client(args)
    source = args.source  # dicomweb: and dimse: sources are spelled for the node, not paths here
    if not source.startswith(("dicomweb:", "dimse:")):
        source = str(Path(source).resolve())
    body = {"source": source, "to": args.to, "purpose": args.purpose, "mode": args.mode}
    if args.to_user:
        body["to_user"] = args.to_user
    if args.burned_in:
        body["burned_in"] = args.burned_in
    status, answer = client.call("POST", "/transfers", body)
    if status != 202:
        return _refused("send", status, answer)
    transfer_id = answer["transfer_id"]
    print(f"transfer {transfer_id} to {args.to} started")
    if args.no_wait:
        return EXIT_OK
    final = _follow(client, transfer_id, args.timeout)
    delivered = final["state"] == "delivered"
    print(sentences(f"transfer {transfer_id} {final['state']}", final.get("detail", "")))
    if final.get("offer_record"):
        print(f"  offered record   {final['offer_record']}")
    if final.get("received_record"):
        print(f"  received record  {final['received_record']}")
    return EXIT_OK if delivered else failure_exit(final["state"], final.get("fault", ""))


def _follow(client: ApiClient, transfer_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll the transfer with a progress bar until it is done (or ``timeout_s`` passes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = SYSTEM_CLOCK.monotonic_s() + timeout_s
    view: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("preparing", total=None)
        while SYSTEM_CLOCK.monotonic_s() < deadline:
            status, view = client.call("GET", f"/transfers/{transfer_id}")
            if status != 200:
                raise NodeError(f"the node lost transfer {transfer_id}: {view}")
            state = view["state"]
            bar.update(
                task,
                description={
                    "preparing": "preparing files",
                    "offered": "offered, waiting",
                    "accepted": "recipient fetching",
                }.get(state, state),
                completed=view["files_done"],
                total=view["files"] or None,
            )
            if state in DONE_OUT:
                return view
            time.sleep(POLL_S)
    view["state"], view["detail"] = view.get("state", "unknown"), "still running (timed out waiting)"
    return view


def add_send_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``send``."""
    parser.add_argument(
        "source",
        help=(
            "one study: a folder or file on the node's host, dicomweb:<base URL>#<Study UID> "
            "or dimse:<AET>@<host>:<port>#<Study UID> (servers listed in the node's [transfer])"
        ),
    )
    parser.add_argument("--to", required=True, help="recipient member's name")
    parser.add_argument(
        "--to-user", help="recipient user at the recipient institution (registered there: audit add-user)"
    )
    parser.add_argument("--purpose", default="TREAT", help="HL7 PurposeOfUse code (default TREAT)")
    parser.add_argument(
        "--mode",
        default="pseudonymised",
        choices=["identified", "pseudonymised", "deidentified", "anonymous"],
        help="de-identification mode (default pseudonymised)",
    )
    parser.add_argument(
        "--burned-in",
        choices=["clean", "refuse"],
        help="images whose pixels may show identity: clean them, or leave them out "
        "(default: the node's transfer.burned_in)",
    )
    parser.add_argument("--no-wait", action="store_true", help="return once the node accepted the request")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow the transfer")
    _common(parser)


def _common(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--token-file``: who acts is who signed in (``mftp-node login``)."""
    parser.add_argument("--config", required=True, help="the node's node.toml (API address)")
    parser.add_argument(
        "--token-file",
        help="an API token file to act with (default: the personal token `mftp-node login` keeps)",
    )


# --------------------------------------------------------------------------------- inbox


def run_inbox(args: argparse.Namespace) -> int:
    """List received (and with ``--all`` sent) transfers and their states."""
    status, answer = _client(args).call("GET", "/transfers")
    if status != 200:
        return _refused("inbox", status, answer)
    rows = [t for t in answer["transfers"] if args.all or t["direction"] == "in"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("no transfers")
    for t in rows:
        arrow = "from" if t["direction"] == "in" else "to"
        progress = ""
        if t["state"] == "fetching" and t["fetch_bytes"]:
            progress = f" {t['fetched_bytes']}/{t['fetch_bytes']} bytes"
        detail = f". {sentences(t['detail'])}" if t["detail"] else ""
        print(
            f"{t['transfer_id']}  {arrow} {t['peer']:<14} {t['purpose']:<7} {t['mode']:<13} "
            f"{t['files']:>5} files  {t['state']}{progress}{detail}"
        )
    return EXIT_OK


def add_inbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``inbox``."""
    parser.add_argument("--all", action="store_true", help="also list transfers this node sent")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    _common(parser)


# -------------------------------------------------------------------------------- export


def run_export(args: argparse.Namespace) -> int:
    """Export a received study (on the node's host) as a job, and follow it to its end."""
    destination = args.destination
    if not destination[:8].lower().startswith(("http://", "https://", "dimse:")):
        destination = str(Path(destination).resolve())
    body = {"destination": destination}
    if args.purpose:
        body["purpose"] = args.purpose
    client = _client(args)
    transfer = quote(args.transfer_id, safe="")
    status, job = client.call("POST", f"/transfers/{transfer}/export", body)
    if status not in (200, 202):
        return _refused("export", status, job)
    if status == 202:
        print(f"export job {job['job_id']} of transfer {job['transfer_id']} {job['state']}")
    if not args.no_wait:
        job = _follow_job(client, transfer, job, args.timeout)
    if job["state"] == "done":
        print(f"exported {job['files']} files to {destination}; accessed record {job['record']}")
        return EXIT_OK
    if job["state"] == "failed":
        print(
            "mftp-node export: " + sentences(f"export job {job['job_id']} failed", job["error"]),
            file=sys.stderr,
        )
        return failure_exit("failed", job.get("fault", ""))
    print(
        f"export job {job['job_id']} is still {job['state']}; running the same command again follows it",
        file=sys.stderr if not args.no_wait else sys.stdout,
    )
    return EXIT_OK if args.no_wait else EXIT_FAILURE


def _follow_job(client: ApiClient, transfer: str, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Poll an export job with a progress bar until it ends (or ``timeout_s`` passes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = SYSTEM_CLOCK.monotonic_s() + timeout_s
    with Progress(
        TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("queued", total=None)
        while True:
            bar.update(
                task,
                description={"restoring": "restoring and verifying", "delivering": "delivering"}.get(
                    job.get("phase", ""), job["state"]
                ),
                completed=job["files_done"],
                total=job["files"] or None,
            )
            if job["state"] in DONE_JOB or SYSTEM_CLOCK.monotonic_s() >= deadline:
                return job
            time.sleep(POLL_S)
            status, answer = client.call("GET", f"/transfers/{transfer}/export/{job['job_id']}")
            if status != 200:
                raise NodeError(f"the node lost export job {job['job_id']}: {answer}")
            job = answer


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``export``."""
    parser.add_argument("transfer_id", help="id of a complete received transfer (see inbox)")
    parser.add_argument(
        "destination",
        help=(
            "a folder on the node's host, a DICOMweb base URL (STOW-RS) or dimse:<AET>@<host>:<port> "
            "(C-STORE; listed in the node's [transfer])"
        ),
    )
    parser.add_argument("--purpose", help="HL7 PurposeOfUse code of this access (default: the offer's)")
    parser.add_argument("--no-wait", action="store_true", help="return once the node started the export job")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow the export job")
    _common(parser)
