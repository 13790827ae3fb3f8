"""The node's files are private whatever the umask (issue: point 6).

Each test runs what creates the files under umask 022 (the usual default, which makes new
files world-readable) and restores the umask after.  The whole node under umask 022 (WAL,
ledger, node.log, data directory) is checked by ``tests/node/devnet/test_private_and_paths.py``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.consensus.wal import FileWal
from mftp.node.cli.main import main
from mftp.node.config import parse_config
from mftp.node.devnet.client import wait_until
from mftp.node.errors import ConfigError
from mftp.node.private_files import (
    check_file_mode,
    dir_mode_for,
    narrow_file,
    parse_file_mode,
    private_dir,
    tighten,
    write_private,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def wide_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_the_wal_is_private_and_an_old_one_is_narrowed(tmp_path: Path, wide_umask: None) -> None:
    with FileWal(tmp_path / "consensus.wal") as wal:
        wal.append(b"vote", sync=True)
    assert mode(tmp_path / "consensus.wal") == 0o600
    os.chmod(tmp_path / "consensus.wal", 0o644)  # as an older version left it
    with FileWal(tmp_path / "consensus.wal") as wal:
        assert wal.entries == [b"vote"]
    assert mode(tmp_path / "consensus.wal") == 0o600


def test_init_writes_private_files_under_umask_022(tmp_path: Path, wide_umask: None) -> None:
    node = tmp_path / "st-olav"
    assert main(["init", "--dir", str(node), "--name", "St Olav", "--country", "NO"]) == 0
    assert os.umask(0o022) == 0o077  # init set its own umask (the fixture restores ours)
    assert mode(node) == 0o700
    assert mode(node / "keys") == 0o700
    for private in ("node.toml", "keys/node.key", "keys/api.token"):
        assert mode(node / private) == 0o600, private
    # --force over an existing, readable node.toml narrows it too.
    os.chmod(node / "node.toml", 0o644)
    assert main(["init", "--dir", str(node), "--name", "St Olav", "--country", "NO", "--force"]) == 0
    assert mode(node / "node.toml") == 0o600


def test_private_dir_makes_every_missing_level_0700_and_refuses_a_link(
    tmp_path: Path, wide_umask: None
) -> None:
    (tmp_path / "operator").mkdir(mode=0o755)
    made = private_dir(tmp_path / "operator" / "data" / "spill" / "x")
    for level in ("data", "data/spill", "data/spill/x"):
        assert mode(tmp_path / "operator" / level) == 0o700, level
    assert mode(tmp_path / "operator") == 0o755  # an existing parent is the operator's
    os.chmod(made, 0o755)
    private_dir(made)
    assert mode(made) == 0o700
    (tmp_path / "elsewhere").mkdir(mode=0o755)
    (tmp_path / "operator" / "data" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        private_dir(tmp_path / "operator" / "data" / "link")
    assert mode(tmp_path / "elsewhere") == 0o755


def test_write_private_narrows_and_refuses_a_link(tmp_path: Path, wide_umask: None) -> None:
    target = tmp_path / "node.toml"
    target.write_text("old")
    os.chmod(target, 0o644)
    write_private(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "planted").symlink_to(victim)
    with pytest.raises(OSError):
        write_private(tmp_path / "planted", "overwrite")
    assert victim.read_text() == "keep"


def test_tighten_narrows_a_data_dir_and_leaves_links_alone(tmp_path: Path, wide_umask: None) -> None:
    data = tmp_path / "data"
    (data / "ledger").mkdir(parents=True)
    (data / "transfers").mkdir()
    for name in ("consensus.wal", "ledger/000005.ldb", "ledger/CURRENT", "transfers/t.json"):
        (data / name).write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    (data / "link").symlink_to(outside)
    os.mkfifo(data / "fifo")
    changed = tighten(data)
    assert changed == 4 + 3  # four files, three folders (data, ledger, transfers)
    for path in data.rglob("*"):
        if path.is_symlink() or stat.S_ISFIFO(path.lstat().st_mode):
            continue
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert mode(data) == 0o700
    assert mode(outside) == 0o644  # the link's target was not changed
    assert tighten(data) == 0  # and a second pass has nothing to do
    assert tighten(tmp_path / "missing") == 0
    log = tmp_path / "node.log"
    log.write_text("x")
    assert narrow_file(log) and mode(log) == 0o600 and not narrow_file(log)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0640", None),
        ("640", None),
        ("0600", None),
        ("0644", None),
        ("0660", None),
        ("0400", "owner"),
        ("0200", "owner"),
        ("0750", "executable"),
        ("0646", "everyone write"),
        ("4640", "set-user-id"),
        ("0x640", "octal"),
        ("0o640", "octal"),
        ("0980", "octal"),
        ("", "octal"),
        ("06400", "octal"),
        (640, "octal"),
    ],
)
def test_export_file_modes_are_checked(text: object, problem: str | None) -> None:
    found = check_file_mode(text)
    if problem is None:
        assert found is None and parse_file_mode(str(text)) == int(str(text), 8)
    else:
        assert found is not None and problem in found.replace("let everyone", "everyone"), found
        if isinstance(text, str):
            with pytest.raises(ValueError):
                parse_file_mode(text)


def test_export_file_mode_is_a_validated_config_key(tmp_path: Path) -> None:
    node = {"name": "a", "role": "validator", "country": "NO"}
    path = tmp_path / "node.toml"
    assert parse_config({"node": node}, path).get("transfer", "export_file_mode") == "0640"
    config = parse_config({"node": node, "transfer": {"export_file_mode": "0600"}}, path)
    assert config.get("transfer", "export_file_mode") == "0600"
    with pytest.raises(ConfigError, match=r"transfer\.export_file_mode"):
        parse_config({"node": node, "transfer": {"export_file_mode": "0777"}}, path)
    assert dir_mode_for(0o640) == 0o750 and dir_mode_for(0o600) == 0o700 and dir_mode_for(0o644) == 0o755


def test_run_narrows_what_an_older_version_left_readable(tmp_path: Path, wide_umask: None) -> None:
    """``mftp-node run`` closes the data directory at once and narrows its contents beside the node."""
    from mftp.node.cli.main import _make_private

    node = tmp_path / "node"
    (node / "data" / "ledger").mkdir(parents=True)
    for name in ("node.toml", "node.log", "data/consensus.wal", "data/ledger/CURRENT"):
        (node / name).write_text("x")
    assert mode(node / "data") == 0o755 and mode(node / "node.toml") == 0o644
    _make_private(node / "node.toml", node / "data")
    assert mode(node / "data") == 0o700  # at once: nobody else can reach anything below it
    assert mode(node / "node.toml") == 0o600 and mode(node / "node.log") == 0o600
    wait_until(lambda: mode(node / "data" / "ledger" / "CURRENT") == 0o600, 10, "the narrowing pass")
    assert mode(node / "data" / "ledger") == 0o700 and mode(node / "data" / "consensus.wal") == 0o600
