"""Test vectors of the viewer's pure cores, and the malformed requests an attacker would send.

QIDO matching (UIDs, Patient ID, names with wildcards, date ranges, modalities, accession,
includefield, limit, offset), Accept parsing with and without quotes, multipart encoding,
frames (native, bit-packed, encapsulated), the DICOM JSON model, and the OHIF file server
(no escaping its folder, index.html for app routes, caching and compression).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from mftp.node.errors import NodeUsageError
from mftp.node.viewing import dicomjson, frames, qido
from mftp.node.viewing.multipart import Part, encode_multipart, multipart_parts, parse_accept
from mftp.node.viewing.ohif import IMMUTABLE, REVALIDATE, OhifApp, app_config, default_dist
from tests.node.viewing.helpers import Node, pydicom_files, viewing_app


def _pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


STUDY = {
    "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
    "00100020": {"vr": "LO", "Value": ["PAT-0042"]},
    "00100010": _pn("Nordmann^Kari"),
    "00080020": {"vr": "DA", "Value": ["20240315"]},
    "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
    "00080050": {"vr": "SH", "Value": ["ACC-77"]},
}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("StudyInstanceUID", "1.2.3.4")], True),
        ([("StudyInstanceUID", "1.2.3")], False),  # no prefix matching of UIDs
        ([("0020000D", "9.9,1.2.3.4")], True),  # a list of UIDs
        ([("0020000D", "9.9\\1.2.3.4")], True),
        ([("PatientID", "PAT-0042")], True),
        ([("00100020", "PAT-004?")], True),
        ([("PatientID", "pat-0042")], False),  # LO is case-sensitive
        ([("PatientName", "nordmann*")], True),  # PN ignores case
        ([("PatientName", "*Kari")], True),
        ([("PatientName", "Hansen*")], False),
        ([("PatientName", "")], True),  # empty: universal
        ([("StudyDate", "20240101-20241231")], True),
        ([("StudyDate", "20240316-")], False),
        ([("StudyDate", "-20240315")], True),
        ([("StudyDate", "20240315")], True),
        ([("ModalitiesInStudy", "SR")], True),
        ([("ModalitiesInStudy", "MR")], False),
        ([("AccessionNumber", "ACC-77")], True),
        ([("AccessionNumber", "ACC-7")], False),
        ([("AccessionNumber", "ACC-*"), ("PatientID", "PAT-0042")], True),
        ([("AccessionNumber", "ACC-*"), ("PatientID", "X")], False),
        ([("PatientName", "(.*)+$")], False),  # a regular expression is literal text here
    ],
)
def test_qido_matching(params: list[tuple[str, str]], expected: bool) -> None:
    assert qido.matches(STUDY, qido.parse_query(params, qido.STUDY)) is expected


def test_qido_includefield_limit_offset() -> None:
    query = qido.parse_query(
        [("includefield", "00081030,StudyID"), ("limit", "2"), ("offset", "1")], qido.STUDY
    )
    assert query.include == {0x00081030, 0x00200010} and (query.limit, query.offset) == (2, 1)
    items = [
        {**STUDY, "0020000D": {"vr": "UI", "Value": [f"1.{i}"]}, "00081030": {"vr": "LO"}} for i in range(4)
    ]
    page = qido.page(items, query)
    assert [p["0020000D"]["Value"][0] for p in page] == ["1.1", "1.2"]
    assert "00081030" in page[0]
    everything = qido.parse_query([("includefield", "all")], qido.STUDY)
    assert qido.select({"DEADBEEF": {"vr": "LO"}}, everything) == {"DEADBEEF": {"vr": "LO"}}
    assert qido.parse_query([("limit", "999999")], qido.STUDY).limit == qido.MAX_LIMIT
    warned = qido.parse_query([("fuzzymatching", "true"), ("SOPInstanceUID", "1")], qido.STUDY)
    assert len(warned.warnings) == 2 and not warned.keys  # instance keys are ignored at the study level


@pytest.mark.parametrize(
    "params",
    [
        [("limit", "-1")],
        [("offset", "x")],
        [("NotAKeyword", "1")],
        [("00100010.00100020", "x")],  # sequence matching
        [("_", "1")],
        [("includefield", "Nope")],
        [("fuzzymatching", "maybe")],
        [("PatientID", "x" * 5000)],
        [("PatientID", "x")] * 100,
    ],
)
def test_qido_refuses_malformed_queries(params: list[tuple[str, str]]) -> None:
    with pytest.raises(NodeUsageError):
        qido.parse_query(params, qido.STUDY)


def test_accept_with_and_without_quotes() -> None:
    for header in (
        "multipart/related; type=application/octet-stream; transfer-syntax=*",
        'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
        'multipart/related;type="application/octet-stream";transfer-syntax=*',
    ):
        (media, part), *_ = multipart_parts(parse_accept(header))
        assert (part, media.param("transfer-syntax")) == ("application/octet-stream", "*")
    ranges = parse_accept(
        'image/png;q=0.5, multipart/related; type="application/dicom; x=1,2", image/jpeg;q=0'
    )
    assert [r.media_type for r in ranges] == ["multipart/related", "image/png"]  # q=0 refused, sorted
    assert ranges[0].param("type") == "application/dicom; x=1,2"
    assert parse_accept(None)[0].media_type == "*/*"
    for bad in ("nonsense", "image/png; q=2", "image/png; q=x", "a/b; junk", "x" * 5000):
        with pytest.raises(NodeUsageError):
            parse_accept(bad)


def test_multipart_round_trip() -> None:
    body, content_type = encode_multipart(
        [Part(b"one\r\n--x", "application/dicom"), Part(b"", "a/b")], "application/dicom"
    )
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    boundary = content_type.split("boundary=")[1].encode()
    pieces = body.split(b"--" + boundary)
    assert pieces[0] == b"" and pieces[-1] == b"--\r\n" and len(pieces) == 4
    assert pieces[1].split(b"\r\n\r\n", 1)[1] == b"one\r\n--x\r\n"


def test_frames_native_bitpacked_and_encapsulated() -> None:
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))  # 10 native frames
    count = frames.frame_count(ds)
    assert count == 10
    data, _ = frames.stored_frame(ds, 3)
    assert np.array_equal(np.frombuffer(data, dtype="<u2").reshape(64, 64), ds.pixel_array[2])
    enc = pydicom.dcmread(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    assert frames.stored_frame(enc, 10)[0] == list(generate_frames(enc.PixelData, number_of_frames=10))[9]
    decoded = np.frombuffer(frames.decoded_frame(enc, 2), dtype="<u2").reshape(64, 64)
    assert np.array_equal(decoded, ds.pixel_array[1])  # the same images, lossless
    bits = (
        pydicom.dcmread(get_testdata_file("liver_1frame.dcm"))
        if get_testdata_file("liver_1frame.dcm")
        else None
    )
    if bits is not None and int(bits.BitsAllocated) == 1:
        assert frames.stored_frame(bits, 1)[0]
    for text in ("0", "11", "1,x", "", "1" * 20, ",".join(["1"] * 10_001)):
        with pytest.raises(NodeUsageError):
            frames.parse_frame_list(text, count)
    assert frames.parse_frame_list("1, 3,10", count) == [1, 3, 10]
    png = frames.render(ds, 1, "image/png", (32, 32))
    assert png.startswith(b"\x89PNG")
    for viewport in ("0,0", "99999,1", "a,b", "1"):
        with pytest.raises(NodeUsageError):
            frames.parse_viewport(viewport, None)


def test_dicom_json_model_keeps_values_and_moves_bulk_out() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    meta = dicomjson.instance_metadata(ds, "1.2", "3.4", "5.6")
    assert meta["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": str(ds.PatientName)}]}
    assert meta["00280010"] == {"vr": "US", "Value": [128]}
    assert meta["7FE00010"]["BulkDataURI"].startswith(dicomjson.BASE_PLACEHOLDER + "/studies/1.2/series/3.4/")
    served = dicomjson.with_base(dicomjson.encode(meta), "https://node.example/dicom-web/")
    assert b"https://node.example/dicom-web/studies/1.2/series/3.4/instances/5.6/bulkdata/7FE00010" in served
    with pytest.raises(ValueError):
        dicomjson.bulk_tag("7FE0001")


def test_app_config_has_one_data_source_the_node() -> None:
    config = app_config()
    assert config.count("namespace") == 1 and "window.location.origin + '/dicom-web'" in config
    assert "http" not in config.replace("window.location", "")  # no other server named
    # CPU rendering only where WebGL is software-emulated or absent (the browser tests run both).
    assert "window.config.useCPURendering = true" in config and '"useCPURendering"' not in config


async def test_ohif_files_cached_compressed_and_contained(tmp_path: Path) -> None:
    if not (default_dist() / "index.html").is_file():
        pytest.fail("the OHIF viewer is not installed: run `make viewer`")
    node = Node(tmp_path)
    app = viewing_app(node, ohif=OhifApp(default_dist()))
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/ohif/viewer", headers={"Accept-Encoding": "gzip"})  # an app route
        assert page.status == 200 and page.headers["Cache-Control"] == REVALIDATE
        html = await page.text()
        assert 'window.PUBLIC_URL="/ohif/"' in html and 'src="/app' not in html
        bundle = next(p.name for p in default_dist().glob("app.bundle.*.js") if not p.name.endswith(".gz"))
        answer = await client.get(
            f"/ohif/{bundle}", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        )
        assert answer.headers["Content-Encoding"] == "gzip" and answer.headers["Cache-Control"] == IMMUTABLE
        assert b'__webpack_require__.p = "/ohif/"' in gzip.decompress(await answer.read())
        # The web workers' own runtimes too: none of the app's scripts loads chunks from the root.
        for script in sorted(default_dist().glob("*.js")):
            served = await (await client.get(f"/ohif/{script.name}")).read()
            assert b'__webpack_require__.p = "/";' not in served, script.name
        wasm = next(p.name for p in default_dist().glob("*.wasm"))
        answer = await client.get(f"/ohif/{wasm}", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert answer.headers["Content-Type"] == "application/wasm"
        assert (
            answer.headers.get("Content-Encoding") == "gzip" and answer.headers["Cache-Control"] == IMMUTABLE
        )
        config = await client.get("/ohif/app-config.js")
        assert "dicom-web" in await config.text()
        for path in ("/ohif/../../pyproject.toml", "/ohif/%2e%2e/%2e%2e/README.md", "/ohif/.installed-3.13.2",
                     "/ohif/nothing.js", "/ohif/..%2fREADME.md"):  # fmt: skip
            answer = await client.get(path)
            assert answer.status == 404 or "OHIF" in await answer.text(), path
            assert "MFTP" not in await answer.text()
        redirect = await client.get("/ohif", allow_redirects=False)
        assert redirect.status == 308 and redirect.headers["Location"] == "/ohif/"


async def test_malformed_dicomweb_requests_are_4xx_never_500(tmp_path: Path) -> None:
    node = Node(tmp_path)
    files = pydicom_files("CT_small.dcm")
    node.receive(files, to_user="user:dr.b")
    ds = pydicom.dcmread(io.BytesIO(next(iter(files.values()))), stop_before_pixels=True)
    st, se, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    inst = f"/dicom-web/studies/{st}/series/{se}/instances/{sop}"
    user = {"X-Test-User": "dr.b"}
    cases = [
        ("/dicom-web/studies?limit=-5", {}, 400),
        ("/dicom-web/studies?Bogus=1", {}, 400),
        ("/dicom-web/studies?PatientName=" + "*" * 900 + "x", {}, 200),  # wildcards are linear, no blow-up
        (f"{inst}/frames/0", {"Accept": "multipart/related; type=application/octet-stream"}, 400),
        (f"{inst}/frames/2", {"Accept": "multipart/related; type=application/octet-stream"}, 400),
        (f"{inst}/frames/1", {"Accept": "image/png"}, 406),
        (f"{inst}/frames/1", {"Accept": "multipart/related; type=application/octet-stream; q=nope"}, 400),
        (f"{inst}", {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3'}, 406),
        (f"{inst}/metadata", {"Accept": "image/jpeg"}, 406),
        (f"{inst}/bulkdata/zzzzzzzz", {}, 404),
        (f"{inst}/bulkdata/00100010", {}, 404),  # a name is not bulk data
        (f"{inst}/bulkdata/7FE00010", {"Accept": "application/octet-stream"}, 200),
        (f"{inst}/rendered?quality=0", {}, 400),
        (f"{inst}/rendered?viewport=-1,5", {}, 400),
        (f"{inst}/rendered", {"Accept": "image/gif"}, 406),
        (f"/dicom-web/studies/{st}/series/{se}/instances/1.2.3/metadata", {}, 404),
        (f"/dicom-web/studies/{'9' * 4000}/metadata", {}, 404),
    ]
    async with TestClient(TestServer(viewing_app(node))) as client:
        for path, headers, status in cases:
            answer = await client.get(path, headers={**user, **headers})
            assert answer.status == status, (path, headers, answer.status, await answer.text())
        rendered = await client.get(f"{inst}/rendered", headers=user)
        assert (
            rendered.headers["Content-Type"] == "image/jpeg"
            and rendered.headers["Cache-Control"] == "no-store"
        )


def test_every_dicomweb_route_needs_study_view_and_the_app_is_public(tmp_path: Path) -> None:
    from mftp.node.people.roles import Permission, rule_of

    app = web.Application()
    node = Node(tmp_path)
    ohif = OhifApp(default_dist()) if (default_dist() / "index.html").is_file() else None
    from mftp.node.viewing.routes import ViewingRoutes

    ViewingRoutes(node.catalog, ohif=ohif).add_routes(app.router, lambda handler: handler)
    for route in app.router.routes():
        rule = rule_of(route.handler)
        assert rule is not None, route.resource
        path = route.resource.canonical if route.resource else ""
        if path.startswith("/dicom-web"):
            assert rule.permission is Permission.STUDY_VIEW and not rule.step_up, path
        else:
            assert path.startswith("/ohif") and rule.permission is None, path


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("*", "", True), ("", "", True), ("", "a", False), ("a*", "abc", True), ("*c", "abc", True),
        ("a?c", "abc", True), ("a?c", "ac", False), ("*b*", "abc", True), ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXbY", False), ("**a", "ba", True), ("?*", "", False), ("*" * 900 + "x", "a" * 64, False),
    ],
)  # fmt: skip
def test_wildcards_match_in_polynomial_time(pattern: str, text: str, expected: bool) -> None:
    assert qido.glob_match(pattern, text) is expected
