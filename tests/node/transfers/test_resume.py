"""A transfer survives a restart of either node and a dropped link (issue: point 7).

hospital-b fetches from hospital-a through a bandwidth-limited proxy (node/devnet/throttle.py,
in this process) so the fetch takes seconds: hospital-b is killed (SIGKILL) a third of the way
in and restarted, hospital-a is restarted later on, and the proxy cuts every connection once.
The study still arrives complete and verified, and the bytes that crossed the link stay close
to one copy of the study: verified chunks are not fetched again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from mftp.node.devnet.client import TEST_CONSENSUS, api, wait_until
from mftp.node.devnet.consortium import (
    NodeProcess,
    create_devnet,
    free_ports,
    start_all,
    stop_all,
    wait_for_height,
)
from mftp.node.devnet.throttle import ThreadedProxy, ThrottleProxy

pytestmark = pytest.mark.timeout(300)

CHUNK_BYTES = 256 * 1024
RATE_MBIT_PER_S = 12
PARALLEL = 4


def noisy_study(folder: Path, copies: int) -> None:
    """``copies`` MR images of one study whose pixels are noise (so they hardly compress)."""
    folder.mkdir(parents=True)
    path = get_testdata_file("MR2_UNCI.dcm")
    assert path is not None
    rng = np.random.default_rng(7)
    study_uid = pydicom.uid.generate_uid()
    for index in range(copies):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        pixels = rng.integers(0, 1 << int(ds.BitsStored), size=len(ds.PixelData) // 2, dtype=np.uint16)
        ds.PixelData = pixels.astype("<u2").tobytes()
        ds.save_as(folder / f"{index}.dcm")


@pytest.fixture
def throttled(tmp_path: Path) -> Iterator[tuple[list[NodeProcess], ThreadedProxy]]:
    members = create_devnet(tmp_path / "devnet", validators=3, audit=0, consensus=TEST_CONSENSUS)
    a, b = members[0], members[1]
    (proxy_port,) = free_ports(1)
    listen = f'data_listen = "127.0.0.1:{a.data_port}"'
    a.config_path.write_text(
        a.config_path.read_text().replace(listen, f"{listen}\nchunk_bytes = {CHUNK_BYTES}")
    )
    direct = f'data_url = "https://127.0.0.1:{a.data_port}"'
    b.config_path.write_text(
        b.config_path.read_text().replace(direct, f'data_url = "https://127.0.0.1:{proxy_port}"')
    )
    proxy = ThreadedProxy(
        ThrottleProxy("127.0.0.1", proxy_port, "127.0.0.1", a.data_port, rate_mbit_per_s=RATE_MBIT_PER_S)
    )
    processes = start_all(members)
    try:
        yield processes, proxy
    finally:
        stop_all(processes)
        proxy.close()


def fetched(process: NodeProcess) -> tuple[int, int, str]:
    """``(fetched bytes, bytes to fetch, state)`` of the one transfer hospital-b holds."""
    try:
        _, body = api(process.member, "GET", "/transfers")
    except OSError:
        return 0, 1, "down"
    if not body["transfers"]:
        return 0, 1, "none"
    t = body["transfers"][0]
    return t["fetched_bytes"], max(1, t["fetch_bytes"]), t["state"]


def test_fetch_resumes_after_restarts_and_a_cut(
    throttled: tuple[list[NodeProcess], ThreadedProxy], tmp_path: Path
) -> None:
    processes, proxy = throttled
    a, b = processes[0], processes[1]
    wait_for_height(processes, 1, timeout_s=60)
    noisy_study(tmp_path / "study", copies=4)
    status, answer = api(
        a.member,
        "POST",
        "/transfers",
        {
            "source": str(tmp_path / "study"),
            "to": "hospital-b",
            "purpose": "TREAT",
            "mode": "pseudonymised",
            "user": "dr.a",
        },
    )
    assert status == 202, answer

    wait_until(lambda: fetched(b)[0] > fetched(b)[1] // 3, 60, "a third of the study", interval_s=0.05)
    b.kill()  # a crash: no clean shutdown
    b.start()
    b.wait_ready()
    wait_until(lambda: fetched(b)[2] == "fetching", 30, "the fetch to resume")
    proxy.drop_after(256 * 1024)  # then the link drops every connection once
    wait_until(lambda: fetched(b)[0] > 2 * fetched(b)[1] // 3, 60, "two thirds", interval_s=0.05)
    a.stop()  # the sender restarts too
    time.sleep(0.5)
    a.start()
    a.wait_ready()
    wait_until(lambda: fetched(b)[2] == "complete", 120, "the study to arrive")

    fetch_bytes = fetched(b)[1]
    # At most the chunks in flight at each interruption are fetched twice (plus TLS framing).
    assert proxy.proxy.bytes_forwarded < fetch_bytes + 3 * PARALLEL * CHUNK_BYTES + fetch_bytes // 10
    assert proxy.proxy.drops >= 1
    lines = [json.loads(line) for line in (b.member.directory / "node.log").read_text().splitlines()]
    done = [line for line in lines if line.get("event") == "transfer fetched"]
    assert done and done[-1]["resumed_bytes"] > 0
    _, sent = api(a.member, "GET", "/transfers")
    assert sent["transfers"][0]["state"] == "delivered"
