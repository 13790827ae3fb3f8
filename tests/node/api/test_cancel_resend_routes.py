"""POST /transfers/{id}/cancel and /resend through the gate: who may, the step-up a resend in
identified mode needs (like a send), 404 for an unknown transfer, 400 for a bad id or any body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mftp.ledger.ledger import Ledger
from mftp.ledger.sample import identities, sample_genesis
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.node.api.people_routes import PeopleApi
from mftp.node.api.server import Api
from mftp.node.clock import FakeClock
from mftp.node.errors import NodeUsageError
from mftp.node.people.roles import Role
from tests.people_kit import PeopleKit

from .test_server import FakeNode, FakeTransfers

SENT_ID = "cd" * 16
IDENTIFIED_ID = "ef" * 16
MINUTE_MS = 60_000


class Transfers(FakeTransfers):
    """Two sent transfers besides the fake's received one; records cancels and resends."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: list[str] = []
        self.resent: list[tuple[str, str]] = []

    def get(self, transfer_id: str) -> dict[str, Any] | None:
        if transfer_id in (SENT_ID, IDENTIFIED_ID):
            mode = "identified" if transfer_id == IDENTIFIED_ID else "pseudonymised"
            return {
                "transfer_id": transfer_id,
                "direction": "out",
                "peer": "b",
                "state": "failed",
                "mode": mode,
            }
        if len(transfer_id) != 32 or not all(c in "0123456789abcdef" for c in transfer_id):
            raise NodeUsageError("a transfer id is 32 lowercase hex digits")
        return super().get(transfer_id)

    def cancel(self, transfer_id: str) -> dict[str, Any]:
        self.cancelled.append(transfer_id)
        return {**(self.get(transfer_id) or {}), "state": "cancelled"}

    async def resend(self, transfer_id: str, user: str) -> str:
        self.resent.append((transfer_id, user))
        return "01" * 16


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[TestClient, PeopleKit, Transfers]]:
    kit = PeopleKit(tmp_path, FakeClock(1_800_000_000_000))
    ledger = Ledger(LevelDBStore(tmp_path / "ledger"), sample_genesis(identities(4)))
    transfers = Transfers()
    people = PeopleApi(kit.signin, kit.admin, kit.gate)
    api = Api(FakeNode(ledger), kit.gate, transfers=transfers, providers=(people,))
    async with TestClient(TestServer(api.app())) as client:
        yield client, kit, transfers
    ledger.close()


async def test_cancel_and_resend_as_a_clinician(node: tuple[TestClient, PeopleKit, Transfers]) -> None:
    client, kit, transfers = node
    headers = kit.bearer("dr.ana")
    cancelled = await client.post(f"/transfers/{SENT_ID}/cancel", headers=headers)
    assert cancelled.status == 200 and (await cancelled.json())["state"] == "cancelled"
    resent = await client.post(f"/transfers/{SENT_ID}/resend", headers=headers)
    assert resent.status == 202
    assert await resent.json() == {"transfer_id": "01" * 16, "resent_from": SENT_ID}
    assert transfers.resent == [(SENT_ID, "user:dr.ana")]  # the caller, never a name from a body


async def test_refusals(node: tuple[TestClient, PeopleKit, Transfers]) -> None:
    client, kit, transfers = node
    headers = kit.bearer("dr.ana")
    for action in ("cancel", "resend"):
        unknown = await client.post(f"/transfers/{'00' * 16}/{action}", headers=headers)
        assert unknown.status == 404
        for bad in ("AB" * 16, "zz", "0" * 31):
            assert (await client.post(f"/transfers/{bad}/{action}", headers=headers)).status == 400
        # No body is taken: naming a user (or anything) is refused, not ignored.
        named = await client.post(f"/transfers/{SENT_ID}/{action}", json={"user": "dr.bob"}, headers=headers)
        assert named.status == 400
        broken = await client.post(
            f"/transfers/{SENT_ID}/{action}",
            data=b"{",
            headers={**headers, "Content-Type": "application/json"},
        )
        assert broken.status == 400
        assert (await client.post(f"/transfers/{SENT_ID}/{action}")).status == 401
        operator = await client.post(
            f"/transfers/{SENT_ID}/{action}", headers=kit.bearer("ops", Role.OPERATOR)
        )
        assert operator.status == 403
    assert transfers.cancelled == [] and transfers.resent == []


async def test_resending_an_identified_study_needs_a_fresh_second_factor(
    node: tuple[TestClient, PeopleKit, Transfers],
) -> None:
    client, kit, transfers = node
    token = await kit.sign_in(client, "dr.ana")
    csrf = {"X-CSRF-Token": token}
    kit.clock.advance(6 * MINUTE_MS)  # type: ignore[attr-defined]
    stale = await client.post(f"/transfers/{IDENTIFIED_ID}/resend", headers=csrf)
    assert stale.status == 403 and "second factor" in (await stale.json())["error"]
    assert (await client.post(f"/transfers/{SENT_ID}/resend", headers=csrf)).status == 202  # not identified
    await client.post("/session/second-factor", json={"code": kit.code("dr.ana")}, headers=csrf)
    fresh = await client.post(f"/transfers/{IDENTIFIED_ID}/resend", headers=csrf)
    assert fresh.status == 202
    assert [t for t, _ in transfers.resent] == [SENT_ID, IDENTIFIED_ID]
