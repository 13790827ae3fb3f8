"""The HTTP API over a real LevelDB ledger: every route, its OpenAPI document, auth."""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry, Gauge

from mftp.ledger import merkle
from mftp.ledger.errors import StoreError
from mftp.ledger.ledger import Ledger
from mftp.ledger.proofs import InclusionProof, verify_record_in_ledger
from mftp.ledger.records import Record
from mftp.ledger.sample import ChainBuilder, identities, sample_genesis, sample_record
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.node.api.openapi import openapi_document
from mftp.node.api.people_routes import PeopleApi
from mftp.node.api.server import Api
from mftp.node.audit.routes import AuditApi
from mftp.node.console.overview import OverviewApi
from mftp.node.console.pages import ConsolePages
from mftp.node.errors import NodeUsageError, ResidencyRefused, StorageDamaged
from mftp.node.people.roles import Role
from mftp.node.transfers.console_routes import TransferConsoleApi
from tests.people_kit import PeopleKit


class FakeNode:
    """A NodeView over a ledger, recording submissions."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.registry = CollectorRegistry()
        Gauge("mftp_height", "height", registry=self.registry).set(ledger.height)
        self.submitted: list[Record] = []
        self.waited: list[tuple[int, float]] = []

    def status(self) -> dict[str, Any]:
        return {
            "name": "a",
            "role": "validator",
            "chain_id": self.ledger.genesis.chain_id,
            "height": self.ledger.height,
            "round": 0,
            "peers": 0,
            "sync": {"state": "synced"},
        }

    def peers(self) -> list[dict[str, Any]]:
        return []

    async def submit_records(self, records: list[Record]) -> list[str]:
        self.submitted.extend(records)
        return ["accepted"] * len(records)

    async def wait_for_height(self, height: int, timeout_s: float) -> None:
        self.waited.append((height, timeout_s))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient, FakeNode, Any]]:
    signers = identities(4)
    genesis = sample_genesis(signers)
    builder = ChainBuilder(genesis, signers)
    rng = random.Random(7)
    ledger = Ledger(LevelDBStore(tmp_path / "ledger"), genesis)
    for _ in range(3):
        block, cert = builder.next_block([sample_record(signers[0], rng) for _ in range(5)])
        ledger.append(block, cert)
    node = FakeNode(ledger)
    # The audit routes only need registering here; tests/node/test_audit_*.py call them.
    audit_routes = AuditApi(cast(Any, None), cast(Any, None))
    kit = PeopleKit(tmp_path)
    console = (
        ConsolePages(),
        OverviewApi(cast(Any, None), None, kit.clock, own_key=b""),
        TransferConsoleApi(cast(Any, None), ledger, cast(Any, None), str),
    )
    api = Api(node, kit.gate, providers=(PeopleApi(kit.signin, kit.admin, kit.gate), audit_routes, *console))
    async with TestClient(TestServer(api.app())) as test_client:
        yield test_client, node, (signers, genesis, rng, kit)
    ledger.close()


def _validator(name: str) -> OAS31Validator:
    document = openapi_document()
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return OAS31Validator(schema)


def test_openapi_document_is_valid() -> None:
    validate(openapi_document())


async def test_every_route_is_documented(client: tuple[TestClient, FakeNode, Any]) -> None:
    test_client = client[0]
    app: web.Application = test_client.server.app  # type: ignore[attr-defined]
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    documented = {(m, p) for p, ops in openapi_document()["paths"].items() for m in ops}
    assert routes == documented


async def test_reads(client: tuple[TestClient, FakeNode, Any]) -> None:
    test_client = client[0]
    status = await (await test_client.get("/status")).json()
    _validator("Status").validate(status)
    assert status["height"] == 3
    block = await (await test_client.get("/blocks/2")).json()
    _validator("Block").validate(block)
    assert len(block["records"]) == 5 and block["certificate"]["height"] == 2
    blocks = await (await test_client.get("/blocks", params={"from": 1, "to": 3})).json()
    assert [b["height"] for b in blocks["blocks"]] == [1, 2, 3]
    node = client[1]
    waited = await (await test_client.get("/blocks", params={"from": 2, "wait_ms": 100})).json()
    assert [b["height"] for b in waited["blocks"]] == [2, 3] and node.waited == []  # no wait: it is there
    future = await (await test_client.get("/blocks", params={"from": 4, "wait_ms": 99_000})).json()
    assert future["blocks"] == [] and node.waited == [(4, 30.0)]  # capped at 30 s
    record_id = block["record_ids"][0]
    record = await (await test_client.get(f"/records/{record_id}")).json()
    _validator("Record").validate(record)
    assert record["height"] == 2 and record["type"] == "transfer_offered"
    assert (await test_client.get("/blocks/99")).status == 404
    assert (await test_client.get("/records/" + "00" * 16)).status == 404
    assert (await test_client.get("/records/zz")).status == 400
    validators = await (await test_client.get("/validators")).json()
    assert len(validators["validators"]) == 4
    metrics = await (await test_client.get("/metrics")).text()
    assert "mftp_height 3.0" in metrics


async def test_inclusion_proof_verifies_with_only_the_validator_set(
    client: tuple[TestClient, FakeNode, Any],
) -> None:
    test_client, node, (_, genesis, _, _) = client
    record_id = node.ledger.store.block(1).records[2].record_id.hex()
    body = await (await test_client.get(f"/proofs/inclusion/{record_id}", params={"height": 3})).json()
    store = node.ledger.store
    proof = InclusionProof(
        body["ledger_index"], body["ledger_size"], tuple(bytes.fromhex(p) for p in body["path"])
    )
    record = verify_record_in_ledger(
        base64.b64decode(body["record_bytes"]),
        proof,
        store.header(3),
        store.certificate(3),
        genesis.validators,
    )
    assert record.record_id.hex() == record_id
    consistency = await (await test_client.get("/proofs/consistency", params={"from": 1, "to": 3})).json()
    old, new = store.header(1), store.header(3)
    path = [bytes.fromhex(p) for p in consistency["path"]]
    merkle.verify_consistency(old.ledger_size, new.ledger_size, old.ledger_root, new.ledger_root, path)


async def test_submit_requires_a_token(client: tuple[TestClient, FakeNode, Any]) -> None:
    test_client, node, (signers, _, rng, kit) = client
    record = sample_record(signers[1], rng)
    payload = {"record": base64.b64encode(record.to_bytes()).decode()}
    assert (await test_client.post("/records", json=payload)).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await test_client.post("/records", json=payload, headers=wrong)).status == 401
    clinician = kit.bearer("dr.a", Role.CLINICIAN)  # a real token, of the wrong role
    assert (await test_client.post("/records", json=payload, headers=clinician)).status == 403
    good = kit.bearer("ops", Role.OPERATOR)
    response = await test_client.post("/records", json=payload, headers=good)
    assert response.status == 202
    assert node.submitted == [record]
    bad = await test_client.post("/records", json={"record": "!!"}, headers=good)
    assert bad.status == 400
    garbage = await test_client.post(
        "/records", json={"record": base64.b64encode(b"x").decode()}, headers=good
    )
    assert garbage.status == 400


class FakeTransfers:
    """A TransferView that refuses one destination for residency and records the rest."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str, str]] = []

    async def send(
        self,
        source: str,
        to_name: str,
        purpose: str,
        mode: str,
        user: str,
        to_user: str = "",
        burned_in: str | None = None,
    ) -> str:
        if burned_in not in (None, "clean", "refuse"):
            raise NodeUsageError("burned_in must be one of clean, refuse")
        if to_name == "abroad":
            raise ResidencyRefused("data residency: abroad is in SE")
        self.sent.append((source, to_name, purpose, mode, user))
        return "ab" * 16

    def list(self) -> list[dict[str, Any]]:
        return [self.view()]

    def get(self, transfer_id: str) -> dict[str, Any] | None:
        return self.view() if transfer_id == "ab" * 16 else None

    async def export(
        self, transfer_id: str, destination: str, purpose: str | None = None, user: str = ""
    ) -> dict[str, Any]:
        if transfer_id != "ab" * 16:
            raise NodeUsageError("no received transfer")
        return {
            "job_id": "ef" * 16,
            "transfer_id": transfer_id,
            "state": "done",
            "phase": "finished",
            "files": 3,
            "files_done": 3,
            "record": "cd" * 16,
            "error": "",
            "fault": "",
            "created_ms": 0,
        }

    @staticmethod
    def view() -> dict[str, Any]:
        return {"transfer_id": "ab" * 16, "direction": "in", "peer": "b", "state": "complete"}


async def test_transfer_routes_need_the_token_and_map_errors(tmp_path: Path) -> None:
    signers = identities(4)
    ledger = Ledger(LevelDBStore(tmp_path / "ledger"), sample_genesis(signers))
    transfers = FakeTransfers()
    kit = PeopleKit(tmp_path)
    api = Api(FakeNode(ledger), kit.gate, transfers=transfers)
    good = kit.bearer("dr.a")
    send = {"source": "/s", "to": "b", "purpose": "TREAT", "mode": "pseudonymised"}
    async with TestClient(TestServer(api.app())) as test:
        assert (await test.get("/transfers")).status == 401
        assert (await test.post("/transfers", json=send)).status == 401
        started = await test.post("/transfers", json=send, headers=good)
        assert started.status == 202
        _validator("TransferStarted").validate(await started.json())
        refused = await test.post("/transfers", json={**send, "to": "abroad"}, headers=good)
        assert refused.status == 403 and "data residency" in (await refused.json())["error"]
        assert (await test.post("/transfers", json={"to": "b"}, headers=good)).status == 400
        bogus = await test.post("/transfers", json={**send, "burned_in": "keep"}, headers=good)
        assert bogus.status == 400 and "burned_in" in (await bogus.json())["error"]
        chosen = await test.post("/transfers", json={**send, "burned_in": "refuse"}, headers=good)
        assert chosen.status == 202
        listed = await (await test.get("/transfers", headers=good)).json()
        _validator("Transfer").validate(listed["transfers"][0])
        assert (await test.get("/transfers/" + "00" * 16, headers=good)).status == 404
        export = await test.post(f"/transfers/{'ab' * 16}/export", json={"destination": "/x"}, headers=good)
        _validator("ExportResult").validate(await export.json())
        missing = await test.post(f"/transfers/{'00' * 16}/export", json={"destination": "/x"}, headers=good)
        assert missing.status == 400
    assert (
        transfers.sent == [("/s", "b", "TREAT", "pseudonymised", "user:dr.a")] * 2
    )  # the second chose "refuse"
    ledger.close()


class DamagedTransfers(FakeTransfers):
    """Transfers whose state files or blob store no longer read back."""

    def list(self) -> list[dict[str, Any]]:
        raise StorageDamaged("0123.json: corrupt transfer state: Expecting value")

    def get(self, transfer_id: str) -> dict[str, Any] | None:
        raise StoreError("cannot read the block store: IO error")


async def test_our_damaged_disk_is_a_500_with_a_clear_message_never_a_400(tmp_path: Path) -> None:
    """Neither the caller's fault (4xx) nor a peer's (502): the operator restores a backup."""
    ledger = Ledger(LevelDBStore(tmp_path / "ledger"), sample_genesis(identities(4)))
    kit = PeopleKit(tmp_path)
    api = Api(FakeNode(ledger), kit.gate, transfers=DamagedTransfers())
    good = kit.bearer("dr.a")
    async with TestClient(TestServer(api.app())) as test:
        for path in ("/transfers", "/transfers/" + "ab" * 16):
            answer = await test.get(path, headers=good)
            assert answer.status == 500
            assert "stored data is damaged" in (await answer.json())["error"]


def test_every_request_body_is_a_typed_model_the_handlers_decode() -> None:
    """No hand-written body schema: each documented body is a model of mftp.node.api.models."""
    from mftp.node.api import models

    document = openapi_document()
    used = set()
    for item in document["paths"].values():
        for op in item.values():
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert set(schema) == {"$ref"}, op["summary"]
                used.add(schema["$ref"].rsplit("/", 1)[1])
    assert used == {m.__name__ for m in models.REQUESTS}
    assert set(document["components"]["schemas"]) >= used | {m.__name__ for m in models.RESPONSES}
    for model in models.REQUESTS:  # unknown fields are refused, as the document says
        assert document["components"]["schemas"][model.__name__].get("additionalProperties") is False
