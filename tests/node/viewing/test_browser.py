"""OHIF in a real browser (Debian's chromium through Playwright) over the node's DICOMweb.

A 100-slice CT series is received for dr.b; dr.b signs in on the console's page with a password
and a TOTP code (the node's real gate, people routes and sign-in), then opens it in OHIF under
``/ohif/``; the test waits until the viewport shows pixels, and compares the frame the page
fetched with pydicom's pixels of the original.  A screenshot goes to ``docs/images/viewer.png``.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pydicom
import pyotp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mftp.node.api.people_routes import PeopleApi
from mftp.node.api.server import Api
from mftp.node.console.pages import ConsolePages
from mftp.node.devnet.browser import CHROMIUM, NO_GPU_ARGS, NO_WEBGL_ARGS
from mftp.node.devnet.studies import make_ct_series
from mftp.node.viewing.ohif import OhifApp, default_dist
from mftp.node.viewing.routes import ViewingRoutes
from tests.node.viewing.helpers import Node
from tests.people_kit import PASSWORD, PeopleKit

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "images" / "viewer.png"


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run `make system-deps`")
    if not (default_dist() / "index.html").is_file():
        pytest.fail("the OHIF viewer is not installed: run `make viewer`")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[TestServer, Node, list[bytes]]]:
    """A node side with a received 100-slice CT series, serving DICOMweb and OHIF on loopback."""
    _require_browser()
    node = Node(tmp_path)
    paths = make_ct_series(tmp_path / "ct", 100)
    files = {f"{i:05d}.dcm": p.read_bytes() for i, p in enumerate(paths)}
    node.receive(files, to_user="user:dr.b")
    kit = PeopleKit(tmp_path)
    kit.account("dr.b")
    code = kit.admin.reset_second_factor(kit.operator, "dr.b")
    start = kit.signin.enrol_begin("dr.b", code, PASSWORD, "127.0.0.1")
    kit.totp["dr.b"] = pyotp.TOTP(pyotp.parse_uri(start.totp_uri).secret)
    kit.signin.enrol_confirm(start.session_id, kit.code("dr.b"), "127.0.0.1")
    app = web.Application(middlewares=[Api(cast(Any, None), kit.gate)._errors])
    for provider in (
        PeopleApi(kit.signin, kit.admin, kit.gate),
        ConsolePages(),
        ViewingRoutes(node.catalog, ohif=OhifApp(default_dist())),
    ):
        provider.add_routes(app.router, kit.gate.wrap)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    server.kit = kit  # type: ignore[attr-defined]
    try:
        yield server, node, list(files.values())
    finally:
        await server.close()


@pytest.fixture
async def signed_in_page(server: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A browser page signed in as dr.b (clinician) on the console: password, then a TOTP code.

    The browser's flags are ``NO_GPU_ARGS`` unless a test names others (indirect parameter)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=list(getattr(request, "param", NO_GPU_ARGS))
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        test_server, kit = server[0], server[0].kit
        try:
            page = await context.new_page()
            await page.goto(str(test_server.make_url("/")))  # redirects to the console's sign-in
            await page.get_by_label("Name").fill("dr.b")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Continue").click()
            await page.get_by_label("Code from your authenticator app").fill(kit.code("dr.b"))
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/console/*.html*")
            yield page
        finally:
            await browser.close()


def _frame_of(body: bytes, content_type: str) -> bytes:
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    part = body.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]


SHOWN_JS = """() => {
    let best = 0;
    for (const c of document.querySelectorAll('canvas.cornerstone-canvas')) {
      if (!c.width || !c.height) continue;
      const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let lit = 0;
      for (let i = 0; i < data.length; i += 4) if (data[i] + data[i+1] + data[i+2] > 30) lit++;
      best = Math.max(best, lit / (c.width * c.height));
    }
    return best;
}"""
"""The largest share of lit pixels among the viewport canvases (0 until an image is drawn)."""


async def test_ohif_shows_a_received_ct_series_with_the_original_pixels(
    server: Any, signed_in_page: Any, tmp_path: Path
) -> None:
    test_server, node, originals = server
    page = signed_in_page
    by_sop = {
        str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID): d for d in originals
    }
    study = str(pydicom.dcmread(io.BytesIO(originals[0]), stop_before_pixels=True).StudyInstanceUID)
    frames: dict[str, bytes] = {}

    async def keep_frame(route: Any) -> None:
        # The page's own request, answered by the node; its body is kept before the page gets it.
        response = await route.fetch()
        body = await response.body()
        if response.status == 200:
            sop = route.request.url.split("/instances/")[1].split("/")[0]
            frames[sop] = _frame_of(body, response.headers["content-type"])
        await route.fulfill(response=response, body=body)

    await page.route("**/frames/1", keep_frame)
    await page.goto(str(test_server.make_url(f"/ohif/viewer?StudyInstanceUIDs={study}")))
    # Pixels in the viewport: over 5 % of a viewport canvas lit (a black or half-drawn canvas is not
    # an image).  Polled, because OHIF redraws (and may resize) its canvases while it settles.
    await page.wait_for_function(f"({SHOWN_JS})() > 0.05", timeout=120_000)
    await page.wait_for_timeout(1500)  # let the series' thumbnails settle for the screenshot
    # No first-visit tour over the image (the node's app-config turns OHIF's off).
    assert await page.locator(".shepherd-element").count() == 0
    # The README's screenshot only when asked (MFTP_SCREENSHOTS=1): a test run leaves the tree as it was.
    shot = SCREENSHOT if os.environ.get("MFTP_SCREENSHOTS") == "1" else tmp_path / SCREENSHOT.name
    await page.screenshot(path=str(shot))
    # What the page decoded is what pydicom reads from the original file.
    assert frames, "the page fetched no frame"
    for sop, frame in frames.items():
        ds = pydicom.dcmread(io.BytesIO(by_sop[sop]))
        shown = np.frombuffer(frame, dtype=ds.pixel_array.dtype.newbyteorder("<")).reshape(
            ds.pixel_array.shape
        )
        assert np.array_equal(shown, ds.pixel_array)
    # One opening, one record.
    assert [r[2] for r in node.records] == ["view"]
    # Without a GPU (Chromium here draws WebGL with SwiftShader) the viewer draws on the CPU;
    # `viewportRendering=webgl` in the URL still brings WebGL back, and the image with it.
    cpu_rendering = "() => window.cornerstone.getShouldUseCPURendering()"
    assert await page.evaluate(cpu_rendering) is True
    await page.goto(
        str(test_server.make_url(f"/ohif/viewer?StudyInstanceUIDs={study}&viewportRendering=webgl"))
    )
    await page.wait_for_function(f"({SHOWN_JS})() > 0.05", timeout=120_000)
    assert await page.evaluate(cpu_rendering) is False


@pytest.mark.parametrize("signed_in_page", [NO_WEBGL_ARGS], indirect=True)
async def test_ohif_shows_the_series_in_a_browser_without_webgl(
    server: Any, signed_in_page: Any, tmp_path: Path
) -> None:
    # OHIF's WebGL path stops with "Something went wrong" where WebGL cannot be had; the node's
    # app-config then asks for the CPU path, which shows the image.
    test_server, _, originals = server
    page = signed_in_page
    study = str(pydicom.dcmread(io.BytesIO(originals[0]), stop_before_pixels=True).StudyInstanceUID)
    assert await page.evaluate("() => !document.createElement('canvas').getContext('webgl')")
    await page.goto(str(test_server.make_url(f"/ohif/viewer?StudyInstanceUIDs={study}")))
    await page.wait_for_function(f"({SHOWN_JS})() > 0.05", timeout=120_000)
    assert await page.evaluate("() => window.cornerstone.getShouldUseCPURendering()") is True
    await page.screenshot(path=str(tmp_path / "viewer-without-webgl.png"))
    assert await page.locator(".shepherd-element").count() == 0
