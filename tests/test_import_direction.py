"""Dependencies point one way: crypto <- ledger <- consensus, and transfer <- node.

Each package may import only the packages listed for it here; nothing imports
``node``, the shell that wires the pure cores to the network, disk and clock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ALLOWED: dict[str, set[str]] = {
    "crypto": {"crypto"},
    "ledger": {"crypto", "ledger"},
    "consensus": {"crypto", "ledger", "consensus"},
    "transfer": {"crypto", "ledger", "transfer"},
    "node": {"crypto", "ledger", "consensus", "transfer", "node"},
}

# The pure cores may not reach for the world: no sockets, event loops or clocks.
FORBIDDEN_IN_CORE = {"asyncio", "socket", "time", "aiohttp", "trio", "libp2p", "plyvel"}
# Every consensus module but the WAL's file back end (wal.py) is pure.
PURE_CORE_MODULES = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "consensus").rglob("*.py") if p.name != "wal.py"
)


def _imported_mftp_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mftp" and len(parts) > 1:
                found.add(parts[1])
    return found


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_point_one_way(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_mftp_packages(path) - ALLOWED[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports mftp.{', mftp.'.join(sorted(bad))}")
    assert not offenders, "imports against the dependency direction:\n" + "\n".join(offenders)


def test_pure_cores_do_no_io() -> None:
    assert len(PURE_CORE_MODULES) >= 10
    offenders = []
    for name in PURE_CORE_MODULES:
        bad = _top_level_imports(ROOT / name) & FORBIDDEN_IN_CORE
        if bad:
            offenders.append(f"{name} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The test of the test: an upward import is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from mftp.node import cli\nimport mftp.consensus.core\n", encoding="utf-8")
    assert _imported_mftp_packages(bad) == {"node", "consensus"}
