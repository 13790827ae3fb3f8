"""Issue 18, point 6, third scenario: an auditor downloads the signed report from the console;
``mftp-node audit verify`` accepts it with only the genesis file, and refuses it after one byte
is changed (exit 4)."""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.node.devnet.client import api, committed, make_study, running_devnet, wait_until
from mftp.node.devnet.consortium import NodeProcess
from mftp.node.devnet.people import enrol

from .browser_kit import chromium, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running_devnet(tmp_path, validators=2, audit=1) as processes:
        yield processes


def _month(offset: int) -> str:
    today = datetime.datetime.now(tz=datetime.UTC).date()
    index = today.year * 12 + today.month - 1 + offset
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _verify(bundle: Path, genesis: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "mftp.node.cli.main",
        "audit",
        "verify",
        str(bundle),
        "--genesis",
        str(genesis),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.timeout(240)
def test_an_auditor_downloads_a_bundle_that_verifies_offline(
    devnet: list[NodeProcess], tmp_path: Path
) -> None:
    a, _, regulator = (p.member for p in devnet)
    make_study(tmp_path / "study", patient_id="PAT-AUDIT")
    body = {
        "source": str(tmp_path / "study"),
        "to": "hospital-b",
        "purpose": "TREAT",
        "mode": "pseudonymised",
    }
    status, sent = api(a, "POST", "/transfers", {**body, "user": "alice"})
    assert status == 202, sent
    transfer = f"/transfers/{sent['transfer_id']}"
    wait_until(lambda: api(a, "GET", transfer)[1]["state"] == "delivered", 90, "delivery")
    grant = {
        "subject": "user:alice", "auditor": regulator.name, "legal_basis": "GDPR Art. 58(1)(b), case 18",
        "purpose": "HCOMPL", "from": _month(-1), "to": _month(1),
        "expires": str(datetime.date.today() + datetime.timedelta(days=30)),
    }  # fmt: skip
    status, granted = api(a, "POST", "/audit/grants", grant)
    assert status == 202, granted
    wait_until(lambda: committed(regulator, granted["grant_id"]), 60, "the grant on the regulator's node")
    auditor, _ = enrol(regulator, "insp.dahl", ("auditor",))

    with chromium() as browser:
        page = sign_in(browser, regulator, auditor)
        assert page.url.endswith("/console/audit.html")
        row = page.locator("#grants tr", has_text="user:alice")
        row.get_by_role("button", name="Scan").click()
        page.get_by_role("heading", name="Scan of user:alice").wait_for(timeout=60_000)
        timeline = page.locator("#scan table").inner_text()
        assert "transfer offered" in timeline and "✓ in ledger" in timeline and "✗" not in timeline
        screenshot(page, "console-audit.png", tmp_path)
        with page.expect_download(timeout=60_000) as bundle_download:
            page.get_by_role("button", name="Signed bundle").click()
        bundle = tmp_path / "bundle.json"
        bundle_download.value.save_as(str(bundle))
        with page.expect_download() as csv_download:
            page.get_by_role("button", name="CSV").click()
        csv_path = tmp_path / "audit.csv"
        csv_download.value.save_as(str(csv_path))
        assert csv_path.read_text().splitlines()[0].startswith('"time","type"')
        with page.expect_download() as fhir_download:
            page.get_by_role("button", name="FHIR AuditEvent").click()
        fhir = tmp_path / "fhir.json"
        fhir_download.value.save_as(str(fhir))
        assert '"resourceType": "Bundle"' in fhir.read_text()

    genesis = regulator.directory / "genesis.json"
    accepted = _verify(bundle, genesis)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "verified:" in accepted.stdout and "user:alice" in accepted.stdout
    data = bytearray(bundle.read_bytes())
    # One byte of the content changed (a digit of a match's ledger index, then a hex digit of a
    # record's id): the signature no longer matches.
    for needle in (b'"ledger_index": ', b'"record_id": "'):
        changed = bytearray(data)
        at = changed.index(needle) + len(needle)
        changed[at] = ord("7") if changed[at] != ord("7") else ord("8")
        tampered = tmp_path / "tampered.json"
        tampered.write_bytes(bytes(changed))
        refused = _verify(tampered, genesis)
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "NOT VERIFIED" in refused.stderr
