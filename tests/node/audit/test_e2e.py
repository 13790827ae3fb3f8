"""The regulator's audit on a devnet of real processes (issue 6, point 8, and points 3 and 5).

Two users of hospital-a, alice and bob, send studies to hospital-b (alice twice, the second
time to a named recipient user of hospital-b, who exports it).  Without a grant nothing on the
chain links alice's records: every tag differs.  hospital-a grants the regulator alice's keys;
the regulator's audit-only node finds exactly alice's two offers (none of bob's), each with a
verified inclusion proof and its details checked against their commitments, states
completeness against a certified ledger size, and posts an AUDIT_REPORT that is committed.  A
grant for the patient of bob's study yields the HIPAA accounting of its disclosure.

Then erasure, probed as a privacy officer would (issue 15, point 3): before it, no file of any
member outside its ``data/audit`` names alice or dr.bea; after hospital-a erases alice and
hospital-b erases dr.bea, no file of any member (data, ledger, WAL, vault, blobs, node.log)
names them in any spelling, the API shows them nowhere, and bob is still named.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhir.resources.auditevent import AuditEvent

from mftp.ledger.audit import matches_root
from mftp.node.devnet.client import api, cli, committed, make_study, running_devnet, wait_until
from mftp.node.devnet.consortium import Member, NodeProcess
from tests.privacy import where_named

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    """Three validators and the regulator's audit node."""
    with running_devnet(tmp_path, validators=3, audit=1) as processes:
        yield processes


def send(a: Member, study: Path, user: str, to_user: str = "") -> dict[str, object]:
    body = {
        "source": str(study),
        "to": "hospital-b",
        "purpose": "TREAT",
        "mode": "pseudonymised",
        "user": user,
    }
    if to_user:
        body["to_user"] = to_user
    status, answer = api(a, "POST", "/transfers", body)
    assert status == 202, answer
    transfer_id = answer["transfer_id"]
    wait_until(lambda: api(a, "GET", f"/transfers/{transfer_id}")[1]["state"] == "delivered", 90, "delivery")
    return dict(api(a, "GET", f"/transfers/{transfer_id}")[1])


def month(offset: int = 0) -> str:
    today = datetime.datetime.now(tz=datetime.UTC).date()
    index = today.year * 12 + today.month - 1 + offset
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def test_a_grant_finds_exactly_one_users_records(devnet: list[NodeProcess], tmp_path: Path) -> None:
    a, b, _, regulator = (p.member for p in devnet)
    make_study(tmp_path / "s1", patient_id="PAT-A1")
    make_study(tmp_path / "s2", patient_id="PAT-A2")
    make_study(tmp_path / "s3", patient_id="PAT-B1")

    assert api(b, "POST", "/audit/users", {"user": "dr.bea"}) == (200, {"user": "user:dr.bea"})
    request = {
        "source": str(tmp_path / "s1"),
        "to": "hospital-b",
        "purpose": "TREAT",
        "mode": "pseudonymised",
    }
    unknown = api(a, "POST", "/transfers", {**request, "user": "alice", "to_user": "dr.nobody"})
    assert unknown[0] == 202
    wait_until(
        lambda: api(a, "GET", f"/transfers/{unknown[1]['transfer_id']}")[1]["state"] == "failed",
        30,
        "a send to an unknown recipient user to fail",
    )
    alice_1 = send(a, tmp_path / "s1", "alice")
    bob = send(a, tmp_path / "s3", "bob")
    alice_2 = send(a, tmp_path / "s2", "alice", to_user="dr.bea")
    status, exported = api(
        b,
        "POST",
        f"/transfers/{alice_2['transfer_id']}/export?wait_ms=30000",  # a job: wait for it to end
        {"destination": str(tmp_path / "out"), "user": "dr.bea"},
    )
    assert status == 200, exported
    offers = [str(t["offer_record"]) for t in (alice_1, bob, alice_2)]
    wait_until(lambda: all(committed(regulator, r) for r in offers), 60, "the offers on the regulator's node")

    # Without a grant: every tag of every record is distinct, so nothing links alice's two sends.
    records = [committed(regulator, r) for r in offers]
    tags = [tag for record in records if record for tag in record["tags"]]
    assert len(tags) == 24 and len(set(tags)) == 24

    expires = str(datetime.date.today() + datetime.timedelta(days=30))
    grant_body = {
        "subject": "user:alice",
        "auditor": regulator.name,
        "legal_basis": "GDPR Art. 58(1)(b), case 17",
        "purpose": "HCOMPL",
        "from": month(-1),
        "to": month(1),
        "expires": expires,
    }
    status, made = api(a, "POST", "/audit/grants", grant_body)
    assert status == 202, made
    grant_id = made["grant_id"]
    assert api(b, "POST", "/audit/grants", grant_body)[0] == 400  # b holds no alice
    wait_until(lambda: committed(regulator, grant_id) is not None, 60, "the grant on the regulator's node")

    assert api(a, "POST", "/audit/scans", {"grant_id": grant_id})[0] == 400  # addressed to the regulator
    status, scan = api(regulator, "POST", "/audit/scans", {"grant_id": grant_id})
    assert status == 200, scan
    assert scan["subject"] == "user:alice" and scan["institution"] == "hospital-a"
    found = {m["record_id"]: m for m in scan["matches"]}
    assert set(found) == {offers[0], offers[2]}  # all of alice's records, none of bob's
    for match in found.values():
        assert match["roles"] == ["sender_user"] and match["proof"]["verified"]
        assert match["disclosed"]["user"] == "user:alice" and match["disclosed"]["recipient"] == "hospital-b"
    assert found[offers[2]]["disclosed"]["recipient_user"] == "user:dr.bea"
    assert f"All {scan['ledger_size']} records" in scan["statement"] and scan["notes"] == []
    assert scan["matches_root"] == matches_root(bytes.fromhex(r) for r in found).hex()

    fhir = api(regulator, "POST", "/audit/scans", {"grant_id": grant_id, "format": "fhir"})[1]
    assert fhir["resourceType"] == "Bundle" and len(fhir["entry"]) == 2
    for entry in fhir["entry"]:
        event = AuditEvent.model_validate(entry["resource"])
        assert event.code.coding[0].code == "110104"  # DICOM Instances Transferred
    dicom = api(regulator, "POST", "/audit/scans", {"grant_id": grant_id, "format": "dicom"})[1]
    assert len(dicom["messages"]) == 2 and all("<AuditMessage>" in m for m in dicom["messages"])
    reported = cli(regulator, "audit", "report", "--grant", grant_id)
    assert reported.returncode == 0, reported.stderr
    report_id = reported.stdout.strip().splitlines()[-1].split()[-1]
    wait_until(lambda: committed(a, report_id) is not None, 60, "the audit report on the chain")
    report = committed(a, report_id)
    assert report is not None and report["type"] == "audit_report"
    assert report["body"]["match_count"] == 2 and report["body"]["grant_id"] == grant_id

    # The patient of bob's study: the accounting of disclosures (a TREAT send is exempt, and listed).
    patient_grant = {**grant_body, "subject": "patient:PAT-B1", "purpose": "PATRQT"}
    status, made = api(a, "POST", "/audit/grants", patient_grant)
    assert status == 202, made
    wait_until(lambda: committed(regulator, made["grant_id"]) is not None, 60, "the patient grant")
    _, patient_scan = api(regulator, "POST", "/audit/scans", {"grant_id": made["grant_id"]})
    assert [m["record_id"] for m in patient_scan["matches"]] == [offers[1]]
    (row,) = patient_scan["accounting"]
    assert row["recipient"] == "hospital-b" and row["purpose"] == "TREAT" and row["exempt"]
    assert "instance" in row["description"]

    # No user or patient id in clear anywhere on disk or in the logs of the institutions.
    for member in (a, b):
        for path in member.directory.rglob("*"):
            # Transfer states name the staff who sent (the operator's own API shows them).
            if path.is_file() and path.parent.name != "transfers":
                data = path.read_bytes()
                assert b"alice" not in data and b"PAT-B1" not in data and b"dr.bea" not in data, path

    # Erasure: before it, only the vaults (data/audit) hold the names; after it, nothing does.
    for member in (a, b, regulator):
        for word in ("alice", "dr.bea"):
            assert where_named(member.directory, word, skip=member.directory / "data" / "audit") == [], word
    assert api(a, "POST", "/audit/rotations", {"party": "user:alice", "reason": "erasure"})[0] == 202
    assert api(b, "POST", "/audit/rotations", {"party": "user:dr.bea", "reason": "erasure"})[0] == 202
    assert api(a, "POST", "/audit/rotations", {"party": "user:alice", "reason": "erasure"})[0] == 400
    assert api(a, "POST", "/audit/users", {"user": "alice"})[0] in (400, 404)  # never re-created
    listed = {t["transfer_id"]: t for t in api(a, "GET", "/transfers")[1]["transfers"]}
    assert listed[str(bob["transfer_id"])]["user"] == "user:bob"
    assert listed[str(alice_1["transfer_id"])]["user"] == listed[str(alice_2["transfer_id"])]["user"] == ""
    assert listed[str(alice_2["transfer_id"])]["to_user"] == "user:dr.bea"  # hospital-a's word, not b's
    assert "dr.bea" not in str(api(b, "GET", "/transfers")[1])
    for member in (a, b, regulator):
        assert where_named(member.directory, "alice") == [], member.name
    for member in (b, regulator):
        assert where_named(member.directory, "dr.bea") == [], member.name
