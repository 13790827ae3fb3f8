#!/usr/bin/env python3
"""Benchmark mftp.transfer.codec: ratio, speed and byte-exactness on real DICOM files.

Usage: bench_codec.py [DIR] [--quick] [--workers N]

Files: every regular file under DIR, or by default pydicom-data's real images: the files of its
data store that hold Pixel Data in an uncompressed transfer syntax, minus those marked lossy
(LossyImageCompression "01", and the *_UNCI.dcm / JPEG2000_UNC.dcm decodes of lossy streams).
Files whose pixels are already JPEG / JPEG 2000 / RLE are left out of the default set: no
lossless codec shrinks them (ratio ~1.0 for every method) and the issue's baselines (zstd-19
2.67, JPEG-LS 3.45) were measured without them. With DIR, only files marked lossy are skipped.

Figures (last stdout line, one JSON object):
  ratio_total, ratio_ct   original bytes / compressed bytes, all files and Modality CT only
  compress_mb_per_s       original MB per wall second, compress() with default settings over a
                          process pool of --workers (2: both cores); best of the repetitions
  decompress_mb_per_s     the same for decompress()
  compress_mb_per_cpu_s   original MB per CPU second spent in compress() (one core, unshared)
  compress_unverified_mb_per_s  like compress_mb_per_s with verify=False (no self-check)
  byte_exact              true only if every file came back with its own SHA-256
  zstd19_ratio_total/_ct  baseline: whole file zstd level 19, same files, same run
  jpegls_ratio_total/_ct  baseline: header zstd-19 + pixels JPEG-LS wherever the pixels are plain,
                          else whole-file zstd-19, same files, same run
Progress goes to stderr. --quick (< 1 minute): one repetition (else 5) and at most 64 MB of files.
pydicom never downloads here: files are listed from the installed pydicom-data package only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pydicom
import zstandard

from mftp.transfer.codec import compress, decompress, describe
from mftp.transfer.codec_layout import parse_layout
from mftp.transfer.codec_pixels import encode_jpegls, spec_from_layout

_LOSSY_REDECODES = ("_UNCI.dcm", "JPEG2000_UNC.dcm")
_QUICK_MAX_BYTES = 64 << 20
_BASELINE_LEVEL = 19
_Job = TypeVar("_Job")
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class BenchFile:
    """One file of the set: where it is, its size and modality."""

    path: str
    size_bytes: int
    modality: str


def log(message: str) -> None:
    """Progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def pydicom_data_paths() -> list[str]:
    """Files of the installed pydicom-data store (no download: get_testdata_files would try)."""
    from pydicom.data.data_manager import external_data_sources

    source = external_data_sources().get("pydicom-data")
    if source is None:
        raise SystemExit("pydicom-data is not installed; pass a DIR")
    return sorted(path for path in source.get_paths("**/*", 0) if os.path.isfile(path))


def _read_header(path: str) -> pydicom.Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, force=True, defer_size=1024)
    except Exception:
        return None


def _is_lossy(path: str, dataset: pydicom.Dataset | None) -> bool:
    if path.endswith(_LOSSY_REDECODES):
        return True
    return dataset is not None and str(dataset.get("LossyImageCompression", "")) == "01"


def _is_default_image(dataset: pydicom.Dataset | None) -> bool:
    """Holds Pixel Data in an uncompressed transfer syntax."""
    if dataset is None or "PixelData" not in dataset:
        return False
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    return syntax is None or not syntax.is_compressed


def select_files(directory: str | None) -> list[BenchFile]:
    """The file set described in the module docstring."""
    if directory:
        paths = sorted(str(path) for path in Path(directory).rglob("*") if path.is_file())
    else:
        paths = pydicom_data_paths()
    chosen = []
    for path in paths:
        dataset = _read_header(path)
        if _is_lossy(path, dataset) or (directory is None and not _is_default_image(dataset)):
            continue
        modality = str(dataset.get("Modality", "")) if dataset is not None else ""
        chosen.append(BenchFile(path, os.path.getsize(path), modality))
    return chosen


# --- worker functions (run in the process pool) ----------------------------------------------


def _compress_path(path: str) -> tuple[bytes, float]:
    """(blob, CPU seconds of compress) with the default settings."""
    data = Path(path).read_bytes()
    started = time.process_time()
    blob = compress(data, name=os.path.basename(path))
    return blob, time.process_time() - started


def _compress_path_unverified(path: str) -> int:
    return len(compress(Path(path).read_bytes(), verify=False))


def _decompress_check(job: tuple[bytes, str]) -> bool:
    blob, expected_sha256 = job
    return hashlib.sha256(decompress(blob)).hexdigest() == expected_sha256


def _baselines(path: str) -> tuple[int, int]:
    """(zstd-19 whole-file size, JPEG-LS split size) of one file."""
    data = Path(path).read_bytes()
    whole = len(zstandard.ZstdCompressor(level=_BASELINE_LEVEL).compress(data))
    spec, _why = spec_from_layout(parse_layout(data), len(data))
    if spec is None:
        return whole, whole
    encoded = encode_jpegls(data, spec)
    if encoded is None:
        return whole, whole
    header = data[: spec.offset] + data[spec.offset + spec.length :]
    header_size = len(zstandard.ZstdCompressor(level=_BASELINE_LEVEL).compress(header))
    return whole, header_size + sum(map(len, encoded[0]))


# --- measurement ---------------------------------------------------------------------------------


def _timed_map(
    pool: ProcessPoolExecutor, function: Callable[[_Job], _Result], jobs: Iterable[_Job]
) -> tuple[list[_Result], float]:
    started = time.perf_counter()
    results = list(pool.map(function, jobs, chunksize=1))
    return results, time.perf_counter() - started


def _ratio(files: list[BenchFile], sizes: list[int], only_ct: bool = False) -> float | None:
    picked = [
        (f.size_bytes, size)
        for f, size in zip(files, sizes, strict=True)
        if not only_ct or f.modality == "CT"
    ]
    compressed = sum(size for _original, size in picked)
    return round(sum(original for original, _size in picked) / compressed, 3) if compressed else None


def run(files: list[BenchFile], workers: int, repetitions: int) -> dict[str, object]:
    """Measure everything on ``files`` (sorted largest first so the pool stays balanced)."""
    files = sorted(files, key=lambda f: -f.size_bytes)
    paths = [f.path for f in files]
    total_mb = sum(f.size_bytes for f in files) / 1e6
    digests = [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_compress_path, paths[-workers:]))  # warm the workers (imports)
        compress_s, decompress_s, unverified_s, cpu_s = [], [], [], []
        blobs: list[bytes] = []
        exact = True
        for repetition in range(repetitions):
            results, seconds = _timed_map(pool, _compress_path, paths)
            blobs = [blob for blob, _cpu in results]
            cpu_s.append(sum(cpu for _blob, cpu in results))
            compress_s.append(seconds)
            unverified_s.append(_timed_map(pool, _compress_path_unverified, paths)[1])
            checks, seconds = _timed_map(pool, _decompress_check, zip(blobs, digests, strict=True))
            decompress_s.append(seconds)
            exact = exact and all(checks)
            log(
                f"repetition {repetition + 1}: compress {total_mb / compress_s[-1]:.0f} MB/s, "
                f"decompress {total_mb / decompress_s[-1]:.0f} MB/s, exact {all(checks)}"
            )
        log("baselines (zstd-19, JPEG-LS) ...")
        baselines, _seconds = _timed_map(pool, _baselines, paths)
    sizes = [len(blob) for blob in blobs]
    methods = Counter(_method_name(blob) for blob in blobs)
    for f, size, blob in zip(files, sizes, blobs, strict=True):
        log(
            f"{os.path.basename(f.path):40s} {f.modality:4s} {f.size_bytes:>10d} "
            f"{f.size_bytes / size:8.2f} {_method_name(blob)}"
        )
    zstd19 = [whole for whole, _split in baselines]
    jpegls = [split for _whole, split in baselines]
    return {
        "ratio_total": _ratio(files, sizes),
        "ratio_ct": _ratio(files, sizes, only_ct=True),
        "compress_mb_per_s": round(total_mb / min(compress_s), 1),
        "byte_exact": exact,
        "zstd19_ratio_total": _ratio(files, zstd19),
        "jpegls_ratio_total": _ratio(files, jpegls),
        "zstd19_ratio_ct": _ratio(files, zstd19, only_ct=True),
        "jpegls_ratio_ct": _ratio(files, jpegls, only_ct=True),
        "decompress_mb_per_s": round(total_mb / min(decompress_s), 1),
        # Per CPU second of the workers: what each core does when it is not shared.
        "compress_mb_per_cpu_s": round(total_mb / min(cpu_s), 1),
        "compress_unverified_mb_per_s": round(total_mb / min(unverified_s), 1),
        "files": len(files),
        "ct_files": sum(f.modality == "CT" for f in files),
        "bytes": sum(f.size_bytes for f in files),
        "workers": workers,
        "repetitions": repetitions,
        "methods": dict(sorted(methods.items())),
    }


def _method_name(blob: bytes) -> str:
    info = describe(blob)
    return f"{info.method}-{info.pixel_codec}" if info.pixel_codec else info.method


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints the figures as the last stdout line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", nargs="?", help="files to measure (default: pydicom-data images)")
    parser.add_argument("--quick", action="store_true", help="one repetition, at most 64 MB of files")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2: both cores)")
    args = parser.parse_args(argv)
    files = select_files(args.directory)
    if args.quick:
        kept, total = [], 0
        for f in files:
            if total + f.size_bytes <= _QUICK_MAX_BYTES:
                kept.append(f)
                total += f.size_bytes
        files = kept
    if not files:
        raise SystemExit("no files to measure")
    log(f"{len(files)} files, {sum(f.size_bytes for f in files) / 1e6:.1f} MB, {args.workers} workers")
    figures = run(files, args.workers, 1 if args.quick else 5)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
