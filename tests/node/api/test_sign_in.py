"""Sign-in through the API and every refusal of issue 16 (point 10), on a fake clock.

No session, an expired session, the wrong role, a stale step-up, a replayed code, a locked
account, a disabled user, a revoked token, a body naming another user, a forged or cross-site
request: each is refused with the status the document states, and a refused sign-in never says
whether the user exists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mftp.ledger.ledger import Ledger
from mftp.ledger.sample import identities, sample_genesis
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.node.api.auth import Gate
from mftp.node.api.people_routes import PeopleApi
from mftp.node.api.server import Api
from mftp.node.clock import FakeClock
from mftp.node.people.events import EventKind
from mftp.node.people.roles import Role
from tests.people_kit import PASSWORD, PeopleKit

from .test_server import FakeNode, FakeTransfers

SEND = {"source": "/s", "to": "b", "purpose": "TREAT", "mode": "pseudonymised"}
MINUTE_MS = 60_000


class Events:
    """The kit's security events as the vault would keep them."""

    def __init__(self, kit: PeopleKit) -> None:
        self.kit = kit

    def security_events(self, limit: int) -> list[Any]:
        return self.kit.events[-limit:]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[TestClient, PeopleKit, FakeTransfers]]:
    kit = PeopleKit(tmp_path, FakeClock(1_800_000_000_000))
    ledger = Ledger(LevelDBStore(tmp_path / "ledger"), sample_genesis(identities(4)))
    transfers = FakeTransfers()
    people = PeopleApi(kit.signin, kit.admin, kit.gate, Events(kit), "hospital-a")
    api = Api(FakeNode(ledger), kit.gate, transfers=transfers, providers=(people,))
    async with TestClient(TestServer(api.app())) as client:
        yield client, kit, transfers
    ledger.close()


def csrf(token: str) -> dict[str, str]:
    return {"X-CSRF-Token": token}


async def test_a_clinician_signs_in_with_totp_and_sends_as_themself(
    node: tuple[TestClient, PeopleKit, FakeTransfers],
) -> None:
    client, kit, transfers = node
    assert (await client.post("/transfers", json=SEND)).status == 401  # no session
    token = await kit.sign_in(client, "dr.ana")
    who = await (await client.get("/session")).json()
    assert who["name"] == "dr.ana" and who["roles"] == ["clinician"] and who["state"] == "active"
    sent = await client.post("/transfers", json=SEND, headers=csrf(token))
    assert sent.status == 202, await sent.text()
    assert transfers.sent[-1][-1] == "user:dr.ana"  # the ledger's user is the principal
    same = await client.post("/transfers", json={**SEND, "user": "dr.ana"}, headers=csrf(token))
    assert same.status == 202  # naming oneself is allowed (older clients do)
    other = await client.post("/transfers", json={**SEND, "user": "dr.bob"}, headers=csrf(token))
    assert other.status == 403 and "another user" in (await other.json())["error"]
    assert [t[-1] for t in transfers.sent] == ["user:dr.ana"] * 2


async def test_cookies_are_httponly_strict_and_secure_under_tls(
    node: tuple[TestClient, PeopleKit, FakeTransfers],
) -> None:
    client, kit, _ = node
    kit.account("dr.ana")
    code = kit.admin.reset_second_factor(kit.operator, "dr.ana")
    answer = await client.post("/enrolment", json={"name": "dr.ana", "code": code, "password": PASSWORD})
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback: a Secure cookie would never come back
    assert answer.headers["Cache-Control"] == "no-store"  # the TOTP secret is shown once
    tls = Gate(kit.signin, public_origin="https://mftp.hospital.example")
    assert tls.cookie["name"] == "__Host-mftp_session" and tls.cookie["secure"] is True


async def test_forged_and_cross_site_requests_are_refused(
    node: tuple[TestClient, PeopleKit, FakeTransfers],
) -> None:
    client, kit, transfers = node
    token = await kit.sign_in(client, "dr.ana")
    assert (await client.post("/transfers", json=SEND)).status == 401  # the cookie alone: no CSRF token
    assert (await client.post("/transfers", json=SEND, headers=csrf("forged"))).status == 401
    evil = {**csrf(token), "Origin": "https://evil.example"}
    assert (await client.post("/transfers", json=SEND, headers=evil)).status == 401
    cross = {**csrf(token), "Sec-Fetch-Site": "cross-site"}
    assert (await client.post("/transfers", json=SEND, headers=cross)).status == 401
    own = {**csrf(token), "Origin": str(client.make_url("")).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    assert (await client.post("/transfers", json=SEND, headers=own)).status == 202
    assert len(transfers.sent) == 1
    # A forged sign-in (login CSRF) from another site is refused too.
    forged = await client.post(
        "/session", json={"name": "dr.ana", "password": PASSWORD}, headers={"Origin": "https://evil.example"}
    )
    assert forged.status == 401


async def test_sessions_expire_when_idle_and_at_their_lifetime(
    node: tuple[TestClient, PeopleKit, FakeTransfers],
) -> None:
    client, kit, _ = node
    await kit.sign_in(client, "dr.ana")
    assert (await client.get("/transfers")).status == 200
    kit.clock.advance(14 * MINUTE_MS)  # type: ignore[attr-defined]
    assert (await client.get("/transfers")).status == 200  # the idle timer restarts
    kit.clock.advance(15 * MINUTE_MS + 1000)  # type: ignore[attr-defined]
    expired = await client.get("/transfers")
    assert expired.status == 401 and expired.headers["WWW-Authenticate"].startswith("Bearer")
    await kit.sign_in(client, "dr.ana")
    for _ in range(12 * 4 + 2):  # busy all day: 15-minute steps never idle, yet 12 h is the end
        kit.clock.advance(15 * MINUTE_MS - 1000)  # type: ignore[attr-defined]
        if (await client.get("/transfers")).status == 401:
            break
    else:
        raise AssertionError("a session outlived its 12 h lifetime")


async def test_the_wrong_role_and_a_stale_step_up_are_403(
    node: tuple[TestClient, PeopleKit, FakeTransfers],
) -> None:
    client, kit, _ = node
    token = await kit.sign_in(client, "ops", Role.OPERATOR)
    wrong = await client.get("/transfers")
    assert wrong.status == 403 and "clinician" in (await wrong.json())["error"]  # no study access
    client.session.cookie_jar.clear()
    token = await kit.sign_in(client, "dr.ana")
    export = {"destination": "/x"}
    assert (
        await client.post(f"/transfers/{'ab' * 16}/export", json=export, headers=csrf(token))
    ).status == 200
    kit.clock.advance(6 * MINUTE_MS)  # type: ignore[attr-defined]
    stale = await client.post(f"/transfers/{'ab' * 16}/export", json=export, headers=csrf(token))
    assert stale.status == 403 and "second factor" in (await stale.json())["error"]
    identified = await client.post("/transfers", json={**SEND, "mode": "identified"}, headers=csrf(token))
    assert identified.status == 403  # identified mode sends the patient's identity: step-up
    assert (await client.post("/transfers", json=SEND, headers=csrf(token))).status == 202  # not needed
    step_up = await client.post(
        "/session/second-factor", json={"code": kit.code("dr.ana")}, headers=csrf(token)
    )
    assert step_up.status == 200 and (await step_up.json())["step_up_fresh_s"] == 300
    again = await client.post(f"/transfers/{'ab' * 16}/export", json=export, headers=csrf(token))
    assert again.status == 200
    assert [e.kind for e in kit.events].count(EventKind.STEP_UP) == 1


async def test_a_replayed_code_is_refused(node: tuple[TestClient, PeopleKit, FakeTransfers]) -> None:
    client, kit, _ = node
    await kit.sign_in(client, "dr.ana")
    used = kit.totp["dr.ana"].at(kit.store.get("dr.ana").totp_last_step * 30)  # type: ignore[union-attr]
    client.session.cookie_jar.clear()
    first = await client.post("/session", json={"name": "dr.ana", "password": PASSWORD})
    replay = await client.post(
        "/session/second-factor", json={"code": used}, headers=csrf((await first.json())["csrf_token"])
    )
    assert replay.status == 401


async def test_unknown_user_and_wrong_password_answer_the_same(
    node: tuple[TestClient, PeopleKit, FakeTransfers],
) -> None:
    client, kit, _ = node
    kit.account("dr.ana")
    await kit.enrol(client, "dr.ana")
    client.session.cookie_jar.clear()
    unknown = await client.post("/session", json={"name": "dr.nobody", "password": PASSWORD})
    wrong = await client.post("/session", json={"name": "dr.ana", "password": "not the password at all"})
    assert unknown.status == wrong.status == 401
    assert await unknown.json() == await wrong.json()


async def test_lockout_and_unlock(node: tuple[TestClient, PeopleKit, FakeTransfers]) -> None:
    client, kit, _ = node
    await kit.enrol(client, "dr.ana")
    client.session.cookie_jar.clear()
    statuses = []
    for _ in range(12):  # 5 per name in 15 min are tolerated, then 429; 10 lock the account
        answer = await client.post("/session", json={"name": "dr.ana", "password": "wrong password here"})
        statuses.append(answer.status)
        if answer.status == 429:
            assert int(answer.headers["Retry-After"]) >= 1
            kit.clock.advance(15 * MINUTE_MS)  # type: ignore[attr-defined]  # the window passes
    assert 429 in statuses
    account = kit.store.get("dr.ana")
    assert account is not None and account.locked(kit.clock.now_ms())
    assert EventKind.LOCKOUT in [e.kind for e in kit.events]
    locked = await client.post("/session", json={"name": "dr.ana", "password": PASSWORD})
    assert locked.status == 401  # the right password, yet locked (and the answer says no more)
    kit.admin.unlock(kit.operator, "dr.ana")
    assert (await client.post("/session", json={"name": "dr.ana", "password": PASSWORD})).status == 200


async def test_a_disabled_user_and_a_revoked_token_are_refused_at_once(
    node: tuple[TestClient, PeopleKit, FakeTransfers],
) -> None:
    client, kit, _ = node
    token = await kit.sign_in(client, "dr.ana")
    made = await client.post("/tokens", json={"role": "clinician", "ttl_s": 3600}, headers=csrf(token))
    assert made.status == 201, await made.text()
    secret, token_id = (await made.json())["token"], (await made.json())["token_id"]
    bearer = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/transfers", headers=bearer)).status == 200
    # A token cannot make tokens (its own step-up was the session's).
    assert (await client.post("/tokens", json={"role": "clinician"}, headers=bearer)).status == 403
    assert (await client.delete(f"/tokens/{token_id}", headers=csrf(token))).status == 204
    assert (await client.get("/transfers", headers=bearer)).status == 401  # revoked
    second = (await (await client.post("/tokens", json={"role": "clinician"}, headers=csrf(token))).json())[
        "token"
    ]
    kit.admin.disable(kit.operator, "dr.ana")
    assert (await client.get("/transfers")).status == 401  # the session ended
    assert (await client.get("/transfers", headers={"Authorization": f"Bearer {second}"})).status == 401
    assert (await client.post("/session", json={"name": "dr.ana", "password": PASSWORD})).status == 401


async def test_wrong_api_tokens_are_rate_limited(node: tuple[TestClient, PeopleKit, FakeTransfers]) -> None:
    client, _, _ = node
    statuses = [
        (await client.get("/transfers", headers={"Authorization": f"Bearer wrong-{i}"})).status
        for i in range(25)
    ]
    assert statuses[0] == 401 and statuses[-1] == 429


async def test_operators_manage_users_and_read_security_events_in_fhir_and_dicom(
    node: tuple[TestClient, PeopleKit, FakeTransfers],
) -> None:
    client, kit, _ = node
    operator = kit.bearer("ops", Role.OPERATOR)
    added = await client.post("/users", json={"name": "Dr.Carl", "roles": ["clinician"]}, headers=operator)
    assert added.status == 201 and added.headers["Cache-Control"] == "no-store"
    body = await added.json()
    assert body["name"] == "dr.carl" and len(body["enrolment_code"]) >= 8
    clinician = kit.bearer("dr.ana")
    assert (await client.get("/users", headers=clinician)).status == 403
    listed = await (await client.get("/users", headers=operator)).json()
    carl = next(u for u in listed["users"] if u["name"] == "dr.carl")
    assert carl["enrolment_pending"] and not carl["second_factor"] and "password" not in str(carl)
    assert (
        await client.put("/users/dr.carl/roles", json={"roles": ["auditor"]}, headers=operator)
    ).status == 200
    assert (await client.post("/users/dr.carl/disable", headers=operator)).status == 204
    fhir = await (await client.get("/security-events", params={"format": "fhir"}, headers=operator)).json()
    assert fhir["resourceType"] == "Bundle" and fhir["entry"]
    kinds = {e["resource"]["entity"][0]["detail"][0]["valueString"].split()[0] for e in fhir["entry"]}
    assert {"account-added", "role-changed", "account-disabled"} <= kinds
    dicom = await (await client.get("/security-events", params={"format": "dicom"}, headers=operator)).json()
    assert all(m.startswith("<?xml") and "<AuditMessage>" in m for m in dicom["messages"])


async def test_logs_carry_no_name_password_code_token_or_cookie(
    node: tuple[TestClient, PeopleKit, FakeTransfers], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    client, kit, _ = node
    token = await kit.sign_in(client, "dr.secretname")
    await client.post("/session", json={"name": "dr.secretname", "password": "wrong password 12345"})
    await client.get("/transfers", headers={"Authorization": "Bearer mftp_wrongtoken123"})
    made = await client.post("/tokens", json={"role": "clinician"}, headers=csrf(token))
    secret = (await made.json())["token"]
    await client.post("/transfers", json={**SEND, "user": "dr.other"}, headers=csrf(token))
    cookie = next(iter(client.session.cookie_jar)).value
    logged = caplog.text + "".join(str(getattr(r, "fields", "")) for r in caplog.records)
    for secret_text in (
        "dr.secretname",
        "dr.other",
        PASSWORD,
        "wrong password",
        "wrongtoken",
        secret,
        cookie,
        token,
    ):
        assert secret_text not in logged
    assert "api call refused" in caplog.text  # refusals are logged, by route and reason only
