"""Resend and cancel against real node processes: a delivered study sent again reaches the same
recipient as a new transfer; a delivered one cannot be cancelled; once its folder is gone a resend
is refused with a 400 saying so; the kept source is not in the state file in clear."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mftp.node.devnet.client import api, make_study, running_devnet, wait_until
from mftp.node.devnet.consortium import Member, NodeProcess

pytestmark = [pytest.mark.slow]


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running_devnet(tmp_path, validators=2, audit=0) as processes:
        yield processes


def _transfer(member: Member, transfer_id: str) -> dict[str, Any]:
    status, found = api(member, "GET", f"/transfers/{transfer_id}", as_user="dr.hansen")
    assert status == 200, found
    return dict(found)


def _delivered(member: Member, transfer_id: str) -> dict[str, Any]:
    wait_until(
        lambda: _transfer(member, transfer_id)["state"] in ("delivered", "failed", "refused"), 120, "delivery"
    )
    found = _transfer(member, transfer_id)
    assert found["state"] == "delivered", found
    return found


@pytest.mark.timeout(300)
def test_resend_cancel_and_a_gone_source(devnet: list[NodeProcess], tmp_path: Path) -> None:
    a = devnet[0].member
    study = tmp_path / "Nordmann^Kari"  # a folder name that names a patient
    make_study(study)
    body = {"source": str(study), "to": "hospital-b", "purpose": "TREAT", "mode": "pseudonymised"}
    status, started = api(a, "POST", "/transfers", body, as_user="dr.hansen")
    assert status == 202, started
    first = _delivered(a, started["transfer_id"])
    state_text = (a.directory / "data" / "transfers" / f"{first['transfer_id']}.json").read_text()
    assert "Nordmann" not in state_text and "source_sealed" in state_text
    assert "source_sealed" not in first

    status, refused = api(a, "POST", f"/transfers/{first['transfer_id']}/cancel", as_user="dr.hansen")
    assert status == 400 and "not yet delivered" in refused["error"]

    status, again = api(a, "POST", f"/transfers/{first['transfer_id']}/resend", as_user="dr.hansen")
    assert status == 202 and again["resent_from"] == first["transfer_id"], again
    second = _delivered(a, again["transfer_id"])
    assert second["transfer_id"] != first["transfer_id"]
    assert (second["peer"], second["purpose"], second["mode"]) == ("hospital-b", "TREAT", "pseudonymised")
    assert second["offer_record"] != first["offer_record"]  # a new offer on the ledger

    shutil.rmtree(study)
    status, gone = api(a, "POST", f"/transfers/{second['transfer_id']}/resend", as_user="dr.hansen")
    assert status == 400 and "gone" in gone["error"], gone
    status, _ = api(a, "GET", "/transfers", as_user="dr.hansen")
    assert status == 200
