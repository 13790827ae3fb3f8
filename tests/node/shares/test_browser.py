"""A patient in a real Chromium (Playwright): the link, the code, the study page, the download.

The share service runs in process (:mod:`tests.share_world`: real store, vault and certified
ledger; studies held in memory as their original files) behind a real aiohttp server on a free
port; the browser is Debian's Chromium driven by Playwright (never ``playwright install``).
Saves ``docs/images/share-patient.png``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp import web
from playwright.sync_api import sync_playwright

from mftp.node.devnet.browser import CHROMIUM
from mftp.node.people.sessions import Principal
from tests.share_world import World, clinician, share_app, study_files

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]
SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "images" / "share-patient.png"
A = "aa" * 16

if not Path(CHROMIUM).exists():
    pytest.fail("Debian's chromium is not installed: run `make system-deps`", pytrace=False)


class Server:
    """The share app on 127.0.0.1, served by its own event loop in a thread."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.who: dict[str, Principal | None] = {"who": clinician()}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(share_app(self.world, self.who), access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.runner = runner
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def call(self, work: Any) -> Any:
        """Run ``work()`` on the server's loop (the ledger is not shared across threads)."""
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(work), self.loop)
        return future.result(30)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


async def _as_coroutine(work: Any) -> Any:
    return work()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    world = World(tmp_path)
    world.studies.add(A, study_files(tmp_path / "a"))
    running = Server(world)
    running.thread.start()
    assert running.ready.wait(30)
    yield running
    running.loop.call_soon_threadsafe(running.loop.stop)
    running.thread.join(30)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def test_a_patient_opens_views_downloads_and_is_refused_after_revocation(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    body = {
        "transfer_ids": [A],
        "until": "2026-01-10",
        "download": True,
        "label": "CT of the chest, 1 January",
    }
    status, made = server.api("POST", "/shares", body)
    assert status == 201, made
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(made["link"])
    assert page.title() == "Enter your code"
    # Keyboard only: the code field has focus and a label; typing is tidied; Enter submits.
    assert page.evaluate("document.activeElement.id") == "code"
    assert page.get_by_label("Code").count() == 1
    page.keyboard.type(made["code"].replace("-", "").lower())
    assert page.input_value("#code") == made["code"]
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert page.title() == "Your medical images"
    assert page.get_by_role("heading", name="Who has seen my images").count() == 1

    # Once the openings are in a block, the page lists them, each proof verified.
    server.call(server.world.commit)
    page.reload()
    rows = page.locator("table tbody tr")
    assert rows.count() == 2 and page.locator("text=verified").count() == 2
    assert "opened your link" in rows.nth(0).inner_text()
    # The README's screenshot only when asked (MFTP_SCREENSHOTS=1): a test run leaves the tree as it was.
    shot = SCREENSHOT if os.environ.get("MFTP_SCREENSHOTS") == "1" else tmp_path / SCREENSHOT.name
    page.screenshot(path=str(shot), full_page=True)

    # The download: the files byte for byte, with a DICOMDIR that lists each.
    with page.expect_download() as waiting:
        page.get_by_role("link", name="Download the files (ZIP with DICOMDIR)").click()
    saved = tmp_path / "download.zip"
    waiting.value.save_as(saved)
    archive = zipfile.ZipFile(saved)
    files = [n for n in archive.namelist() if n.startswith("DICOM/")]
    assert [archive.read(n) for n in files] == [data for _, data in server.world.studies.studies[A]]
    dicomdir = pydicom.dcmread(io.BytesIO(archive.read("DICOMDIR")))
    assert len([r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]) == len(
        files
    )

    # Revoked: the open page is refused at once, with the plain page.
    status, revoked = server.api("POST", f"/shares/{made['share_id']}/revoke")
    assert status == 200 and revoked["state"] == "revoked"
    page.reload()
    assert page.title() == "This link cannot be used"
    assert "revoked" not in page.content().lower()
    context.close()


def test_the_link_locks_after_wrong_codes(server: Server, browser: Any) -> None:
    status, made = server.api("POST", "/shares", {"transfer_ids": [A], "until": "2026-01-10"})
    assert status == 201
    page = browser.new_page()
    page.goto(made["link"])
    for attempt in range(5):
        page.fill("#code", "ZZZZ-ZZZZ")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.wait_for_load_state()
        expected = "Enter your code" if attempt < 4 else "This link cannot be used"
        assert page.title() == expected
    assert page.get_by_role("alert").count() == 0  # the plain page says nothing more
    page.goto(made["link"])
    assert page.title() == "This link cannot be used"
    assert "locked" not in page.content().lower()
    assert server.api("GET", f"/shares/{made['share_id']}")[1]["state"] == "locked"
