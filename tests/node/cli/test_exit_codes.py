"""Exit codes and messages keep the README's promise: every refusal by the node exits 5.

A fake node API answers each kind of refusal as the real one does (status and body); the real
commands run against it in a thread.  Messages are whole sentences, never two run together.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mftp.node.cli import audit as audit_cli
from mftp.node.cli import transfers as cli
from mftp.node.cli import view as view_cli
from mftp.node.errors import NodeInputError, NodeUsageError, ResidencyRefused, StorageDamaged, sentences
from mftp.node.pacs import LocalFile
from mftp.node.transfers.dimse_and_attachments import PIXELS_REFUSED
from mftp.node.transfers.jobs import fault_of
from mftp.node.transfers.sources import one_study
from mftp.node.transfers.state import OUT, TransferState
from mftp.transfer.study import ImportReport

TRANSFER = "ab" * 16
ANSWERS = web.AppKey("answers", dict)


@pytest.fixture
async def fake_node() -> AsyncIterator[tuple[TestClient, dict[str, Any]]]:
    """A node API whose answers each test sets: ``answers[(method, path)] = (status, body)``."""
    app = web.Application()
    app[ANSWERS] = {}

    async def answer(request: web.Request) -> web.Response:
        status, body = request.app[ANSWERS].get((request.method, request.path), (404, {"error": "not set"}))
        return web.json_response(body, status=status)

    app.router.add_route("*", "/{tail:.*}", answer)
    async with TestClient(TestServer(app)) as client:
        yield client, app[ANSWERS]


def _api(test: TestClient) -> cli.ApiClient:
    client = cli.ApiClient.__new__(cli.ApiClient)
    client.base, client.token, client.timeout_s = str(test.make_url("")).rstrip("/"), "t", 10.0
    return client


def _args(**values: Any) -> argparse.Namespace:
    common = {"user": "dr.a", "config": "unused", "token_file": None, "purpose": None, "timeout": 10.0}
    return argparse.Namespace(**{**common, **values})


SEND = {
    "source": "/data/study",
    "to": "hospital-b",
    "to_user": None,
    "mode": "pseudonymised",
    "burned_in": None,
    "no_wait": False,
}


def _transfer(state: str, detail: str = "", fault: str = "") -> dict[str, Any]:
    view = TransferState(
        TRANSFER, OUT, "hospital-b", "00" * 32, "TREAT", "pseudonymised", "preparing", 0
    ).view()
    return {**view, "state": state, "detail": detail, "fault": fault}


BURNED_MESSAGE = sentences("the source holds no DICOM instance that can travel", PIXELS_REFUSED)


@pytest.mark.parametrize(
    ("post", "final", "code", "words"),
    [
        # Refused at once, as the real node answers them.
        ((403, {"error": "data residency: hospital-b is in SE"}), None, 5, "data residency"),
        ((400, {"error": "source must be an existing absolute path"}), None, 5, "absolute path"),
        ((400, {"error": "http://x is not a DICOMweb server listed"}), None, 5, "DICOMweb"),
        # Refused by the node after it accepted the request: the study cannot travel.
        (
            (202, {"transfer_id": TRANSFER}),
            _transfer("failed", BURNED_MESSAGE, "caller"),
            5,
            "pixels may show",
        ),
        # Refused by the recipient.
        ((202, {"transfer_id": TRANSFER}), _transfer("refused", "unknown recipient user"), 5, "refused"),
        # Not refusals: a peer or the PACS failed (1), our disk is damaged (3), the token (3).
        ((202, {"transfer_id": TRANSFER}), _transfer("failed", "the PACS stopped", "input"), 1, "PACS"),
        ((202, {"transfer_id": TRANSFER}), _transfer("failed", "vault unreadable", "storage"), 3, "vault"),
        ((401, {"error": "a valid API token is required"}), None, 3, "token"),
        ((500, {"error": "this node's stored data is damaged"}), None, 3, "damaged"),
        ((502, {"error": "the PACS answered HTTP 503"}), None, 1, "PACS"),
    ],
)
async def test_send_exit_codes(
    fake_node: tuple[TestClient, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    post: tuple[int, dict[str, Any]],
    final: dict[str, Any] | None,
    code: int,
    words: str,
) -> None:
    client, answers = fake_node
    monkeypatch.setattr(cli, "_client", lambda args: _api(client))
    answers[("POST", "/transfers")] = post
    if final is not None:
        answers[("GET", f"/transfers/{TRANSFER}")] = (200, final)
    assert await asyncio.to_thread(cli.run_send, _args(**SEND)) == code
    out = capsys.readouterr()
    text = out.out + out.err
    assert words.lower() in text.lower()
    # The state and the reason are two sentences, never "failed the source holds ...".
    assert not re.search(rf"{TRANSFER}:? (failed|refused) \w", text)


async def test_a_burned_in_refusal_reads_as_sentences(
    fake_node: tuple[TestClient, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, answers = fake_node
    monkeypatch.setattr(cli, "_client", lambda args: _api(client))
    answers[("POST", "/transfers")] = (202, {"transfer_id": TRANSFER})
    answers[("GET", f"/transfers/{TRANSFER}")] = (200, _transfer("failed", BURNED_MESSAGE, "caller"))
    answers[("GET", "/transfers")] = (
        200,
        {"transfers": [{**_transfer("failed", BURNED_MESSAGE, "caller"), "direction": "in"}]},
    )
    assert await asyncio.to_thread(cli.run_send, _args(**SEND)) == cli.EXIT_REFUSED
    printed = capsys.readouterr().out
    assert (
        f"Transfer {TRANSFER} failed. The source holds no DICOM instance that can travel. "
        'Refused by burned_in = "refuse": its pixels may show identity.' in printed
    )
    assert await asyncio.to_thread(cli.run_inbox, _args(all=True, json=False)) == cli.EXIT_OK
    assert "failed. The source holds" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 5), (403, 5), (404, 5), (409, 5), (413, 5), (401, 3), (500, 3), (502, 1), (503, 1)],
)
async def test_export_view_and_audit_map_statuses_alike(
    fake_node: tuple[TestClient, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    status: int,
    code: int,
) -> None:
    client, answers = fake_node
    for module in (cli, view_cli):
        monkeypatch.setattr(module, "_client", lambda args: _api(client))
    monkeypatch.setattr(audit_cli, "_client", lambda args: _api(client))
    error = (status, {"error": "no received transfer " + TRANSFER})
    answers[("POST", f"/transfers/{TRANSFER}/export")] = error
    answers[("POST", f"/transfers/{TRANSFER}/views")] = error
    answers[("POST", "/audit/users")] = error
    export = _args(transfer_id=TRANSFER, destination="/import", no_wait=False)
    assert await asyncio.to_thread(cli.run_export, export) == code
    assert await asyncio.to_thread(view_cli.run_view, _args(transfer_id=TRANSFER, save=None)) == code
    assert await asyncio.to_thread(audit_cli._add_user, _args(name="dr.x")) == code
    err = capsys.readouterr().err
    assert f"(HTTP {status}): no received transfer {TRANSFER}" in err


def test_the_refusal_message_is_made_of_sentences() -> None:
    report = ImportReport()
    report.add_failure("a.dcm", PIXELS_REFUSED)
    report.add_failure("b.dcm", PIXELS_REFUSED)
    report.add_failure("c.pdf", "attachment of type application/pdf: no DICOM form")
    with pytest.raises(NodeUsageError) as refused:
        one_study([], report, 10)
    assert str(refused.value) == (
        "The source holds no DICOM instance that can travel. "
        'Refused by burned_in = "refuse": its pixels may show identity. '
        "Attachment of type application/pdf: no DICOM form."
    )
    with pytest.raises(
        NodeUsageError, match=r"^The source holds no DICOM instance that can travel\. It holds no files\.$"
    ):
        one_study(list[LocalFile](), ImportReport(), 10)
    assert sentences("done.", "", "  next part ") == "Done. Next part."


def test_whose_fault_decides_the_exit_code() -> None:
    assert fault_of(ResidencyRefused("x")) == "caller" and fault_of(NodeUsageError("x")) == "caller"
    assert fault_of(StorageDamaged("x")) == "storage" and fault_of(OSError("disk full")) == "node"
    assert fault_of(NodeInputError("x")) == "input"
    assert cli.failure_exit("failed", "caller") == 5 and cli.failure_exit("refused", "") == 5
    assert cli.failure_exit("failed", "storage") == 3 and cli.failure_exit("failed", "input") == 1
    assert [cli.exit_code(s) for s in (400, 401, 403, 404, 500, 502, 503)] == [5, 3, 5, 5, 3, 1, 1]
