"""A node whose data directory lies deep (a long path) still prepares and sends studies.

AF_UNIX socket paths hold at most 107 bytes: the preparing pool's forkserver socket once followed
the node's private temporary folder under ``data_dir`` and failed with "AF_UNIX path too long".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mftp.node.devnet.client import api, running_devnet, wait_until
from mftp.node.devnet.studies import make_ct_series

pytestmark = pytest.mark.slow


def test_a_study_is_sent_from_a_node_whose_data_dir_is_deep(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "and-deeper"
    deep.mkdir(parents=True)
    with running_devnet(deep, validators=3, audit=0) as processes:
        a = processes[0].member
        assert len(str(a.directory / "data" / "spill" / "tmp" / "pymp-abcdefgh" / "listener-abcdefgh")) > 108
        make_ct_series(deep / "study", 20)  # enough to go to the preparing pool; in the sandbox
        body = {
            "source": str(deep / "study"),
            "to": "hospital-b",
            "purpose": "TREAT",
            "mode": "identified",
        }
        status, sent = api(a, "POST", "/transfers", body, as_user="dr.ana")
        assert status == 202, sent
        tid = sent["transfer_id"]

        def delivered() -> bool:
            state = api(a, "GET", f"/transfers/{tid}")[1]
            assert state["state"] != "failed", state["detail"]
            return bool(state["state"] == "delivered")

        wait_until(delivered, 90, "delivery")
