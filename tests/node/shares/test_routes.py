"""Patient shares through the HTTP routes, with a real store, audit vault and certified ledger.

The clinician's API behind a fake ``authenticated`` wrapper (the contract's), the patient's
pages without any account; what an attacker would try is tried: wrong and malformed codes,
foreign sessions, other origins, revoked, locked, expired and exhausted links, bad bodies.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import stat
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mftp.ledger.pseudonyms import Role as Slot
from mftp.ledger.pseudonyms import tagged_roles
from mftp.ledger.records import RecordType
from mftp.node.people.roles import Role, rule_of
from mftp.node.people.sessions import Principal
from mftp.node.shares.core import ShareState
from mftp.node.shares.pages import unavailable_page
from mftp.node.shares.service import ShareService, ShareSessionRefused, ShareUnavailable
from tests.share_world import DAY_MS, World, clinician, share_app, study_files

A, B, C = "aa" * 16, "bb" * 16, "cc" * 16


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[World, TestClient, dict[str, Principal | None]]]:
    world = World(tmp_path)
    world.studies.add(A, study_files(tmp_path / "a", "PAT-0042"))
    world.studies.add(B, study_files(tmp_path / "b", "PAT-0042"))
    world.studies.add(C, study_files(tmp_path / "c", "PAT-0999"))  # another patient
    who: dict[str, Principal | None] = {"who": clinician()}
    async with TestClient(TestServer(share_app(world, who))) as client:
        yield world, client, who


async def create(client: TestClient, **body: Any) -> dict[str, Any]:
    answer = await client.post("/shares", json={"transfer_ids": [A], "until": "2026-01-10", **body})
    assert answer.status == 201, await answer.text()
    assert answer.headers["Cache-Control"] == "no-store"
    return dict(await answer.json())


def path_of(link: str) -> str:
    return "/share/" + link.rsplit("/share/", 1)[1]


async def open_with(client: TestClient, link: str, code: str) -> Any:
    return await client.post(path_of(link), data={"code": code}, allow_redirects=False)


def assert_patient_headers(headers: Any) -> None:
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


async def test_share_open_download_and_who_has_seen(world: Any, caplog: pytest.LogCaptureFixture) -> None:
    w, client, _ = world
    caplog.set_level(logging.DEBUG)
    made = await create(client, download=True, label="CT, 12 March", max_opens=5)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/share/[A-Za-z0-9_-]{43}", made["link"])
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", made["code"]) and made["qr_svg"].startswith("<svg")
    assert made["state"] == "active" and made["opens"] == 0 and len(made["records"]) == 1
    token = made["link"].rsplit("/", 1)[1]

    # At rest: hashes only, encrypted, private.
    folder = w.data_dir / "shares"
    stored = (folder / "shares.bin").read_bytes()
    for secret in (token, made["code"].replace("-", ""), "PAT-0042", made["share_id"]):
        assert secret.encode() not in stored
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "shares.bin").stat().st_mode) == 0o600

    # The create record: pseudonymous, the patient's tag in the patient slot, the clinician's too.
    create_record = w.submitted[-1]
    assert create_record.type is RecordType.PATIENT_SHARE and create_record.body["action"] == "create"
    assert (
        create_record.body["transfer_ids"] == [bytes.fromhex(A)]
        and create_record.body["mode"] == "identified"
    )
    patient = w.audit.vault.keyring.party("patient:PAT-0042")
    assert tagged_roles(patient, create_record) == [Slot.PATIENT]
    assert tagged_roles(w.audit.vault.keyring.party("user:dr.hansen"), create_record) == [Slot.SENDER_USER]
    assert b"PAT-0042" not in create_record.to_bytes() and b"hansen" not in create_record.to_bytes()

    # The patient opens the link: the code form, with the headers a patient page carries.
    page = await client.get(path_of(made["link"]))
    assert page.status == 200 and 'name="code"' in await page.text()
    assert_patient_headers(page.headers)
    wrong = await open_with(client, made["link"], "AAAA-AAAA")
    assert wrong.status == 401 and "not right" in await wrong.text()
    right = await open_with(client, made["link"], made["code"].lower())
    assert right.status == 303 and right.headers["Location"] == path_of(made["link"])
    cookie = right.cookies["mftp_share"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    view_records = [r for r in w.submitted if r.type is RecordType.STUDY_ACCESSED]
    assert [r.body["action"] for r in view_records] == ["share-view"]
    assert view_records[0].body["purpose"] == "PATRQT"
    assert tagged_roles(patient, view_records[0]) == [Slot.PATIENT]

    # The study page lists every recorded access to the study, each proof verified.
    w.commit()
    studied = await client.get(path_of(made["link"]))
    text = await studied.text()
    assert studied.status == 200 and "Who has seen my images" in text and "CT, 12 March" in text
    assert text.count('class="ok">verified') == 2 and "not verified" not in text
    assert "opened your link" in text and "shared it with you" in text and "st-olav" in text
    assert "/viewer?StudyInstanceUIDs=" in text and "PAT-0042" not in text

    # The download: a ZIP of the files byte for byte, and a DICOMDIR that lists them.
    zipped = await client.get(path_of(made["link"]) + "/download")
    assert zipped.status == 200 and zipped.headers["Content-Type"] == "application/zip"
    assert_patient_headers(zipped.headers)
    archive = zipfile.ZipFile(io.BytesIO(await zipped.read()))
    originals = [data for _, data in w.studies.studies[A]]
    files = [n for n in archive.namelist() if n.startswith("DICOM/")]
    assert [archive.read(n) for n in files] == originals
    dicomdir = pydicom.dcmread(io.BytesIO(archive.read("DICOMDIR")))
    referenced = [
        "/".join(r.ReferencedFileID) for r in dicomdir.DirectoryRecordSequence if "ReferencedFileID" in r
    ]
    assert sorted(referenced) == sorted(files)
    downloads = [
        r for r in w.submitted if r.type is RecordType.STUDY_ACCESSED and r.body["action"] == "share-download"
    ]
    assert len(downloads) == 1

    # Nothing in the logs names the patient, the token or the code.
    # (aiohttp's access log is the test server's: the node runs without one, access_log=None.)
    logged = "\n".join(
        r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records if r.name != "aiohttp.access"
    )
    for secret in (token, made["code"], made["code"].replace("-", ""), "PAT-0042", "dr.hansen"):
        assert secret not in logged


async def test_revocation_takes_effect_at_once_and_says_when(world: Any) -> None:
    w, client, _ = world
    made = await create(client, download=True)
    right = await open_with(client, made["link"], made["code"])
    session = right.cookies["mftp_share"].value
    assert w.service.scope(session).allows(transfer_id=A)
    w.clock.advance(60_000)
    answer = await client.post(f"/shares/{made['share_id']}/revoke")
    assert answer.status == 200 and (await answer.json())["state"] == "revoked"
    # The session is refused at once: page, download and the viewing scope.
    for path in ("", "/download"):
        refused = await client.get(path_of(made["link"]) + path)
        assert refused.status == 404 and await refused.text() == unavailable_page()
    with pytest.raises((ShareSessionRefused, ShareUnavailable)):
        w.service.scope(session)
    revoke = w.submitted[-1]
    assert revoke.type is RecordType.PATIENT_SHARE and revoke.body["action"] == "revoke"
    assert revoke.body["effective_ms"] == w.clock.now_ms() == w.service.get(made["share_id"]).revoked_ms
    again = await client.post(f"/shares/{made['share_id']}/revoke")
    assert again.status == 400 and "revoked already" in (await again.json())["error"]
    # A restart keeps it revoked.
    restarted = ShareService(w, w.studies, w.audit)
    assert restarted.get(made["share_id"]).state is ShareState.REVOKED
    with pytest.raises(ShareUnavailable):
        restarted.find(made["link"].rsplit("/", 1)[1])


async def test_every_dead_link_answers_the_same_page(world: Any) -> None:
    w, client, _ = world
    pages = []
    # Unknown and malformed tokens.
    for path in ("/share/" + "A" * 43, "/share/short", "/share/" + "%2e%2e%2f" * 5, "/share/" + "x" * 5000):
        answer = await client.get(path)
        pages.append((answer.status, await answer.text()))
    # Locked: five wrong codes.
    locked = await create(client)
    for _ in range(4):
        assert (await open_with(client, locked["link"], "ZZZZ-ZZZZ")).status == 401
    fifth = await open_with(client, locked["link"], "ZZZZ-ZZZZ")
    pages.append((fifth.status, await fifth.text()))
    after = await open_with(client, locked["link"], locked["code"])  # even the right code now
    pages.append((after.status, await after.text()))
    assert w.service.get(locked["share_id"]).state is ShareState.LOCKED
    # Exhausted: one open allowed.
    once = await create(client, max_opens=1)
    assert (await open_with(client, once["link"], once["code"])).status == 303
    client.session.cookie_jar.clear()
    again = await open_with(client, once["link"], once["code"])
    pages.append((again.status, await again.text()))
    # Revoked, not yet started, expired.
    revoked = await create(client)
    await client.post(f"/shares/{revoked['share_id']}/revoke")
    later = await create(client, **{"from": "2026-01-05"})
    expiring = await create(client)
    for made in (revoked, later):
        answer = await client.get(path_of(made["link"]))
        pages.append((answer.status, await answer.text()))
    w.clock.advance(10 * DAY_MS)
    answer = await client.get(path_of(expiring["link"]))
    pages.append((answer.status, await answer.text()))
    assert w.service.get(expiring["share_id"]).state is ShareState.EXPIRED
    assert len(pages) == 10 and all(page == (404, unavailable_page()) for page in pages), pages


async def test_the_clinician_api_refuses_bad_requests_with_4xx(world: Any) -> None:
    w, client, who = world
    cases: list[tuple[Any, str]] = [
        ({"transfer_ids": A, "until": "2026-01-10"}, "list"),
        ({"transfer_ids": ["zz"], "until": "2026-01-10"}, "transfer"),
        ({"transfer_ids": ["dd" * 16], "until": "2026-01-10"}, "no received transfer"),
        ({"transfer_ids": [A, C], "until": "2026-01-10"}, "not all of one patient"),
        ({"transfer_ids": [A, A], "until": "2026-01-10"}, "twice"),
        ({"transfer_ids": [], "until": "2026-01-10"}, "1 to 16"),
        ({"transfer_ids": [A] * 17, "until": "2026-01-10"}, "1 to 16"),
        ({"transfer_ids": [A], "until": "2025-12-01"}, "end date"),
        ({"transfer_ids": [A], "until": "tomorrow"}, "YYYY-MM-DD"),
        ({"transfer_ids": [A], "until": 20260110}, "YYYY-MM-DD"),
        ({"transfer_ids": [A], "until": "2026-01-10", "max_opens": "many"}, "integer"),
        ({"transfer_ids": [A], "until": "2026-01-10", "max_opens": 10**30}, "max_opens"),
        ({"transfer_ids": [A], "until": "2026-01-10", "download": "yes"}, "download"),
        ({"transfer_ids": [A], "until": "2026-01-10", "mode": "x"}, "mode"),
        ({"transfer_ids": [A], "until": "2026-01-10", "label": "x" * 101}, "label"),
        ({"transfer_ids": [A], "until": "2026-01-10", "label": 5}, "label"),
        ({"transfer_ids": [A], "until": "2028-01-10"}, "at most"),
        ({"transfer_ids": [A], "until": "2026-01-10", "evil": 1}, "expected"),
        (["not", "an", "object"], "expected"),
    ]
    for body, words in cases:
        answer = await client.post("/shares", json=body)
        assert answer.status == 400, (body, answer.status)
        assert words in await answer.text(), (body, await answer.text())
    deep = await client.post("/shares", data=b"[" * 10_000 + b"]" * 10_000)
    assert deep.status == 400
    bad_json = await client.post("/shares", data=b"{nope")
    assert bad_json.status == 400
    assert (await client.get("/shares/" + "ee" * 16)).status == 400
    assert (await client.post("/shares/nope/revoke")).status == 400
    assert w.submitted == [] and len(w.service.store) == 0  # nothing was shared or recorded
    # Roles: an operator may not share; no principal is 401.
    who["who"] = Principal("ops", "session", frozenset({Role.OPERATOR}), 1000.0)
    assert (await client.post("/shares", json={"transfer_ids": [A], "until": "2026-01-10"})).status == 403
    who["who"] = None
    assert (await client.get("/shares")).status == 401


async def test_a_refused_record_leaves_no_usable_link(world: Any) -> None:
    w, client, _ = world
    w.refuse_records = True
    answer = await client.post("/shares", json={"transfer_ids": [A], "until": "2026-01-10"})
    assert answer.status == 400 and "mempool refused" in (await answer.json())["error"]
    assert len(w.service.store) == 0
    w.refuse_records = False
    made = await create(client)
    w.refuse_records = True
    opened = await open_with(client, made["link"], made["code"])
    assert opened.status == 503  # no opening is served unrecorded: try again later
    assert "mftp_share" not in opened.cookies and w.service.get(made["share_id"]).opens == 0


async def test_sessions_are_scoped_to_their_share(world: Any) -> None:
    w, client, _ = world
    first = await create(client, download=True)
    second = await create(client, transfer_ids=[B], download=True)
    session = (await open_with(client, first["link"], first["code"])).cookies["mftp_share"].value
    scope = w.service.scope(session)
    assert scope.transfer_ids == {A} and scope.allows(transfer_id=A) and not scope.allows(transfer_id=B)
    study_a = w.service.get(first["share_id"]).studies[0]
    study_b = w.service.get(second["share_id"]).studies[0]
    assert scope.allows(study_uid=study_a) and not scope.allows(study_uid=study_b)
    assert scope.principal.via == "share" and scope.principal.roles == frozenset()
    assert scope.principal.party_id == "patient:PAT-0042"
    # The session of share 1 does not open share 2's page or download.
    for path in ("", "/download"):
        answer = await client.get(path_of(second["link"]) + path)
        assert answer.status in (200, 401) and "Who has seen" not in await answer.text()
    for forged in ("", "x" * 43, "a" * 10_000, session[:-1] + ("A" if session[-1] != "A" else "B")):
        with pytest.raises(ShareSessionRefused):
            w.service.scope(forged)
    # Sessions end when idle.
    w.clock.advance(31 * 60 * 1000)
    with pytest.raises(ShareSessionRefused):
        w.service.scope(session)


async def test_origin_view_only_rate_limit_and_routes(world: Any) -> None:
    w, client, _ = world
    made = await create(client)
    foreign = await client.post(
        path_of(made["link"]), data={"code": made["code"]}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403 and w.service.get(made["share_id"]).opens == 0
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        refused = await client.post(path_of(made["link"]), data={"code": made["code"]}, headers=headers)
        assert refused.status == 403 and w.service.get(made["share_id"]).opens == 0
    # Our pages send no referrer, so Chromium's own form POST says Origin: null, same-origin.
    ours = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    wrong = await client.post(path_of(made["link"]), data={"code": "ZZZZ-ZZZZ"}, headers=ours)
    assert wrong.status == 401
    assert (await client.post(path_of(made["link"]), data=b"code=" + b"A" * 5000)).status == 413
    assert (await open_with(client, made["link"], made["code"])).status == 303
    view_only = await client.get(path_of(made["link"]) + "/download")
    assert view_only.status == 403
    assert not [r for r in w.submitted if r.body.get("action") == "share-download"]
    page = await (await client.get(path_of(made["link"]))).text()
    assert "does not allow downloading" in page and "/download" not in page
    left = await client.post(path_of(made["link"]) + "/leave", allow_redirects=False)
    assert left.status == 303 and 'name="code"' in await (await client.get(path_of(made["link"]))).text()
    # Thirty wrong codes from one address over several shares (one above): that address waits.
    shares = [await create(client) for _ in range(8)]
    statuses = [(await open_with(client, s["link"], "ZZZZ-ZZZZ")).status for s in shares for _ in range(4)]
    assert statuses[:29] == [401] * 29 and statuses[29:] == [429, 429, 429]
    # Static files are ours, with the same headers; others are 404.
    style = await client.get("/share-static/share.css")
    assert style.status == 200 and style.content_type == "text/css"
    assert_patient_headers(style.headers)
    assert (await client.get("/share-static/../../etc/passwd")).status == 404
    assert (await client.get("/share-static/other.js")).status == 404


def test_every_route_states_its_rule(tmp_path: Path) -> None:
    app = share_app(World(tmp_path), {"who": clinician()})
    rules = {f"{r.method} {r.resource.canonical}": rule_of(r.handler) for r in app.router.routes()}
    assert all(rule is not None for rule in rules.values()), rules
    create_rule, revoke_rule = rules["POST /shares"], rules["POST /shares/{share_id}/revoke"]
    assert create_rule is not None and create_rule.step_up and Role.CLINICIAN in create_rule.roles()
    assert revoke_rule is not None and revoke_rule.step_up
    public_writes = {k for k, r in rules.items() if r is not None and r.public and k.startswith("POST")}
    # The patient's two POSTs are public by nature (no account); each checks its origin.
    assert public_writes == {"POST /share/{token}", "POST /share/{token}/leave"}


async def test_the_answer_is_hashed_nowhere_else(world: Any) -> None:
    w, client, _ = world
    made = await create(client)
    listed = await (await client.get("/shares")).json()
    text = str(listed)
    token = made["link"].rsplit("/", 1)[1]
    assert token not in text and made["code"] not in text and "PAT-0042" not in text
    assert listed["shares"][0]["share_id"] == made["share_id"]
    digest = hashlib.sha256(token.encode()).digest()
    assert digest not in (w.data_dir / "shares" / "shares.bin").read_bytes()


async def test_a_pseudonymised_share_downloads_without_the_patients_identity(world: Any) -> None:
    w, client, _ = world
    made = await create(client, download=True, mode="pseudonymised")
    assert (await open_with(client, made["link"], made["code"])).status == 303
    archive = zipfile.ZipFile(
        io.BytesIO(await (await client.get(path_of(made["link"]) + "/download")).read())
    )
    files = [archive.read(n) for n in archive.namelist() if n.startswith("DICOM/")]
    assert files and all(b"Nordmann" not in f and b"PAT-0042" not in f for f in files)
    assert all(b"Nordmann" in data for _, data in w.studies.studies[A])  # the originals had it
    assert w.submitted[0].body["mode"] == "pseudonymised"


def test_a_damaged_or_foreign_store_is_storage_damage(tmp_path: Path) -> None:
    from mftp.crypto.signing import SigningIdentity
    from mftp.node.clock import FakeClock
    from mftp.node.errors import StorageDamaged
    from mftp.node.shares.store import ShareStore

    world = World(tmp_path)
    folder = world.data_dir / "shares"
    ShareStore(folder, world.identity, FakeClock())._save({})
    with pytest.raises(StorageDamaged, match="shares"):
        ShareStore(folder, SigningIdentity.generate(), FakeClock())  # another node's key
    (folder / "shares.bin").write_bytes(b"garbage" * 10)
    with pytest.raises(StorageDamaged):
        ShareStore(folder, world.identity, FakeClock())
