"""A patient share on real node processes: a study travels, a signed-in clinician shares it,
the patient opens the link with the code and downloads the files byte for byte, the ledger holds
every step, and a revocation refuses the link at once."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pydicom
import pytest

from mftp.node.devnet.client import api, committed, make_study, running_devnet, wait_until
from mftp.node.devnet.consortium import NodeProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running_devnet(tmp_path, validators=3, audit=0) as processes:
        yield processes


DICOMWEB_PATHS = (
    "/studies/{st}/metadata",
    "/studies/{st}",
    "/studies/{st}/series",
    "/studies/{st}/instances",
    "/studies/{st}/thumbnail",
    "/studies?StudyInstanceUID={st}",
)


async def _dicomweb(session: aiohttp.ClientSession, base: str, study: str) -> list[int]:
    """The statuses of every kind of DICOMweb read of ``study`` in this session."""
    statuses = []
    for path in DICOMWEB_PATHS:
        async with session.get(base + "/dicom-web" + path.format(st=study)) as answer:
            body = await answer.read()
            found = answer.status == 200 and body.strip() not in (b"", b"[]")
            statuses.append(200 if found else (404 if answer.status == 200 else answer.status))
    return statuses


async def _patient(link: str, code: str, studies: tuple[str, str]) -> tuple[str, bytes, str, list[list[int]]]:
    """The patient's browser without a browser: the page, the code form, the download, the viewer."""
    base = link.split("/share/", 1)[0]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        before = await _dicomweb(session, base, studies[0])  # no session yet: nothing
        async with session.get(link) as first:
            assert first.status == 200 and "code" in (await first.text()).lower()
        async with session.post(
            link, data={"code": code}, headers={"Sec-Fetch-Site": "same-origin"}
        ) as opened:
            page = await opened.text()
            assert opened.status == 200, page
        async with session.get(link + "/download") as download:
            assert download.status == 200 and download.headers["Content-Type"] == "application/zip"
            archive = await download.read()
        shared, other = await _dicomweb(session, base, studies[0]), await _dicomweb(session, base, studies[1])
        async with session.get(link) as after:
            return page, archive, await after.text(), [before, shared, other]


def test_a_clinician_shares_a_received_study_with_its_patient(
    devnet: list[NodeProcess], tmp_path: Path
) -> None:
    a, b = devnet[0].member, devnet[1].member
    make_study(tmp_path / "study")
    originals = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "study").iterdir())
    body = {"source": str(tmp_path / "study"), "to": "hospital-b", "purpose": "TREAT", "mode": "identified"}
    status, sent = api(a, "POST", "/transfers", body, as_user="dr.ana")
    assert status == 202, sent
    transfer_id = sent["transfer_id"]
    make_study(tmp_path / "other", patient_id="PAT-0043")  # study B: received, never shared
    other = api(a, "POST", "/transfers", {**body, "source": str(tmp_path / "other")}, as_user="dr.ana")[1]
    for tid in (transfer_id, other["transfer_id"]):
        wait_until(
            lambda t=tid: api(b, "GET", f"/transfers/{t}")[1].get("state") == "complete", 60, "receipt"
        )
    uid_a = pydicom.dcmread(next((tmp_path / "study").iterdir())).StudyInstanceUID
    uid_b = pydicom.dcmread(next((tmp_path / "other").iterdir())).StudyInstanceUID

    until = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 30 * 86400))
    share = {"transfer_ids": [transfer_id], "until": until, "download": True, "label": "CT"}
    refused = api(b, "POST", "/shares", {**share, "user": "dr.other"}, as_user="dr.bea")
    assert refused[0] == 403  # the body names another user than the signed-in one
    status, made = api(b, "POST", "/shares", share, as_user="dr.bea")
    assert status == 201, made
    assert made["link"].startswith(b.api_url + "/share/") and len(made["code"]) >= 8

    page, archive, again, viewer = asyncio.run(_patient(made["link"], made["code"], (uid_a, uid_b)))
    before, shared, other_study = viewer
    assert set(before) == {401}  # no session, no study
    assert shared == [200] * len(DICOMWEB_PATHS)  # the shared study, through every kind of read
    assert set(other_study) == {404}  # study B through any DICOMweb path: as if it did not exist
    assert "Who has seen my images" in page
    files = zipfile.ZipFile(io.BytesIO(archive))
    dicom = [n for n in files.namelist() if n.startswith("DICOM/")]
    assert Counter(hashlib.sha256(files.read(n)).hexdigest() for n in dicom) == originals  # byte for byte
    dicomdir = pydicom.dcmread(io.BytesIO(files.read("DICOMDIR")))
    assert len([r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]) == len(
        dicom
    )
    assert "Who has seen my images" in again  # the session holds

    # On the chain: the share, the opening and the download, none naming the patient.
    status, listed = api(b, "GET", f"/shares/{made['share_id']}", as_user="dr.bea")
    assert status == 200, listed
    records = listed["records"]
    assert len(records) >= 3 and listed["opens"] == 1  # created, opened, downloaded
    wait_until(lambda: all(committed(a, r) for r in records), 60, "the share's records on every node")
    kinds = Counter(str(committed(a, r)["type"]) for r in records)  # type: ignore[index]
    assert kinds["patient_share"] == 1 and kinds["study_accessed"] >= 2
    assert all("PAT-0042" not in str(committed(a, r)) for r in records)  # pseudonymous

    status, revoked = api(b, "POST", f"/shares/{made['share_id']}/revoke", {}, as_user="dr.bea")
    assert status == 200 and revoked["state"] == "revoked"

    async def refused_now() -> int:
        async with aiohttp.ClientSession() as session, session.get(made["link"]) as answer:
            return answer.status

    assert asyncio.run(refused_now()) == 404
