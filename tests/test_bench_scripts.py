"""Every ``scripts/bench_*.py`` still runs and ends with one JSON object of its named figures.

The benchmarks are run by hand, not by CI, so nothing else notices when one of them rots.
Each runs here at a tiny size: no figure is checked, only that the script works and keeps
its contract (the brief: the last line is one JSON object).  ``bench_p2p.py`` and
``bench_consensus.py --sim`` have their own tests (``tests/node/test_p2p.py``,
``tests/consensus/test_sim.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parent.parent


def _last_json(*args: str, timeout_s: float = 240) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(figures, dict)
    return figures


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["scripts/bench_audit.py", "--records", "2000", "--matches", "2"], {"scan_1m_s", "matches"}),
        (
            ["scripts/bench_ledger.py", "--records", "500", "--proofs", "20"],
            {"append_records_per_s", "verify_records_per_s", "proofs_per_s"},
        ),
        (["scripts/bench_transfer.py", "--mb", "2"], {"prepare_s", "loopback_mb_per_s"}),
        (["scripts/bench_people.py", "--quick"], {"hash_ms", "dummy_ms", "rfc9106_ms", "signin_unknown_ms"}),
    ],
    ids=["audit", "ledger", "transfer", "people"],
)
def test_bench_script_prints_its_figures(args: list[str], named: set[str]) -> None:
    assert named <= set(_last_json(*args))


def test_bench_codec_prints_its_figures(tmp_path: Path) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm"):
        source = get_testdata_file(name)
        assert source is not None
        (tmp_path / name).write_bytes(Path(source).read_bytes())
    figures = _last_json("scripts/bench_codec.py", str(tmp_path), "--quick", "--workers", "1")
    assert figures["byte_exact"] is True and {"ratio_total", "compress_mb_per_s"} <= set(figures)


def test_bench_consensus_real_processes_prints_its_figures() -> None:
    """Four validator processes and an audit node for one second (about 30 s in all)."""
    figures = _last_json("scripts/bench_consensus.py", "--seconds", "1")
    named = {"committed_records_per_s", "latency_p50_ms", "latency_p99_ms", "audit_lag_blocks"}
    assert named <= set(figures) and figures["records_committed"] > 0


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bench_viewer_prints_its_figures() -> None:
    """Devnet, Orthanc and chromium at the smallest size (about a minute)."""
    import shutil

    from mftp.node.viewing.ohif import default_dist

    installed = (
        shutil.which("chromium") and shutil.which("Orthanc") and (default_dist() / "index.html").is_file()
    )
    if not installed:
        pytest.fail("needs chromium, orthanc and the OHIF viewer: run `make system-deps viewer`")
    done = subprocess.run(
        [sys.executable, "scripts/bench_viewer.py", "--contexts", "1", "--slices", "10", "--mb", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=360, check=False,
    )  # fmt: skip
    # The last line is the JSON even when the send over the link broke (exit status 1 then).
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == (1 if "while_transferring_error" in figures else 0), done.stderr[-2000:]
    cold = figures["first_image_ms"]
    assert set(cold) == {"node_ct", "node_mr", "orthanc_ct", "orthanc_mr"}
    assert all(ms > 0 for ms in cold.values()) and figures["warm_first_image_ms"] > 0
    assert figures["first_image_ratio"] == max(figures["first_image_ratio_by_study"].values())
    assert "while_transferring_error" not in figures, figures["while_transferring_error"]
    # The study is listed before its first image shows, and both come from a real send.
    assert 0 < figures["study_visible_s"] <= figures["first_image_while_transferring_s"]
    assert figures["transfer_s"] > 0 and figures["link_mb_crossed"] > 0
    assert set(figures["goals_met"]) == {
        "first_image_ratio", "warm_first_image_ms", "first_image_while_transferring_s"
    }  # fmt: skip
    assert all(isinstance(met, bool) for met in figures["goals_met"].values())
