"""Two real node processes started under umask 022 (issue: points 1 and 6).

Everything a node keeps (node.toml, node.log, the data directory, the WAL, the LevelDB ledger,
blobs, the vault, transfer states) is 0600 / 0700 all the same; an exported study gets the
operator's ``transfer.export_file_mode``; and over HTTP a path outside the allowed folders and
one that does not exist get the same answer.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.node.devnet.client import api, make_study, running_devnet, wait_until
from mftp.node.devnet.consortium import Member, NodeProcess
from mftp.node.private_files import write_private

pytestmark = pytest.mark.timeout(300)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def export_mode_0600(member: Member) -> None:
    if member.name == "hospital-b":
        text = member.config_path.read_text().replace(
            "[transfer]\n", '[transfer]\nexport_file_mode = "0600"\n'
        )
        write_private(member.config_path, text)


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    old = os.umask(0o022)  # what the nodes' processes inherit, as from a default login shell
    try:
        with running_devnet(tmp_path, validators=2, audit=0, configure=export_mode_0600) as processes:
            yield processes
    finally:
        os.umask(old)


def assert_private(member: Member) -> None:
    directory = member.directory
    assert mode(directory) == 0o700
    for name in ("node.toml", "node.log", "keys/node.key", "keys/api.token"):
        assert mode(directory / name) == 0o600, name
    data = directory / "data"
    assert mode(data) == 0o700
    assert mode(data / "consensus.wal") == 0o600
    assert mode(data / "ledger") == 0o700
    ledger_files = [p for p in (data / "ledger").iterdir() if p.is_file()]
    assert ledger_files and all(mode(p) == 0o600 for p in ledger_files)
    for path in data.rglob("*"):
        if not path.is_symlink():
            assert mode(path) == (0o700 if path.is_dir() else 0o600), path


def same_answer(answers: dict[str, tuple[int, dict[str, str]]]) -> None:
    """Every probe answered with one status and one sentence, its own path taken out."""
    seen = {(status, body["error"].replace(probe, "<path>")) for probe, (status, body) in answers.items()}
    assert len(seen) == 1, seen
    ((status, _),) = seen
    assert status == 400


def test_a_node_under_umask_022_keeps_its_files_private_and_tells_no_paths(
    devnet: list[NodeProcess], tmp_path: Path
) -> None:
    a, b = devnet[0].member, devnet[1].member
    for member in (a, b):
        assert_private(member)

    # The allowed folder of this devnet is tmp_path: probe outside it, and inside.
    (tmp_path / "escape").symlink_to("/etc/passwd")
    send = {"to": "hospital-b", "purpose": "TREAT", "mode": "identified", "user": "dr.a"}
    probes = ["/etc/passwd", "/etc/no-such-file", str(tmp_path / "missing"), str(tmp_path / "escape")]
    same_answer({p: api(a, "POST", "/transfers", {**send, "source": p}) for p in probes})

    make_study(tmp_path / "study")
    (tmp_path / "study" / "planted.dcm").symlink_to("/etc/passwd")  # named as not sent, not read
    status, answer = api(a, "POST", "/transfers", {**send, "source": str(tmp_path / "study")})
    assert status == 202, answer
    transfer_id = answer["transfer_id"]
    wait_until(
        lambda: api(b, "GET", f"/transfers/{transfer_id}")[1].get("state") == "complete", 90, "receipt"
    )
    sent = api(a, "GET", f"/transfers/{transfer_id}")[1]
    assert "planted.dcm" in str(sent.get("detail", "")), sent

    export = {"user": "dr.b", "purpose": "TREAT"}
    outside = ["/etc/cron.d", "/no/such/folder", str(tmp_path.parent / "x")]
    same_answer(
        {p: api(b, "POST", f"/transfers/{transfer_id}/export", {**export, "destination": p}) for p in outside}
    )
    status, answer = api(  # an export is a job: wait for it to end (the same as the e2e tests)
        b,
        "POST",
        f"/transfers/{transfer_id}/export?wait_ms=30000",
        {**export, "destination": str(tmp_path / "incoming")},
    )
    assert status == 200 and answer["state"] == "done", answer
    written = [p for p in (tmp_path / "incoming").rglob("*")]
    assert any(p.suffix == ".dcm" for p in written)
    for path in written:  # hospital-b's transfer.export_file_mode = "0600", whatever the umask
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert mode(tmp_path / "incoming") == 0o700

    for member in (a, b):  # after a send, a receipt and an export: still private
        assert_private(member)
