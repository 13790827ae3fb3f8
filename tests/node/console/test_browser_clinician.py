"""Issue 18, point 6, first scenario, in Chromium with real node processes and a real Orthanc.

A clinician signs in with a TOTP code, finds a study in Orthanc (QIDO-RS) and sends it; the
send page follows it to "delivered"; at the recipient's console the inbox shows it complete,
the recipient opens it, and the study's history shows that access with its proof verified.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.node.devnet.client import make_study, running_devnet
from mftp.node.devnet.consortium import Member, NodeProcess
from mftp.node.devnet.people import enrol
from tests.orthanc_server import OrthancServer, orthanc_available, run_orthanc

from .browser_kit import chromium, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PATIENT = "PAT-CONSOLE"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make test`")
    with run_orthanc(tmp_path / "orthanc") as server:
        make_study(tmp_path / "study", patient_id=PATIENT)
        for path in sorted((tmp_path / "study").iterdir()):
            assert server.upload(path.read_bytes())["Status"] == "Success"
        yield server


@pytest.fixture
def devnet(tmp_path: Path, orthanc: OrthancServer) -> Iterator[list[NodeProcess]]:
    def list_orthanc(member: Member) -> None:
        text = member.config_path.read_text()
        text = re.sub(r"dicomweb_urls = \[[^\]]*\]", f'dicomweb_urls = ["{orthanc.dicomweb_url}"]', text)
        member.config_path.write_text(text)

    with running_devnet(tmp_path, validators=2, audit=0, configure=list_orthanc) as processes:
        yield processes


@pytest.mark.timeout(240)
def test_a_clinician_sends_from_orthanc_and_the_recipient_opens_it(
    devnet: list[NodeProcess], tmp_path: Path
) -> None:
    a, b = devnet[0].member, devnet[1].member
    sender, _ = enrol(a, "dr.hansen")
    recipient, _ = enrol(b, "dr.berg")
    with chromium() as browser:
        page = sign_in(browser, a, sender)
        assert page.url.endswith("/console/inbox.html")
        page.get_by_role("link", name="Send a study").click()
        page.get_by_label("PACS or folder").select_option(index=0)
        page.get_by_label("Patient ID").fill(PATIENT)
        page.get_by_role("button", name="Search").click()
        page.get_by_role("button", name="Choose").first.click()
        page.get_by_label("Recipient institution").select_option("hospital-b")
        page.get_by_label("Purpose").select_option("TREAT")
        page.get_by_label("Mode").select_option("pseudonymised")
        page.get_by_role("button", name="Send").click()
        state = page.locator("#send-state")
        state.filter(has_text="delivered").wait_for(timeout=150_000)
        assert "hospital-b" in state.inner_text()

        inbox = sign_in(browser, b, recipient)
        row = inbox.locator("#inbox tbody tr").first
        row.locator(".state", has_text="complete").wait_for(timeout=30_000)
        assert "hospital-a" in row.locator(".peer").inner_text()
        assert "TREAT" in row.inner_text() and "pseudonymised" in row.inner_text()
        screenshot(inbox, "console-inbox.png", tmp_path)
        row.get_by_role("button", name="Open").click()
        inbox.get_by_role("heading", name="Study opened").wait_for(timeout=30_000)
        viewer = inbox.get_by_role("link", name="Open it in the viewer")
        assert "/ohif/viewer?StudyInstanceUIDs=" in (viewer.get_attribute("href") or "")

        inbox.get_by_role("link", name="See its history").click()
        viewed = inbox.locator("#history tr", has_text="view").filter(has_text="proof verified")
        viewed.wait_for(timeout=30_000)
        assert "dr.berg" in viewed.inner_text()
        history = inbox.locator("#history").inner_text()
        assert "sent" in history and "hospital-a" in history and "complete" in history
        assert "✗" not in history
        screenshot(inbox, "console-history.png", tmp_path)
