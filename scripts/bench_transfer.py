#!/usr/bin/env python3
"""Benchmark a whole peer transfer between two node processes, on loopback and over a slow link.

Usage: bench_transfer.py [--quick] [--mb N] [--mbit R] [--mode MODE]

The study (build/bench_transfer/study, made afresh): one patient's CT series of 512x512 slices
and MR series of 256x256 slices, built from pydicom-data's real CT_small and MR_small images
(upsampled, each slice shifted and given its own Gaussian noise, so no two slices are alike and
the pixels compress like real ones, not like copies), about --mb MB (500; --quick 60).

A devnet of three validators runs as separate processes; hospital-a sends the study through
the whole path the issue names (import, compress, encrypt, offer, fetch in verified chunks,
verify every file, store, records), in ``--mode`` (default identified, as a TREAT transfer
between hospitals is: the issue's path has no de-identification), timed from
``POST /transfers`` until the recipient reports it complete:

  loopback_mb_per_s  study MB / seconds, to hospital-c fetching straight from hospital-a
  loopback_pseudonymised_mb_per_s
                     the same, de-identified on the way (pseudonymised): what PS3.15's profile
                     in pure Python (pydicom) costs on top, reported beside it
  link_s             seconds, to hospital-b fetching through node/devnet/throttle.py at --mbit
                     (100 Mbit/s per direction)
  link_bound_s       the bytes that crossed the link / link rate: the floor of link_s for the
                     compressed, encrypted study
  raw_copy_link_s    baseline, same run: copying the study's raw bytes through the same kind of
                     throttled link to a TCP sink (what a plain file copy would take)
  study_mb, fetch_mb, files, compression (what transfer.compression = "auto" chose here),
  prepare_s (hospital-a until the study is prepared and the offer on the ledger, loopback run;
  the recipient fetches and verifies meanwhile, so loopback_s is little more)

Progress goes to stderr; the last stdout line is one JSON object.  --quick runs in under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from mftp.node.devnet.client import TEST_CONSENSUS, api
from mftp.node.devnet.consortium import (
    Member,
    create_devnet,
    free_ports,
    start_all,
    stop_all,
    wait_for_height,
)
from mftp.node.devnet.throttle import ThreadedProxy, ThrottleProxy
from mftp.node.transfers.preparing import prefers_speed

ROOT = Path(__file__).resolve().parent.parent / "build" / "bench_transfer"
CT_SHARE = 0.8  # of the study's bytes; the rest MR
SETTLE_S = 5.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _series(
    folder: Path,
    template: str,
    scale: int,
    noise: float,
    target_bytes: int,
    study: str,
    rng: np.random.Generator,
) -> int:
    """Write slices of one series made from ``template`` until ``target_bytes``; returns the bytes."""
    path = get_testdata_file(template)
    assert path is not None, f"pydicom-data lacks {template}"
    base = pydicom.dcmread(path)
    image = np.kron(base.pixel_array.astype(np.float64), np.ones((scale, scale)))
    dtype = base.pixel_array.dtype
    info = np.iinfo(dtype)
    series_uid = pydicom.uid.generate_uid()
    written, index = 0, 0
    while written < target_bytes:
        shifted = np.roll(image, (index % 17 - 8, (index * 3) % 13 - 6), axis=(0, 1))
        pixels = shifted + rng.normal(0.0, noise, image.shape)
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = image.shape
        ds.PixelData = np.clip(pixels, info.min, info.max).astype(dtype).tobytes()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index + 1
        ds.PatientID, ds.PatientName = "BENCH-1", "Bench^Patient"
        out = folder / f"{template[:2]}-{index:05d}.dcm"
        ds.save_as(out)
        written += out.stat().st_size
        index += 1
    return written


def make_study(folder: Path, total_bytes: int) -> int:
    """The benchmark study (see the module docstring); returns its size in bytes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2026)
    study = pydicom.uid.generate_uid()
    ct = _series(folder, "CT_small.dcm", 4, 12.0, int(total_bytes * CT_SHARE), study, rng)
    mr = _series(folder, "MR_small.dcm", 4, 6.0, total_bytes - ct, study, rng)
    return ct + mr


def timed_send(sender: Member, recipient: Member, source: Path, mode: str) -> dict[str, Any]:
    """Send and wait until ``recipient`` holds it complete; returns timings and the transfer."""
    started = time.monotonic()
    body = {"source": str(source), "to": recipient.name, "purpose": "TREAT", "mode": mode}
    body["user"] = "bench"  # who sends: tagged pseudonymously on the offer record
    status, answer = api(sender, "POST", "/transfers", body)
    if status != 202:
        raise SystemExit(f"send refused: {answer}")
    transfer_id = answer["transfer_id"]
    prepared_s = None
    while True:
        _, out = api(sender, "GET", f"/transfers/{transfer_id}")
        if prepared_s is None and out["state"] not in ("preparing",):
            prepared_s = time.monotonic() - started
        if out["state"] == "failed":
            raise SystemExit(f"transfer failed at the sender: {out['detail']}")
        status, held = api(recipient, "GET", f"/transfers/{transfer_id}")
        if status == 200 and held["state"] in ("complete", "failed"):
            break
        time.sleep(0.1)
    if held["state"] != "complete":
        raise SystemExit(f"transfer failed at the recipient: {held['detail']}")
    return {"seconds": time.monotonic() - started, "prepare_s": prepared_s or 0.0, "transfer": held}


async def _raw_copy(total_bytes: int, mbit: float) -> float:
    """Seconds to push ``total_bytes`` through a throttled proxy to a TCP sink."""
    done = asyncio.Event()
    received = 0

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        while data := await reader.read(1 << 20):
            received += len(data)
            if received >= total_bytes:
                done.set()
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with ThrottleProxy("127.0.0.1", 0, "127.0.0.1", port, rate_mbit_per_s=mbit) as proxy:
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        piece = bytes(1 << 20)
        started = time.monotonic()
        sent = 0
        while sent < total_bytes:
            writer.write(piece[: total_bytes - sent])
            await writer.drain()
            sent += min(len(piece), total_bytes - sent)
        await done.wait()
        seconds = time.monotonic() - started
        writer.close()
    await asyncio.sleep(0.2)  # let the proxy's connection handlers see the close before the loop ends
    server.close()
    await server.wait_closed()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 60 MB study (under a minute)")
    parser.add_argument("--mb", type=int, default=None, help="study size in MB (default 500)")
    parser.add_argument("--mbit", type=float, default=100.0, help="link rate in Mbit/s (default 100)")
    parser.add_argument(
        "--mode", default="identified", choices=("identified", "pseudonymised", "deidentified", "anonymous"),
        help="de-identification mode of the loopback and link sends (default identified)",
    )  # fmt: skip
    args = parser.parse_args()
    study_mb = args.mb or (60 if args.quick else 500)
    shutil.rmtree(ROOT, ignore_errors=True)
    say(f"making a study of ~{study_mb} MB from pydicom-data's CT and MR images")
    study_bytes = make_study(ROOT / "study", study_mb * 1_000_000)
    files = len(list((ROOT / "study").iterdir()))

    members = create_devnet(ROOT / "devnet", validators=3, audit=0, consensus=TEST_CONSENSUS)
    a, b, c = members
    (proxy_port,) = free_ports(1)
    direct = f'data_url = "https://127.0.0.1:{a.data_port}"'
    b.config_path.write_text(
        b.config_path.read_text().replace(direct, f'data_url = "https://127.0.0.1:{proxy_port}"')
    )
    proxy = ThreadedProxy(
        ThrottleProxy("127.0.0.1", proxy_port, "127.0.0.1", a.data_port, rate_mbit_per_s=args.mbit)
    )
    processes = start_all(members)
    try:
        wait_for_height(processes, 1, timeout_s=60)
        # Let start-up work finish (each node starts its preparing workers in the background):
        # a hospital's node runs for days, and its sends find the workers running.
        time.sleep(SETTLE_S)
        say(f"loopback: {a.name} -> {c.name}, {files} files, {args.mode}")
        loop = timed_send(a, c, ROOT / "study", args.mode)
        say(f"  {loop['seconds']:.1f} s (prepared in {loop['prepare_s']:.1f} s)")
        say(f"loopback: {a.name} -> {c.name}, pseudonymised")
        pseudo = timed_send(a, c, ROOT / "study", "pseudonymised")
        say(f"  {pseudo['seconds']:.1f} s (prepared in {pseudo['prepare_s']:.1f} s)")
        say(f"link: {a.name} -> {b.name} through {args.mbit:g} Mbit/s, {args.mode}")
        link = timed_send(a, b, ROOT / "study", args.mode)
        say(f"  {link['seconds']:.1f} s, {proxy.proxy.bytes_forwarded / 1e6:.1f} MB crossed the link")
        crossed = proxy.proxy.bytes_forwarded
    finally:
        stop_all(processes)
        proxy.close()
    say(f"baseline: raw copy of {study_bytes / 1e6:.0f} MB through {args.mbit:g} Mbit/s")
    raw_s = asyncio.run(_raw_copy(study_bytes, args.mbit))
    figures = {
        "study_mb": round(study_bytes / 1e6, 1),
        "files": files,
        "fetch_mb": round(loop["transfer"]["fetch_bytes"] / 1e6, 1),
        "loopback_mb_per_s": round(study_bytes / 1e6 / loop["seconds"], 1),
        "prepare_s": round(loop["prepare_s"], 2),
        "loopback_s": round(loop["seconds"], 2),
        "mode": args.mode,
        "loopback_pseudonymised_mb_per_s": round(study_bytes / 1e6 / pseudo["seconds"], 1),
        "link_mbit_per_s": args.mbit,
        # The devnet runs with the default transfer.compression = "auto": which it chose here.
        "compression": "speed" if prefers_speed("auto") else "ratio",
        "link_s": round(link["seconds"], 2),
        "link_bound_s": round(crossed * 8 / (args.mbit * 1e6), 2),
        "raw_copy_link_s": round(raw_s, 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
