"""The node's DICOMweb answers as Orthanc's DICOMweb plugin does, for the same study.

The same files are received by the node (in process) and stored in a real Orthanc; the same
dicomweb-client calls (QIDO-RS at three levels, WADO-RS series metadata) go to both, and the
answers are compared attribute by attribute.  Bulk data is compared by kind only (both point
at the value with a URI, or both inline it): URIs name different servers.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp.test_utils import TestClient, TestServer
from dicomweb_client.api import DICOMwebClient

from tests.node.viewing.helpers import Node, pydicom_files, viewing_app
from tests.orthanc_server import OrthancServer

pytestmark = pytest.mark.timeout(120)

FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm")


def _normal(value: Any) -> Any:
    """Numbers as floats (one server writes 1, the other 1.0); bulk values by kind."""
    if isinstance(value, dict):
        if "BulkDataURI" in value or "InlineBinary" in value:
            return {"vr": value.get("vr"), "bulk": True}
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


# Orthanc 1.10's plugin leaves Pixel Data out of metadata; the standard (and OHIF) take it as a
# BulkDataURI, which the node gives.  RetrieveURL names each server.  Orthanc answers its own
# default Specific Character Set for an instance that states none; the node answers the file's.
SKIPPED = {"7FE00010", "00081190", "00080005"}


def _compare(ours: dict[str, Any], theirs: dict[str, Any], *, qido: bool = False) -> list[str]:
    """Differences; for QIDO, only attributes Orthanc answers with a value must be equal in ours.

    QIDO answers may carry more than the required attributes (the node adds Instance
    Availability; each server leaves empty optional ones out or in), never less data.
    """
    keys = {k for k, v in theirs.items() if "Value" in v} if qido else set(ours) | set(theirs)
    problems = []
    for key in sorted(keys):
        if key in SKIPPED:
            continue
        a, b = _normal(ours.get(key)), _normal(theirs.get(key))
        if a != b:
            problems.append(f"{key}: ours {str(a)[:80]} theirs {str(b)[:80]}")
    return problems


async def test_qido_and_metadata_match_orthanc(tmp_path: Path, orthanc: OrthancServer) -> None:
    node = Node(tmp_path)
    files = pydicom_files(*FILES, patient_id="PAT-7")
    node.receive(files, to_user="user:dr.b")
    for data in files.values():
        orthanc.upload(data)
    study = str(
        pydicom.dcmread(io.BytesIO(next(iter(files.values()))), stop_before_pixels=True).StudyInstanceUID
    )
    async with TestClient(TestServer(viewing_app(node))) as client:
        mine = DICOMwebClient(url=str(client.make_url("/dicom-web")), headers={"X-Test-User": "dr.b"})
        theirs = DICOMwebClient(url=orthanc.dicomweb_url)

        def ask(web: DICOMwebClient) -> dict[str, Any]:
            studies = web.search_for_studies(search_filters={"StudyInstanceUID": study})
            series = sorted(web.search_for_series(study), key=lambda s: s["0020000E"]["Value"][0])
            out: dict[str, Any] = {"studies": studies, "series": series, "instances": {}, "metadata": {}}
            for item in series:
                se = item["0020000E"]["Value"][0]
                out["instances"][se] = sorted(
                    web.search_for_instances(study, se), key=lambda i: i["00080018"]["Value"][0]
                )
                out["metadata"][se] = sorted(
                    web.retrieve_series_metadata(study, se), key=lambda i: i["00080018"]["Value"][0]
                )
            return out

        a, b = await asyncio.gather(asyncio.to_thread(ask, mine), asyncio.to_thread(ask, theirs))
    problems: list[str] = []
    assert len(a["studies"]) == len(b["studies"]) == 1
    problems += ["study " + p for p in _compare(a["studies"][0], b["studies"][0], qido=True)]
    assert [s["0020000E"] for s in a["series"]] == [s["0020000E"] for s in b["series"]]
    for x, y in zip(a["series"], b["series"], strict=True):
        problems += ["series " + p for p in _compare(x, y, qido=True)]
    for se in a["instances"]:
        for x, y in zip(a["instances"][se], b["instances"][se], strict=True):
            problems += ["instance " + p for p in _compare(x, y, qido=True)]
        assert len(a["metadata"][se]) == len(b["metadata"][se])
        for x, y in zip(a["metadata"][se], b["metadata"][se], strict=True):
            problems += ["metadata " + p for p in _compare(x, y)]
    assert not problems, "\n".join(problems)
