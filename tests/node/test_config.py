"""The configuration loader and its documentation, network.example.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from mftp.node.config import PEER_SPEC, SPEC, load_config
from mftp.node.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "network.example.toml"


def test_example_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE)
    assert config.role == "validator"
    assert config.get("api", "listen").startswith("127.0.0.1:")
    assert config.peers[0].name == "haukeland"
    raw = tomllib.loads(EXAMPLE.read_text())
    for section, keys in SPEC.items():
        for key in keys:
            assert key in raw[section], f"network.example.toml does not document {section}.{key}"
    for key in PEER_SPEC:
        assert key in raw["p2p"]["peers"][0], f"network.example.toml does not document p2p.peers.{key}"


def test_every_documented_key_has_a_comment() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line) and not lines[index - 1].startswith("#"):
            # keys grouped under one comment (the timeout pairs) are fine
            assert re.match(r"^[a-z_]+ = ", lines[index - 1]), f"undocumented key on line {index + 1}: {line}"


def test_every_error_is_reported_by_key_path(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        """
[node]
role = "boss"
country = "Norway"
colour = "blue"
[api]
listen = "0.0.0.0"
token_sha256 = ["abc"]
[consensus]
timeout_propose_ms = -5
max_block_records = "many"
[[p2p.peers]]
name = "x"
sign_key = "zz"
[bogus]
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(info.value.problems)
    for expected in [
        "node.name: required",
        "node.role: must be one of validator, audit",
        "node.country: must be an ISO 3166-1 alpha-2 code",
        "node.colour: unknown key",
        "api.listen: must be HOST:PORT",
        "api.token_sha256: each must be the SHA-256",
        "consensus.timeout_propose_ms: must be between",
        "consensus.max_block_records: expected an integer",
        "p2p.peers[0].sign_key: must be 64 hex digits",
        "bogus: unknown section",
    ]:
        assert expected in text
    assert len(info.value.problems) == 10


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "node.toml"
    path.parent.mkdir()
    path.write_text('[node]\nname = "a"\ncountry = "SE"\n', encoding="utf-8")
    config = load_config(path)
    assert config.resolve("node", "data_dir") == (tmp_path / "sub" / "data").resolve()
    assert config.get("consensus", "timeout_commit_ms") == 100


def test_dicomweb_urls_are_checked_as_the_allow_list_compares_them(tmp_path: Path) -> None:
    """An entry the allow-list could never match (dot segments, credentials) is named at load."""
    for bad in ("http://pacs/dicom-web/../tools", "http://user@pacs/dicom-web", "ftp://pacs/x"):
        path = tmp_path / "node.toml"
        path.write_text(f'[node]\nname = "a"\ncountry = "NO"\n[transfer]\ndicomweb_urls = ["{bad}"]\n')
        with pytest.raises(ConfigError, match="dicomweb_urls"):
            load_config(path)
