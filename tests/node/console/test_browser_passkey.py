"""Passkey sign-in in Chromium with its virtual WebAuthn authenticator (DevTools protocol).

A user signs in with password and TOTP, registers a passkey (a fresh second factor: step-up) on
the tokens page, signs out, and signs in with password and the passkey.  The node is reached on
``localhost``: browsers allow WebAuthn only there or over https, and the node's relying party
(:func:`mftp.node.people.service.relying_party`) is ``http://localhost:<port>`` without a public
origin.  Once the authenticator forgets the key, the passkey step is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.node.devnet.client import running_devnet
from mftp.node.devnet.consortium import NodeProcess
from mftp.node.devnet.people import enrol

from .browser_kit import chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running_devnet(tmp_path, validators=2, audit=0) as processes:
        yield processes


@pytest.mark.timeout(180)
def test_a_user_registers_a_passkey_and_signs_in_with_it(devnet: list[NodeProcess]) -> None:
    member = devnet[0].member
    user, _ = enrol(member, "dr.hansen")
    port = member.api_url.rpartition(":")[2]
    base = f"http://localhost:{port}"
    with chromium() as browser:
        context = browser.new_context(timezone_id="Europe/Oslo")
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        authenticator = cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                }
            },
        )["authenticatorId"]

        def password_step() -> None:
            page.goto(base + "/console/")
            page.get_by_label("Name").fill(user.name)
            page.get_by_label("Password").fill(user.password)
            page.get_by_role("button", name="Continue").click()
            page.get_by_label("Code from your authenticator app").wait_for()

        # A TOTP sign-in: its second factor is fresh, so adding a passkey needs no second prompt.
        password_step()
        page.get_by_label("Code from your authenticator app").fill(user.code())
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/console/inbox.html")
        page.get_by_role("link", name="Tokens").click()
        # Making a token first: the page once wired "Add a passkey" again after each token made,
        # so one click ran the passkey ceremony twice.
        page.get_by_label("Label").fill("laptop")
        page.get_by_role("button", name="Make token").click()
        page.get_by_role("button", name="I have copied it").click()
        page.get_by_role("button", name="Add a passkey").click()
        page.locator("#status", has_text="Passkey added").wait_for(timeout=15_000)
        credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
        assert len(credentials) == 1 and credentials[0]["isResidentCredential"]
        assert page.locator("dialog").count() == 0  # no step-up prompt was needed

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/console/")

        # Password, then the passkey instead of a code.
        password_step()
        page.get_by_role("button", name="Use a passkey").click()
        page.wait_for_url("**/console/inbox.html", timeout=15_000)
        assert "dr.hansen" in page.locator("header .who").inner_text()
        assert (
            credentials[0]["signCount"]
            < cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"][0][
                "signCount"
            ]
        )  # the authenticator signed the sign-in

        # Without the key (a lost device), the passkey step is refused and no session starts.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/console/")
        cdp.send("WebAuthn.clearCredentials", {"authenticatorId": authenticator})
        password_step()
        page.get_by_role("button", name="Use a passkey").click()
        page.locator("#status", has_text="Passkey sign-in did not work").wait_for(timeout=30_000)
        assert page.url.endswith("/console/")
        session = page.evaluate("fetch('/session').then((r) => r.json())")
        assert session.get("state") != "active"
