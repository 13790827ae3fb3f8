"""Keyed UIDs, pseudonyms and date shifts: stable where linkage is wanted, unlinkable elsewhere."""

from __future__ import annotations

import copy
import datetime
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mftp.transfer.deid import Mode, deidentify, deidentify_study, derive_offset_days, derive_uid
from mftp.transfer.deid_actions import Dates
from mftp.transfer.deid_table import Action, lookup
from tests.transfer.deid_helpers import (
    CT,
    MR,
    OTHER_SALT,
    OTHER_SECRET,
    REAL_FILES,
    RTPLAN,
    SECRET,
    basic,
    original,
    policy,
    read,
    run,
    to_bytes,
    uid_values,
    with_changes,
)

UID_FORMAT = re.compile(r"2\.25\.(0|[1-9][0-9]*)")


def _replaced(tag: int) -> bool:
    """Whether Table E.1-1 has the Basic Profile replace this UID attribute (U, or D on a UID)."""
    row = lookup(tag)
    return row is not None and row.basic in (Action.U, Action.D)


def _instance_uids(name: str, pol_mode: Mode = Mode.DEIDENTIFIED, secret: bytes = SECRET) -> dict:
    out = run(name, policy(pol_mode), secret)
    return {k: v for k, v in uid_values(out).items() if k[0] != 0x00080016}


def test_same_secret_gives_the_same_uids_a_different_secret_different_ones() -> None:
    for name in REAL_FILES:
        first, again = _instance_uids(name), _instance_uids(name)
        other = _instance_uids(name, secret=OTHER_SECRET)
        assert first == again
        changed = {path for path in first if first[path] != other.get(path)}
        assert 0x0020000D in {p[0] for p in changed}, name  # Study Instance UID


def test_every_original_instance_uid_is_gone_and_every_new_uid_is_valid() -> None:
    for name in REAL_FILES:
        listed = {path[-1] for path in uid_values(original(name)) if _replaced(path[-1])}
        old = {v for path, vs in uid_values(original(name)).items() if path[-1] in listed for v in vs}
        out = run(name, basic())
        new = {v for vs in uid_values(out).values() for v in vs}
        assert old and not old & new, name  # nested references included (e.g. RT Plan's structure set)
        for path, uids in uid_values(out).items():
            for uid in uids if _replaced(path[-1]) else ():
                assert UID_FORMAT.fullmatch(uid) and len(uid) <= 64, uid


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789.", min_size=1, max_size=64))
def test_derived_uids_are_valid_uuid_sized_and_distinct(uid: str) -> None:
    new = derive_uid(SECRET, uid)
    assert UID_FORMAT.fullmatch(new) and len(new) <= 44
    assert int(new[5:]) < 2**128
    assert new != derive_uid(SECRET, uid + "1") and new != derive_uid(OTHER_SECRET, uid)


def _referencing(target: Dataset) -> Dataset:
    """A second instance of the same study whose Referenced Image Sequence points at ``target``."""
    ds = copy.deepcopy(original(MR))
    ds.PatientID, ds.StudyInstanceUID = target.PatientID, target.StudyInstanceUID
    ds.FrameOfReferenceUID = target.FrameOfReferenceUID
    item = Dataset()
    item.ReferencedSOPClassUID = target.SOPClassUID
    item.ReferencedSOPInstanceUID = target.SOPInstanceUID
    ds.ReferencedImageSequence = Sequence([item])
    return ds


def test_references_inside_a_study_point_at_the_new_uids() -> None:
    target = original(CT)
    study = [("ct.dcm", to_bytes(target)), ("mr.dcm", to_bytes(_referencing(target)))]
    for pol in (basic(), policy(Mode.PSEUDONYMISED), policy(Mode.ANONYMOUS)):
        ct, mr = (read(r.data) for r in deidentify_study(study, pol, SECRET) if r.data)
        assert mr.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
        assert mr.StudyInstanceUID == ct.StudyInstanceUID != target.StudyInstanceUID
        assert mr.FrameOfReferenceUID == ct.FrameOfReferenceUID
        assert mr.PatientID == ct.PatientID


def test_anonymous_sends_do_not_link_but_files_of_one_send_do() -> None:
    first = run(CT, policy(Mode.ANONYMOUS))
    again = run(CT, policy(Mode.ANONYMOUS))
    other = run(CT, policy(Mode.ANONYMOUS, transfer_salt=OTHER_SALT))
    assert first.SOPInstanceUID == again.SOPInstanceUID  # one transfer: consistent
    assert first.SOPInstanceUID != other.SOPInstanceUID and first.PatientID != other.PatientID
    assert first.SOPInstanceUID != derive_uid(SECRET, original(CT).SOPInstanceUID)


def test_pseudonymised_links_a_patients_studies_deidentified_does_not() -> None:
    study_a = with_changes(CT, StudyInstanceUID="1.2.3.100")
    study_b = with_changes(CT, StudyInstanceUID="1.2.3.200")
    other_patient = with_changes(CT, PatientID="SOMEONE-ELSE", StudyInstanceUID="1.2.3.300")
    pseud = [run(ds, policy(Mode.PSEUDONYMISED)) for ds in (study_a, study_b, other_patient)]
    assert pseud[0].PatientID == pseud[1].PatientID != pseud[2].PatientID
    assert pseud[0].PatientID != original(CT).PatientID and pseud[0].PatientName == pseud[0].PatientID
    deid = [run(ds, policy(Mode.DEIDENTIFIED)) for ds in (study_a, study_b)]
    assert deid[0].PatientID != deid[1].PatientID
    assert deid[0].PatientID not in (pseud[0].PatientID, "")


def _days(a: str, b: str) -> int:
    parse = datetime.date.fromisoformat
    return (parse(f"{b[:4]}-{b[4:6]}-{b[6:8]}") - parse(f"{a[:4]}-{a[4:6]}-{a[6:8]}")).days


def test_dates_shift_by_one_offset_per_patient_and_intervals_survive() -> None:
    first = with_changes(CT, StudyDate="20040119", StudyInstanceUID="1.2.3.1")
    later = with_changes(CT, StudyDate="20050301", StudyInstanceUID="1.2.3.2")
    other = with_changes(CT, PatientID="ANOTHER", StudyDate="20040119")
    out_first, out_later, out_other = (run(ds, policy(Mode.PSEUDONYMISED)) for ds in (first, later, other))
    offset = derive_offset_days(SECRET, first.PatientID)
    assert -3652 <= offset <= -365
    assert _days(first.StudyDate, out_first.StudyDate) == offset
    assert _days(out_first.StudyDate, out_later.StudyDate) == _days("20040119", "20050301")
    assert _days(out_first.StudyDate, out_first.ContentDate) == _days(first.StudyDate, first.ContentDate)
    assert out_other.StudyDate != out_first.StudyDate  # another patient, another offset
    assert derive_offset_days(OTHER_SECRET, first.PatientID) != offset


def test_deidentified_shifts_each_study_by_its_own_offset() -> None:
    """A shared per-patient shift would link a patient's studies, which DEIDENTIFIED promises not to."""
    first = with_changes(CT, StudyDate="20040119", StudyInstanceUID="1.2.3.1")
    later = with_changes(CT, StudyDate="20040119", StudyInstanceUID="1.2.3.2")  # same patient, same day
    out_first, out_later = (run(ds, policy(Mode.DEIDENTIFIED)) for ds in (first, later))
    assert out_first.StudyDate != out_later.StudyDate
    assert _days(first.StudyDate, out_first.StudyDate) == derive_offset_days(SECRET, "1.2.3.1")
    # Within one study every date keeps its interval, and the shift is stable across sends.
    assert _days(out_first.StudyDate, out_first.ContentDate) == _days(first.StudyDate, first.ContentDate)
    assert run(first, policy(Mode.DEIDENTIFIED)).StudyDate == out_first.StudyDate
    # PSEUDONYMISED keeps one offset per patient: the same day stays the same day.
    pseud = [run(ds, policy(Mode.PSEUDONYMISED)) for ds in (first, later)]
    assert pseud[0].StudyDate == pseud[1].StudyDate


def test_a_given_offset_overrides_the_derived_one() -> None:
    out = run(CT, policy(Mode.DEIDENTIFIED), patient_offset_days=-7)
    assert _days(original(CT).StudyDate, out.StudyDate) == -7


@settings(max_examples=40, deadline=None)
@given(
    st.dates(datetime.date(1900, 1, 1), datetime.date(2090, 12, 31)),
    st.integers(0, 20_000),
    st.integers(-36_000, 0),
)
def test_shifting_preserves_any_interval(start: datetime.date, gap: int, offset: int) -> None:
    end = start + datetime.timedelta(days=gap)
    ds = Dataset()
    ds.PatientID, ds.StudyInstanceUID = "P1", "1.2.3"
    ds.StudyDate, ds.ContentDate = start.strftime("%Y%m%d"), end.strftime("%Y%m%d")
    out = deidentify(ds, policy(Mode.PSEUDONYMISED), SECRET, patient_offset_days=offset)
    assert _days(out.StudyDate, out.ContentDate) == gap
    assert _days(ds.StudyDate, out.StudyDate) == offset


def test_full_dates_and_retained_uids_keep_longitudinal_links_verbatim() -> None:
    before = original(RTPLAN)
    out = run(RTPLAN, policy(Mode.DEIDENTIFIED, dates=Dates.FULL, retain_uids=True))
    assert out.StudyDate == before.StudyDate and out.SOPInstanceUID == before.SOPInstanceUID
    nested = out.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
    assert nested == before.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
