"""The DICOMweb routes over in-process received studies, read by real clients and by attackers.

``dicomweb-client`` (the Python library) reads every study back through QIDO-RS and WADO-RS,
every instance byte for byte; another user's study is a 404 on every route; an opening is
recorded once per session and study; malformed requests are 4xx, never 500.
"""

from __future__ import annotations

import asyncio
import gzip
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from aiohttp.test_utils import TestClient, TestServer
from dicomweb_client.api import DICOMwebClient

from mftp.node.viewing.catalog import Scope
from tests.node.viewing.helpers import Node, pydicom_files, viewing_app

pytestmark = pytest.mark.timeout(120)

FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Node, TestClient[Any, Any], dict[str, Any]]]:
    node = Node(tmp_path)
    mine = pydicom_files(*FILES, patient_id="PAT-1")
    institution = pydicom_files("SC_rgb_16bit.dcm", "US1_J2KR.dcm", patient_id="PAT-2")
    other = pydicom_files("CT_small.dcm", patient_id="PAT-3")
    sent = pydicom_files("MR_small.dcm", patient_id="PAT-4")
    ids = {
        "mine": node.receive(mine, to_user="user:dr.b"),
        "institution": node.receive(institution),
        "other": node.receive(other, to_user="user:dr.other"),
        "sent": node.send(sent, user="user:dr.b"),
    }
    files = {"mine": mine, "institution": institution, "other": other, "sent": sent}
    client = TestClient(TestServer(viewing_app(node)))
    await client.start_server()
    try:
        yield node, client, {"ids": ids, "files": files}
    finally:
        await client.close()


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _client(client: TestClient[Any, Any], user: str = "dr.b") -> DICOMwebClient:
    return DICOMwebClient(url=str(client.make_url("/dicom-web")), headers={"X-Test-User": user})


async def test_dicomweb_client_reads_every_visible_study_back_byte_for_byte(served: Any) -> None:
    _node, client, info = served
    web = _client(client)
    visible = [d for k in ("mine", "institution", "sent") for d in info["files"][k].values()]

    def read_all() -> dict[str, Any]:
        studies = web.search_for_studies()
        out: dict[str, Any] = {"studies": studies, "instances": {}, "frames": {}, "metadata": {}}
        for study in studies:
            st = study["0020000D"]["Value"][0]
            for series in web.search_for_series(st):
                se = series["0020000E"]["Value"][0]
                out["metadata"][se] = web.retrieve_series_metadata(st, se)
                for instance in web.search_for_instances(st, se):
                    sop = instance["00080018"]["Value"][0]
                    url = f"{web.base_url}/studies/{st}/series/{se}/instances/{sop}"
                    # The raw parts, decoded by the library's own multipart reader.
                    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
                    response = web._session.get(url, headers={"Accept": accept})
                    parts = list(web._decode_multipart_message(response, stream=False))
                    out["instances"][sop] = parts
                    ds = web.retrieve_instance(st, se, sop)
                    frames = int(ds.get("NumberOfFrames", 1) or 1)
                    out["frames"][sop] = web.retrieve_instance_frames(
                        st, se, sop, list(range(1, frames + 1)),
                        media_types=(("application/octet-stream", "*"),),
                    )  # fmt: skip
        return out

    got = await asyncio.to_thread(read_all)
    assert len(got["studies"]) == 3  # mine, the institution's, the one dr.b sent; not dr.other's
    by_sop = {_uids(data)[2]: data for data in visible}
    assert set(got["instances"]) == set(by_sop)
    for sop, parts in got["instances"].items():
        assert parts == [by_sop[sop]], "instance not byte for byte"
    # Frames as stored: native slices and encapsulated fragments equal what pydicom finds.
    from pydicom.encaps import generate_frames

    for sop, frames in got["frames"].items():
        ds = pydicom.dcmread(io.BytesIO(by_sop[sop]))
        count = int(ds.get("NumberOfFrames", 1) or 1)
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            assert frames == list(generate_frames(ds.PixelData, number_of_frames=count))
        else:
            assert b"".join(frames) == ds.PixelData[: len(b"".join(frames))]
            assert len(frames) == count
    # Metadata: every instance, bulk data as URIs on the origin the client used.
    for series_meta in got["metadata"].values():
        for item in series_meta:
            uri = item["7FE00010"]["BulkDataURI"]
            assert uri.startswith(str(client.make_url("/dicom-web/studies/")))


async def test_uncompressed_frames_match_pydicom_pixels(served: Any) -> None:
    _node, client, info = served
    files = info["files"]["mine"]
    for data in files.values():
        ds = pydicom.dcmread(io.BytesIO(data))
        st, se, sop = _uids(data)
        url = f"/dicom-web/studies/{st}/series/{se}/instances/{sop}/frames/1"
        # No transfer syntax asked: the frame comes uncompressed, whatever the file holds.
        answer = await client.get(
            url, headers={"X-Test-User": "dr.b", "Accept": "multipart/related; type=application/octet-stream"}
        )
        assert answer.status == 200, await answer.text()
        body = await answer.read()
        boundary = answer.headers["Content-Type"].split("boundary=")[1]
        part = body.split(f"--{boundary}".encode())[1].split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]
        count = int(ds.get("NumberOfFrames", 1) or 1)
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:  # pydicom has no JPEG-LS plug-in here
            import imagecodecs
            from pydicom.encaps import generate_frames

            first = next(generate_frames(ds.PixelData, number_of_frames=count))
            expected = np.asarray(imagecodecs.imread(first))
        else:
            expected = ds.pixel_array if count == 1 else ds.pixel_array[0]
        dtype = expected.dtype.newbyteorder("<")
        assert np.array_equal(np.frombuffer(part, dtype=dtype).reshape(expected.shape), expected)


def _routes(st: str, se: str, sop: str) -> list[str]:
    base = f"/dicom-web/studies/{st}"
    return [
        base, f"{base}/metadata", f"{base}/series", f"{base}/instances", f"{base}/thumbnail",
        f"{base}/series/{se}", f"{base}/series/{se}/metadata", f"{base}/series/{se}/instances",
        f"{base}/series/{se}/thumbnail", f"{base}/series/{se}/instances/{sop}",
        f"{base}/series/{se}/instances/{sop}/metadata", f"{base}/series/{se}/instances/{sop}/frames/1",
        f"{base}/series/{se}/instances/{sop}/bulkdata/7FE00010",
        f"{base}/series/{se}/instances/{sop}/rendered",
        f"{base}/series/{se}/instances/{sop}/frames/1/rendered",
        f"{base}/series/{se}/instances/{sop}/thumbnail",
    ]  # fmt: skip


async def test_another_users_study_is_404_on_every_route_and_never_listed(served: Any) -> None:
    node, client, info = served
    data = next(iter(info["files"]["other"].values()))
    st, se, sop = _uids(data)
    for path in _routes(st, se, sop):
        for accept in ("*/*", "multipart/related; type=application/octet-stream; transfer-syntax=*"):
            answer = await client.get(path, headers={"X-Test-User": "dr.b", "Accept": accept})
            assert answer.status == 404, (path, answer.status)
    # The owner reads the same routes (so the 404s above are the scope's, not broken routes).
    for path in _routes(st, se, sop):
        answer = await client.get(path, headers={"X-Test-User": "dr.other"})
        assert answer.status in (200, 406), (path, answer.status, await answer.text())
    for query in ("", f"?StudyInstanceUID={st}", "?PatientID=PAT-3", "?PatientName=*"):
        for level in ("studies", "series", "instances"):
            answer = await client.get(f"/dicom-web/{level}{query}", headers={"X-Test-User": "dr.b"})
            assert answer.status == 200
            assert st not in await answer.text()
    # Without sign-in: 401, before anything is looked up.
    answer = await client.get(f"/dicom-web/studies/{st}/metadata")
    assert answer.status == 401
    # A patient share sees only its studies (issue 19 constructs the scope).
    assert not node.catalog.visible(Scope.share(()).__class__(studies=frozenset(), transfers=frozenset()))


async def test_one_view_record_per_session_and_study_not_per_frame(served: Any) -> None:
    node, client, info = served
    files = info["files"]["mine"]
    headers = {"X-Test-User": "dr.b", "Cookie": "mftp_session=first"}
    for data in files.values():
        st, se, sop = _uids(data)
        for path in [
            *_routes(st, se, sop)[:3],
            f"/dicom-web/studies/{st}/series/{se}/instances/{sop}/frames/1",
        ]:
            await client.get(
                path,
                headers={
                    **headers,
                    "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*",
                },
            )
    views = [r for r in node.records if r[2] == "view"]
    assert views == [(info["ids"]["mine"], "user:dr.b", "view")]
    # A second session of the same user is a new opening: one more record.
    st, se, sop = _uids(next(iter(files.values())))
    await client.get(
        f"/dicom-web/studies/{st}/metadata", headers={"X-Test-User": "dr.b", "Cookie": "mftp_session=second"}
    )
    assert len([r for r in node.records if r[2] == "view"]) == 2
    # QIDO searches open nothing.
    await client.get("/dicom-web/studies", headers={"X-Test-User": "dr.b", "Cookie": "mftp_session=third"})
    assert len(node.records) == 2


async def test_share_scope_sees_its_studies_only(tmp_path: Path) -> None:
    node = Node(tmp_path)
    one = pydicom_files("CT_small.dcm", patient_id="PAT-9")
    two = pydicom_files("MR_small.dcm", patient_id="PAT-9")
    node.receive(one)
    node.receive(two)
    study_one = _uids(next(iter(one.values())))[0]
    app = viewing_app(node, scope_of=lambda principal: Scope.share([study_one]))
    async with TestClient(TestServer(app)) as client:
        answer = await client.get(
            "/dicom-web/studies", headers={"X-Test-User": "patient", "X-Test-Via": "share"}
        )
        studies = await answer.json()
        assert [s["0020000D"]["Value"][0] for s in studies] == [study_one]
        study_two = _uids(next(iter(two.values())))[0]
        answer = await client.get(
            f"/dicom-web/studies/{study_two}/metadata", headers={"X-Test-User": "patient"}
        )
        assert answer.status == 404


async def test_dicom_json_is_gzipped_for_a_client_that_accepts_it(served: Any) -> None:
    _node, client, info = served
    st, se, _ = _uids(next(iter(info["files"]["mine"].values())))
    url = f"/dicom-web/studies/{st}/series/{se}/metadata"
    asked = {"X-Test-User": "dr.b", "Accept": "application/dicom+json"}
    plain = await client.get(url, headers={**asked, "Accept-Encoding": "identity"})
    assert plain.status == 200 and "Content-Encoding" not in plain.headers
    packed = await client.get(url, headers={**asked, "Accept-Encoding": "gzip"}, auto_decompress=False)
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    body = await packed.read()
    assert gzip.decompress(body) == await plain.read() and len(body) < len(gzip.decompress(body))
