"""A misbehaving DICOMweb server: bad parts are reported one by one, a cut body is the PACS's fault."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path

import aiohttp
import pydicom
import pytest
from aiohttp import web
from pydicom.data import get_testdata_file

from mftp.node.pacs import (
    DicomWebLimits,
    DicomWebSink,
    DicomWebSource,
    LocalFile,
    PacsError,
    PacsUnavailableError,
    describe_path,
)
from mftp.transfer.multipart import MultipartLimits, closing_delimiter, part_head
from mftp.transfer.study import ImportReport

BOUNDARY = "fault-boundary"
MODE = web.AppKey("mode", dict)  # {"value": ...}: what the fake server does, set by each test
STUDY = "1.2.3.4.5"


@cache
def instance(study_uid: str, sop_uid: str) -> bytes:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(str(path))
    ds.StudyInstanceUID = study_uid
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def body(*, close: bool) -> bytes:
    good = instance(STUDY, "1.2.3.4.5.1")
    parts = [
        part_head(BOUNDARY, "application/dicom") + good + b"\r\n",
        part_head(BOUNDARY, "application/dicom") + good[: len(good) // 2] + b"\r\n",  # truncated
        part_head(BOUNDARY, "text/html") + b"<h1>oops</h1>\r\n",
        part_head(BOUNDARY, "application/dicom") + instance("9.9.9", "9.9.9.1") + b"\r\n",
        part_head(BOUNDARY, "application/dicom") + b"not dicom at all" * 20 + b"\r\n",
        part_head(BOUNDARY, "application/dicom") + instance(STUDY, "1.2.3.4.5.1")[:-1] + b"\0\r\n",  # again
    ]
    return b"".join(parts) + (closing_delimiter(BOUNDARY) if close else b"")


async def wado(request: web.Request) -> web.StreamResponse:
    mode = request.app[MODE]["value"]
    if mode == "status":
        return web.Response(status=503)
    if mode == "not-multipart":
        return web.Response(body=b"{}", content_type="application/json")
    response = web.StreamResponse(
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    )
    await response.prepare(request)
    await response.write(body(close=mode != "cut"))
    return response


async def qido(request: web.Request) -> web.Response:
    answer = [{"0020000D": {"vr": "UI", "Value": [STUDY]}, "00201208": {"vr": "IS", "Value": [5]}}]
    return web.Response(text=json.dumps(answer), content_type="application/dicom+json")


async def stow(request: web.Request) -> web.Response:
    await request.read()
    # One instance stored, one refused with a reason, the rest not mentioned.
    doc = {
        "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3.4.5.1"]}}]},
        "00081198": {
            "vr": "SQ",
            "Value": [
                {
                    "00081155": {"vr": "UI", "Value": ["1.2.3.4.5.2"]},
                    "00081197": {"vr": "US", "Value": [0xC122]},
                }
            ],
        },
    }
    return web.Response(status=202, text=json.dumps(doc), content_type="application/dicom+json")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, dict[str, str]]]:
    app = web.Application()
    app[MODE] = {"value": "ok"}
    app.router.add_get("/dicom-web/studies", qido)
    app.router.add_get("/dicom-web/studies/{uid}", wado)
    app.router.add_post("/dicom-web/studies", stow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/dicom-web", app[MODE]
    await runner.cleanup()


async def fetch(
    url: str, spill: Path, limits: DicomWebLimits | None = None
) -> tuple[list[LocalFile], ImportReport]:
    report = ImportReport()
    async with aiohttp.ClientSession() as session:
        source = DicomWebSource(url, session, limits=limits)
        files = [f async for f in source.fetch_study(STUDY, spill, report)]
    return files, report


async def test_bad_parts_are_reported_and_the_rest_arrives(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    files, report = await fetch(server[0], tmp_path)
    assert [f.info.name for f in files] == ["1.2.3.4.5.1"]
    reasons = [(f.name, f.reason) for f in report.failures]
    assert reasons[0][0] == "part 2" and reasons[0][1].startswith("truncated")
    assert reasons[1] == ("part 3", "unexpected part type 'text/html'")
    assert reasons[2] == ("9.9.9.1", "belongs to another study")
    assert reasons[3][0] == "part 5" and reasons[3][1].startswith("not DICOM")
    assert reasons[4] == ("1.2.3.4.5.1", "sent twice; the first copy is kept")
    assert report.notes == ["the server announced 5 instances, 1 arrived intact"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.2.3.4.5.1.dcm"]
    assert files[0].path.read_bytes() == instance(STUDY, "1.2.3.4.5.1")


async def test_a_cut_body_is_the_pacs_fault_and_leaves_no_partial_file(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    server[1]["value"] = "cut"
    with pytest.raises(PacsUnavailableError, match="ends early"):
        await fetch(server[0], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.2.3.4.5.1.dcm"]


@pytest.mark.parametrize(
    ("mode", "message"), [("status", "HTTP 503"), ("not-multipart", "expected a multipart")]
)
async def test_refusals_are_pacs_errors(
    server: tuple[str, dict[str, str]], tmp_path: Path, mode: str, message: str
) -> None:
    server[1]["value"] = mode
    with pytest.raises(PacsError, match=message):
        await fetch(server[0], tmp_path)


async def test_part_limits_apply(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    # A limit exceeded stops the whole answer: the server is not behaving, nothing more is read.
    with pytest.raises(PacsError, match="larger than 1000 bytes"):
        await fetch(server[0], tmp_path, DicomWebLimits(multipart=MultipartLimits(max_part_bytes=1000)))
    assert not list(tmp_path.iterdir())
    with pytest.raises(PacsError, match="more than 2 parts"):
        await fetch(server[0], tmp_path, DicomWebLimits(multipart=MultipartLimits(max_parts=2)))


async def test_stow_response_decides_each_file(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    files = []
    for i in (1, 2, 3):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(instance(STUDY, f"1.2.3.4.5.{i}"))
        info, _ = describe_path(path, f"{i}.dcm")
        files.append(LocalFile(path, info))
    async with aiohttp.ClientSession() as session:
        report = await DicomWebSink(server[0], session).deliver(files)
    assert report.ok == ["1.dcm"]
    assert [(f.name, f.reason) for f in report.failures] == [
        ("2.dcm", "refused by the PACS: SOP class not supported (0xC122)"),
        ("3.dcm", "not stored by the PACS (HTTP 202, no reason given)"),
    ]
