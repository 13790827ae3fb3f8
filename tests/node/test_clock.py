"""One clock: no module of node/ reads the time but node/clock.py, and the fake clock moves as told."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mftp.node.clock import SYSTEM_CLOCK, FakeClock

NODE = Path(__file__).resolve().parents[2] / "node"
# Reading a clock, called or passed on as a function: both bypass the node's one clock.
CLOCK_READS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}


def _clock_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Attribute):
            owner = node.value
            owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if (owner_name, node.attr) in CLOCK_READS:
                found.append(f"{path.relative_to(NODE.parent)}:{node.lineno} {owner_name}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            names = {alias.name for alias in node.names}
            if node.module == "time" and names & {"time", "time_ns", "monotonic", "monotonic_ns"}:
                found.append(f"{path.relative_to(NODE.parent)}:{node.lineno} from time import ...")
    return found


def test_only_the_clock_module_reads_the_time() -> None:
    offenders = [
        hit for path in sorted(NODE.rglob("*.py")) if path.name != "clock.py" for hit in _clock_reads(path)
    ]
    assert not offenders, "read the time through mftp.node.clock instead:\n" + "\n".join(offenders)


def test_the_checker_finds_a_clock_read() -> None:
    reads = _clock_reads(NODE / "clock.py")  # the one module that does read the time
    assert any("time.monotonic" in hit for hit in reads) and any("time.time_ns" in hit for hit in reads)


def test_the_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(now_ms=1_000, monotonic_s=5.0)
    assert (clock.now_ms(), clock.monotonic_s()) == (1_000, 5.0)
    clock.advance(1_500)
    assert (clock.now_ms(), clock.monotonic_s()) == (2_500, 6.5)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_the_system_clock_reads_the_machine() -> None:
    first = SYSTEM_CLOCK.monotonic_s()
    assert SYSTEM_CLOCK.monotonic_s() >= first
    assert SYSTEM_CLOCK.now_ms() > 1_700_000_000_000
