"""Dependencies point one way: crypto <- ledger <- consensus, and transfer <- node.

Each package may import only the packages listed for it here; nothing imports
``node``, the shell that wires the pure cores to the network, disk and clock.
Inside ``node`` each room (subpackage) may import only the rooms listed for it,
and no two modules of the project import each other, directly or round a cycle.
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
    "transfer": {"crypto", "transfer"},
    "node": {"crypto", "ledger", "consensus", "transfer", "node"},
}

# The pure cores may not reach for the world: no sockets, event loops or clocks.
FORBIDDEN_IN_CORE = {"asyncio", "socket", "time", "aiohttp", "trio", "libp2p", "plyvel"}
# Every consensus module but the WAL's file back end (wal.py) is pure, and so is all of transfer/.
PURE_CORE_MODULES = sorted(
    [str(p.relative_to(ROOT)) for p in (ROOT / "consensus").rglob("*.py") if p.name != "wal.py"]
    + [str(p.relative_to(ROOT)) for p in (ROOT / "transfer").rglob("*.py")]
)

# The rooms of node/ (docs/CONVENTIONS.md): each may import the foundation, itself and these.
FOUNDATION = {
    "config",
    "errors",
    "clock",
    "lifecycle",
    "logs",
    "metrics",
    "private_files",
    "ratelimit",
    "urls",
    "api_client",
}
ANY_ROOM = {"*"}
ROOM_IMPORTS: dict[str, set[str]] = {
    "foundation": set(),
    "p2p": set(),
    "pacs": set(),
    "dataplane": set(),
    "api": {"people"},
    "devnet": set(),
    "people": set(),
    "chain": {"p2p"},
    "audit": {"api", "people"},
    "transfers": {"dataplane", "pacs", "audit", "api", "people"},  # api, people: console routes
    "shares": {"api", "people", "audit", "transfers"},
    "membership": {"api", "people"},
    "console": {"api", "people"},
    "viewing": {"api", "people", "transfers"},
    "process": ANY_ROOM,
    "cli": ANY_ROOM,
}
PACKAGES = ("crypto", "ledger", "consensus", "transfer", "node")


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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "mftp." + ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module ``name`` imports, wherever the import stands (functions and
    ``TYPE_CHECKING`` blocks included)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # ``from package import module`` imports the module
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in known else module)
    return {m for m in found if m in known and m != name}


def _import_graph() -> dict[str, set[str]]:
    modules = _all_modules()
    known = set(modules)
    return {name: _imports_of(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_any_two_modules() -> None:
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["mftp", "node"] or len(parts) < 3:
        return None
    return "foundation" if parts[2] in FOUNDATION else parts[2]


def _room_offences(graph: dict[str, set[str]]) -> list[str]:
    offenders = []
    for module, imports in sorted(graph.items()):
        room = _room(module)
        if room is None:
            continue
        allowed = ROOM_IMPORTS.get(room)
        assert allowed is not None, f"{module}: room {room!r} has no rule (add it to ROOM_IMPORTS)"
        if allowed == ANY_ROOM:
            continue
        for target in sorted(imports):
            other = _room(target)
            if other is None or other == room or other == "foundation" or other in allowed:
                continue
            offenders.append(f"{module} ({room}) imports {target} ({other})")
    return offenders


def test_rooms_of_node_import_only_what_their_rule_allows() -> None:
    offenders = _room_offences(_import_graph())
    assert not offenders, "imports across the rooms of node/:\n" + "\n".join(offenders)


def test_checker_catches_a_cycle_and_a_forbidden_room_edge() -> None:
    """The test of the test: a two-module cycle and a leaf importing a room above it are found."""
    graph = {"mftp.node.p2p.a": {"mftp.node.transfers.b"}, "mftp.node.transfers.b": {"mftp.node.p2p.a"}}
    assert _cycles(graph) == [["mftp.node.p2p.a", "mftp.node.transfers.b"]]
    assert _room_offences(graph) == [
        "mftp.node.p2p.a (p2p) imports mftp.node.transfers.b (transfers)",
        "mftp.node.transfers.b (transfers) imports mftp.node.p2p.a (p2p)",
    ]
    assert _room_offences({"mftp.node.chain.a": {"mftp.node.p2p.b"}}) == []  # chain may use p2p


def test_checker_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mftp.node.transfers import service\n"
        "def f():\n    from mftp.node.audit.service import AuditService\n",
        encoding="utf-8",
    )
    known = {"mftp.node.transfers.service", "mftp.node.audit.service", "mftp.node.transfers"}
    assert _imports_of("mftp.node.x", source, known) == {
        "mftp.node.transfers.service",
        "mftp.node.audit.service",
    }
