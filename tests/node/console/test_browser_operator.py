"""Issue 18, point 6, second scenario: an operator sees a stopped peer turn red (Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mftp.node.devnet.client import running_devnet
from mftp.node.devnet.consortium import NodeProcess
from mftp.node.devnet.people import enrol

from .browser_kit import chromium, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running_devnet(tmp_path, validators=4, audit=0, height=2) as processes:
        yield processes


@pytest.mark.timeout(180)
def test_an_operator_sees_a_stopped_peer_turn_red(devnet: list[NodeProcess], tmp_path: Path) -> None:
    a = devnet[0].member
    operator, _ = enrol(a, "ops.olsen", ("operator",))
    with chromium() as browser:
        page = sign_in(browser, a, operator)
        assert page.url.endswith("/console/overview.html")
        peer = page.locator('.peer-state[data-peer="hospital-d"]')
        peer.filter(has_text="connected").wait_for(timeout=30_000)
        assert "disconnected" not in (peer.get_attribute("class") or "")
        page.locator("#alerts", has_text="Nothing wrong").wait_for(timeout=30_000)
        screenshot(page, "console-overview.png", tmp_path)

        devnet[3].stop()
        page.locator('.peer-state.disconnected[data-peer="hospital-d"]').wait_for(timeout=60_000)
        red = page.locator('.peer-state[data-peer="hospital-d"]')
        color = red.evaluate("node => getComputedStyle(node).color")
        assert color == "rgb(207, 34, 46)", color  # --bad
        page.locator("#alerts li.alert-error", has_text="peer hospital-d is not connected").wait_for()
        # The other peers stay green: three of four validators keep committing.
        for name in ("hospital-b", "hospital-c"):
            assert "disconnected" not in (
                page.locator(f'.peer-state[data-peer="{name}"]').get_attribute("class") or ""
            )
