"""Chromium through Playwright for the console's browser tests (Debian's chromium; never
``playwright install``), and signing a devnet user in through the console's own pages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mftp.node.devnet.browser import CHROMIUM
from mftp.node.devnet.consortium import Member
from mftp.node.devnet.people import DevnetUser

IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """A full-page screenshot: into docs/images (the README's) when ``MFTP_SCREENSHOTS=1``, else
    beside the test, so that a test run leaves the repository as it was."""
    folder = IMAGES if os.environ.get("MFTP_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(folder / name), full_page=True)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (fails, never skips, when it is missing)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def sign_in(browser: Any, member: Member, user: DevnetUser) -> Any:
    """A new browser context signed in on ``member``'s console as ``user`` (password, then TOTP)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, timezone_id="Europe/Oslo")
    page = context.new_page()
    page.goto(member.api_url + "/")  # redirects to /console/
    page.get_by_label("Name").fill(user.name)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Code from your authenticator app").fill(user.code())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/*.html*")
    return page
