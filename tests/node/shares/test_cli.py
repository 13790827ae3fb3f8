"""``mftp-node share create|list|revoke`` against the share routes (in process, the CLI in a thread)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mftp.node.cli import main as cli_main
from mftp.node.cli import share as share_cli
from mftp.node.cli.transfers import ApiClient
from mftp.node.people.sessions import Principal
from tests.share_world import World, clinician, share_app, study_files

A = "aa" * 16


async def test_create_list_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(tmp_path)
    world.studies.add(A, study_files(tmp_path / "a"))
    who: dict[str, Principal | None] = {"who": clinician()}
    async with TestClient(TestServer(share_app(world, who))) as test:
        client = ApiClient.__new__(ApiClient)
        client.base, client.token, client.timeout_s = str(test.make_url("")).rstrip("/"), "unused", 10.0
        monkeypatch.setattr(share_cli, "_client", lambda args: client)

        async def run(*argv: str) -> tuple[int, str, str]:
            code = await asyncio.to_thread(cli_main.main, ["share", *argv, "--config", "unused"])
            out = capsys.readouterr()
            return code, out.out, out.err

        qr = tmp_path / "link.svg"
        code, out, _ = await run("create", A, "--until", "2026-01-10", "--download", "--qr", str(qr))
        assert code == 0 and "/share/" in out and "view and download, identified" in out
        assert qr.read_text().startswith("<svg") and stat.S_IMODE(qr.stat().st_mode) == 0o600
        share_id = out.split()[1].rstrip(":")
        code, out, _ = await run("list")
        assert code == 0 and share_id in out and "active" in out and "/share/" not in out
        code, out, _ = await run("revoke", share_id)
        assert code == 0 and "revoked at 2026-01-01" in out
        code, _, err = await run("revoke", share_id)
        assert code == 5 and "revoked already" in err
        code, _, err = await run("create", "bb" * 16, "--until", "2026-01-10")
        assert code == 5 and "no received transfer" in err
        code, _, err = await run("create", A, "--until", "2026-01-10", "--qr", str(qr))
        assert code == 3 and "exists already" in err  # checked before anything is shared
        assert len(world.service.shares()) == 1
