"""Talking to a running devnet of real node processes on loopback, as an operator would (API, CLI).

For the demo, the benchmarks and the tests: sample records and a sample study of real images
(pydicom-data, installed with the test extras), the API and CLI called as an operator would.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from mftp.crypto.keyfile import load_identity
from mftp.ledger.records import TAG_SLOTS, Record, RecordType, make_record

from ..clock import SYSTEM_CLOCK
from ..private_files import write_private
from .consortium import Member, NodeProcess, create_devnet, start_all, stop_all, wait_for_height
from .people import bearer_call, user_token

# Fast but not hair-trigger timeouts for 5 processes on 2 shared cores.
TEST_CONSENSUS = {
    "timeout_propose_ms": 1500,
    "timeout_propose_delta_ms": 500,
    "timeout_prevote_ms": 500,
    "timeout_prevote_delta_ms": 500,
    "timeout_precommit_ms": 500,
    "timeout_precommit_delta_ms": 500,
    "timeout_commit_ms": 300,
    "empty_block_interval_ms": 1000,  # an idle heartbeat each second keeps height waits short
}


@contextmanager
def running_devnet(
    tmp_path: Path,
    *,
    validators: int,
    audit: int,
    countries: dict[str, str] | None = None,
    configure: Callable[[Member], None] | None = None,
    height: int = 1,
) -> Iterator[list[NodeProcess]]:
    """A devnet under ``tmp_path / "devnet"`` (:data:`TEST_CONSENSUS`), its processes running.

    ``configure`` may edit each member's config before the processes start.  Yields the
    processes (validators first, then audit nodes) once every one has reached ``height``;
    stops them all on the way out.
    """
    members = create_devnet(
        tmp_path / "devnet",
        validators=validators,
        audit=audit,
        countries=countries,
        consensus=TEST_CONSENSUS,
    )
    if configure is not None:
        for member in members:
            configure(member)
    processes = start_all(members)
    try:
        wait_for_height(processes, height, timeout_s=60)
        yield processes
    finally:
        stop_all(processes)


def get_json(url: str, timeout_s: float = 5.0) -> Any:
    """GET and decode JSON."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def make_records(member: Member, count: int, rng: random.Random) -> list[Record]:
    """``count`` records signed with ``member``'s node key."""
    identity = load_identity(member.directory / "keys" / "node.key")
    now = SYSTEM_CLOCK.now_ms()
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
        return json.loads(response.read())


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout_s``."""
    deadline = SYSTEM_CLOCK.monotonic_s() + timeout_s
    while SYSTEM_CLOCK.monotonic_s() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def committed(member: Member, record_id: str) -> dict[str, Any] | None:
    """The record ``record_id`` (hex) as ``member``'s node serves it, or None while not in a block."""
    try:
        return dict(get_json(f"{member.api_url}/records/{record_id}"))
    except OSError:
        return None


def is_committed(member: Member, record: Record) -> bool:
    """Whether ``member``'s node has ``record`` in a stored block."""
    return committed(member, record.record_id.hex()) is not None


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


CLINICAL_COMMANDS: Final = frozenset({"send", "inbox", "export", "view"})
AUDITOR_COMMANDS: Final = frozenset({("audit", "scan"), ("audit", "report")})


def _acting_token(member: Member, args: Sequence[str], as_user: str | None) -> list[str]:
    """``--token-file`` of the user who runs ``args`` (none if the command takes no token)."""
    if not args or "--token-file" in args:
        return []
    if args[0] in CLINICAL_COMMANDS:
        return ["--token-file", str(token_file(member, as_user or DEFAULT_USER["clinician"]))]
    if tuple(args[:2]) in AUDITOR_COMMANDS:
        return ["--token-file", str(token_file(member, as_user or DEFAULT_USER["auditor"], "auditor"))]
    if args[0] in ("audit", "user") or (args[0] == "member" and tuple(args[1:2]) != ("request",)):
        # an operator's work: the service account (a join request is made offline, by the newcomer)
        return ["--token-file", str(member.directory / "keys" / "api.token")]
    return []


def cli_command(member: Member, *args: str, as_user: str | None = None) -> list[str]:
    """The command line of ``mftp-node *args`` against ``member``'s node, as ``as_user``.

    Clinical commands act with a devnet clinician's personal token (``as_user``, else
    "clinician"), scans and reports with an auditor's, other ``audit`` and ``user`` commands
    with the operator service account's: each as :func:`api` does.
    """
    extra = _acting_token(member, args, as_user)
    return [sys.executable, "-m", "mftp.node.cli.main", *args, *extra, "--config", str(member.config_path)]


def cli(
    member: Member, *args: str, timeout_s: float = 120, as_user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``mftp-node *args`` against ``member``'s node (see :func:`cli_command`); its output."""
    return subprocess.run(
        cli_command(member, *args, as_user=as_user),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=environment_without_passphrase(),
    )


ROLE_OF_PATH: Final = (
    ("/transfers", "clinician"),
    ("/audit/scans", "auditor"),
    ("/audit/reports", "auditor"),
)
"""Which role a devnet user needs for a path (anything else is the operator service account's)."""
DEFAULT_USER: Final = {"clinician": "clinician", "auditor": "auditor"}


def api(
    member: Member,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    as_user: str | None = None,
) -> tuple[int, Any]:
    """Call ``member``'s API as a person would; returns ``(status, JSON)`` for errors too.

    Transfers are a clinician's work and scans an auditor's: those calls are made with the
    personal token of ``as_user`` (or of ``body["user"]``, taken out of the body: who acts is
    who signed in, never a body field), a devnet user enrolled with a second factor on first use
    (:mod:`.people`); without either, a default user of that role.  Every other call is the
    operator service account's (``keys/api.token``).
    """
    if body is not None and "user" in body and path.startswith("/transfers"):
        body = dict(body)
        as_user = as_user or str(body.pop("user")).removeprefix("user:")
    role = next((r for prefix, r in ROLE_OF_PATH if path.startswith(prefix)), None)
    if role is None and as_user is None:
        return bearer_call(member.api_url, member.token, method, path, body)
    name = as_user or DEFAULT_USER[role or "clinician"]
    return bearer_call(member.api_url, user_token(member, name, role or "clinician"), method, path, body)


def token_file(member: Member, user: str, role: str = "clinician") -> Path:
    """A 0600 file holding ``user``'s personal token (for ``mftp-node ... --token-file``)."""
    path = member.directory / "keys" / f"{user}.{role}.token"
    write_private(path, user_token(member, user, role) + "\n")
    return path


# Real, natively encoded images of pydicom's test data (CT, MR, US, secondary capture).
STUDY_FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_16bit.dcm", "US1_UNCR.dcm", "MR2_UNCI.dcm")


def make_study(folder: Path, patient_id: str = "PAT-0042") -> dict[str, bytes]:
    """Write pydicom-data images into ``folder`` as one study of one patient.

    The files come from different studies, so their Study Instance UID, Patient ID and name are
    made the same (a real study shares them).  Returns each SOP Instance UID's pixel data.
    """
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    pixels = {}
    study_uid = pydicom.uid.generate_uid()
    for index, name in enumerate(STUDY_FILES):
        path = get_testdata_file(name)
        assert path is not None, f"pydicom-data lacks {name}"
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.PatientID = patient_id
        ds.PatientName = "Nordmann^Kari"
        ds.save_as(folder / f"{index}-{name}")
        pixels[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    return pixels
