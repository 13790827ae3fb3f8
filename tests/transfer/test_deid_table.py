"""Table E.1-1 as data: well-formed, and row by row the same as dicom-anonymizer's transcriptions.

Our rows come from one transcription of NEMA's table (see deid_table's docstring), dicom-anonymizer
keeps its own for 2023, 2024b and 2026c; comparing them finds a transcription error in either.
"""

from __future__ import annotations

import importlib

import pytest

from mftp.transfer.deid_table import (
    BY_TAG,
    EDITION,
    PROFILE_CODES,
    REPEATING,
    ROWS,
    Action,
    Column,
    lookup,
)

ANONYMIZER_CATEGORIES = {
    "D_TAGS": Action.D,
    "Z_TAGS": Action.Z,
    "X_TAGS": Action.X,
    "U_TAGS": Action.U,
    "Z_D_TAGS": Action.Z_D,
    "X_Z_TAGS": Action.X_Z,
    "X_D_TAGS": Action.X_D,
    "X_Z_D_TAGS": Action.X_Z_D,
    "X_Z_U_STAR_TAGS": Action.X_Z_U,
}

# Edition differences, written out: rows our 2025b table has that 2024b did not (2025 additions:
# Gender Identity, Sex Parameters for Clinical Use, Person Names to Use, Clinical Trial rows, ...).
ADDED_AFTER_2024B = {
    0x00081301, 0x00081302, 0x00081303, 0x00081304, 0x00100011, 0x00100012, 0x00100013,
    0x00100014, 0x00100015, 0x00100016, 0x00100041, 0x00100042, 0x00100043, 0x00100044,
    0x00100045, 0x00100046, 0x00100047, 0x00102161, 0x00102162, 0x0040A034, 0x0040A035,
    0x0040B034, 0x0040B036, 0x0040B03B, 0x0040B03F, 0x300A0054,
}  # fmt: skip
ADDED_IN_2024B = {0x00120022, 0x00120023, 0x00120032, 0x00120041, 0x00120043, 0x00120055,
                  0x00120073, 0x3006002D, 0x3006002E, 0x3006004D, 0x3006004E}  # fmt: skip
CHANGED_IN_2024B = {0x00100020: (Action.Z, Action.Z_D)}  # Patient ID: Z in 2023, Z/D since


def _anonymizer_table(edition: str) -> dict[str, Action]:
    module = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.dicomfields_{edition}")
    table = {}
    for category, action in ANONYMIZER_CATEGORIES.items():
        for entry in getattr(module, category):
            if len(entry) == 2:
                table[f"{entry[0]:04X}{entry[1]:04X}"] = action
            else:  # (group, element, group mask, element mask): 50xxxxxx, 60xx3000, ...
                group, element, group_mask, element_mask = entry
                pattern = f"{group >> 8:02X}xx" if group_mask == 0xFF00 else f"{group:04X}"
                table[pattern + ("xxxx" if element_mask == 0 else f"{element:04X}")] = action
    return table


def _ours(*, later: bool = True) -> dict[str, Action]:
    return {row.pattern: row.basic for row in ROWS if later or not row.later_edition}


def test_rows_are_well_formed() -> None:
    patterns = [row.pattern for row in ROWS]
    assert len(patterns) == len(set(patterns)) > 600
    option_codes = {Action.K, Action.C}
    for row in ROWS:
        assert row.name and row.name == row.name.strip()
        assert set(row.options.values()) <= option_codes, row
        assert Column.BASIC not in row.options
    assert {row.pattern for row in REPEATING} == {"50xxxxxx", "60xx3000", "60xx4000"}
    assert len(BY_TAG) + len(REPEATING) == len(ROWS)


def test_every_action_code_of_the_standard_occurs() -> None:
    assert {row.basic for row in ROWS} == set(Action) - {Action.K, Action.C}
    assert {a for row in ROWS for a in row.options.values()} == {Action.K, Action.C}


def test_the_two_date_options_cover_the_same_attributes() -> None:
    for row in ROWS:
        full = row.options.get(Column.RETAIN_LONG_FULL_DATES)
        modified = row.options.get(Column.RETAIN_LONG_MODIFIED_DATES)
        assert (full, modified) in ((None, None), (Action.K, Action.C)), row


def test_edition_and_method_codes() -> None:
    assert int(EDITION[:4]) >= 2023 and EDITION[4:] in "abcde"
    assert {column: code.value for column, code in PROFILE_CODES.items()} == {
        Column.BASIC: "113100",
        Column.CLEAN_DESCRIPTORS: "113105",
        Column.RETAIN_LONG_FULL_DATES: "113106",
        Column.RETAIN_LONG_MODIFIED_DATES: "113107",
        Column.RETAIN_PATIENT_CHARACTERISTICS: "113108",
        Column.RETAIN_DEVICE_IDENTITY: "113109",
        Column.RETAIN_UIDS: "113110",
    }
    assert all(code.scheme == "DCM" for code in PROFILE_CODES.values())


@pytest.mark.parametrize(
    ("tag", "name"),
    [(0x00100010, "Patient's Name"), (0x50103000, "Curve Data"), (0x60023000, "Overlay Data")],
)
def test_lookup_finds_single_and_repeating_rows(tag: int, name: str) -> None:
    row = lookup(tag)
    assert row is not None and row.name == name


def test_lookup_misses_unlisted_attributes() -> None:
    assert lookup(0x00080060) is None  # Modality
    assert lookup(0x7FE00010) is None  # Pixel Data
    assert lookup(0x60020010) is None  # Overlay Rows: only Overlay Data and Comments are listed


def test_basic_profile_equals_dicom_anonymizer_2026c_transcription() -> None:
    theirs, ours = _anonymizer_table("2026c"), _ours(later=False)
    assert {p: a for p, a in ours.items() if theirs.get(p) != a} == {}
    later = {row.pattern: row.basic for row in ROWS if row.later_edition}
    assert {p: a for p, a in theirs.items() if p not in ours} == later  # our 2026c additions


def test_basic_profile_differs_from_2024b_only_by_the_2025_additions() -> None:
    theirs, ours = _anonymizer_table("2024b"), _ours(later=False)
    assert {p: a for p, a in theirs.items() if ours.get(p) != a} == {}
    assert {int(p, 16) for p in ours if p not in theirs} == ADDED_AFTER_2024B


def test_basic_profile_differs_from_2023_only_by_later_changes() -> None:
    theirs, ours = _anonymizer_table("2023"), _ours(later=False)
    changed = {int(p, 16): (a, ours[p]) for p, a in theirs.items() if ours.get(p) != a}
    assert changed == CHANGED_IN_2024B
    assert {int(p, 16) for p in ours if p not in theirs} == ADDED_AFTER_2024B | ADDED_IN_2024B
