"""DIMSE sources and destinations of a transfer, and case attachments (transfers/dimse_and_attachments.py).

Spellings and the ``transfer.dimse_peers`` allow-list are unit tests; the rest runs against a
real Orthanc (one for the module) loaded with pydicom-data images: a study imported by C-FIND and
C-GET, a study delivered by C-STORE, attachments wrapped in identified mode and reported by name
in pseudonymised mode, and a devnet send from a DIMSE source with an export to a DIMSE destination.
"""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from mftp.node.config import parse_config, split_dimse_peer
from mftp.node.devnet.client import api, cli, make_study, running_devnet
from mftp.node.devnet.consortium import Member, NodeProcess
from mftp.node.errors import ConfigError, NodeUsageError
from mftp.node.pacs import DimsePeer, PacsError
from mftp.node.transfers.dimse_and_attachments import (
    ATTACHMENTS_DIR,
    NOT_DEIDENTIFIABLE,
    PIXELS_REFUSED,
    DimseStudy,
    not_sent_summary,
)
from mftp.node.transfers.sources import Allowed, check_destination, deliver, import_study, parse_source
from mftp.transfer.deid import Mode, Policy, deidentify_bytes
from mftp.transfer.study import FileKind, ImportReport
from tests.orthanc_server import OrthancServer, free_port, orthanc_available, run_orthanc

PEER = "ORTHANC@127.0.0.1:4242"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
STL = b"solid guide\n facet normal 0 0 1\n  outer loop\n   vertex 0 0 0\n   vertex 1 0 0\n   vertex 0 1 0\n"
STL += b"  endloop\n endfacet\nendsolid guide\n"
CALLING_AETS = ("MFTP", "MFTP-TEST", "MFTP-DEVNET")  # our AE titles in these tests
PDF_CLASS, STL_CLASS = "1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.104.3"


def rules(*peers: str, aet: str = "MFTP") -> Allowed:
    return Allowed((), (), (), peers, aet)


# ------------------------------------------------------------------ spellings and allow-list


def test_a_listed_peer_is_a_source_and_a_destination() -> None:
    allowed = rules(PEER, "PACS@pacs.hospital.example:104", "IPV6@[0:0::1]:11112", aet="MFTP-A")
    assert parse_source(f"dimse:{PEER}#1.2.3.4", allowed) == DimseStudy(
        DimsePeer("127.0.0.1", 4242, "ORTHANC", "MFTP-A"), "1.2.3.4"
    )
    # Host names ignore case; IPv6 addresses compare as addresses.
    assert (
        parse_source("dimse:PACS@PACS.Hospital.Example:104#1.2", allowed).peer.host == "pacs.hospital.example"
    )
    assert parse_source("dimse:IPV6@[::1]:11112#1.2", allowed).peer.host == "::1"
    checked = check_destination(f"dimse:{PEER}", allowed)
    assert checked.startswith(f"dimse:{PEER}") and "MFTP-A" in checked
    assert check_destination("dimse:IPV6@[::1]:11112", allowed).startswith("dimse:IPV6@[::1]:11112")


@pytest.mark.parametrize(
    "spelled",
    [
        "orthanc@127.0.0.1:4242",  # AE titles are case-sensitive
        "ORTHANC@127.0.0.1:4243",  # another port
        "ORTHANC@127.0.0.2:4242",  # another host
        "ORTHANC@localhost:4242",  # the same machine by another name is another spelling
        "OTHER@127.0.0.1:4242",
    ],
)
def test_peers_not_listed_are_refused(spelled: str) -> None:
    allowed = rules(PEER)
    with pytest.raises(NodeUsageError, match=r"transfer\.dimse_peers"):
        parse_source(f"dimse:{spelled}#1.2.3", allowed)
    with pytest.raises(NodeUsageError, match=r"transfer\.dimse_peers"):
        check_destination(f"dimse:{spelled}", allowed)


def test_nothing_is_allowed_by_default() -> None:
    allowed = Allowed((), (), ())
    with pytest.raises(NodeUsageError, match=r"transfer\.dimse_peers"):
        parse_source(f"dimse:{PEER}#1.2.3", allowed)
    with pytest.raises(NodeUsageError, match=r"transfer\.dimse_peers"):
        check_destination(f"dimse:{PEER}", allowed)


@pytest.mark.parametrize(
    "source",
    [
        f"dimse:{PEER}",  # no study
        f"dimse:{PEER}#",
        f"dimse:{PEER}#1.2..3",  # not a UID
        f"dimse:{PEER}#../../etc",
        f"dimse:{PEER}#1.2.3?retrieve=move",  # C-MOVE is not offered
        f"dimse:{PEER}?retrieve=move#1.2.3",
        "dimse://ORTHANC@127.0.0.1:4242#1.2.3",  # URL-ish
        "dimse:ORTHANC@127.0.0.1:4242/dicom#1.2.3",  # a path
        "dimse:ORTHANC@evil.example@127.0.0.1:4242#1.2.3",  # two "@": user-info trick
        "dimse:ORTHANC@127.0.0.1:4242@evil.example:4242#1.2.3",
        "dimse:ORTHANC%40127.0.0.1:4242#1.2.3",  # percent-encoding
        "dimse:ORTHANC@127.0.0.1#1.2.3",  # no port
        "dimse:ORTHANC@127.0.0.1:04242#1.2.3",  # leading zero: another spelling of the port
        "dimse:ORTHANC@127.0.0.1:0#1.2.3",
        "dimse:ORTHANC@127.0.0.1:65536#1.2.3",
        "dimse:ORTHANC@127.0.0.1:+4242#1.2.3",
        "dimse:ORTHANC@127.0.0.1.:4242#1.2.3",  # trailing dot
        "dimse:ORTHANC@127.0.0.1 :4242#1.2.3",
        "dimse:ORTHANC@127.0.0.1:4242\n#1.2.3",
        "dimse: ORTHANC@127.0.0.1:4242#1.2.3",  # leading space in the AE title
        "dimse:@127.0.0.1:4242#1.2.3",  # empty AE title
        "dimse:SEVENTEEN-CHARS-X@127.0.0.1:4242#1.2.3",
        "dimse:OR\\THANC@127.0.0.1:4242#1.2.3",  # backslash: the DICOM value separator
        "dimse:ORTHANC@[::1%eth0]:4242#1.2.3",  # IPv6 zone id
        "dimse:ORTHANC@[127.0.0.1]:4242#1.2.3",
        "dimse:ORTHANC@\u212aaps.example:4242#1.2.3",  # Kelvin sign: lowercases to "k"
        "dimse:ORTHANC@127.0.0.\uff11:4242#1.2.3",  # a full-width digit
    ],
)
def test_bad_source_spellings_are_usage_errors(source: str) -> None:
    # Every bad spelling is refused even when the allow-list would admit anything close to it.
    allowed = rules(PEER, "ORTHANC@kaps.example:4242", "ORTHANC@[::1]:4242", "ORTHANC@127.0.0.1:4242")
    with pytest.raises(NodeUsageError, match="DIMSE"):
        parse_source(source, allowed)


@pytest.mark.parametrize(
    "destination", [f"dimse:{PEER}#1.2.3", f"dimse:{PEER}?calling=EVIL", "dimse:ORTHANC@127.0.0.1", "dimse:"]
)
def test_bad_destination_spellings_are_usage_errors(destination: str) -> None:
    with pytest.raises(NodeUsageError, match="DIMSE"):
        check_destination(destination, rules(PEER))


def test_config_keys_are_checked_by_key_path(tmp_path: Path) -> None:
    base = {"node": {"name": "a", "country": "NO"}}
    defaults = parse_config(base, tmp_path / "node.toml")
    assert defaults.get("transfer", "dimse_peers") == [] and defaults.get("transfer", "dimse_aet") == "MFTP"
    good = parse_config(
        {**base, "transfer": {"dimse_peers": [PEER, "P@[::1]:104"], "dimse_aet": "HOSP A"}}, tmp_path
    )
    assert good.get("transfer", "dimse_peers") == [PEER, "P@[::1]:104"]
    with pytest.raises(ConfigError) as info:
        parse_config(
            {**base, "transfer": {"dimse_peers": [PEER, "http://pacs:104", 7], "dimse_aet": "MFTP\\X"}},
            tmp_path,
        )
    text = "\n".join(info.value.problems)
    assert "transfer.dimse_peers: not AET@host:port: ['http://pacs:104', 7]" in text
    assert "transfer.dimse_aet: must be an AE title" in text
    assert split_dimse_peer("A@Host.Example:104") == ("A", "host.example", 104)


def test_not_sent_summary_is_one_short_line() -> None:
    report = ImportReport()
    assert not_sent_summary(report) == ""
    for index in range(6):
        report.add_failure(f"case/plan-{index}.pdf", NOT_DEIDENTIFIABLE)
    report.add_failure("case/" + "x" * 200 + ".stl", NOT_DEIDENTIFIABLE)
    report.add_failure("scan.dcm", "truncated")
    for reason in ("a", "b"):
        report.add_failure(f"{reason}.dcm", reason)
    line = not_sent_summary(report)
    assert "\n" not in line and len(line) < 500
    assert line.startswith("10 file(s) not sent: case/plan-0.pdf, case/plan-1.pdf")
    assert f"and 3 more ({NOT_DEIDENTIFIABLE})" in line and "scan.dcm (truncated)" in line
    assert line.endswith("; 1 other file(s)")


# ------------------------------------------------------------------ attachments (no PACS needed)


def case_folder(root: Path) -> tuple[dict[str, bytes], str]:
    """A study of real images with a PDF, an STL and a text note; returns pixels and the study UID."""
    pixels = make_study(root)
    (root / "plan.pdf").write_bytes(PDF)
    (root / "design").mkdir()
    (root / "design" / "guide.stl").write_bytes(STL)
    (root / "notes.txt").write_bytes(b"no DICOM form\n")
    return pixels, str(pydicom.dcmread(next(root.glob("*.dcm"))).StudyInstanceUID)


def folder_rules(root: Path) -> Allowed:
    return Allowed((root.resolve(),), (root.resolve(),), (), (PEER,))


async def test_identified_mode_wraps_attachments_into_the_study(tmp_path: Path) -> None:
    pixels, study_uid = case_folder(tmp_path / "case")
    spill = tmp_path / "spill"
    spill.mkdir()
    source = parse_source(str(tmp_path / "case"), folder_rules(tmp_path))
    files, report = await import_study(source, spill, attachments=True)
    assert all(f.info.kind is FileKind.DICOM for f in files)
    wrapped = {
        f.info.name: f for f in files if f.info.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.104.")
    }
    assert set(wrapped) == {"plan.pdf", "design/guide.stl"}
    assert len(files) == len(pixels) + 2
    for name, data, sop_class in (("plan.pdf", PDF, PDF_CLASS), ("design/guide.stl", STL, STL_CLASS)):
        item = wrapped[name]
        assert item.path.parent == spill / ATTACHMENTS_DIR and item.info.study_instance_uid == study_uid
        ds = pydicom.dcmread(item.path)
        assert ds.SOPClassUID == sop_class and ds.PatientID == "PAT-0042"
        assert ds.EncapsulatedDocument[: len(data)] == data
    assert [(f.name, f.reason) for f in report.failures] == [
        ("notes.txt", "attachment of type text/plain: no DICOM form, a PACS cannot store it")
    ]
    assert "notes.txt" not in report.ok and "plan.pdf" in report.ok
    assert not_sent_summary(report).startswith("1 file(s) not sent: notes.txt (attachment of type")


async def test_deidentifying_modes_report_attachments_by_name(tmp_path: Path) -> None:
    pixels, _ = case_folder(tmp_path / "case")
    # An encapsulated document already in DICOM form (as a PACS would send it) is skipped too.
    spill = tmp_path / "spill"
    spill.mkdir()
    identified, _ = await import_study(tmp_path / "case", spill, attachments=True)
    (pdf,) = [f for f in identified if f.info.sop_class_uid == PDF_CLASS]
    (tmp_path / "case" / "report.dcm").write_bytes(pdf.path.read_bytes())
    # An image whose pixels may show identity: only an identified send carries it.
    burned = pydicom.dcmread(next(f.path for f in identified if str(f.info.sop_instance_uid) in pixels))
    burned.SOPInstanceUID = pydicom.uid.generate_uid()
    burned.BurnedInAnnotation = "YES"
    burned.save_as(tmp_path / "case" / "burned.dcm")
    again, _ = await import_study(tmp_path / "case", spill, attachments=True)
    assert "burned.dcm" in {f.info.name for f in again}

    # By default (burned_in "clean") it travels and is cleaned while preparing; an image whose
    # pixels cannot be examined (here cut short) is named before the offer instead, so the offer
    # counts only what travels.
    broken = pydicom.dcmread(tmp_path / "case" / "burned.dcm")
    broken.SOPInstanceUID = pydicom.uid.generate_uid()
    broken.PixelData = bytes(broken.PixelData)[:100]
    broken.save_as(tmp_path / "case" / "broken.dcm")
    cleaning, early = await import_study(tmp_path / "case", tmp_path / "spill", attachments=False)
    assert "burned.dcm" in {f.info.name for f in cleaning}
    (unexaminable,) = [f for f in early.failures if f.name == "broken.dcm"]
    assert unexaminable.reason.startswith("its pixels may show identity and cannot be examined: ")
    (tmp_path / "case" / "broken.dcm").unlink()
    # ... while "refuse" names it, with every image whose kind may carry burned-in text, before
    # the offer.
    files, report = await import_study(
        tmp_path / "case", tmp_path / "spill", attachments=False, burned_in="refuse"
    )
    kept = {str(pydicom.dcmread(f.path).SOPInstanceUID) for f in files}
    assert kept < set(pixels) and len(kept) == 3  # CT and MR; the US and SC images are refused
    reasons = {f.name: f.reason for f in report.failures}
    refused = {name for name, reason in reasons.items() if reason == PIXELS_REFUSED}
    assert refused == {"burned.dcm", "2-SC_rgb_16bit.dcm", "3-US1_UNCR.dcm"}
    assert {name: reasons[name] for name in set(reasons) - refused} == {
        "plan.pdf": NOT_DEIDENTIFIABLE,
        "design/guide.stl": NOT_DEIDENTIFIABLE,
        "report.dcm": NOT_DEIDENTIFIABLE,
        "notes.txt": "attachment of type text/plain: no DICOM form, a PACS cannot store it",
    }
    assert len(report.ok) == len(kept) and not set(reasons) & set(report.ok)
    line = not_sent_summary(report)
    assert "plan.pdf" in line and "design/guide.stl" in line and "send it in identified mode" in line
    assert "burned.dcm" in line and PIXELS_REFUSED in line
    # The rest of the study goes on: every kept file de-identifies.
    policy = Policy.for_mode(Mode.PSEUDONYMISED)
    for item in files:
        out = deidentify_bytes(item.path.read_bytes(), policy, b"k" * 32, name=item.info.name)
        assert pydicom.dcmread(io.BytesIO(out)).PatientIdentityRemoved == "YES"


# ------------------------------------------------------------------ against a real Orthanc


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancServer, str, dict[str, bytes]]]:
    """One Orthanc for the module, holding one study of pydicom-data images."""
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make test`, which installs Debian's orthanc packages")
    workdir = tmp_path_factory.mktemp("orthanc")
    # Orthanc answers C-FIND only for modalities it knows (a real PACS is set up the same way);
    # C-GET and C-STORE it allows from anyone (tests/orthanc_server.py).
    known = {aet: (aet, "127.0.0.1", free_port()) for aet in CALLING_AETS}
    with run_orthanc(workdir, modalities=known) as server:
        pixels = make_study(workdir / "study", patient_id="PAT-DIMSE")
        for path in sorted((workdir / "study").iterdir()):
            assert server.upload(path.read_bytes())["Status"] == "Success"
        study_uid = str(pydicom.dcmread(next((workdir / "study").iterdir())).StudyInstanceUID)
        yield server, study_uid, pixels


def peer_of(server: OrthancServer) -> str:
    return f"{server.aet}@127.0.0.1:{server.dicom_port}"


def study_in(server: OrthancServer, study_uid: str) -> dict[str, Any] | None:
    studies = server.get_json("/studies?expand")
    assert isinstance(studies, list)
    return next((s for s in studies if s["MainDicomTags"]["StudyInstanceUID"] == study_uid), None)


async def test_import_by_c_get(pacs: tuple[OrthancServer, str, dict[str, bytes]], tmp_path: Path) -> None:
    server, study_uid, pixels = pacs
    allowed = rules(peer_of(server), aet="MFTP-TEST")
    source = parse_source(f"dimse:{peer_of(server)}#{study_uid}", allowed)
    files, report = await import_study(source, tmp_path, max_instances=100)
    assert report.all_ok, report.failures
    assert {f.info.sop_instance_uid for f in files} == set(pixels)
    for item in files:
        ds = pydicom.dcmread(item.path)
        assert ds.StudyInstanceUID == study_uid and bytes(ds.PixelData) == pixels[item.info.sop_instance_uid]
        assert item.path.parent == tmp_path
    with pytest.raises(PacsError, match="more than 2"):
        await import_study(source, tmp_path / "few", max_instances=2)
    with pytest.raises(PacsError, match="not found"):
        await import_study(parse_source(f"dimse:{peer_of(server)}#1.2.3.999", allowed), tmp_path)
    closed = f"ORTHANC@127.0.0.1:{free_port()}"
    with pytest.raises(PacsError, match="association"):
        await import_study(parse_source(f"dimse:{closed}#{study_uid}", rules(closed)), tmp_path)


async def test_export_by_c_store_with_attachments(
    pacs: tuple[OrthancServer, str, dict[str, bytes]], tmp_path: Path
) -> None:
    """Identified mode end to end without the network: import with attachments, C-STORE them."""
    server, _, _ = pacs
    pixels, study_uid = case_folder(tmp_path / "case")
    spill = tmp_path / "spill"
    spill.mkdir()
    files, _ = await import_study(tmp_path / "case", spill, attachments=True)
    destination = check_destination(f"dimse:{peer_of(server)}", rules(peer_of(server)))
    report = await deliver(files, destination)
    assert report.all_ok and len(report.ok) == len(pixels) + 2, report.failures
    stored = study_in(server, study_uid)
    assert stored is not None and stored["PatientMainDicomTags"]["PatientID"] == "PAT-0042"
    instances = server.get_json(f"/studies/{stored['ID']}/instances")
    assert isinstance(instances, list) and len(instances) == len(pixels) + 2
    documents = {}
    for instance in instances:
        tags = server.get_json(f"/instances/{instance['ID']}/simplified-tags")
        assert isinstance(tags, dict)
        if tags.get("SOPClassUID") in (PDF_CLASS, STL_CLASS):
            documents[tags["SOPClassUID"]] = instance["ID"]
    assert set(documents) == {PDF_CLASS, STL_CLASS}
    url = f"{server.url}/instances/{documents[STL_CLASS]}/file"
    with urllib.request.urlopen(url, timeout=30) as response:
        ds = pydicom.dcmread(io.BytesIO(response.read()))
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == STL

    unreachable = f"NOBODY@127.0.0.1:{free_port()}"
    failed = await deliver(files, check_destination(f"dimse:{unreachable}", rules(unreachable)))
    assert failed.failed_count == len(files) and "association with NOBODY" in failed.failures[0].reason


# ------------------------------------------------------------------ devnet: send and export by DIMSE


@pytest.fixture
def devnet(tmp_path: Path, pacs: tuple[OrthancServer, str, dict[str, bytes]]) -> Iterator[list[NodeProcess]]:
    """Two validators whose configuration lists the module's Orthanc as a DIMSE peer."""

    def list_the_pacs(member: Member) -> None:
        text = member.config_path.read_text()
        anchor = "[consensus]\n"  # the [transfer] section ends here
        assert anchor in text
        member.config_path.write_text(
            text.replace(
                anchor, f'dimse_peers = ["{peer_of(pacs[0])}"]\ndimse_aet = "MFTP-DEVNET"\n\n{anchor}'
            )
        )

    with running_devnet(tmp_path, validators=2, audit=0, configure=list_the_pacs) as processes:
        yield processes


@pytest.mark.timeout(300)
def test_devnet_send_from_dimse_and_export_to_dimse(
    devnet: list[NodeProcess], pacs: tuple[OrthancServer, str, dict[str, bytes]]
) -> None:
    server, study_uid, pixels = pacs
    a, b = devnet[0].member, devnet[1].member
    body = {"to": "hospital-b", "purpose": "TREAT", "mode": "pseudonymised", "user": "dr.a"}
    status, answer = api(a, "POST", "/transfers", {**body, "source": f"dimse:OTHER@127.0.0.1:1#{study_uid}"})
    assert status == 400 and "transfer.dimse_peers" in answer["error"], answer

    sent = cli(a, "send", f"dimse:{peer_of(server)}#{study_uid}", "--to", "hospital-b", "--purpose", "TREAT",
               "--mode", "pseudonymised", "--timeout", "120", timeout_s=150)  # fmt: skip
    assert sent.returncode == 0 and "delivered" in sent.stdout, sent.stdout + sent.stderr
    _, inbox = api(b, "GET", "/transfers")
    (received,) = inbox["transfers"]
    assert received["state"] == "complete" and received["files"] == len(pixels)

    exported = cli(b, "export", received["transfer_id"], f"dimse:{peer_of(server)}", timeout_s=150)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    studies = server.get_json("/studies?expand")
    assert isinstance(studies, list)
    copies = [s for s in studies if s["MainDicomTags"]["StudyInstanceUID"].startswith("2.25.")]
    assert len(copies) == 1 and copies[0]["PatientMainDicomTags"]["PatientID"] != "PAT-DIMSE"
    assert sum(len(s["Series"]) for s in copies) == len(pixels)
