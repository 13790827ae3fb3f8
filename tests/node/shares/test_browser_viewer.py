"""A patient views their shared study in OHIF, in a real Chromium, on real node processes.

hospital-a sends a CT series to hospital-b; a clinician of hospital-b shares it; the patient
opens the link, types the code, follows "View study 1 in the viewer" and sees pixels, served
through DICOMweb under the share's session, and nothing else of the node.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mftp.node.devnet.browser import CHROMIUM, NO_GPU_ARGS
from mftp.node.devnet.client import api, running_devnet, wait_until
from mftp.node.devnet.consortium import NodeProcess
from mftp.node.devnet.studies import make_ct_series
from mftp.node.viewing.ohif import default_dist
from tests.node.viewing.test_browser import SHOWN_JS

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "images" / "share-viewer.png"


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    if not Path(CHROMIUM).exists() or not (default_dist() / "index.html").is_file():
        pytest.fail("chromium or the OHIF viewer is missing: run `make system-deps viewer`")
    with running_devnet(tmp_path, validators=3, audit=0) as processes:
        yield processes


def test_the_patient_views_the_shared_study_in_ohif(devnet: list[NodeProcess], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    a, b = devnet[0].member, devnet[1].member
    make_ct_series(tmp_path / "ct", 20)
    body = {"source": str(tmp_path / "ct"), "to": "hospital-b", "purpose": "TREAT", "mode": "identified"}
    status, sent = api(a, "POST", "/transfers", body, as_user="dr.ana")
    assert status == 202, sent
    tid = sent["transfer_id"]
    wait_until(
        lambda: api(b, "GET", f"/transfers/{tid}")[1].get("state") == "complete",
        90,
        f"receipt (sender: {api(a, 'GET', f'/transfers/{tid}')[1]})",
    )
    until = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 7 * 86400))
    status, made = api(b, "POST", "/shares", {"transfer_ids": [tid], "until": until}, as_user="dr.bea")
    assert status == 201, made

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(NO_GPU_ARGS))
        page: Any = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        answers: list[str] = []
        page.on(
            "response",
            lambda r: answers.append(f"{r.status} {r.url[:140]}") if "/dicom-web" in r.url else None,
        )
        page.goto(made["link"])
        page.get_by_label("Code").fill(made["code"])
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.title() == "Your medical images"
        page.get_by_role("link", name="View study 1 in the viewer").click()
        page.wait_for_url("**/ohif/viewer**")
        deadline, lit = time.monotonic() + 90, 0.0
        while time.monotonic() < deadline and lit < 0.05:  # OHIF redraws: keep the best seen
            page.wait_for_timeout(500)
            lit = max(lit, page.evaluate(SHOWN_JS))
        assert lit >= 0.05, ("no image in the viewport", answers[:30])
        assert answers and all(a.startswith("200 ") for a in answers), answers
        shot = SCREENSHOT if os.environ.get("MFTP_SCREENSHOTS") == "1" else tmp_path / SCREENSHOT.name
        page.screenshot(path=str(shot))
        # The same session reads nothing outside the share: the node's other routes refuse it.
        assert page.request.get(b.api_url + "/transfers").status == 403  # a share opens its studies only
        assert page.request.get(b.api_url + "/dicom-web/studies").json() != []
        browser.close()
