"""Helpers shared by the de-identification tests: real sample files, policies, dataset probes."""

from __future__ import annotations

import copy
import dataclasses
import io
import warnings
from collections.abc import Iterator
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from mftp.transfer.deid import Mode, Policy, deidentify_bytes
from mftp.transfer.deid_actions import Dates
from mftp.transfer.deid_table import Action, Column, Row, lookup
from tests.samples import sample

SECRET = b"mftp-test-institution-secret-0001"
OTHER_SECRET = b"mftp-test-institution-secret-0002"
SALT = b"transfer-salt-000000000000000001"
OTHER_SALT = b"transfer-salt-000000000000000002"

# Real files from pydicom's test data (installed with pydicom) and what they contain.
CT = "CT_small.dcm"  # CT with private tags, dates, UIDs, patient characteristics
MR = "MR_small.dcm"  # MR with Device Serial Number, Operators' Name
RTPLAN = "rtplan.dcm"  # RT Plan: D (RT Plan Label), nested Referenced SOP Instance UIDs
SR = "test-SR.dcm"  # SR: D sequences (Content Sequence, Verifying Observer Sequence), Z sequence
OVERLAY = "examples_overlay.dcm"  # MR with overlays (60xx), descriptors, Referenced Image Sequence
SC = "SC_rgb_small_odd.dcm"  # secondary capture with Source Image Sequence (X/Z/U*)
J2K = "JPEG2000.dcm"  # NM with Protocol Name (X/D), Other Patient IDs, JPEG 2000 pixels
NESTED_PRIVATE = "nested_priv_SQ.dcm"  # private sequences nested in private sequences
REAL_FILES = (CT, MR, RTPLAN, SR, OVERLAY, SC, J2K)


def read(data: bytes) -> Dataset:
    """Parse DICOM bytes, quietly (sample files carry values pydicom warns about)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.walk(lambda _ds, _elem: None)  # convert every element now, inside the filter
    return ds


def original(name: str) -> Dataset:
    """A fresh parsed copy of a sample file."""
    return read(sample(name))


def to_bytes(ds: Dataset) -> bytes:
    """Serialise a dataset as a Part 10 file."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def basic() -> Policy:
    """The Basic Profile with no option, keyed UIDs (DEIDENTIFIED with every option off)."""
    return Policy(Mode.DEIDENTIFIED)


def policy(mode: Mode, **changes: Any) -> Policy:
    """The MFTP defaults for ``mode`` with ``changes`` applied."""
    salt = SALT if mode is Mode.ANONYMOUS else None
    return dataclasses.replace(Policy.for_mode(mode, transfer_salt=salt), **changes)


def run(name_or_ds: str | Dataset, pol: Policy, secret: bytes = SECRET, **kwargs: Any) -> Dataset:
    """De-identify a sample file (by name) or a dataset (through bytes) and parse the result."""
    if isinstance(name_or_ds, str):
        data, name = sample(name_or_ds), name_or_ds
    else:
        data, name = to_bytes(name_or_ds), "synthetic.dcm"
    return read(deidentify_bytes(data, pol, secret, name=name, **kwargs))


def with_changes(name: str, **values: Any) -> Dataset:
    """A sample file with some attributes set by keyword."""
    ds = copy.deepcopy(original(name))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def walk(ds: Dataset, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Any]]:
    """Every (tag path, element) at any depth."""
    for elem in ds:
        here = (*path, int(elem.tag))
        yield here, elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item, here)


def uid_values(ds: Dataset) -> dict[tuple[int, ...], list[str]]:
    """Every UI value at any depth, by tag path (a path may repeat in several items)."""
    found: dict[tuple[int, ...], list[str]] = {}
    for path, elem in walk(ds):
        if elem.VR == "UI" and not elem.is_empty:
            values = elem.value if elem.VM > 1 else [elem.value]
            found.setdefault(path, []).extend(str(v) for v in values)
    return found


def expected_action(row: Row, columns: frozenset[Column]) -> Action:
    """Table E.1-1 resolved for the enabled option columns, written independently of the engine:
    an option's K beats its C, and any option entry beats the Basic Profile."""
    entries = [row.options[c] for c in Column if c in columns and c in row.options]
    if Action.K in entries:
        return Action.K
    if Action.C in entries:
        return Action.C
    return entries[0] if entries else row.basic


def table_rows_in(ds: Dataset) -> list[tuple[int, Row]]:
    """(tag, row) for every top-level attribute of ``ds`` that Table E.1-1 lists."""
    rows = []
    for elem in ds:
        row = lookup(int(elem.tag))
        if row is not None:
            rows.append((int(elem.tag), row))
    return rows


DATES_OF = {Dates.FULL: Column.RETAIN_LONG_FULL_DATES, Dates.SHIFTED: Column.RETAIN_LONG_MODIFIED_DATES}
