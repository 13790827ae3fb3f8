"""Cross-check with another implementation: dicom-anonymizer 2.1 (Basic Profile, 2026c table).

Both run the Basic Profile with no option on the same real files. Per listed attribute of each
file we compare outcomes: kept (the original value survives), replaced, empty or absent.

* Neither may keep an identifying value (the main check).
* What dicom-anonymizer removes, we remove.
* We remove more only where the table lets each choose: X/D rows, which we remove (X) and
  dicom-anonymizer fills with a dummy (D). That set is written out below per file.
* Legitimate differences among present attributes, not asserted value by value: dicom-anonymizer
  puts dummy dates (00010101) where we leave dates empty, chooses D for Z/D and X/Z/D where we choose
  Z, and empties Patient's Name where we put the keyed pseudonym.
* dicom-anonymizer applies single-attribute rules at the top level only, so original instance
  UIDs nested in sequences that the table does not list (an RT Plan's references, an SR's
  Predecessor Documents Sequence) survive there; ours replaces them. Written out below too.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions
from pydicom.dataset import Dataset

from mftp.transfer.deid_table import Action, lookup
from tests.transfer.deid_helpers import (
    CT,
    J2K,
    MR,
    OVERLAY,
    REAL_FILES,
    RTPLAN,
    SC,
    SR,
    basic,
    original,
    run,
    uid_values,
)

# Attributes each file has with basic action X/D: removed by us, dummy-filled by dicom-anonymizer.
X_D_PRESENT = {
    CT: {0x00080012, 0x00080021, 0x00080031},  # Instance Creation Date, Series Date, Series Time
    MR: {0x00080012},
    RTPLAN: {0x00080012},  # RT Plan Date and Time are Type 2 in an RT Plan: both give dummies
    SR: {0x00080012, 0x0040A032},  # + Observation DateTime
    OVERLAY: {0x00080021, 0x00080031, 0x00181030},  # Series Date/Time, Protocol Name
    SC: set(),
    J2K: {0x00080012, 0x00080021, 0x00080031, 0x00181030},
}
# Original instance UIDs that dicom-anonymizer leaves nested in unlisted sequences (ours: none).
NESTED_LEFT_BY_THEM = {
    RTPLAN: {  # Referenced RT Plan / Structure Set Sequence > Referenced SOP Instance UID
        (0x300C0002, 0x00081155),
        (0x300C0060, 0x00081155),
    },
    SR: {  # Predecessor Documents Sequence > Study, Series and SOP Instance UIDs
        (0x0040A360, 0x0020000D),
        (0x0040A360, 0x00081115, 0x0020000E),
        (0x0040A360, 0x00081115, 0x00081199, 0x00081155),
    },
}


def _theirs(name: str) -> Dataset:
    ds = copy.deepcopy(original(name))
    logging.disable(logging.WARNING)
    try:
        anonymize_dataset(ds, base_rules_gen=lambda: initialize_actions("dicomfields_2026c"))
    finally:
        logging.disable(logging.NOTSET)
    return ds


def _outcome(out: Dataset, elem: Any) -> str:
    if elem.tag not in out:
        return "absent"
    after = out[elem.tag]
    if after.is_empty:
        return "empty"
    if elem.VR == "SQ":
        return "kept" if after.value == elem.value else "replaced"
    return "kept" if str(after.value) == str(elem.value) else "replaced"


def _listed(ds: Dataset) -> Iterator[Any]:
    """Top-level attributes with a value that Table E.1-1 does not keep."""
    for elem in ds:
        row = lookup(int(elem.tag))
        if row is not None and not elem.tag.is_private and not elem.is_empty and row.basic is not Action.K:
            yield elem


@pytest.fixture(scope="module", params=REAL_FILES)
def outcomes(request: pytest.FixtureRequest) -> tuple[str, dict[int, str], dict[int, str]]:
    name = request.param
    before, ours, theirs = original(name), run(name, basic()), _theirs(name)
    listed = list(_listed(before))
    assert len(listed) > 5
    return (
        name,
        {int(e.tag): _outcome(ours, e) for e in listed},
        {int(e.tag): _outcome(theirs, e) for e in listed},
    )


def test_neither_keeps_an_identifying_value(outcomes: tuple[str, dict[int, str], dict[int, str]]) -> None:
    _, ours, theirs = outcomes
    assert {t for t, o in ours.items() if o == "kept"} == set()
    assert {t for t, o in theirs.items() if o == "kept"} == set()


def test_we_remove_what_they_remove_and_more_only_for_x_d(
    outcomes: tuple[str, dict[int, str], dict[int, str]],
) -> None:
    name, ours, theirs = outcomes
    ours_absent = {t for t, o in ours.items() if o == "absent"}
    theirs_absent = {t for t, o in theirs.items() if o == "absent"}
    assert theirs_absent <= ours_absent
    assert ours_absent - theirs_absent == X_D_PRESENT[name]


def test_both_replace_every_instance_uid(outcomes: tuple[str, dict[int, str], dict[int, str]]) -> None:
    name, ours, theirs = outcomes
    uid_rows = {t for t in ours if lookup(t).basic is Action.U}  # type: ignore[union-attr]
    assert 0x00080018 in uid_rows, name
    assert {ours[t] for t in uid_rows} == {theirs[t] for t in uid_rows} == {"replaced"}


@pytest.mark.parametrize("name", REAL_FILES)
def test_nested_instance_uids_differences_are_the_listed_ones(name: str) -> None:
    before = original(name)
    instance = {p: set(v) for p, v in uid_values(before).items() if lookup(p[-1]) and len(p) > 1}
    instance = {p: v for p, v in instance.items() if lookup(p[-1]).basic is Action.U}  # type: ignore[union-attr]
    ours, theirs = uid_values(run(name, basic())), uid_values(_theirs(name))
    assert {p for p, v in instance.items() if v & set(ours.get(p, ()))} == set()
    left = {p for p, v in instance.items() if v & set(theirs.get(p, ()))}
    assert left == NESTED_LEFT_BY_THEM.get(name, set())


def test_neither_leaves_private_attributes() -> None:
    before, ours, theirs = original(CT), run(CT, basic()), _theirs(CT)
    assert any(e.tag.is_private for e in before)
    assert not any(e.tag.is_private for e in ours) and not any(e.tag.is_private for e in theirs)
