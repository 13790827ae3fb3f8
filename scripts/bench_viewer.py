#!/usr/bin/env python3
"""Benchmark the viewer: time to the first image in OHIF, the node against Orthanc, and while a study travels.

Usage: bench_viewer.py [--quick] [--contexts N] [--slices N] [--mb N] [--mbit R]

Two studies (build/bench_viewer): a CT series of --slices slices (100; made by
``mftp.node.devnet.studies.make_ct_series`` from one real CT slice) and a real MR image of
pydicom-data (``MR2_UNCR.dcm``, 1024x1024, 16 bit, never lossy-compressed).  Both are served by

- the node: a devnet of three validators runs as separate processes; hospital-a sends each
  study to hospital-c (loopback); a clinician of hospital-c, enrolled with a TOTP second factor
  and signed in through the node's own sign-in routes, opens them in the OHIF app the node
  serves under ``/ohif/`` (its gate checks the session cookie on every DICOMweb request; the
  script first checks that a request without the cookie is refused with 401);
- Orthanc (Debian's orthanc + orthanc-dicomweb), the baseline: the same OHIF build, served by
  this script's own aiohttp app with the same ``OhifApp`` class (same files, same gzip, same
  cache headers), its ``/dicom-web`` a same-origin reverse proxy to Orthanc's DICOMweb root.
  The proxy is one more hop on loopback that the node side does not pay (a streaming relay:
  metadata and frames of a 20-slice series took 4.4 ms through it against 3.1 ms straight to
  Orthanc, medians of 126 requests): it counts against Orthanc, and is said here so the ratio
  is read with it in mind.

Chromium (Debian's, through Playwright) opens each study in a fresh browser context (empty
cache, the session cookie only); "first image" is ``performance.now()`` of the page (zero at
navigation start) at the viewer's render that first leaves a viewport canvas with over 5 % lit
pixels (the check of tests/node/viewing/test_browser.py, on every 4th pixel).  The page notes the
time of each render (cornerstone's ``CORNERSTONE_IMAGE_RENDERED`` event, heard in the capture
phase) and a check polled every 100 ms reads the canvas back only when something was drawn since
its last look, and dates a lit canvas by the render that drew it.  Reading the canvas on every
poll, as an earlier version did, starved what it watched: a readback of a software-rendered
canvas takes the page's main thread about 120 ms (a trace counted 843 ms in 7 reads during one
warm opening), and polls late behind the page's own work dated images up to 600 ms late.
A viewer that never sends the event is still read once a second, dated by the read.
In the same context the other study is then opened with the app already in the browser's
cache: the warm figure.  Each study order is run on both sides one after the other, the side that
goes first alternating, so that load on the shared machine falls on both.  Before the measured
rounds, every frame of each study is fetched once from each side, unmeasured (the node's first
open restores the study from its encrypted store, Orthanc reads its files from disk; both then
answer from their caches, as on a viewer in use), and one context opens a study unmeasured: the
browser's first context starts its GPU process and fills its caches, a cost that otherwise fell
on whichever side came first (1-2 s here).  The browser runs as Chrome does on a machine without
a GPU, which this is: compositing in software, WebGL on SwiftShader (mftp.node.devnet.browser).

Figures (medians over --contexts fresh contexts each; 5, --quick 1):

  first_image_ms        {"node_ct", "node_mr", "orthanc_ct", "orthanc_mr"}: cold browser
  first_image_ratio     node / Orthanc, the worse of the two studies (goal <= 1.0); per study in
                        first_image_ratio_by_study
  warm_first_image_ms   the node's, the worse of the two studies (goal <= 1,500); all four in
                        warm_first_image_ms_by
  first_image_while_transferring_s
                        ``mftp-node send`` of bench_transfer.py's study (--mb MB, 500; --quick 40)
                        from hospital-a to hospital-b, which fetches through node/devnet/throttle.py
                        at --mbit (100 Mbit/s): seconds from starting the command until the first
                        image shows at hospital-b, in a signed-in browser that has the app cached
                        and looks for the study every 0.1 s (goal <= 5 s); the moment the viewer
                        is opened plus the page's own time of the render that drew the image
  study_visible_s       of that: until hospital-b's QIDO first lists the study
  transfer_s            until hospital-b holds the whole study, verified
  goals_met             each goal, true or false
  while_transferring_error
                        only if that send ended without the study arriving whole (the three
                        while-transferring figures are then null and the exit status 1; the
                        other figures still stand)

Progress goes to stderr; the last stdout line is one JSON object.  --quick runs in under two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
from aiohttp import web
from bench_transfer import make_study  # the 500 MB study of bench_transfer.py, made the same way
from pydicom.data import get_testdata_file

from mftp.node.api_client import SessionClient
from mftp.node.devnet.browser import CHROMIUM, NO_GPU_ARGS
from mftp.node.devnet.client import TEST_CONSENSUS, api, cli_command, environment_without_passphrase
from mftp.node.devnet.consortium import (
    Member,
    NodeProcess,
    create_devnet,
    free_ports,
    start_all,
    stop_all,
    wait_for_height,
)
from mftp.node.devnet.people import enrol
from mftp.node.devnet.studies import make_ct_series
from mftp.node.devnet.throttle import ThreadedProxy, ThrottleProxy
from mftp.node.viewing.ohif import OhifApp, default_dist

ROOT = Path(__file__).resolve().parent.parent / "build" / "bench_viewer"
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
ORTHANC_PLUGINS = [p for p in ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins") if Path(p).is_dir()]
MR_FILE = "MR2_UNCR.dcm"
SETTLE_S = 5.0  # as bench_transfer.py: let each node's start-up work finish before timing
IMAGE_TIMEOUT_MS = 60_000
POLL_MS = 100  # how often the page is checked for an image (see the module docstring)
GOALS = {"first_image_ratio": 1.0, "warm_first_image_ms": 1500.0, "first_image_while_transferring_s": 5.0}

# Installed in every page before the viewer's own scripts: the time of the latest render.
RENDER_WATCH_JS = """
window.__mftpFirstImage = {drawn: null, checked: null, shown: null, readAt: 0};
document.addEventListener('CORNERSTONE_IMAGE_RENDERED', () => {
  window.__mftpFirstImage.drawn = performance.now();
}, true);
"""

# When a viewport canvas first shows an image: the time of the render that drew it (ms since
# navigation start), else false so that wait_for_function polls again.  The lit share as
# tests/node/viewing/test_browser.py measures it (over 5 % of a canvas brighter than 30), on every
# 4th pixel.  The canvas is read only after a render it has not seen (see the module docstring).
FIRST_IMAGE_JS = """() => {
    const watch = window.__mftpFirstImage;
    if (!watch) return false;
    if (watch.shown !== null) return watch.shown;
    const now = performance.now();
    let drawn = watch.drawn;
    if (drawn === null) {
      if (now - watch.readAt < 1000) return false;
      drawn = now;  // no render event from this viewer: read once a second, dated by the read
    } else if (drawn === watch.checked) {
      return false;
    }
    watch.checked = drawn;
    watch.readAt = now;
    for (const c of document.querySelectorAll('canvas.cornerstone-canvas')) {
      if (!c.width || !c.height) continue;
      const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let lit = 0, seen = 0;
      for (let i = 0; i < data.length; i += 16) {
        seen++;
        if (data[i] + data[i+1] + data[i+2] > 30) lit++;
      }
      if (lit / seen > 0.05) {
        watch.shown = drawn;
        return drawn;
      }
    }
    return false;
}"""


STARTED = time.monotonic()


def say(text: str) -> None:
    """Progress on stderr, with the seconds since the script started."""
    print(f"[{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


# ------------------------------------------------------------------------------------ studies


@dataclass(frozen=True)
class Study:
    """One study on disk: its folder and its Study Instance UID."""

    name: str
    folder: Path
    uid: str


def make_studies(root: Path, slices: int) -> list[Study]:
    """The CT series and the real MR study (see the module docstring)."""
    ct_paths = make_ct_series(root / "ct", slices, patient_id="BENCH-CT")
    ct_uid = str(pydicom.dcmread(ct_paths[0], stop_before_pixels=True).StudyInstanceUID)
    source = get_testdata_file(MR_FILE)
    assert source is not None, f"pydicom-data lacks {MR_FILE}"
    (root / "mr").mkdir(parents=True)
    mr = pydicom.dcmread(source)
    mr.PatientID, mr.PatientName = "BENCH-MR", "Bench^Mr"  # made up, as the CT's
    mr.save_as(root / "mr" / MR_FILE)
    return [Study("ct", root / "ct", ct_uid), Study("mr", root / "mr", str(mr.StudyInstanceUID))]


def study_uid_of(folder: Path) -> str:
    """The Study Instance UID of the first file in ``folder`` (all of them share it)."""
    first = min(folder.iterdir())
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


# ------------------------------------------------------------------------------------ Orthanc


@contextmanager
def running_orthanc(workdir: Path) -> Iterator[str]:
    """Orthanc with its DICOMweb plugin on a free loopback port (as tests/orthanc_server.py); its URL."""
    http_port, dicom_port = free_ports(2)
    storage = workdir / "orthanc-db"
    storage.mkdir(parents=True)
    config = {
        "Name": "MFTP-BENCH", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": http_port, "DicomPort": dicom_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": ORTHANC_PLUGINS,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
    }  # fmt: skip
    (workdir / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    with (workdir / "orthanc.log").open("wb") as log:
        process = subprocess.Popen([ORTHANC, str(workdir / "orthanc.json")], stdout=log, stderr=log)
        url = f"http://127.0.0.1:{http_port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("Orthanc did not start (see its log in build/bench_viewer)")
                try:
                    with urllib.request.urlopen(f"{url}/system", timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def upload(orthanc_url: str, folder: Path) -> None:
    """Store every file of ``folder`` in Orthanc through its REST API."""
    for path in sorted(folder.iterdir()):
        request = urllib.request.Request(f"{orthanc_url}/instances", data=path.read_bytes(), method="POST")
        request.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()


# Request headers the relay passes on (the browser's Host too: Orthanc writes its BulkDataURIs
# from it, so they point at the page's origin as OHIF needs) and response headers it passes back.
PASS_REQUEST = ("Accept", "Accept-Encoding", "Host", "Range")
PASS_RESPONSE = ("Content-Type", "Content-Encoding", "Content-Length", "Cache-Control", "ETag")


class OrthancSide:
    """The baseline's web server: OHIF (same build, same ``OhifApp``) and a relay to Orthanc's DICOMweb.

    Runs its own event loop in a thread, as the script's browser is driven synchronously.
    """

    def __init__(self, orthanc_url: str) -> None:
        self.orthanc_url = orthanc_url
        self.port = free_ports(1)[0]
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._thread.start()
        if not self._ready.wait(30):
            raise SystemExit("the baseline's web server did not start")

    @property
    def url(self) -> str:
        """Its origin."""
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        # Orthanc's keep-alive connections reused, as the node's answers come from one process.
        self._session = aiohttp.ClientSession(auto_decompress=False)
        ohif = OhifApp(default_dist())
        app = web.Application()
        app.router.add_get("/ohif", ohif.redirect)
        app.router.add_get("/ohif/{tail:.*}", ohif.serve)
        app.router.add_route("*", "/dicom-web/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: request.headers[k] for k in PASS_REQUEST if k in request.headers}
        async with self._session.request(
            request.method, f"{self.orthanc_url}{request.rel_url}", headers=headers,
            data=await request.read() if request.can_read_body else None,
        ) as upstream:  # fmt: skip
            response = web.StreamResponse(status=upstream.status)
            for name in PASS_RESPONSE:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(1 << 16):
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the browser went away (its context closed): nothing left to answer
            return response

    def close(self) -> None:
        """Stop the server and its loop."""

        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# ------------------------------------------------------------------------------------ browser


@dataclass
class Side:
    """Where one side's viewer answers, and the cookies a signed-in browser of it holds."""

    name: str
    origin: str
    cookies: list[Any] = field(default_factory=list)  # Playwright's SetCookieParam

    def viewer(self, study: Study) -> str:
        """The viewer's URL of ``study`` (the node's own path, process.VIEWER_URL)."""
        return f"{self.origin}/ohif/viewer?StudyInstanceUIDs={study.uid}"


def session_cookies(origin: str, session: SessionClient) -> list[dict[str, Any]]:
    """The signed-in session's cookie, for a browser context of ``origin``."""
    name, value = session.cookie.split("=", 1)
    return [{"name": name, "value": value, "url": origin, "httpOnly": True, "sameSite": "Strict"}]


class Browser:
    """Debian's chromium through Playwright (executable_path; never ``playwright install``)."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._manager = sync_playwright()
        self._playwright = self._manager.start()
        self.browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=list(NO_GPU_ARGS),
        )

    def context(self, side: Side) -> Any:
        """A fresh context (empty cache) holding only ``side``'s session cookie."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script(RENDER_WATCH_JS)
        if side.cookies:
            context.add_cookies(side.cookies)
        return context

    def close(self) -> None:
        """Close the browser and Playwright."""
        self.browser.close()
        self._manager.__exit__(None, None, None)


APP_LOADED_JS = "() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"


def first_image_ms(page: Any, url: str) -> tuple[float, float]:
    """Open ``url`` in ``page``; ms from navigation start until the viewport shows an image, and
    until the app's page was loaded (DOMContentLoaded: its scripts fetched and run), for the report."""
    page.goto(url, wait_until="commit")
    shown = wait_for_image(page, url)
    return float(shown.json_value()), float(page.evaluate(APP_LOADED_JS))


def wait_for_image(page: Any, url: str) -> Any:
    """Until ``page`` shows an image (its ``performance.now()`` then, as a JS handle)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(FIRST_IMAGE_JS, polling=POLL_MS, timeout=IMAGE_TIMEOUT_MS)
    except PlaywrightTimeout:
        seconds = IMAGE_TIMEOUT_MS / 1000
        raise SystemExit(f"no image in the viewport {seconds:.0f} s after opening {url}") from None


@dataclass
class Timings:
    """Milliseconds per ``"<side>_<study>"``: cold and warm first images, and cold app loads per side."""

    cold: dict[str, list[float]] = field(default_factory=dict)
    warm: dict[str, list[float]] = field(default_factory=dict)
    app_loaded: dict[str, list[float]] = field(default_factory=dict)


FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def _get(url: str, cookie: str, accept: str) -> bytes:
    headers = {"Accept": accept, **({"Cookie": cookie} if cookie else {})}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return bytes(response.read())


def require_gate(side: Side, study: Study) -> None:
    """Stop unless ``side`` refuses the study's DICOMweb to a caller without its session cookie.

    The node side's figures are meant to include its gate; a node that let the request through
    unsigned would be measured without it.
    """
    try:
        _get(f"{side.origin}/dicom-web/studies/{study.uid}/series", "", "application/dicom+json")
    except urllib.error.HTTPError as refused:
        if refused.code == 401:
            return
        raise SystemExit(f"the node answered an unsigned request with {refused.code}, not 401") from None
    raise SystemExit("the node served DICOMweb without a session: its gate is not in the measured path")


def warm_server(side: Side, study: Study) -> int:
    """Fetch what the viewer asks for (series, metadata, every frame) once, unmeasured; the frames.

    The node's first opening of a study restores it from its encrypted store and Orthanc's reads
    its files from disk: both then answer from their caches, as a viewer in use does.  Through
    HTTP rather than a browser round, which would cost the --quick run a minute.
    """
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in side.cookies)
    root = f"{side.origin}/dicom-web/studies/{study.uid}"
    frames = 0
    for series in json.loads(_get(f"{root}/series", cookie, "application/dicom+json")):
        series_uid = series["0020000E"]["Value"][0]
        metadata = json.loads(_get(f"{root}/series/{series_uid}/metadata", cookie, "application/dicom+json"))
        for instance in metadata:
            sop = instance["00080018"]["Value"][0]
            _get(f"{root}/series/{series_uid}/instances/{sop}/frames/1", cookie, FRAME_ACCEPT)
            frames += 1
    return frames


def measure_sides(browser: Browser, sides: list[Side], studies: list[Study], contexts: int) -> Timings:
    """Cold and warm first-image times (see the module docstring)."""
    timings = Timings()
    # Each context opens one study cold, then the other warm (the same tab, the app in its cache).
    orders = [(studies[0], studies[1]), (studies[1], studies[0])]
    for side in sides:
        for study in studies:
            say(f"  {side.name}: {warm_server(side, study)} frames of the {study.name} study fetched once")
    # The browser's first context also starts its GPU process and fills its font and shader
    # caches: a cost of the browser, paid here unmeasured, not by whichever side came first.
    context = browser.context(sides[0])
    try:
        first_image_ms(context.new_page(), sides[0].viewer(studies[0]))
    finally:
        context.close()
    # Side by side at every step (node then Orthanc, then Orthanc then node), so that a slow spell of
    # the shared machine falls on both sides of a pair rather than on one side's whole run.
    for run in range(contexts):
        for step, (first, then) in enumerate(orders):
            for side in sides if (run + step) % 2 == 0 else list(reversed(sides)):
                context = browser.context(side)
                try:
                    page = context.new_page()
                    cold_ms, loaded_ms = first_image_ms(page, side.viewer(first))
                    warm_ms, _ = first_image_ms(page, side.viewer(then))
                finally:
                    context.close()
                timings.cold.setdefault(f"{side.name}_{first.name}", []).append(cold_ms)
                timings.warm.setdefault(f"{side.name}_{then.name}", []).append(warm_ms)
                timings.app_loaded.setdefault(side.name, []).append(loaded_ms)
                say(
                    f"  run {run + 1} {side.name}: {first.name} "
                    f"{cold_ms:.0f} ms cold (app loaded at {loaded_ms:.0f}), then {then.name} "
                    f"{warm_ms:.0f} ms warm"
                )
    return timings


# ------------------------------------------------------------------------------------ node side


ENDED = ("failed", "refused")  # states a transfer does not leave: waiting longer is pointless


class TransferEnded(Exception):
    """A transfer ended without reaching the recipient whole (or the study never showed there)."""


def wait_received(sender: Member, recipient: Member, transfer_id: str, timeout_s: float = 600) -> None:
    """Until ``recipient`` holds the transfer complete (raises if it failed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, held = api(recipient, "GET", f"/transfers/{transfer_id}")
        if status == 200 and held["state"] == "complete":
            return
        if status == 200 and held["state"] in ENDED:
            raise TransferEnded(f"transfer {held['state']} at the recipient: {held.get('detail')}")
        _, sent = api(sender, "GET", f"/transfers/{transfer_id}")
        if sent.get("state") in ENDED:
            raise TransferEnded(f"transfer {sent['state']} at the sender: {sent.get('detail')}")
        time.sleep(0.1)
    raise TransferEnded(f"transfer {transfer_id} not complete after {timeout_s:.0f} s")


def send_over_loopback(sender: Member, recipient: Member, study: Study) -> None:
    """Send ``study`` (identified, for the institution) and wait until the recipient holds it."""
    body = {"source": str(study.folder), "to": recipient.name, "purpose": "TREAT", "mode": "identified"}
    status, answer = api(sender, "POST", "/transfers", body)
    if status != 202:
        raise SystemExit(f"send refused: {answer}")
    try:
        wait_received(sender, recipient, answer["transfer_id"])
    except TransferEnded as ended:
        raise SystemExit(str(ended)) from None


def visible(session: SessionClient, study_uid: str) -> bool:
    """Whether the signed-in user's QIDO lists ``study_uid`` (a user refreshing the study list)."""
    status, found = session.call("GET", f"/dicom-web/studies?StudyInstanceUID={study_uid}")
    return status == 200 and bool(found)


def while_transferring(
    browser: Browser, sender: Member, recipient: Member, folder: Path, session: SessionClient
) -> dict[str, float]:
    """``mftp-node send`` over the link; first image at the recipient, and the whole transfer."""
    study_uid = study_uid_of(folder)
    side = Side("recipient", recipient.api_url, session_cookies(recipient.api_url, session))
    context = browser.context(side)
    try:
        page = context.new_page()
        # The app in the browser's cache, as on a clinician's workstation that has used the viewer.
        page.goto(f"{side.origin}/ohif/", wait_until="networkidle")
        # Built (and the sender's clinician token made) before the clock starts.
        command = cli_command(
            sender, "send", str(folder), "--to", recipient.name, "--mode", "identified"
        )  # fmt: skip
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=environment_without_passphrase(),
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # "transfer <id> to <member> started"
            if not line.startswith("transfer "):
                raise SystemExit(f"mftp-node send did not start the transfer: {line.strip()!r}")
            transfer_id = line.split()[1]
            while not visible(session, study_uid):
                # A send that ended (refused, failed) before the study showed never will show it.
                if process.poll() is not None or time.monotonic() - started > 600:
                    _, sent = api(sender, "GET", f"/transfers/{transfer_id}")
                    raise TransferEnded(
                        f"the study never showed at the recipient: the transfer is {sent.get('state')} "
                        f"at the sender ({sent.get('detail')}), mftp-node send exited {process.poll()}"
                    )
                time.sleep(0.1)
            visible_s = time.monotonic() - started
            viewer = f"{side.origin}/ohif/viewer?StudyInstanceUIDs={study_uid}"
            opened_s = time.monotonic() - started
            page.goto(viewer, wait_until="commit")
            # Dated by the page's clock (zero at navigation start) at the render that drew it.
            shown_s = opened_s + float(wait_for_image(page, viewer).json_value()) / 1000
            say(f"  study listed after {visible_s:.1f} s, first image after {shown_s:.1f} s")
            wait_received(sender, recipient, transfer_id)
            transfer_s = time.monotonic() - started
            process.communicate(timeout=120)  # the command ends once the sender sees it delivered
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        context.close()
    return {"visible_s": visible_s, "shown_s": shown_s, "transfer_s": transfer_s}


def start_devnet(root: Path, mbit: float) -> tuple[list[Member], list[NodeProcess], ThreadedProxy]:
    """Three validators; hospital-b fetches from hospital-a through the throttled link (bench_transfer.py)."""
    members = create_devnet(root, validators=3, audit=0, consensus=TEST_CONSENSUS)
    a, b, _ = members
    (proxy_port,) = free_ports(1)
    direct = f'data_url = "https://127.0.0.1:{a.data_port}"'
    b.config_path.write_text(
        b.config_path.read_text().replace(direct, f'data_url = "https://127.0.0.1:{proxy_port}"')
    )
    proxy = ThreadedProxy(
        ThrottleProxy("127.0.0.1", proxy_port, "127.0.0.1", a.data_port, rate_mbit_per_s=mbit)
    )
    processes = start_all(members)
    try:
        wait_for_height(processes, 1, timeout_s=60)
    except BaseException:
        stop_all(processes)
        proxy.close()
        raise
    return members, processes, proxy


# ------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer slices and contexts, a 40 MB study")
    parser.add_argument("--contexts", type=int, default=None, help="fresh contexts per figure (5)")
    parser.add_argument("--slices", type=int, default=None, help="slices of the CT series (100)")
    parser.add_argument("--mb", type=int, default=None, help="MB of the study sent over the link (500)")
    parser.add_argument("--mbit", type=float, default=100.0, help="link rate in Mbit/s (default 100)")
    args = parser.parse_args()
    contexts = args.contexts or (1 if args.quick else 5)
    slices = args.slices or (30 if args.quick else 100)
    study_mb = args.mb or (40 if args.quick else 500)
    if not Path(CHROMIUM).exists() or not Path(ORTHANC).exists():
        raise SystemExit("needs Debian's chromium, orthanc and orthanc-dicomweb: run `make system-deps`")
    if not (default_dist() / "index.html").is_file():
        raise SystemExit("the OHIF viewer is not installed: run `make viewer`")
    started, load_before = time.monotonic(), os.getloadavg()[0]
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    say(f"making a {slices}-slice CT series, the MR study and a ~{study_mb} MB study to send over the link")
    studies = make_studies(ROOT, slices)
    big = ROOT / "link-study"
    big_bytes = make_study(big, study_mb * 1_000_000)
    with running_orthanc(ROOT) as orthanc_url:
        for study in studies:
            upload(orthanc_url, study.folder)
        say("devnet: three validators; hospital-b behind the link")
        members, processes, proxy = start_devnet(ROOT / "devnet", args.mbit)
        baseline: OrthancSide | None = None
        browser: Browser | None = None
        try:
            a, b, c = members
            time.sleep(SETTLE_S)
            for study in studies:
                say(f"sending the {study.name} study {a.name} -> {c.name} (loopback)")
                send_over_loopback(a, c, study)
            # A clinician at each recipient, enrolled with TOTP; its signed-in session's cookie.
            _, at_c = enrol(c, "dr.viewer")
            _, at_b = enrol(b, "dr.viewer")
            for study in studies:
                require_gate(Side("node", c.api_url), study)
            baseline = OrthancSide(orthanc_url)
            sides = [
                Side("node", c.api_url, session_cookies(c.api_url, at_c)),
                Side("orthanc", baseline.url),
            ]
            browser = Browser()
            say(f"first images: {contexts} fresh contexts per figure, node and Orthanc interleaved")
            timings = measure_sides(browser, sides, studies, contexts)
            say(f"while transferring: mftp-node send of {big_bytes / 1e6:.0f} MB, {a.name} -> {b.name}")
            try:
                link: dict[str, float | None] = dict(while_transferring(browser, a, b, big, at_b))
                link_error = ""
            except TransferEnded as ended:
                # The figures measured so far still count; the JSON says what broke, the exit code too.
                say(f"  while transferring: {ended}")
                link, link_error = {"visible_s": None, "shown_s": None, "transfer_s": None}, str(ended)
            crossed = proxy.proxy.bytes_forwarded
        finally:
            if browser is not None:
                browser.close()
            if baseline is not None:
                baseline.close()
            stop_all(processes)
            proxy.close()
    cold_ms = {name: median(values) for name, values in sorted(timings.cold.items())}
    warm_ms = {name: median(values) for name, values in sorted(timings.warm.items())}
    ratios = {s.name: round(cold_ms[f"node_{s.name}"] / cold_ms[f"orthanc_{s.name}"], 3) for s in studies}
    figures: dict[str, Any] = {
        "first_image_ms": cold_ms,
        "first_image_ratio": max(ratios.values()),
        "first_image_ratio_by_study": ratios,
        "warm_first_image_ms": max(warm_ms[f"node_{s.name}"] for s in studies),
        "warm_first_image_ms_by": warm_ms,
        "app_loaded_ms": {name: median(values) for name, values in sorted(timings.app_loaded.items())},
        "first_image_while_transferring_s": rounded(link["shown_s"]),
        "study_visible_s": rounded(link["visible_s"]),
        "transfer_s": rounded(link["transfer_s"]),
        "link_study_mb": round(big_bytes / 1e6, 1),
        "link_mb_crossed": round(crossed / 1e6, 1),
        "link_mbit_per_s": args.mbit,
        "ct_slices": slices,
        "contexts": contexts,
        "bench_s": round(time.monotonic() - started, 1),
        # The two cores are shared: absolute times swing with the load; the ratio is interleaved.
        "load_average_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }
    if link_error:
        figures["while_transferring_error"] = link_error
    figures["goals_met"] = {
        name: figures[name] is not None and figures[name] <= goal for name, goal in GOALS.items()
    }
    print(json.dumps(figures))
    return 1 if link_error else 0


if __name__ == "__main__":
    sys.exit(main())
