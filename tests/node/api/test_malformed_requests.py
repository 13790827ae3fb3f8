"""Every route, every malformed body and parameter: a documented 4xx, never a 5xx, never a traceback.

The test walks the application's route table (not a hand-written list), so a route added later is
probed too.  For each operation it sends bodies that are not JSON, nested a thousand deep, too
large, of the wrong shape; path and query parameters out of their documented bounds; and a method
the path does not have.  Each answer's status must be listed for that operation in the OpenAPI
document, and below 500; a 405 must carry ``Allow``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mftp.ledger.ledger import Ledger
from mftp.ledger.sample import ChainBuilder, identities, sample_genesis, sample_record
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.node.api.openapi import openapi_document
from mftp.node.api.people_routes import PeopleApi
from mftp.node.api.server import MAX_JSON_DEPTH, Api, json_depth
from mftp.node.audit.routes import AuditApi
from mftp.node.console.overview import OverviewApi
from mftp.node.console.pages import ConsolePages
from mftp.node.errors import NodeUsageError
from mftp.node.people.roles import Role, rule_of
from mftp.node.transfers.console_routes import TransferConsoleApi
from tests.people_kit import PeopleKit

from .test_server import FakeNode, FakeTransfers

MAX_BODY = 4096
ROLE_TOKENS: dict[Role, dict[str, str]] = {}
"""A token of each role (filled by the fixture): each route is probed with one its rule allows."""


class Refusing:
    """A service that refuses whatever it is asked (the handlers' parsing is what is probed)."""

    def __getattr__(self, name: str) -> Any:
        raise NodeUsageError(f"refused: {name}")


class RefusingTransfers(FakeTransfers):
    """Transfers whose views and exports refuse everything."""

    access = Refusing()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    import random

    signers = identities(4)
    genesis = sample_genesis(signers)
    builder = ChainBuilder(genesis, signers)
    ledger = Ledger(LevelDBStore(tmp_path / "ledger"), genesis)
    rng = random.Random(3)
    for _ in range(2):
        ledger.append(*builder.next_block([sample_record(signers[0], rng) for _ in range(2)]))
    kit = PeopleKit(tmp_path)
    for role in Role:
        ROLE_TOKENS[role] = kit.bearer(f"probe-{role.value}", role)
    api = Api(
        FakeNode(ledger),
        kit.gate,
        max_request_bytes=MAX_BODY,
        transfers=RefusingTransfers(),
        providers=(
            PeopleApi(kit.signin, kit.admin, kit.gate),
            AuditApi(Refusing(), Refusing()),  # type: ignore[arg-type]
            ConsolePages(),
            OverviewApi(Refusing(), Refusing(), kit.clock, own_key=b""),  # type: ignore[arg-type]
            TransferConsoleApi(Refusing(), ledger, Refusing(), str),  # type: ignore[arg-type]
        ),
    )
    async with TestClient(TestServer(api.app())) as client:
        yield client
    ledger.close()


def _operations(app: web.Application) -> list[tuple[str, str]]:
    return sorted(
        {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}  # type: ignore[union-attr]
    )


BAD_SEGMENTS = ["0", "-1", "x", "9" * 40, "ZZ", "00" * 15, "a b", "%00"]
BAD_INTS = ["-1", "0", "x", "1.5", "9" * 30, "9" * 5000, " 1", "+1", "--1", "", "0x10"]
DEEP = b"[" * 1000 + b"]" * 1000
BAD_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"[]",
    b"123",
    b'"a string"',
    b"null",
    b"{}",
    b'{"extra": 1}',
    b'{"user": 5, "destination": [], "record": {}, "records": 7}',
    b'{"records": "abc"}',
    b'{"records": [1, 2]}',
    b'{"record": "!!!not base64"}',
    DEEP,
    b'{"a":' * 1000 + b"1" + b"}" * 1000,
    b'[{"a": [' * 400 + b"]}]" * 400,
    b'{"user": "' + b"\\" * 100 + b'"}',
    b'{"n": ' + b"9" * 5000 + b"}",
    b'{"user": "x"' + b", " + b'"a": 1' * 10,  # unterminated
    b" " * (MAX_BODY + 1),  # larger than the limit
]


def _auth(app: web.Application, method: str, template: str) -> dict[str, str]:
    """The Authorization header of a token whose role the route allows (none for a public one)."""
    for route in app.router.routes():
        if route.method == method and route.resource is not None and route.resource.canonical == template:
            rule = rule_of(route.handler)
            assert rule is not None
            return {} if rule.public else ROLE_TOKENS[sorted(rule.roles())[0]]
    raise AssertionError(f"no route {method} {template}")


def _documented(method: str, path: str) -> set[int]:
    op = openapi_document()["paths"][path][method.lower()]
    return {int(code) for code in op["responses"]}


def _fill(path: str, segment: str) -> str:
    return re.sub(r"\{[^}]+\}", segment, path)


async def test_every_route_answers_malformed_requests_with_documented_4xx(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app: web.Application = api.server.app  # type: ignore[attr-defined]
    document = openapi_document()
    seen = 0
    for method, template in _operations(app):
        documented = _documented(method, template)
        op = document["paths"][template][method.lower()]
        urls = [_fill(template, s) for s in BAD_SEGMENTS] if "{" in template else [template]
        for param in op.get("parameters", []):
            if param["in"] == "query":
                urls += [f"{_fill(template, 'ab' * 16)}?{param['name']}={v}" for v in BAD_INTS]
        for url in urls:
            for headers in ({}, _auth(app, method, template)):
                bodies = BAD_BODIES if method == "POST" else [b""]
                for body in bodies:
                    answer = await api.request(method, url, data=body, headers=headers)
                    seen += 1
                    where = f"{method} {url} body={body[:40]!r} auth={bool(headers)}"
                    assert answer.status < 500, where
                    assert answer.status in documented | {200, 201, 202}, where
                    if answer.status >= 400:
                        error = await answer.json()
                        assert isinstance(error["error"], str), where
    assert seen > 1000
    # Nothing blew up inside: no traceback and no error logged for any of them.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_method_the_path_does_not_have_is_405_with_allow(api: TestClient) -> None:
    app: web.Application = api.server.app  # type: ignore[attr-defined]
    methods: dict[str, set[str]] = {}
    for method, template in _operations(app):
        methods.setdefault(template, set()).add(method)
    for template, allowed in methods.items():
        url = _fill(template, "ab" * 16)
        for method in ("DELETE", "PUT", "PATCH", "POST", "GET"):
            if method in allowed:
                continue
            answer = await api.request(method, url, headers=ROLE_TOKENS[Role.OPERATOR])
            assert answer.status == 405, f"{method} {url}"
            assert set(answer.headers["Allow"].split(",")) >= allowed, f"{method} {url}"
            assert "error" in await answer.json()


async def test_query_bounds_are_the_documented_ones(api: TestClient) -> None:
    assert (await api.get("/blocks", params={"to": "0"})).status == 400
    assert (await api.get("/blocks", params={"from": "0"})).status == 400
    assert (await api.get("/blocks", params={"wait_ms": "-1"})).status == 400
    assert (await api.get("/blocks/0")).status == 400
    assert (await api.get("/proofs/consistency", params={"from": "0"})).status == 400
    assert (await api.get("/proofs/consistency")).status == 400  # required
    assert (await api.get("/blocks", params={"from": "1", "to": "1"})).status == 200
    # Each bound in the document is the one the server applies, read from the same table.
    for path, item in openapi_document()["paths"].items():
        for param in item.get("get", {}).get("parameters", []):
            schema = param["schema"]
            if param["in"] != "query" or schema.get("type") != "integer":
                continue
            url = _fill(path, "ab" * 16)
            auth = _auth(api.server.app, "GET", path)  # type: ignore[attr-defined]
            below = await api.get(url, params={param["name"]: str(schema["minimum"] - 1)}, headers=auth)
            above = await api.get(url, params={param["name"]: str(schema["maximum"] + 1)}, headers=auth)
            assert below.status == 400 and above.status == 400, (path, param["name"])


async def test_a_body_nested_a_thousand_deep_is_400_on_every_post(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    app: web.Application = api.server.app  # type: ignore[attr-defined]
    posts = [t for m, t in _operations(app) if m == "POST"]
    assert len(posts) >= 8
    for template in posts:
        url = _fill(template, "ab" * 16)
        for body in (DEEP, b'{"user": ' + b"[" * 1000 + b"]" * 1000 + b"}"):
            answer = await api.post(url, data=body, headers=_auth(app, "POST", template))
            assert answer.status == 400, url
            assert "deeper" in (await answer.json())["error"]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_json_depth_counts_without_recursion_and_ignores_strings() -> None:
    assert json_depth(b"[[[[]]]]", 32) == 4
    assert json_depth(b'["[[[[[", {"a": "}}}{{{"}]', 1) == 2
    assert json_depth(b'["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]', 3) == 1
    assert json_depth(b"[" * 100_000, MAX_JSON_DEPTH) == MAX_JSON_DEPTH + 1
    assert json_depth(b'"' + b"[" * 100_000, MAX_JSON_DEPTH) == 0  # an unterminated string
    assert json_depth(json.dumps({"a": [[1], [2, {"b": []}]]}).encode(), 32) == 5
