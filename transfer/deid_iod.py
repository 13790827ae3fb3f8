"""What an IOD requires of the attributes that Table E.1-1's compound codes leave to us.

Z/D, X/Z, X/D and X/Z/D mean "the weakest action the IOD allows": remove a Type 3 attribute,
empty a Type 2 one, give a Type 1 one a dummy. We carry no full module tables; this is the short
list of attributes those codes hit whose type is not "3 everywhere", found by running the DICOM
validator ``dciodvfy`` (dicom3tools) on the originals and the outputs of varied real images
(issue 14), with the module each comes from (PS3.3). :func:`requirement` answers for the
top level of a dataset of a given :func:`family`; anything not listed is treated as Type 3.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID

ENHANCED = "enhanced"  # multi-frame functional groups (Enhanced CT/MR/PET/XA/US volume ...)
SR = "sr"  # structured reports
RT_PLAN = "rt-plan"
OTHER = "other"


def family(ds: Dataset) -> str:
    """The coarse IOD family of a dataset, as far as :func:`requirement` distinguishes them."""
    sop_class = UID(str(ds.get("SOPClassUID", "") or "").strip("\0 "))
    if (
        "SharedFunctionalGroupsSequence" in ds
        or "PerFrameFunctionalGroupsSequence" in ds
        or "Enhanced" in sop_class.name  # Enhanced CT/MR/PET/XA/XRF/US, Legacy Converted Enhanced
    ):
        return ENHANCED
    if str(ds.get("Modality", "")).strip().upper() == "SR" or ("ContentSequence" in ds and "ValueType" in ds):
        return SR
    if "RTPlanLabel" in ds or "RTPlanDate" in ds:
        return RT_PLAN
    return OTHER


def _tags(*keywords: str) -> frozenset[int]:
    found = {tag_for_keyword(keyword) for keyword in keywords}
    return frozenset(tag for tag in found if tag is not None)


# Type 1 at the top level in these families (a dummy is needed where the code allows one).
_TYPE_1 = {
    # Multi-frame Functional Groups Module: Content Date/Time Type 1; Enhanced General Equipment
    # Module: Device Serial Number Type 1; the Enhanced image modules: Acquisition DateTime 1C
    # (required for ORIGINAL images, which de-identification does not change).
    ENHANCED: _tags("ContentDate", "ContentTime", "AcquisitionDateTime", "DeviceSerialNumber"),
    SR: _tags("ContentDate", "ContentTime"),  # SR Document General Module
}
# Type 2 at the top level in these families (present, possibly empty).
_TYPE_2 = {
    RT_PLAN: _tags("RTPlanDate", "RTPlanTime"),  # RT General Plan Module
}


def requirement(tag: int, iod: str) -> int:
    """1 or 2 when the top-level attribute ``tag`` is Type 1 or 2 in family ``iod``, else 3."""
    if tag in _TYPE_1.get(iod, frozenset()):
        return 1
    if tag in _TYPE_2.get(iod, frozenset()):
        return 2
    return 3
