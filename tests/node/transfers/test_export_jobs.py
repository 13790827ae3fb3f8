"""Exports are jobs: answered at once, followed to their end, and a repeat does not export twice.

In process: the real :class:`StudyAccess` behind the real API, with the restore, the delivery and
the ledger record replaced by counting fakes (the end-to-end tests run the real ones).  The CLI's
``export`` is run against the same server in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mftp.node.api.server import Api, NodeView, TransferView
from mftp.node.cli import transfers as cli
from mftp.node.clock import FakeClock
from mftp.node.errors import NodeInputError, StorageDamaged
from mftp.node.transfers import access as access_module
from mftp.node.transfers.access import StudyAccess
from mftp.node.transfers.jobs import ExportJobs, JobState
from mftp.node.transfers.sources import Allowed
from mftp.node.transfers.state import IN, TransferState
from mftp.transfer.study import DeliveryReport
from tests.people_kit import PeopleKit

TOKENS: dict[str, str] = {}
"""A personal token of each clinician of the test (filled by the fixture)."""


def auth(user: str = "dr.b") -> dict[str, str]:
    """The Authorization header of ``user``'s token: who acts is who signed in."""
    return {"Authorization": f"Bearer {TOKENS[user]}"}


TRANSFER = "cd" * 16
FILES = 5


@dataclass
class World:
    """What the fakes saw, and how they behave."""

    delivered: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # the delivery waits for it
    fail_with: Exception | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@pytest.fixture
async def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient, World]]:
    world = World()
    (tmp_path / "out").mkdir()
    state = TransferState(TRANSFER, IN, "hospital-a", "00" * 32, "TREAT", "identified", "complete", 0)

    def spawn(key: str, work: Any) -> None:
        world.tasks.append(asyncio.get_running_loop().create_task(work))

    service = SimpleNamespace(
        states=SimpleNamespace(get=lambda tid: state if tid == TRANSFER else None),
        host=SimpleNamespace(clock=FakeClock(), data_dir=tmp_path / "data"),
        allowed=Allowed((), ((tmp_path / "out").resolve(),), ()),
        store=None,
        object_key=None,
        spawn=spawn,
    )

    def restore(
        store: Any, manifest: Any, key: Any, spill: Path, progress: Callable[[int], None] | None = None
    ) -> list[Any]:
        for i in range(1, FILES + 1):
            if progress is not None:
                progress(i)
        return [object()] * FILES

    async def deliver(files: list[Any], destination: str, file_mode: int | None = None) -> DeliveryReport:
        await world.gate.wait()
        if world.fail_with is not None:
            raise world.fail_with
        world.delivered.append(destination)
        report = DeliveryReport()
        for i in range(len(files)):
            report.add_ok(f"{i}.dcm", 1)
        return report

    async def manifest(self: StudyAccess, state: TransferState) -> Any:
        return SimpleNamespace(entries=[object()] * FILES, transfer_id=bytes.fromhex(TRANSFER))

    async def record_access(
        self: StudyAccess, state: Any, manifest: Any, user: str, purpose: str, action: str
    ) -> str:
        world.records.append(f"{user} {purpose} {action}")
        return f"{len(world.records):032x}"

    monkeypatch.setattr(access_module, "restore_files", restore)
    monkeypatch.setattr(access_module, "deliver", deliver)
    monkeypatch.setattr(StudyAccess, "manifest", manifest)
    monkeypatch.setattr(StudyAccess, "record_access", record_access)
    study_access = StudyAccess(cast(Any, service))

    async def export(transfer_id: str, destination: str, purpose: str | None = None, user: str = "") -> Any:
        return await study_access.export(transfer_id, destination, purpose, user)

    transfers = cast(TransferView, SimpleNamespace(access=study_access, export=export))
    kit = PeopleKit(tmp_path)
    for user in ("dr.b", "dr.c"):
        TOKENS[user] = kit.token(user)
    app = Api(cast(NodeView, None), kit.gate, transfers=transfers).app()
    async with TestClient(TestServer(app)) as client:
        yield client, world
    for task in world.tasks:
        task.cancel()
    await asyncio.gather(*world.tasks, return_exceptions=True)


async def _post(
    client: TestClient, body: dict[str, str], query: str = "", user: str = "dr.b"
) -> tuple[int, dict[str, Any]]:
    answer = await client.post(f"/transfers/{TRANSFER}/export{query}", json=body, headers=auth(user))
    return answer.status, await answer.json()


async def _job(client: TestClient, job_id: str) -> dict[str, Any]:
    answer = await client.get(f"/transfers/{TRANSFER}/export/{job_id}", headers=auth())
    assert answer.status == 200
    return cast(dict[str, Any], await answer.json())


async def test_export_answers_at_once_and_a_repeat_is_the_same_job(
    node: tuple[TestClient, World], tmp_path: Path
) -> None:
    client, world = node
    body = {"destination": str(tmp_path / "out")}
    status, first = await _post(client, body)
    assert status == 202 and first["state"] in ("queued", "running") and first["record"] == ""
    # Retried while it runs (the client's patience ran out): the same job, nothing new started.
    for _ in range(3):
        status, again = await _post(client, body)
        assert status == 202 and again["job_id"] == first["job_id"]
    running = await _job(client, first["job_id"])
    assert running["state"] == "running" and running["files"] == FILES and running["files_done"] == FILES
    assert running["phase"] == "delivering"
    world.gate.set()
    status, done = await _post(client, body, "?wait_ms=5000")
    assert status == 200 and done["job_id"] == first["job_id"] and done["state"] == "done"
    assert done["record"] == f"{1:032x}" and done["files"] == FILES
    # Retried after it completed: the same job again, still one export and one record.
    status, repeat = await _post(client, body)
    assert status == 200 and repeat == done
    assert len(world.delivered) == 1 and len(world.records) == 1
    # Another request (another purpose, another user) is another access: exported and recorded.
    status, other = await _post(client, {**body, "purpose": "HRESCH"}, "?wait_ms=5000")
    assert status == 200 and other["job_id"] != first["job_id"]
    status, third = await _post(client, body, "?wait_ms=5000", user="dr.c")
    assert status == 200 and third["job_id"] not in (first["job_id"], other["job_id"])
    assert len(world.delivered) == 3 and len(world.records) == 3
    assert "dr.b" not in str(first) and "user:" not in str(third)  # the job names no user


async def test_a_failed_job_reports_its_reason_and_a_retry_runs_again(
    node: tuple[TestClient, World], tmp_path: Path
) -> None:
    client, world = node
    body = {"destination": str(tmp_path / "out")}
    world.fail_with = NodeInputError("the PACS refused 5 instances")
    world.gate.set()
    status, failed = await _post(client, body, "?wait_ms=5000")
    assert status == 502 and failed["state"] == "failed" and failed["fault"] == "input"
    assert failed["error"] == "the PACS refused 5 instances" and failed["record"] == ""
    assert (await _job(client, failed["job_id"]))["error"] == "the PACS refused 5 instances"
    assert world.records == []  # no access recorded for an export that did not happen
    world.fail_with = StorageDamaged("a blob does not read back")
    status, damaged = await _post(client, body, "?wait_ms=5000")
    assert status == 500 and damaged["job_id"] != failed["job_id"] and damaged["fault"] == "storage"
    world.fail_with = None
    status, done = await _post(client, body, "?wait_ms=5000")
    assert status == 200 and done["state"] == "done" and len(world.records) == 1


async def test_requests_the_node_refuses_are_400_at_once_and_start_no_job(
    node: tuple[TestClient, World], tmp_path: Path
) -> None:
    client, world = node
    cases = [
        (TRANSFER, {"destination": "/etc"}, "export_dirs"),
        (TRANSFER, {"destination": str(tmp_path / "out"), "purpose": "NOPE"}, "purpose"),
        ("ab" * 16, {"destination": str(tmp_path / "out")}, "no received transfer"),
    ]
    for transfer, body, message in cases:
        answer = await client.post(f"/transfers/{transfer}/export", json=body, headers=auth())
        assert answer.status == 400 and message in (await answer.json())["error"]
    assert world.tasks == []
    missing = await client.get(f"/transfers/{TRANSFER}/export/{'00' * 16}", headers=auth())
    assert missing.status == 404


def _args(tmp_path: Path, **extra: Any) -> argparse.Namespace:
    values = {
        "transfer_id": TRANSFER,
        "destination": str(tmp_path / "out"),
        "purpose": None,
        "no_wait": False,
        "timeout": 30.0,
        "config": "unused",
        "token_file": None,
    }
    return argparse.Namespace(**{**values, **extra})


def _client_for(test: TestClient) -> cli.ApiClient:
    client = cli.ApiClient.__new__(cli.ApiClient)
    client.base, client.token, client.timeout_s = str(test.make_url("")).rstrip("/"), TOKENS["dr.b"], 10.0
    return client


async def test_the_cli_follows_a_job_to_its_end(
    node: tuple[TestClient, World],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, world = node
    monkeypatch.setattr(cli, "_client", lambda args: _client_for(client))
    monkeypatch.setattr(cli, "POLL_S", 0.05)
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, world.gate.set)  # the job ends while the CLI follows it
    code = await asyncio.to_thread(cli.run_export, _args(tmp_path))
    out = capsys.readouterr()
    assert code == cli.EXIT_OK, out.err
    assert f"exported {FILES} files to {tmp_path / 'out'}; accessed record {1:032x}" in out.out
    # Run again: the same job, no second export or record.
    assert await asyncio.to_thread(cli.run_export, _args(tmp_path)) == cli.EXIT_OK
    assert len(world.delivered) == 1 and len(world.records) == 1


async def test_the_cli_reports_a_failed_job_as_sentences_with_its_exit_code(
    node: tuple[TestClient, World],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, world = node
    monkeypatch.setattr(cli, "_client", lambda args: _client_for(client))
    monkeypatch.setattr(cli, "POLL_S", 0.05)
    world.fail_with = NodeInputError("the PACS refused 5 instances")
    world.gate.set()
    assert await asyncio.to_thread(cli.run_export, _args(tmp_path)) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "failed. The PACS refused 5 instances." in err
    # Refused by the node at once: exit 5, one message of whole sentences.
    assert await asyncio.to_thread(cli.run_export, _args(tmp_path, destination="/etc")) == cli.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "export: the node refused the request (HTTP 400): /etc is not a folder path inside" in err


def test_the_job_table_is_bounded_and_forgets_old_completed_jobs() -> None:
    clock = FakeClock()
    jobs = ExportJobs(clock=clock, limit=3, repeat_window_s=60)
    first = jobs.add("k1", TRANSFER)
    assert jobs.find("k1") is first  # queued: a repeat joins it
    first.move(JobState.RUNNING)
    jobs.finish(first)
    assert jobs.find("k1") is first
    clock.advance(60_000)
    assert jobs.find("k1") is None  # past the window: a new access
    live = [jobs.add(f"live{i}", TRANSFER) for i in range(2)]
    jobs.add("k4", TRANSFER)  # full: the finished one makes room
    assert jobs.get(TRANSFER, first.job_id) is None and len(jobs) == 3
    with pytest.raises(Exception, match="exports are in progress"):
        jobs.add("k5", TRANSFER)  # every kept job is live: refused, not unbounded
    failed = live[0]
    jobs.finish(failed, NodeInputError("boom"))
    assert failed.state is JobState.FAILED and jobs.find("live0") is None  # a failure is not reused
    assert jobs.get("ab" * 16, live[1].job_id) is None  # a job id opens its own transfer only
