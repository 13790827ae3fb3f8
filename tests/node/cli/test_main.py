"""`mftp-node` commands that set a node up: init, genesis, token, --help."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mftp.crypto.keyfile import load_identity
from mftp.ledger.genesis import Genesis
from mftp.node.cli.main import EXIT_CONFIG, build_parser, main
from mftp.node.config import load_config


def test_init_then_genesis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, port in (("St Olav", 7600), ("Haukeland", 7601)):
        folder = tmp_path / name.replace(" ", "_")
        assert (
            main(["init", "--dir", str(folder), "--name", name, "--country", "NO", "--p2p-port", str(port)])
            == 0
        )
        key = folder / "keys" / "node.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE((folder / "keys" / "api.token").stat().st_mode) == 0o600
        config = load_config(folder / "node.toml")
        assert config.get("node", "name") == name
        assert config.get("api", "listen") == "127.0.0.1:7700"
        assert load_identity(key).public.sign_key.hex() in (folder / "node.pub.json").read_text()
    out = tmp_path / "genesis.json"
    code = main(
        [
            "genesis",
            "--consortium",
            "Nordic Imaging",
            "--chain-id",
            "nordic-1",
            "--validator",
            str(tmp_path / "St_Olav" / "node.pub.json"),
            "--validator",
            f"{tmp_path / 'Haukeland' / 'node.pub.json'}:2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    genesis = Genesis.load(out)
    assert sorted(v.power for v in genesis.validators.validators) == [1, 2]
    assert json.loads(out.read_text())["chain_id"] == "nordic-1"
    assert genesis.hash.hex() in capsys.readouterr().out


def test_init_refuses_to_overwrite_and_keeps_the_key(tmp_path: Path) -> None:
    args = ["init", "--dir", str(tmp_path / "n"), "--name", "A", "--country", "SE"]
    assert main(args) == 0
    before = (tmp_path / "n" / "keys" / "node.key").read_bytes()
    assert main(args) == EXIT_CONFIG
    assert main([*args, "--force"]) == 0
    assert (tmp_path / "n" / "keys" / "node.key").read_bytes() == before


def test_genesis_with_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    code = main(
        ["genesis", "--consortium", "x", "--chain-id", "y", "--validator", str(tmp_path / "none.json")]
    )
    assert code == EXIT_CONFIG


def test_every_command_has_help() -> None:
    parser = build_parser()
    names = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"init", "genesis", "token"} <= set(names)
    for name in names:
        result = subprocess.run(
            [sys.executable, "-m", "mftp.node.cli.main", name, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "exit codes" in result.stdout
