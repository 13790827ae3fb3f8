"""A real study between two institutions' node processes (issue: points 7, 8 and 10).

One devnet of three validators and an audit node; hospital-c lives in another country.
Through the CLI (which calls each node's API): a send to hospital-c is refused for data
residency and nothing is sent; hospital-a sends a study of real pydicom-data images to
hospital-b in pseudonymised mode (the images whose pixels may show identity, one more with
Burned In Annotation YES among them, travel cleaned and are named in the sender's transfer; a
second send that refuses such images leaves them out before the offer), with hospital-b offline
when the offer is made (the offer arrives when it is back); hospital-b fetches and verifies it,
its inbox shows it complete, and an export to a folder gives valid DICOM files with new
``2.25.`` UIDs, a pseudonymous patient, and the original pixel data of the images not
examined.  The three records (offered by A, received and accessed by B) are committed on the
chain.  A second test takes the study from a real PACS (Orthanc, DICOMweb) and exports it into
the PACS again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mftp.node.devnet.client import (
    STUDY_FILES,
    api,
    cli,
    cli_command,
    committed,
    environment_without_passphrase,
    make_study,
    running_devnet,
    wait_until,
)
from mftp.node.devnet.consortium import NodeProcess
from tests.orthanc_server import OrthancServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    """Three validators (hospital-c in Sweden) and an audit node."""
    with running_devnet(tmp_path, validators=3, audit=1, countries={"hospital-c": "SE"}) as processes:
        yield processes


def test_send_receive_export_and_records(devnet: list[NodeProcess], tmp_path: Path) -> None:
    a, b, _, auditor = (p.member for p in devnet)
    originals = make_study(tmp_path / "study")
    # An image whose pixels may show identity: a pseudonymised send carries it only cleaned,
    # named in the sender's transfer, and the rest of the study goes as it is.
    burned = pydicom.dcmread(sorted((tmp_path / "study").iterdir())[0])
    burned.SOPInstanceUID = pydicom.uid.generate_uid()
    burned.BurnedInAnnotation = "YES"
    burned.save_as(tmp_path / "study" / "zz-burned.dcm")

    refused = cli(a, "send", str(tmp_path / "study"), "--to", "hospital-c", "--purpose", "TREAT")
    assert refused.returncode == 5, refused.stderr
    assert "data residency" in refused.stderr and "SE" in refused.stderr
    assert api(a, "GET", "/transfers") == (200, {"transfers": []})  # nothing was prepared or sent
    # Libraries' temporary files (pynetdicom spools instances) stay private, inside data_dir.
    private_tmp = a.directory / "data" / "spill" / "tmp"
    assert private_tmp.is_dir() and private_tmp.stat().st_mode & 0o777 == 0o700
    assert (
        api(
            a,
            "POST",
            "/transfers",
            {"source": "/", "to": "hospital-b", "purpose": "X", "mode": "y", "user": "u"},
        )[0]
        == 400
    )

    devnet[1].stop()  # the recipient is down when the offer is made
    sender = subprocess.Popen(
        cli_command(a, "send", str(tmp_path / "study"), "--to", "hospital-b", "--purpose", "TREAT",
                    "--mode", "pseudonymised", "--timeout", "120"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment_without_passphrase(),
    )  # fmt: skip
    # The offer record needs the recipient's tags: the study waits, prepared, until it is back.
    wait_until(
        lambda: any(
            t["detail"] == "waiting for the recipient's tags"
            for t in api(a, "GET", "/transfers")[1]["transfers"]
        ),
        60,
        "the prepared study waiting for the recipient",
    )
    devnet[1].start()
    devnet[1].wait_ready()
    out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, out + err
    assert "delivered" in out

    _, body = api(b, "GET", "/transfers")
    (received,) = body["transfers"]
    assert received["direction"] == "in" and received["state"] == "complete"
    assert received["files"] == len(originals) + 1  # zz-burned.dcm travels, cleaned
    assert received["fetched_bytes"] == received["fetch_bytes"]
    inbox = cli(b, "inbox")
    assert inbox.returncode == 0 and received["transfer_id"] in inbox.stdout and "complete" in inbox.stdout

    exported = cli(b, "export", received["transfer_id"], str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    files = sorted((tmp_path / "export").rglob("*.dcm"))
    assert len(files) == len(originals) + 1
    pixels = set()
    for path in files:
        ds = pydicom.dcmread(path)
        assert str(ds.StudyInstanceUID).startswith("2.25.") and str(ds.SOPInstanceUID).startswith("2.25.")
        assert str(ds.SOPInstanceUID) not in originals
        assert ds.PatientID != "PAT-0042" and "Nordmann" not in str(ds.PatientName)
        assert ds.PatientIdentityRemoved == "YES"
        pixels.add(bytes(ds.PixelData))
        if ds.get("BurnedInAnnotation") == "NO":  # the node cleaned it, and says how
            methods = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
            assert "113101" in methods  # Clean Pixel Data Option
    by_name = dict(zip(STUDY_FILES, originals.values(), strict=True))
    # CT and MR images are not examined: their pixels arrive as they were; US1_UNCR's burned-in
    # hospital name is blanked.
    assert {by_name["CT_small.dcm"], by_name["MR_small.dcm"], by_name["MR2_UNCI.dcm"]} <= pixels
    assert by_name["US1_UNCR.dcm"] not in pixels

    _, sent = api(a, "GET", f"/transfers/{received['transfer_id']}")
    _, held = api(b, "GET", f"/transfers/{received['transfer_id']}")
    assert "zz-burned.dcm" in sent["detail"] and "cleaned" in sent["detail"]
    assert "not sent" not in sent["detail"]
    expected = {
        sent["offer_record"]: "transfer_offered",
        held["received_record"]: "transfer_received",
        held["access_records"][0]: "study_accessed",
    }
    assert held["offer_record"] == sent["offer_record"] and sent["received_record"] == held["received_record"]
    wait_until(lambda: all(committed(auditor, rid) is not None for rid in expected), 60, "the three records")
    assert {rid: (committed(auditor, rid) or {}).get("type") for rid in expected} == expected

    # The same study, refusing images whose pixels may show identity: they are named before the
    # offer, and the offer's description counts only the three that travel.
    refused = cli(a, "send", str(tmp_path / "study"), "--to", "hospital-b", "--purpose", "TREAT",
                  "--burned-in", "refuse", "--timeout", "120")  # fmt: skip
    assert refused.returncode == 0, refused.stdout + refused.stderr
    latest = api(a, "GET", "/transfers")[1]["transfers"][0]
    assert latest["files"] == 3 and "3 file(s) not sent" in latest["detail"]
    for name in ("zz-burned.dcm", "US1_UNCR.dcm", "SC_rgb_16bit.dcm"):
        assert name in latest["detail"]
    assert 'refused by burned_in = "refuse": its pixels may show identity' in latest["detail"]

    # No patient identity in any log, and none in clear in either node's data (encrypted at rest).
    for member in (a, b):
        for path in member.directory.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert b"Nordmann" not in data and b"PAT-0042" not in data, path


def test_dicomweb_source_and_destination(
    devnet: list[NodeProcess], orthanc: OrthancServer, tmp_path: Path
) -> None:
    a, b = devnet[0].member, devnet[1].member
    originals = make_study(tmp_path / "study")
    for path in sorted((tmp_path / "study").iterdir()):
        orthanc.upload(path.read_bytes())
    study_uid = str(pydicom.dcmread(next((tmp_path / "study").iterdir())).StudyInstanceUID)
    source = f"dicomweb:{orthanc.dicomweb_url}#{study_uid}"
    status, answer = api(
        a,
        "POST",
        "/transfers",
        {"source": source, "to": "hospital-b", "purpose": "TREAT", "mode": "deidentified", "user": "dr.a"},
    )
    assert status == 202, answer
    transfer_id = answer["transfer_id"]
    wait_until(
        lambda: api(b, "GET", f"/transfers/{transfer_id}")[1].get("state") == "complete", 60, "receipt"
    )

    status, result = api(
        b,
        "POST",
        f"/transfers/{transfer_id}/export?wait_ms=30000",  # a job: wait for it to end
        {"destination": orthanc.dicomweb_url, "user": "dr.b"},
    )
    assert status == 200 and result["files"] == len(originals), result
    studies = orthanc.get_json("/studies?expand")
    assert isinstance(studies, list) and len(studies) == 2  # the original and the de-identified copy
    copy = next(s for s in studies if s["MainDicomTags"]["StudyInstanceUID"] != study_uid)
    assert copy["MainDicomTags"]["StudyInstanceUID"].startswith("2.25.")
    assert len(copy["Series"]) == len(originals)
