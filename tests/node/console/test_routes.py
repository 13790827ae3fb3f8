"""The console's routes in-process: strict headers on every page, only our own files, bounded
and refused inputs (4xx, never 5xx), each route's role, the history's proofs, the overview's alerts."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mftp.ledger.ledger import Ledger
from mftp.ledger.pseudonyms import Disclosure
from mftp.ledger.sample import ChainBuilder, identities, sample_genesis, sample_record
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.node.api.server import Api
from mftp.node.console.overview import OverviewApi, pacs_addresses
from mftp.node.console.pages import CSP, ConsolePages
from mftp.node.people.roles import Role
from mftp.node.transfers.console_routes import TransferConsoleApi
from mftp.node.transfers.sources import Allowed
from tests.people_kit import PeopleKit

from ..api.test_server import FakeNode


class Transfers:
    """Transfer state as the routes read it: one sent transfer whose offer is a ledger record."""

    def __init__(self, allowed: Allowed, offer: str) -> None:
        self.allowed = allowed
        self.offer = offer
        self.access = None

    def get(self, transfer_id: str) -> dict[str, Any] | None:
        if transfer_id != "ab" * 16:
            return None
        return {"transfer_id": transfer_id, "offer_record": self.offer, "access_records": ["ee" * 16]}

    def list(self) -> list[dict[str, Any]]:
        return [{"direction": "out", "state": "offered"}, {"direction": "in", "state": "failed"}]


class Vault:
    def __init__(self, ours: bytes) -> None:
        self.ours = ours

    def disclose(self, record_id: bytes, fields: Any = None) -> Disclosure | None:
        if record_id != self.ours:
            return None
        return Disclosure(record_id, {"user": (b"s" * 16, "user:dr.a"), "purpose": (b"t" * 16, "TREAT")})


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[tuple[TestClient, PeopleKit, Any]]:
    signers = identities(4)
    genesis = sample_genesis(signers)
    builder = ChainBuilder(genesis, signers)
    ledger = Ledger(LevelDBStore(tmp_path / "ledger"), genesis)
    rng = random.Random(5)
    for _ in range(3):
        ledger.append(*builder.next_block([sample_record(signers[0], rng) for _ in range(3)]))
    offer = ledger.store.block(2).records[1].record_id
    source = tmp_path / "outgoing"
    (source / "study-1").mkdir(parents=True)
    (source / "study-2").mkdir()
    (source / ".hidden").mkdir()
    (tmp_path / "secret").mkdir()
    (source / "escape").symlink_to(tmp_path / "secret")
    allowed = Allowed((source.resolve(),), (), ("http://127.0.0.1:9/dicom-web",), ("PACS@127.0.0.1:9",))
    transfers = Transfers(allowed, offer.hex())
    kit = PeopleKit(tmp_path)
    node = FakeNode(ledger)
    node.name, node.role, node.data_dir = "a", "validator", tmp_path  # type: ignore[attr-defined]
    overview = OverviewApi(
        node,  # type: ignore[arg-type]
        transfers,
        kit.clock,
        own_key=signers[0].public.sign_key,
        pacs=pacs_addresses(["http://127.0.0.1:9/dicom-web", "http://127.0.0.1"], ["PACS@127.0.0.1:9"]),
    )
    providers = (
        ConsolePages(),
        overview,
        TransferConsoleApi(transfers, ledger, Vault(offer), lambda key: key.hex()[:8]),  # type: ignore[arg-type]
    )
    async with TestClient(TestServer(Api(node, kit.gate, providers=providers).app())) as client:
        yield client, kit, (tmp_path, offer)
    ledger.close()


async def test_pages_carry_strict_headers_and_only_our_files(
    console: tuple[TestClient, PeopleKit, Any],
) -> None:
    client = console[0]
    root = await client.get("/", allow_redirects=False)
    assert root.status == 302 and root.headers["Location"] == "/console/"
    for path in ("/console/", "/console/inbox.html", "/console/app.js", "/console/style.css"):
        page = await client.get(path)
        assert page.status == 200, path
        assert page.headers["Content-Security-Policy"] == CSP
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/console/app.js")).headers["Content-Type"].startswith("text/javascript")
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "unsafe" not in CSP
    for probe in (
        "/console/../pyproject.toml",
        "/console/%2e%2e/%2e%2e/pyproject.toml",
        "/console/..%2fpages.py",
        "/console/pages.py",
        "/console/static/app.js",
        "/console//etc/passwd",
        "/console/%00",
        "/console/" + "a" * 5000,
    ):
        answer = await client.get(probe)
        assert answer.status in (404, 400, 414), probe
        assert "error" in await answer.json() if answer.status == 404 else True


async def test_no_page_loads_anything_from_elsewhere() -> None:
    pages = ConsolePages()
    for name, (body, _) in pages.files.items():
        text = body.decode()
        for pattern in ("http://", "https://", "//cdn", "fonts.googleapis", "innerHTML", "eval("):
            assert pattern not in text, f"{name} holds {pattern!r}"
        if name.endswith(".html"):
            assert "<title>" in text and 'lang="en"' in text and "<main" in text, name
            assert "<script>" not in text and "style=" not in text, name  # the CSP would block them


async def test_pacs_routes_refuse_bad_input_with_4xx(console: tuple[TestClient, PeopleKit, Any]) -> None:
    client, kit, (tmp_path, _) = console
    clinician = kit.bearer("dr.a")
    assert (await client.get("/pacs/sources")).status == 401
    assert (await client.get("/pacs/sources", headers=kit.bearer("op", Role.OPERATOR))).status == 403
    listed = await (await client.get("/pacs/sources", headers=clinician)).json()
    assert [s["kind"] for s in listed["sources"]] == ["dicomweb", "dimse", "folder"]
    folder = listed["sources"][2]["source"]
    found = await client.post("/pacs/search", json={"source": folder}, headers=clinician)
    assert [s["name"] for s in (await found.json())["studies"]] == ["study-1", "study-2"]  # no link, no dot
    refused = [
        {"source": "folder:/etc"},
        {"source": f"folder:{tmp_path / 'secret'}"},
        {"source": f"folder:{folder.removeprefix('folder:')}/../../secret"},
        {"source": "folder:relative/path"},
        {"source": "dicomweb:http://evil.example/dicom-web", "patient_id": "P"},
        {"source": "dicomweb:http://127.0.0.1:9@evil.example/dicom-web", "patient_id": "P"},
        {"source": "dimse:OTHER@127.0.0.1:9", "patient_id": "P"},
        {"source": "dimse:PACS@127.0.0.1:9?x=1", "patient_id": "P"},
        {"source": "dicomweb:http://127.0.0.1:9/dicom-web"},  # no key
        {"source": "dicomweb:http://127.0.0.1:9/dicom-web", "patient_id": "P*"},
        {"source": "dicomweb:http://127.0.0.1:9/dicom-web", "patient_id": "P" * 65},
        {"source": "dicomweb:http://127.0.0.1:9/dicom-web", "study_uid": "1.2.x"},
        {"source": "gopher:x", "patient_id": "P"},
        {"source": 5},
        {"source": folder, "extra": "x"},
    ]
    for body in refused:
        answer = await client.post("/pacs/search", json=body, headers=clinician)
        assert answer.status == 400, (body, await answer.text())
    # An allowed PACS that does not answer is the PACS's fault: 502, not 500.
    down = {"source": "dicomweb:http://127.0.0.1:9/dicom-web", "patient_id": "P"}
    assert (await client.post("/pacs/search", json=down, headers=clinician)).status == 502
    down = {"source": "dimse:PACS@127.0.0.1:9", "patient_id": "P"}
    assert (await client.post("/pacs/search", json=down, headers=clinician)).status == 502


async def test_history_proves_each_record_and_names_only_our_users(
    console: tuple[TestClient, PeopleKit, Any],
) -> None:
    client, kit, (_, offer) = console
    clinician = kit.bearer("dr.a")
    assert (await client.get(f"/transfers/{'ab' * 16}/history")).status == 401
    assert (
        await client.get(f"/transfers/{'ab' * 16}/history", headers=kit.bearer("au", Role.AUDITOR))
    ).status == 403
    for bad in ("AB" * 16, "ab" * 15, "zz" * 16, "../" * 5):
        assert (await client.get(f"/transfers/{bad}/history", headers=clinician)).status in (400, 404), bad
    assert (await client.get(f"/transfers/{'cd' * 16}/history", headers=clinician)).status == 404
    answer = await (await client.get(f"/transfers/{'ab' * 16}/history", headers=clinician)).json()
    records = {r["id"]: r for r in answer["records"]}
    ours = records[offer.hex()]
    assert ours["verified"] and ours["committed"] and ours["user"] == "dr.a" and ours["purpose"] == "TREAT"
    missing = records["ee" * 16]  # an access record not committed (yet): said so, never "verified"
    assert not missing["committed"] and not missing["verified"]


async def test_overview_is_for_operators_and_raises_alerts(
    console: tuple[TestClient, PeopleKit, Any],
) -> None:
    client, kit, _ = console
    assert (await client.get("/overview")).status == 401
    assert (await client.get("/overview", headers=kit.bearer("dr.a"))).status == 403
    figures = await (await client.get("/overview", headers=kit.bearer("op", Role.OPERATOR))).json()
    assert figures["height"] == 3 and figures["metrics"]["mftp_height"] == 3
    assert [p["signed"] for p in figures["participation"]] == [True, True, True]  # the sample signs with all
    assert figures["queues"] == {"mempool_records": 0, "sending": 1, "receiving": 0, "failed": 1}
    # The allow-list pattern "http://127.0.0.1" (any port) is no server: not probed.
    assert [p["pacs"] for p in figures["pacs"]] == ["http://127.0.0.1:9/dicom-web", "dimse:PACS@127.0.0.1:9"]
    whats = {a["what"] for a in figures["alerts"]}
    assert {"pacs:http://127.0.0.1:9/dicom-web", "pacs:dimse:PACS@127.0.0.1:9", "ledger"} <= whats
