"""Applying the actions of Table E.1-1 to a dataset: the walk behind :mod:`mftp.transfer.deid`.

Decisions (the reasons are in comments where the code makes them):

* X removes; Z empties (a sequence loses its items); K keeps, and a kept sequence is still
  processed item by item, so nested UIDs and private attributes are handled at any depth.
* Compound codes mean the weakest action the IOD allows; :mod:`mftp.transfer.deid_iod` lists the
  attributes they hit that some IOD family makes Type 1 or 2 (found with the validator dciodvfy),
  everything else counts as Type 3. Type 1 gets a dummy (Z/D, X/D, X/Z/D); Type 2 is emptied
  (X/D, which offers no Z, gets a dummy). Otherwise Z/D becomes Z; X/D becomes X; X/Z and X/Z/D
  empty a value (present but empty: as private as X and valid for Type 2 and 3) but remove a
  sequence (a Type 3 sequence, when present, must have items) and the conditional attributes in
  ``_CONDITIONAL`` (empty is invalid when their condition does not hold, and we cannot check
  it). An attribute already empty stays as it was: it reveals nothing, and its writer may have
  needed it present (a Type 2C). X/Z/U* keeps the sequence with the instance UIDs inside
  replaced, so reference lines and source-image links keep working (the UIDs are keyed, so this
  reveals nothing). Inside sequences the types are not known: Type 3 is assumed.
* D replaces with a dummy of the VR (text ``DEIDENTIFIED``, date 19000101, UIDs mapped as for U,
  numbers 0). D on a sequence (e.g. Content Sequence) keeps its structure: nested attributes of the
  table get their own action, other free-text, date and person-name values become dummies, while
  coded-entry attributes (Code Value, Code Meaning, ...), numbers and UIDs stay.
* C (clean): sequences are processed item by item; dates are kept (full dates) or shifted
  (modified dates), times of day kept; text is kept only when every word is in the imaging
  vocabulary ``deid_table.CLEAN_VOCABULARY`` (or a short number, a unit or a one-letter code) and
  it contains none of the patient's own identifiers; otherwise the Basic Profile action applies.
  Recognising names in free text is not feasible; dropping what we cannot vouch for is. A C from
  a dates column on an attribute that is not a date (Timezone Offset From UTC) also falls back.
* When several enabled options name an attribute, K wins over C and C over the rest: an option
  only ever retains more than the Basic Profile.
* U: :func:`derive_uid`, applied to every attribute the table marks U at any depth (Referenced SOP
  Instance UID in reference sequences included). UIDs the table does not list (SOP Class,
  Transfer Syntax, coding scheme UIDs) are kept.
* Private attributes (odd groups) are removed at every depth: Retain Safe Private is not offered.
  Curves (50xx) and overlays (60xx) go as whole groups: the table removes Curve Data, Overlay Data
  and Overlay Comments, and an overlay without its data is invalid. Group lengths (gggg,0000) go
  too, since they would be wrong after the changes.
* Beyond the table (stricter, never weaker): public attributes unknown to the data dictionary are
  removed (they cannot be judged, and in damaged files they are often listed attributes under a
  damaged tag), and person names (VR PN) the table does not list are emptied.
* Dates: DA and the date part of DT are shifted by whole days, so intervals and times of day are
  kept; a DT's UTC offset suffix is dropped along with Timezone Offset From UTC. Dates that do not
  parse (and DTs with year or month only) take the Basic Profile action.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any, NamedTuple

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

from .deid_iod import OTHER, requirement
from .deid_table import BY_TAG, CLEAN_VOCABULARY, Action, Column
from .errors import TransferInputError

MAX_SEQUENCE_DEPTH = 32
DUMMY_TEXT = "DEIDENTIFIED"


class Dates(Enum):
    """Retain Longitudinal Temporal Information: full dates, shifted dates, or neither."""

    FULL = "full"
    SHIFTED = "shifted"
    REMOVED = "removed"


def keyed_number(key: bytes, label: bytes, value: str) -> str:
    """``2.25.`` + the decimal of the first 16 bytes of HMAC-SHA256(key, label + value).

    At most 44 characters, a valid UID (and a valid LO, for pseudonymous Patient IDs).
    """
    digest = hmac.new(key, label + value.encode("utf-8"), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def derive_uid(key: bytes, uid: str) -> str:
    """The replacement of ``uid`` under ``key``: ``2.25.`` + decimal of a 128-bit HMAC-SHA256.

    ``key`` is the institution's secret, or in ANONYMOUS mode the per-transfer key derived from
    it. The same study sent twice under one key gets the same UIDs; without the key nobody can
    tell which original UID a new one stands for.
    """
    return keyed_number(key, b"uid\0", uid)


# ----------------------------------------------------------------------------- action resolution


class Rule(NamedTuple):
    """The effective action of one attribute under a set of options."""

    action: Action
    column: Column  # where the action came from
    basic: Action  # the Basic Profile action, the fallback when cleaning fails


def _resolve(basic: Action, options: Mapping[Column, Action], columns: frozenset[Column]) -> Rule:
    chosen = [(action, column) for column, action in options.items() if column in columns]
    for wanted in (Action.K, Action.C):
        for action, column in chosen:
            if action is wanted:
                return Rule(action, column, basic)
    if chosen:
        return Rule(chosen[0][0], chosen[0][1], basic)
    return Rule(basic, Column.BASIC, basic)


@lru_cache(maxsize=64)
def rules_for(columns: frozenset[Column]) -> Mapping[int, Rule]:
    """The effective rule of every single-tag row of Table E.1-1 for the enabled columns."""
    return {tag: _resolve(row.basic, row.options, columns) for tag, row in BY_TAG.items()}


@dataclass
class Context:
    """What the walk needs to know about the transfer and the file."""

    dates: Dates
    rules: Mapping[int, Rule]
    uid_key: bytes
    offset_days: int
    name: str
    identifiers: frozenset[str]  # the patient's own identifiers, never allowed in a descriptor
    uids: dict[str, str] = field(default_factory=dict)
    iod: str = OTHER  # the IOD family (deid_iod.family), for the compound codes


# ----------------------------------------------------------------------------- dataset walk


_KNOWN_VRS = frozenset(str(vr) for vr in VR)
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")  # TAB LF FF CR and ESC are allowed
# X/Z and X/Z/D attributes that are Type 1C or 2C where they appear (e.g. Acquisition DateTime
# in the US Image Module: present only when its condition holds), so removed rather than emptied.
_CONDITIONAL = frozenset({0x0008002A})
_VALUE_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "AT": 4, "FD": 8, "SV": 8, "UV": 8}


def _vr(ds: Dataset, tag: BaseTag) -> str:
    """VR without converting the element; implicit and UN elements take the dictionary VR.

    Checks what pydicom would otherwise write back unread: a VR that is not one of the
    standard's, or a binary value whose length is not a multiple of its size, means a corrupt
    file that nobody could read after us. ValueError, made an input error naming the file.
    """
    elem = ds.get_item(tag, keep_deferred=True)
    vr = elem.VR
    if vr in (None, "UN"):
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return "UN"
    if vr not in _KNOWN_VRS:
        raise ValueError(f"invalid VR in {tag}")
    value = elem.value
    if isinstance(value, bytes):
        size = _VALUE_SIZES.get(vr)
        if size and len(value) % size:
            raise ValueError(f"bad value length in {tag}")
        # Text with control characters is the mark of a damaged length that swallowed the
        # elements after it (seen in fuzzing: Manufacturer carrying the Patient's Name element).
        if vr in _STRING_VRS and _CONTROL.search(value.rstrip(b"\0 ")):
            raise ValueError(f"control characters in {tag}")
    return str(vr)


def _is_dropped(tag: BaseTag) -> bool:
    """Private, group length, curve or overlay group, or unknown to the data dictionary."""
    if tag.is_private or tag.element == 0:
        return True
    if (tag.group >> 8) in (0x50, 0x60):  # curves and overlays (even groups: odd ones are private)
        return True
    # An attribute the dictionary does not know cannot be judged; in corrupt files it is often a
    # listed one whose tag was damaged (seen in fuzzing: a Patient's Name under (0010,009F)).
    return not keyword_for_tag(tag)


def process(ds: Dataset, ctx: Context, depth: int = 0) -> None:
    """Apply Table E.1-1 to ``ds`` in place, recursing into sequences."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise TransferInputError(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH}", name=ctx.name)
    for tag in list(ds.keys()):
        if _is_dropped(tag):
            del ds[tag]
            continue
        vr = _vr(ds, tag)  # also for the rows: it checks the VR
        rule = ctx.rules.get(tag)
        if rule is not None:
            _apply(ds, tag, rule.action, rule, ctx, depth)
        elif vr == "SQ":
            _process_items(ds[tag], ctx, depth)
        elif vr == "PN":  # a person's name the table does not list is still a name
            _empty(ds[tag])


def _process_items(elem: DataElement, ctx: Context, depth: int) -> None:
    for item in elem.value or ():
        process(item, ctx, depth + 1)


def _apply(ds: Dataset, tag: BaseTag, action: Action, rule: Rule, ctx: Context, depth: int) -> None:
    match action:
        case Action.K:
            if _vr(ds, tag) == "SQ":
                _process_items(ds[tag], ctx, depth)
        case Action.X:
            del ds[tag]
        case Action.Z:
            _empty(ds[tag])
        case Action.Z_D | Action.X_Z | Action.X_D | Action.X_Z_D:
            _compound(ds, tag, action, ctx, depth)
        case Action.D:
            _dummy(ds, tag, ctx, depth)
        case Action.U:
            _replace_uids(ds[tag], ctx)
        case Action.X_Z_U:
            _reference_sequence(ds, tag, ctx, depth)
        case Action.C:
            if not _clean(ds, tag, rule, ctx, depth):
                _apply(ds, tag, rule.basic, rule, ctx, depth)


def _compound(ds: Dataset, tag: BaseTag, action: Action, ctx: Context, depth: int) -> None:
    """Z/D, X/Z, X/D, X/Z/D: the weakest action the IOD allows (see the module docstring)."""
    elem = ds[tag]
    required = requirement(tag, ctx.iod) if depth == 0 else 3
    if elem.is_empty and action is not Action.Z_D:
        return  # already empty: it reveals nothing, and its writer may have needed it present
    if required == 1 and action is not Action.X_Z:
        _dummy(ds, tag, ctx, depth)
    elif action is Action.X_D:
        if required == 2:
            _dummy(ds, tag, ctx, depth)  # must stay present, and this code offers no Z
        else:
            del ds[tag]
    elif action is Action.Z_D or required == 2 or (elem.VR != "SQ" and tag not in _CONDITIONAL):
        _empty(elem)
    else:
        del ds[tag]


def _empty(elem: DataElement) -> None:
    elem.value = Sequence() if elem.VR == "SQ" else None


def _replace_uids(elem: DataElement, ctx: Context) -> None:
    if elem.VR == "UI":
        elem.value = map_uids(elem.value, ctx)
    else:  # a U row whose element is not a UID: nothing consistent to put there
        _empty(elem)


def map_uids(value: Any, ctx: Context) -> Any:
    """``value`` (one UID or several) with each UID replaced by its keyed replacement."""
    if isinstance(value, MultiValue | list):
        return [_map_uid(str(v), ctx) for v in value]
    return None if value is None else _map_uid(str(value), ctx)


def _map_uid(uid: str, ctx: Context) -> str:
    uid = uid.strip("\0 ")
    if not uid:
        return uid
    new = ctx.uids.get(uid)
    if new is None:
        new = ctx.uids[uid] = derive_uid(ctx.uid_key, uid)
    return new


def _reference_sequence(ds: Dataset, tag: BaseTag, ctx: Context, depth: int) -> None:
    """X/Z/U*: keep the reference, with its instance UIDs replaced (by the rows inside)."""
    vr = _vr(ds, tag)
    if vr == "SQ":
        _process_items(ds[tag], ctx, depth)
    elif vr == "UI":
        _replace_uids(ds[tag], ctx)
    else:
        _empty(ds[tag])


# ----------------------------------------------------------------------------- dummies (D)

_FREE_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "AE", "UR", "AS", "DA", "DT", "TM"})
_DUMMIES: Mapping[str, Any] = {
    **dict.fromkeys(("PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE"), DUMMY_TEXT),
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000D",
    "UR": "urn:deidentified",
    "DS": "0",
    "IS": "0",
    **dict.fromkeys(("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"), 0),
    **dict.fromkeys(("OB", "OW", "OF", "OD", "OL", "OV", "UN"), b"\0" * 8),
}
# Coded-entry attributes keep their values inside a dummied sequence: they are vocabulary, not
# free text, and without them coded content (e.g. of an SR) becomes meaningless.
_CODED_ENTRY_TAGS = frozenset(
    tag_for_keyword(keyword)
    for keyword in (
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "LongCodeValue",
        "URNCodeValue",
        "ContextIdentifier",
        "MappingResource",
    )
)


def _dummy(ds: Dataset, tag: BaseTag, ctx: Context, depth: int) -> None:
    elem = ds[tag]
    if elem.VR == "SQ":
        for item in elem.value or ():
            _dummy_dataset(item, ctx, depth + 1)
    elif elem.VR == "UI":
        elem.value = map_uids(elem.value, ctx)
    else:
        elem.value = _DUMMIES.get(elem.VR)


def _dummy_dataset(ds: Dataset, ctx: Context, depth: int) -> None:
    if depth > MAX_SEQUENCE_DEPTH:
        raise TransferInputError(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH}", name=ctx.name)
    for tag in list(ds.keys()):
        rule = ctx.rules.get(tag)
        if _is_dropped(tag):
            del ds[tag]
        elif rule is not None:
            _apply(ds, tag, rule.action, rule, ctx, depth)
        elif (vr := _vr(ds, tag)) == "SQ":
            for item in ds[tag].value or ():
                _dummy_dataset(item, ctx, depth + 1)
        elif vr in _FREE_TEXT_VRS and tag not in _CODED_ENTRY_TAGS and not ds[tag].is_empty:
            ds[tag].value = _DUMMIES[vr]


# ----------------------------------------------------------------------------- cleaning (C)

_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE", "UR"})
_DESCRIPTOR_CHARS = re.compile(r"[A-Za-z0-9 +\-_/().,:;*#%=&<>\[\]^']*")
_WORD = re.compile(r"[A-Z]+|[0-9]+")
_UNIT = re.compile(r"MM|CM|KV|KEV|MAS|MA|MS|SEC|MIN|ML|MG|HZ|DEG|TE|TR|TI")
_MAX_DESCRIPTOR_CHARS = 64
_MAX_NUMBER_DIGITS = 4  # longer digit runs may be record numbers or dates


def _clean(ds: Dataset, tag: BaseTag, rule: Rule, ctx: Context, depth: int) -> bool:
    """Clean in place; False when the value cannot be vouched for (the caller falls back)."""
    vr = _vr(ds, tag)
    if vr == "SQ":
        _process_items(ds[tag], ctx, depth)
        return True
    if vr in ("DA", "DT", "TM"):
        return _clean_temporal(ds[tag], ctx.dates, ctx.offset_days)
    if rule.column in (Column.RETAIN_LONG_MODIFIED_DATES, Column.RETAIN_LONG_FULL_DATES):
        return False  # e.g. Timezone Offset From UTC: not a date, not ours to vouch for
    if vr in _TEXT_VRS:
        return _is_clean_text(ds[tag].value, ctx.identifiers)
    return True  # numbers carry no names


def _is_clean_text(value: Any, identifiers: frozenset[str]) -> bool:
    values = value if isinstance(value, MultiValue | list) else [value]
    return all(_is_clean_descriptor(str(v), identifiers) for v in values if v is not None)


def _is_clean_descriptor(text: str, identifiers: frozenset[str]) -> bool:
    if len(text) > _MAX_DESCRIPTOR_CHARS or not _DESCRIPTOR_CHARS.fullmatch(text):
        return False
    upper = text.upper()
    if any(ident in upper for ident in identifiers):
        return False
    return all(_is_clean_word(word) for word in _WORD.findall(upper))


def _is_clean_word(word: str) -> bool:
    if word.isdigit():
        return len(word) <= _MAX_NUMBER_DIGITS
    return len(word) == 1 or word in CLEAN_VOCABULARY or _UNIT.fullmatch(word) is not None


def _clean_temporal(elem: DataElement, dates: Dates, offset_days: int) -> bool:
    if dates is Dates.FULL:
        return True
    if dates is Dates.REMOVED:
        return False
    if elem.VR == "TM" or elem.is_empty:
        return True  # times of day stay: with shifted dates they identify nothing
    multi = isinstance(elem.value, MultiValue | list)
    values = list(elem.value) if multi else [elem.value]
    shift = _shift_da if elem.VR == "DA" else _shift_dt
    shifted = [shift(str(v), offset_days) for v in values]
    if any(s is None for s in shifted):
        return False
    elem.value = shifted if multi else shifted[0]
    return True


def _shift_da(text: str, offset_days: int) -> str | None:
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text.strip())
    if match is None:
        return None
    try:
        day = datetime.date(*map(int, match.groups())) + datetime.timedelta(days=offset_days)
    except (ValueError, OverflowError):
        return None
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _shift_dt(text: str, offset_days: int) -> str | None:
    match = re.fullmatch(r"(\d{8})([0-9.]*)(?:[+-]\d{4})?", text.strip())
    if match is None:
        return None  # also partial DTs (year or month only): cannot shift by days
    day = _shift_da(match.group(1), offset_days)
    return None if day is None else day + match.group(2)
