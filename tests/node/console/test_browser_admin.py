"""The operator's users, tokens and ledger explorer pages in Chromium, against real node processes.

Users: an operator adds a user and sees the one-time enrolment code once (it works: the person
enrols with it; a reload never shows it again), sees an account locked by wrong passwords and
unlocks it, changes roles.  Explorer: the latest blocks with their certificates, a block's
records, and a record whose inclusion proof the page verifies itself; a tampered proof is shown
as not holding.  Tokens: one's own, every token for an operator, revoke.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.node.api_client import SessionClient
from mftp.node.devnet.client import committed, make_records, running_devnet, submit, wait_until
from mftp.node.devnet.consortium import Member, NodeProcess
from mftp.node.devnet.people import enrol, user_token
from mftp.node.devnet.people import sign_in as api_sign_in

from .browser_kit import chromium, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LOCKOUT_AFTER = 3


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    def lock_sooner(member: Member) -> None:  # three wrong passwords lock an account (not ten)
        text = member.config_path.read_text()
        if re.search(r"^\[people\]$", text, re.M):
            text = re.sub(r"^lockout_after = \d+$", "", text, flags=re.M)
            text = re.sub(r"^\[people\]$", f"[people]\nlockout_after = {LOCKOUT_AFTER}", text, flags=re.M)
        else:
            text += f"\n[people]\nlockout_after = {LOCKOUT_AFTER}\n"
        member.config_path.write_text(text)

    with running_devnet(tmp_path, validators=2, audit=0, configure=lock_sooner) as processes:
        yield processes


def _wrong_passwords(member: Member, name: str, times: int) -> None:
    for _ in range(times):
        status, _ = SessionClient(member.api_url).call(
            "POST", "/session", {"name": name, "password": "wrong"}
        )
        assert status == 401


@pytest.mark.timeout(240)
def test_users_page_adds_a_user_with_a_code_shown_once_and_unlocks(
    devnet: list[NodeProcess], tmp_path: Path
) -> None:
    a = devnet[0].member
    operator, _ = enrol(a, "ops.olsen", ("operator",))
    victim, _ = enrol(a, "dr.lund", ("clinician",))
    with chromium() as browser:
        page = sign_in(browser, a, operator)
        page.get_by_role("link", name="Users").click()
        page.wait_for_url("**/console/users.html")
        assert page.title() == "Users — MFTP console"
        page.locator('tr[data-user="dr.lund"]').wait_for()

        # Add a user: the code is shown once, in an alert region, and it works.
        page.get_by_label("Name").fill("dr.nilsen")
        page.get_by_label("clinician").first.check()
        page.get_by_role("button", name="Add user").click()
        code = page.locator("#enrolment-code").inner_text(timeout=15_000).strip()
        assert len(code) >= 8
        assert page.evaluate("document.activeElement.id") == "once-title"  # keyboard users land on it
        page.locator('tr[data-user="dr.nilsen"]', has_text="enrolment pending").wait_for()
        screenshot(page, "console-users.png", tmp_path)
        page.get_by_role("button", name="I have handed it over").click()
        assert page.locator("#enrolment-code").count() == 0
        page.reload()
        page.locator('tr[data-user="dr.nilsen"]').wait_for()
        assert code not in page.content()  # never shown again
        enrol(a, "dr.nilsen", code=code)  # the person enrols with it, as they would

        # Lock: wrong passwords; the page shows it; unlock; the right password works again.
        _wrong_passwords(a, "dr.lund", LOCKOUT_AFTER)
        page.reload()
        row = page.locator('tr[data-user="dr.lund"]')
        row.locator(".user-state", has_text="locked").wait_for()
        row.get_by_role("button", name="Unlock dr.lund").click()
        page.locator("#status", has_text="dr.lund: unlocked").wait_for()
        row.locator(".user-state", has_text="active").wait_for()
        api_sign_in(a, victim)  # the right password and code sign in again

        # Roles: a dialog, by keyboard.
        row.get_by_role("button", name="Roles dr.lund").click()
        dialog = page.get_by_role("dialog", name="Roles of dr.lund")
        dialog.get_by_label("auditor").check()
        dialog.get_by_role("button", name="Save roles").click()
        row.locator("td", has_text="auditor, clinician").wait_for()

        # Disable: its own row offers no disable button (an operator never disables itself).
        assert (
            page.locator('tr[data-user="ops.olsen"]').get_by_role("button", name="Disable ops.olsen").count()
            == 0
        )
        row.get_by_role("button", name="Disable dr.lund").click()
        row.locator(".user-state", has_text="disabled").wait_for()


@pytest.mark.timeout(240)
def test_tokens_page_lists_and_revokes(devnet: list[NodeProcess], tmp_path: Path) -> None:
    a = devnet[0].member
    operator, _ = enrol(a, "ops.olsen", ("operator",))
    user_token(a, "dr.lund")  # a clinician's personal token
    with chromium() as browser:
        page = sign_in(browser, a, operator)
        page.get_by_role("link", name="Tokens").click()
        assert page.title() == "API tokens and passkeys — MFTP console"
        page.get_by_label("Label").fill("backup script")
        page.get_by_role("button", name="Make token").click()
        secret = page.locator("#token-secret").inner_text(timeout=15_000)
        assert len(secret) > 20
        own = page.locator("#own")
        own.locator("tr", has_text="backup script").wait_for()
        # Every token of the node, for an operator: a clinician's too, which "Your tokens" does not list.
        page.locator("#all tr", has_text="dr.lund").wait_for()
        assert "Could not" not in page.locator("#status").inner_text()
        assert own.locator("tr", has_text="dr.lund").count() == 0
        page.once("dialog", lambda d: d.accept())
        own.get_by_role("button", name="Revoke token backup script").click()
        own.locator("tr", has_text="backup script").locator("td", has_text="revoked").wait_for()
        status, _ = SessionClient(a.api_url).call("GET", "/tokens")  # no cookie: refused
        assert status == 401


@pytest.mark.timeout(240)
def test_explorer_opens_a_record_and_verifies_its_proof(devnet: list[NodeProcess], tmp_path: Path) -> None:
    a = devnet[0].member
    operator, _ = enrol(a, "ops.olsen", ("operator",))
    records = make_records(a, 3, random.Random(18))
    for record in records:
        submit(a, record)
    target = records[1].record_id.hex()
    wait_until(lambda: committed(a, target) is not None, 60, "the records to be committed")
    height = committed(a, target)["height"]  # type: ignore[index]
    with chromium() as browser:
        page = sign_in(browser, a, operator)
        page.get_by_role("link", name="Ledger").click()
        page.get_by_role("heading", name=re.compile(r"Blocks \(head: \d+\)")).wait_for()
        page.get_by_role("heading", name=re.compile("Validators")).wait_for()
        assert "2 of 2 validators" in page.locator("table").first.inner_text()
        page.get_by_role("link", name=f"Block {height}", exact=True).click()
        page.get_by_role("heading", name=f"Block {height}").wait_for()
        assert page.title() == f"Block {height} — MFTP console"
        page.get_by_role("link", name=f"Record {target[:8]}").click()
        verdict = page.locator("#verdict")
        verdict.wait_for(timeout=15_000)
        # localhost is a secure context: Chromium checks the Ed25519 signatures too.
        assert verdict.inner_text() == "✓ Inclusion proof verified in this browser", page.locator(
            ".checks"
        ).inner_text()
        assert page.locator(".checks li.verified").count() == 7
        screenshot(page, "console-explorer.png", tmp_path)

        # A proof the node altered (one byte of one path step, or of the root) is not accepted.
        def tamper(route: object) -> None:
            response = route.fetch()  # type: ignore[attr-defined]
            body = response.json()
            body["header"]["ledger_root"] = ("0" if body["header"]["ledger_root"][0] != "0" else "1") + body[
                "header"
            ]["ledger_root"][1:]
            route.fulfill(response=response, json=body)  # type: ignore[attr-defined]

        page.route("**/proofs/inclusion/*", tamper)
        page.reload()
        page.locator("#verdict", has_text="does not hold").wait_for(timeout=15_000)
        assert page.locator(".checks li.unverified").count() >= 2  # the Merkle path and the header hash
