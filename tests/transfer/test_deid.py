"""De-identification actions on real files: every action class of Table E.1-1, every option.

The table-driven test resolves Table E.1-1 independently of the engine (deid_helpers) and checks
each listed attribute of each real file; the tests after it pin down what each action class does,
with synthetic attributes where the real files lack one.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mftp.transfer.deid import Mode, Policy, deidentify, deidentify_bytes, derive_offset_days, derive_uid
from mftp.transfer.deid_actions import DUMMY_TEXT, Dates
from mftp.transfer.deid_table import EDITION, Action, Column, lookup
from tests.transfer.deid_helpers import (
    CT,
    J2K,
    MR,
    NESTED_PRIVATE,
    OVERLAY,
    REAL_FILES,
    RTPLAN,
    SC,
    SECRET,
    SR,
    basic,
    expected_action,
    original,
    policy,
    read,
    run,
    sample,
    table_rows_in,
    walk,
    with_changes,
)

EMPTYING = {Action.Z, Action.Z_D, Action.X_Z, Action.X_Z_D}
REMOVING = {Action.X, Action.X_D}
SET_BY_ENGINE = {0x00100010, 0x00100020}  # Patient's Name and ID become the pseudonym
# Top-level attributes of the real files that their IOD makes Type 1 or 2 and that a compound
# code hits (PS3.3: SR Document General Module, RT General Plan Module); all others are Type 3.
REQUIRED = {
    (SR, 0x00080023): 1,  # Content Date
    (SR, 0x00080033): 1,  # Content Time
    (RTPLAN, 0x300A0006): 2,  # RT Plan Date
    (RTPLAN, 0x300A0007): 2,  # RT Plan Time
}
CONDITIONAL = {0x0008002A}  # Acquisition DateTime: Type 1C/2C where it appears


def _concrete(action: Action, before: Any, required: int, tag: int) -> Action | None:
    """A compound code resolved as issue 14 asks: the weakest action the IOD allows.

    None means "present and empty, as it was" (an attribute already empty is left alone).
    """
    if action not in (Action.Z_D, Action.X_Z, Action.X_D, Action.X_Z_D):
        return action
    if before.is_empty and action is not Action.Z_D:
        return None
    if required == 1 and action is not Action.X_Z:
        return Action.D
    if action is Action.X_D:
        return Action.D if required == 2 else Action.X
    if action is Action.Z_D or required == 2:
        return Action.Z
    return Action.X if before.VR == "SQ" or tag in CONDITIONAL else Action.Z


POLICIES = {
    "basic": basic(),
    "pseudonymised": policy(Mode.PSEUDONYMISED),
    "deidentified-full-dates-device-uids": policy(
        Mode.DEIDENTIFIED, dates=Dates.FULL, retain_device_identity=True, retain_uids=True
    ),
    "anonymous": policy(Mode.ANONYMOUS),
}


def _values(elem: Any) -> list[str]:
    if elem.is_empty:
        return []
    return [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])]


def _shift(value: str, days: int) -> str:
    day = datetime.datetime.strptime(value[:8], "%Y%m%d").date() + datetime.timedelta(days=days)
    return day.strftime("%Y%m%d") + value[8:]


def _cleaned(before: Any, after: Any, pol: Policy, offset: int) -> bool:
    """Whether ``after`` is ``before`` kept as cleaned: same items, shifted dates or same value."""
    if after is None:
        return False
    if before.VR == "SQ":
        return len(after.value) == len(before.value)
    if before.VR in ("DA", "DT") and pol.dates is Dates.SHIFTED:
        want = [_shift(v, offset) for v in _values(before)]
        return [v[: len(w)] for v, w in zip(_values(after), want, strict=True)] == want
    return _values(after) == _values(before)


def _check_row(
    tag: int, action: Action, before: Any, out: Dataset, pol: Policy, offset: int, required: int = 3
) -> str | None:
    """None when the outcome of ``tag`` matches ``action``, else a description of the mismatch."""
    after = out.get(tag)
    if action is Action.C:  # cleaned and kept, or else the Basic Profile action
        if _cleaned(before, after, pol, offset):
            return None
        basic_action = lookup(tag).basic  # type: ignore[union-attr]
        return _check_row(tag, basic_action, before, out, pol, offset, required)
    concrete = _concrete(action, before, required, tag)
    if concrete is None:
        return None if after is not None and after.is_empty else "not kept empty"
    action = concrete
    if action in REMOVING:
        return None if after is None else "present"
    if after is None:
        return "absent"
    if action in EMPTYING:
        return None if after.is_empty else "not empty"
    if before.VR == "SQ":  # D, K and X/Z/U* keep a sequence's items (processed inside)
        return None if len(after.value) == len(before.value) else "items lost"
    if action is Action.K:
        return None if _values(after) == _values(before) else "changed"
    if action is Action.U:
        replaced = all(a != b for a, b in zip(_values(after), _values(before), strict=True))
        keyed = pol.mode is Mode.ANONYMOUS or _values(after) == [
            derive_uid(SECRET, v) for v in _values(before)
        ]
        return None if replaced and keyed else "uid not replaced"
    return None if _values(after) and _values(after) != _values(before) else "no dummy"  # D


@pytest.mark.parametrize("pol_name", sorted(POLICIES))
@pytest.mark.parametrize("name", REAL_FILES)
def test_every_listed_attribute_of_real_files_follows_the_table(name: str, pol_name: str) -> None:
    pol = POLICIES[pol_name]
    before = original(name)
    out = run(name, pol)
    offset = derive_offset_days(SECRET, str(before.get("PatientID", "")) or str(before.StudyInstanceUID))
    mismatches = {}
    for tag, row in table_rows_in(before):
        if tag in SET_BY_ENGINE or (tag >> 16) % 2 == 1:
            continue
        action = expected_action(row, pol.columns)
        problem = _check_row(tag, action, before[tag], out, pol, offset, REQUIRED.get((name, tag), 3))
        if problem:
            mismatches[f"{row.name} {action.value}"] = problem
    assert not mismatches
    assert len(table_rows_in(before)) > 10  # the file does exercise the table


def test_the_real_files_cover_every_action_class_of_the_basic_profile() -> None:
    seen = {row.basic for name in REAL_FILES for _, row in table_rows_in(original(name))}
    assert seen >= {Action.D, Action.Z, Action.X, Action.U} | EMPTYING | REMOVING | {Action.X_Z_U}


def test_x_removes_and_private_attributes_go_at_every_depth() -> None:
    before, out = original(CT), run(CT, basic())
    assert "OtherPatientIDsSequence" in before and "OtherPatientIDsSequence" not in out
    assert "ImageComments" in before and "ImageComments" not in out
    assert any(e.tag.is_private for e in before) and not any(e.tag.is_private for _, e in walk(out))
    nested = original(NESTED_PRIVATE)
    assert any(e.tag.is_private for _, e in walk(nested))
    assert not any(e.tag.is_private for _, e in walk(deidentify(nested, basic(), SECRET)))


def test_z_empties_and_keeps_the_attribute_including_sequences() -> None:
    out = run(CT, basic())
    for keyword in ("AccessionNumber", "StudyDate", "ReferringPhysicianName", "StudyID", "PatientBirthDate"):
        assert keyword in out and out[keyword].is_empty, keyword
    sr = run(SR, basic())
    for item in sr.VerifyingObserverSequence:  # Verifying Observer Identification Code Sequence: Z
        assert len(item.VerifyingObserverIdentificationCodeSequence) == 0


def test_compound_codes_resolve_without_inventing_values() -> None:
    out = run(CT, basic())
    assert out["AcquisitionDate"].is_empty  # X/Z -> Z
    assert out["InstitutionName"].is_empty and out["StationName"].is_empty  # X/Z/D -> Z
    assert out["ContentDate"].is_empty and out["ContrastBolusAgent"].is_empty  # Z/D -> Z
    assert "SeriesDate" not in out and "InstanceCreationDate" not in out  # X/D -> X
    assert "ProtocolName" not in run(J2K, basic())  # X/D -> X


def test_k_keeps_image_geometry_acquisition_and_pixels() -> None:
    before, out = original(CT), run(CT, basic())
    for keyword in ("Modality", "Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient",
                    "PixelSpacing", "SliceThickness", "KVP", "RescaleSlope", "RescaleIntercept",
                    "SOPClassUID"):  # fmt: skip
        assert out[keyword].value == before[keyword].value, keyword
    assert out.PixelData == before.PixelData
    assert (out.pixel_array == before.pixel_array).all()


def test_d_replaces_with_dummies_of_the_vr() -> None:
    assert run(RTPLAN, basic()).RTPlanLabel == DUMMY_TEXT
    out = run(SR, basic())
    assert out.VerifyingObserverSequence[0].VerifyingObserverName == DUMMY_TEXT
    assert out.VerifyingObserverSequence[0].VerifyingOrganization == DUMMY_TEXT
    assert out.VerifyingObserverSequence[0].VerificationDateTime == "19000101000000"


def test_d_on_a_sequence_keeps_structure_and_codes_but_not_text() -> None:
    before, out = original(SR), run(SR, basic())
    assert len(out.ContentSequence) == len(before.ContentSequence)
    texts = [e.value for _, e in walk(out) if e.keyword == "TextValue"]
    assert texts and set(texts) == {DUMMY_TEXT}
    codes_before = sorted(
        str(e.value) for item in before.ContentSequence for _, e in walk(item) if e.keyword == "CodeValue"
    )
    codes_after = sorted(
        str(e.value) for item in out.ContentSequence for _, e in walk(item) if e.keyword == "CodeValue"
    )
    assert codes_after == codes_before
    date_times = [str(e.value) for _, e in walk(out) if e.keyword == "DateTime"]
    assert date_times and set(date_times) == {"19000101000000"}


def test_d_on_a_uid_maps_it_like_u() -> None:
    ds = with_changes(CT, AnnotationGroupUID="1.2.3.4.5")  # (006A,0003) is D in the Basic Profile
    assert lookup(0x006A0003).basic is Action.D  # type: ignore[union-attr]
    assert run(ds, basic()).AnnotationGroupUID == derive_uid(SECRET, "1.2.3.4.5")


def test_u_replaces_multi_valued_uids_each() -> None:
    ds = with_changes(CT, FailedSOPInstanceUIDList=["1.2.3", "1.2.4"])
    assert run(ds, basic()).FailedSOPInstanceUIDList == [
        derive_uid(SECRET, "1.2.3"),
        derive_uid(SECRET, "1.2.4"),
    ]


def test_x_z_u_keeps_reference_sequences_with_their_uids_replaced() -> None:
    for name, keyword in ((SC, "SourceImageSequence"), (OVERLAY, "ReferencedImageSequence")):
        before, out = original(name), run(name, basic())
        assert len(out[keyword].value) == len(before[keyword].value) > 0
        for old, new in zip(before[keyword].value, out[keyword].value, strict=True):
            for elem in old:  # instance UIDs (U rows) replaced, class UIDs (not in the table) kept
                row = lookup(int(elem.tag))
                mapped = derive_uid(SECRET, elem.value) if row and row.basic is Action.U else elem.value
                assert new[elem.tag].value == mapped, elem.keyword


def test_overlays_curves_and_group_lengths_go_as_whole_groups() -> None:
    assert any(e.tag.group >> 8 == 0x60 for e in original(OVERLAY))
    assert not any(e.tag.group >> 8 == 0x60 for e in run(OVERLAY, basic()))
    ds = original(CT)
    ds.add_new(0x50000005, "US", 2)  # Curve Dimensions
    ds.add_new(0x50003000, "OW", b"\0\1\2\3")  # Curve Data
    ds.add_new(0x00180000, "UL", 1234)  # a group length
    out = run(ds, basic())
    assert 0x50000005 not in out and 0x50003000 not in out and 0x00180000 not in out
    assert lookup(0x50003000).basic is Action.X and lookup(0x60023000).basic is Action.X  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- options


def test_retain_full_dates_keeps_dates_and_marks_unmodified() -> None:
    before, out = original(CT), run(CT, policy(Mode.DEIDENTIFIED, dates=Dates.FULL))
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime"):
        assert out[keyword].value == before[keyword].value, keyword
    assert out.TimezoneOffsetFromUTC == before.TimezoneOffsetFromUTC  # full=K
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_modified_dates_shift_dates_keep_times_and_drop_the_timezone() -> None:
    before, out = original(CT), run(CT, policy(Mode.DEIDENTIFIED), patient_offset_days=-1000)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        assert out[keyword].value == _shift(before[keyword].value, -1000), keyword
    assert out.StudyTime == before.StudyTime and out.AcquisitionTime == before.AcquisitionTime
    assert "TimezoneOffsetFromUTC" not in out  # mod=C on a non-date falls back to X
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_removed_dates_empty_or_remove_them() -> None:
    out = run(CT, policy(Mode.DEIDENTIFIED, dates=Dates.REMOVED))
    assert out.StudyDate == "" and "SeriesDate" not in out and out.StudyTime == ""
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_date_times_shift_their_date_part() -> None:
    ds = with_changes(CT, AcquisitionDateTime="20040119143015.5+0100")
    out = run(ds, policy(Mode.DEIDENTIFIED), patient_offset_days=-31)
    assert out.AcquisitionDateTime == "20031219143015.5"
    partial = run(with_changes(CT, AcquisitionDateTime="2004"), policy(Mode.DEIDENTIFIED))
    assert "AcquisitionDateTime" not in partial  # cannot shift by days: X/Z/D on a Type 1C/2C -> X


@pytest.mark.parametrize("retain", [False, True])
def test_retain_patient_characteristics(retain: bool) -> None:
    before = original(CT)
    out = run(CT, policy(Mode.DEIDENTIFIED, retain_patient_characteristics=retain))
    if retain:
        assert (out.PatientSex, out.PatientAge, out.PatientWeight) == (
            before.PatientSex,
            before.PatientAge,
            before.PatientWeight,
        )
    else:
        assert out.PatientSex == "" and "PatientAge" not in out and "PatientWeight" not in out


def test_retained_age_is_capped_at_90() -> None:
    out = run(with_changes(CT, PatientAge="095Y"), policy(Mode.DEIDENTIFIED))
    assert out.PatientAge == "090Y"
    assert run(with_changes(CT, PatientAge="089Y"), policy(Mode.DEIDENTIFIED)).PatientAge == "089Y"


@pytest.mark.parametrize("retain", [False, True])
def test_retain_device_identity(retain: bool) -> None:
    before = original(MR)
    out = run(MR, policy(Mode.DEIDENTIFIED, retain_device_identity=retain))
    for keyword in ("StationName", "DeviceSerialNumber"):
        assert (out[keyword].value == before[keyword].value) is retain, keyword
    assert out.InstitutionName == ""  # Retain Institution Identity is not offered


def test_retain_uids_keeps_every_uid() -> None:
    before, out = original(CT), run(CT, policy(Mode.DEIDENTIFIED, retain_uids=True))
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert out[keyword].value == before[keyword].value
    assert out.file_meta.MediaStorageSOPInstanceUID == before.SOPInstanceUID


def test_clean_descriptors_keeps_imaging_vocabulary_only() -> None:
    before = original(OVERLAY)
    kept = run(OVERLAY, policy(Mode.DEIDENTIFIED))
    for keyword in ("StudyDescription", "SeriesDescription", "ProtocolName", "DerivationDescription"):
        assert kept[keyword].value == before[keyword].value, keyword
    assert "ContrastBolusAgent" in kept and kept.ContrastBolusAgent == before.ContrastBolusAgent
    assert "StudyDescription" not in run(OVERLAY, policy(Mode.DEIDENTIFIED, clean_descriptors=False))


@pytest.mark.filterwarnings("ignore::UserWarning")  # the 70 characters are too long for LO
@pytest.mark.parametrize(
    "text",
    ["BRAIN JOHN SMITH", "CT HEAD 1234567", "MRN: 55 HEAD", "Dr. House chest", "x" * 70],
)
def test_clean_descriptors_drops_what_it_cannot_vouch_for(text: str) -> None:
    out = run(
        with_changes(CT, SeriesDescription=text, StudyDescription="CT " + text), policy(Mode.DEIDENTIFIED)
    )
    assert "SeriesDescription" not in out and "StudyDescription" not in out


def test_clean_descriptors_drops_the_patients_own_identifiers() -> None:
    ds = with_changes(
        CT, PatientName="Pelvis^Anna", SeriesDescription="PELVIS T2", StudyDescription="HEAD 1CT1"
    )
    out = run(ds, policy(Mode.DEIDENTIFIED))
    assert "SeriesDescription" not in out  # the family name is a word of the vocabulary
    assert "StudyDescription" not in out  # the Patient ID


# ----------------------------------------------------------------------------- marking, modes, input


@pytest.mark.parametrize(
    ("pol", "codes"),
    [
        (basic(), {"113100"}),
        (policy(Mode.PSEUDONYMISED), {"113100", "113107", "113108", "113105"}),
        (
            policy(Mode.DEIDENTIFIED, dates=Dates.FULL, retain_device_identity=True, retain_uids=True),
            {"113100", "113106", "113108", "113105", "113109", "113110"},
        ),
        (policy(Mode.ANONYMOUS), {"113100"}),
    ],
)
def test_marks_identity_removed_edition_and_method_codes(pol: Policy, codes: set[str]) -> None:
    out = run(CT, pol)
    assert out.PatientIdentityRemoved == "YES"
    assert any(EDITION in str(m) for m in out.DeidentificationMethod)
    assert {item.CodeValue for item in out.DeidentificationMethodCodeSequence} == codes
    assert {item.CodingSchemeDesignator for item in out.DeidentificationMethodCodeSequence} == {"DCM"}


def test_file_meta_is_rebuilt_around_the_new_instance_uid() -> None:
    before, out = original(CT), run(CT, basic())
    assert (
        out.file_meta.MediaStorageSOPInstanceUID
        == out.SOPInstanceUID
        == derive_uid(SECRET, before.SOPInstanceUID)
    )
    assert out.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_identified_mode_returns_the_input_bytes() -> None:
    data = sample(CT)
    assert deidentify_bytes(data, Policy(Mode.IDENTIFIED), SECRET, name=CT) is data
    garbage = b"not dicom at all"
    assert deidentify_bytes(garbage, Policy(Mode.IDENTIFIED), SECRET, name="x") is garbage
    ds = original(CT)
    copy = deidentify(ds, Policy(Mode.IDENTIFIED), SECRET)
    assert copy is not ds and copy == ds


def test_deidentify_leaves_its_input_alone() -> None:
    ds = original(CT)
    before = ds.PatientName, ds.SOPInstanceUID, len(ds)
    out = deidentify(ds, policy(Mode.PSEUDONYMISED), SECRET)
    assert (ds.PatientName, ds.SOPInstanceUID, len(ds)) == before
    assert out.SOPInstanceUID != ds.SOPInstanceUID


def test_deidentify_works_on_a_dataset_without_file_meta() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^John"
    ds.PatientID = "12345"
    ds.StudyInstanceUID = "1.2.3"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3.9"
    out = deidentify(ds, policy(Mode.PSEUDONYMISED), SECRET)
    assert out.PatientName != "Doe^John" and out.SOPInstanceUID == derive_uid(SECRET, "1.2.3.4")
    assert "ReferencedStudySequence" not in out  # X/Z on a Type 3 sequence -> X (empty would be invalid)


def test_policy_refuses_unsafe_combinations() -> None:
    from mftp.transfer.errors import TransferUsageError

    with pytest.raises(TransferUsageError):
        Policy(Mode.ANONYMOUS)  # no salt
    with pytest.raises(TransferUsageError):
        policy(Mode.ANONYMOUS, dates=Dates.SHIFTED)
    with pytest.raises(TransferUsageError):
        policy(Mode.ANONYMOUS, retain_uids=True)
    with pytest.raises(TransferUsageError):
        Policy(Mode.PSEUDONYMISED, transfer_salt=b"x" * 16)
    assert Column.RETAIN_UIDS not in policy(Mode.PSEUDONYMISED).columns
    assert read(deidentify_bytes(sample(CT), basic(), SECRET, name=CT)).PatientIdentityRemoved == "YES"


def test_beyond_the_table_unknown_attributes_go_and_unlisted_names_are_emptied() -> None:
    ds = original(CT)
    ds.add_new(0x0010009F, "PN", "Doe^John")  # public group, unknown to the dictionary
    ds.add_new(0x00400006, "PN", "Doe^Jane")  # Scheduled Performing Physician's Name: listed, X
    ds.add_new(0x0040A0B0, "US", [1, 2])  # Referenced Waveform Channels: not listed, kept
    ds.add_new(0x00142006, "PN", "Doe^Jack")  # Evaluator Name: a name the table does not list
    out = run(ds, basic())
    assert 0x0010009F not in out and 0x00400006 not in out and out[0x0040A0B0].value == [1, 2]
    assert out[0x00142006].is_empty
    assert lookup(0x00081050) is not None  # Performing Physician's Name is listed
    item = Dataset()
    item.add_new(0x00081050, "PN", "Doe^Jim")  # listed (X), inside an unlisted sequence
    item.add_new(0x0040A123, "PN", "Doe^Joe")  # listed (D)
    ds = original(CT)
    ds.AnatomicRegionSequence = Sequence([item])
    inner = run(ds, basic()).AnatomicRegionSequence[0]
    assert 0x00081050 not in inner and inner[0x0040A123].value == DUMMY_TEXT
