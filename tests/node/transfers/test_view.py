"""Viewing a received study: one ``STUDY_ACCESSED`` record (action ``view``) per opening.

On a devnet of three validator processes, hospital-a sends a small study to hospital-b in
``identified`` mode (so each restored instance equals its source file byte for byte).  At
hospital-b a view is opened through the API, every instance is read and compared, an unknown
view id, a foreign transfer and an unknown name are refused, and the view record is committed
with action ``view``.  ``mftp-node view --save`` then opens a second view and writes the files
(mode 0600).  Expiry and the bound on open views are checked in-process with a fake clock.
"""

from __future__ import annotations

import hashlib
import stat
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mftp.node.api.server import Api, NodeView, TransferView
from mftp.node.clock import FakeClock
from mftp.node.devnet.client import api, cli, committed, make_study, running_devnet, token_file, wait_until
from mftp.node.devnet.consortium import Member, NodeProcess
from mftp.node.devnet.people import user_token
from mftp.node.errors import NodeUsageError
from mftp.node.transfers.access import OpenViews, StudyAccess
from mftp.node.transfers.state import IN, TransferState
from mftp.transfer.manifest import Manifest
from tests.people_kit import PeopleKit

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    """Three validators, no audit node."""
    with running_devnet(tmp_path, validators=3, audit=0) as processes:
        yield processes


def fetch(member: Member, path: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """GET raw bytes from ``member``'s API; ``(status, body, headers)`` for errors too."""
    request = urllib.request.Request(f"{member.api_url}{path}")
    request.add_header("Authorization", f"Bearer {token or user_token(member, 'dr.b')}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_view_records_access_and_serves_the_original_instances(
    devnet: list[NodeProcess], tmp_path: Path
) -> None:
    a, b = devnet[0].member, devnet[1].member
    make_study(tmp_path / "study")
    originals = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "study").iterdir())
    send = {
        "source": str(tmp_path / "study"),
        "to": "hospital-b",
        "purpose": "TREAT",
        "mode": "identified",
        "user": "dr.a",
    }
    status, answer = api(a, "POST", "/transfers", send)
    assert status == 202, answer
    transfer_id = answer["transfer_id"]
    wait_until(
        lambda: api(b, "GET", f"/transfers/{transfer_id}")[1].get("state") == "complete", 60, "receipt"
    )

    # A view is opened for a user; the view lists the instances and names its access record.
    status, view = api(b, "POST", f"/transfers/{transfer_id}/views", {"user": "dr.b", "purpose": "TREAT"})
    assert status == 201, view
    assert len(view["view_id"]) == 32 and view["transfer_id"] == transfer_id
    assert view["expires_in_s"] == 3600 and len(view["instances"]) == sum(originals.values())
    base = f"/transfers/{transfer_id}/views/{view['view_id']}/instances"
    served: Counter[str] = Counter()
    for item in view["instances"]:
        status, data, headers = fetch(b, f"{base}/{item['name']}")
        assert status == 200 and len(data) == item["size"]
        assert headers["Content-Type"] == "application/dicom" and headers["Cache-Control"] == "no-store"
        served[hashlib.sha256(data).hexdigest()] += 1
    assert served == originals  # identified mode: the source files, byte for byte

    # Refusals: no token, unknown view, the view id on another transfer, an unknown name.
    first = view["instances"][0]["name"]
    assert fetch(b, f"{base}/{first}", token="wrong")[0] == 401
    assert fetch(b, f"/transfers/{transfer_id}/views/{'0' * 32}/instances/{first}")[0] == 400
    assert fetch(b, f"/transfers/{'ab' * 16}/views/{view['view_id']}/instances/{first}")[0] == 400
    assert fetch(b, f"{base}/nope.dcm")[0] == 400
    assert api(b, "POST", f"/transfers/{transfer_id}/views", {"user": "dr.b", "purpose": "NOPE"})[0] == 400
    assert api(a, "POST", f"/transfers/{transfer_id}/views", {"user": "dr.a"})[0] == 400  # sent, not received

    # The CLI opens a second view (a second record) and saves the files, mode 0600.
    (tmp_path / "viewer").mkdir()
    view_command = ("view", transfer_id, "--token-file", str(token_file(b, "dr.c")), "--save")
    result = cli(b, *view_command, str(tmp_path / "viewer"), timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert f"{len(view['instances'])} instance(s)" in result.stdout
    saved = sorted((tmp_path / "viewer").iterdir())
    assert Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in saved) == originals
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in saved)
    missing = cli(b, *view_command, str(tmp_path / "absent"), timeout_s=60)
    assert missing.returncode == 3 and "not an existing folder" in missing.stderr

    # Each opening is one STUDY_ACCESSED record, action view, committed on the chain.
    records = api(b, "GET", f"/transfers/{transfer_id}")[1]["access_records"]
    assert len(records) == 2 and records[0] == view["record"]
    wait_until(lambda: all(committed(a, r) for r in records), 60, "the view records")
    for record_id in records:
        record = committed(a, record_id)
        assert record is not None and record["type"] == "study_accessed"
        assert record["body"]["action"] == "view" and record["body"]["transfer_id"] == transfer_id


# ------------------------------------------------------------------------- in process


def _manifest(*names: str) -> Manifest:
    entries = tuple(SimpleNamespace(name=n, size=1) for n in names)
    return cast(Manifest, SimpleNamespace(entries=entries))


def test_open_views_expire_and_the_oldest_is_dropped() -> None:
    clock = FakeClock()
    views = OpenViews(ttl_s=60, limit=3, clock=clock)
    first, _ = views.add("aa" * 16, _manifest("00000.dcm"))
    assert views.get("aa" * 16, first).entries.keys() == {"00000.dcm"}
    with pytest.raises(NodeUsageError):
        views.get("bb" * 16, first)  # the id opens its own transfer only
    later = [views.add("aa" * 16, _manifest())[0] for _ in range(3)]
    assert len(views) == 3
    with pytest.raises(NodeUsageError):
        views.get("aa" * 16, first)  # the oldest made room
    clock.advance(59000)
    assert views.get("aa" * 16, later[-1])
    clock.advance(1000)
    for view_id in later:
        with pytest.raises(NodeUsageError):
            views.get("aa" * 16, view_id)
    assert len(views) == 0


async def test_an_expired_view_is_refused_over_http(tmp_path: Path) -> None:
    transfer_id = "cd" * 16
    state = TransferState(transfer_id, IN, "hospital-a", "00" * 32, "TREAT", "identified", "complete", 0)
    clock = FakeClock()
    service = SimpleNamespace(
        states=SimpleNamespace(get=lambda tid: state if tid == transfer_id else None),
        host=SimpleNamespace(clock=clock),
    )
    access = StudyAccess(cast(Any, service))
    view_id, _ = access.views.add(transfer_id, _manifest("00000.dcm"))
    transfers = cast(TransferView, SimpleNamespace(access=access))
    kit = PeopleKit(tmp_path)
    app = Api(cast(NodeView, None), kit.gate, transfers=transfers).app()
    path = f"/transfers/{transfer_id}/views/{view_id}/instances/00000.dcm"
    async with TestClient(TestServer(app)) as client:
        assert (await client.get(path)).status == 401
        clock.advance(int(access.views.ttl_s * 1000))
        expired = await client.get(path, headers=kit.bearer("dr.b"))
        assert expired.status == 400 and "open a new one" in (await expired.json())["error"]
