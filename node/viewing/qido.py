"""QIDO-RS queries (PS3.18 10.6, matching by PS3.4 C.2.2.2): parse, match, select, page.

A query is its match keys (keywords such as ``PatientName`` or tags such as ``00100020``),
``includefield`` (repeated, or comma-separated, or ``all``), ``limit`` and ``offset``.  Results
are DICOM JSON objects (:mod:`.dicomjson`) of one level: studies, series or instances.

Matching, by the attribute's VR:

* ``UI``: a list of UIDs separated by ``,`` or ``\\``; any one matches exactly;
* ``DA``, ``TM``, ``DT``: one value, or a range ``from-to``, ``from-`` or ``-to``, inclusive;
* ``PN``: ``*`` and ``?`` wildcards, ignoring case, on each component group (alphabetic...);
* anything else: ``*`` and ``?`` wildcards, case-sensitive (``CS`` values are upper case anyway);
* an empty value matches everything (and asks for the attribute in the answer);
* a multi-valued attribute (``ModalitiesInStudy``) matches if one of its values does.

Match keys this server does not hold at a level are ignored and named in a ``Warning`` (PS3.18
8.3.4.1 lets a server ignore what it does not support); sequence paths (``a.b``) and unknown
parameters are refused (a :class:`~mftp.node.errors.NodeUsageError`, 400).  ``fuzzymatching``
is accepted and ignored with a warning: matching here is literal.

Pure code: no disk, network or clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

from pydicom.datadict import dictionary_VR, tag_for_keyword

from ..errors import NodeUsageError

STUDY, SERIES, INSTANCE = "study", "series", "instance"
LEVELS: Final = (STUDY, SERIES, INSTANCE)
MAX_LIMIT: Final = 1000
"""The most results one answer holds (a client pages with ``offset``)."""
MAX_KEYS: Final = 64
MAX_VALUE_CHARS: Final = 1024

# What each level answers by default (PS3.18 table 10.6.3-3..5) and may be matched on.
STUDY_TAGS: Final = (
    0x00080005, 0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090, 0x00080201,
    0x00081030, 0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x0020000D, 0x00200010,
    0x00201206, 0x00201208,
)  # fmt: skip
SERIES_TAGS: Final = (
    0x00080005, 0x00080056, 0x00080060, 0x0008103E, 0x0020000E, 0x00200011, 0x00201209,
    0x00400244, 0x00400245,
)  # fmt: skip
# Matched on at the series level besides the defaults (answered when asked with includefield).
SERIES_EXTRA: Final = (0x00080021, 0x00080031, 0x00180015)
INSTANCE_TAGS: Final = (
    0x00080005, 0x00080016, 0x00080018, 0x00080056, 0x00200013, 0x00280008, 0x00280010,
    0x00280011, 0x00280100,
)  # fmt: skip
LEVEL_TAGS: Final = {STUDY: STUDY_TAGS, SERIES: SERIES_TAGS, INSTANCE: INSTANCE_TAGS}
# A search below the study level also matches on, and answers, the levels above it (as
# Orthanc's DICOMweb plugin does: a series names its study's patient, an instance its series).
SEARCHABLE: Final = {
    STUDY: frozenset(STUDY_TAGS),
    SERIES: frozenset(STUDY_TAGS + SERIES_TAGS + SERIES_EXTRA),
    INSTANCE: frozenset(STUDY_TAGS + SERIES_TAGS + SERIES_EXTRA + INSTANCE_TAGS),
}
_UPPER_LEVELS: Final = {
    STUDY: frozenset(),
    SERIES: frozenset(f"{t:08X}" for t in STUDY_TAGS),
    INSTANCE: frozenset(f"{t:08X}" for t in STUDY_TAGS + SERIES_TAGS),
}
# Counts of the levels above describe those levels, not this answer: left out below them.
_COUNTS: Final = frozenset({"00201206", "00201208", "00201209"})
_RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})


@dataclass(frozen=True)
class Query:
    """A parsed QIDO query of one level."""

    level: str
    keys: tuple[tuple[int, str], ...] = ()  # (tag, value); "" = return it, match all
    include_all: bool = False
    include: frozenset[int] = frozenset()
    limit: int = MAX_LIMIT
    offset: int = 0
    warnings: tuple[str, ...] = field(default=())


def tag_of(text: str) -> int:
    """The tag a QIDO attribute names: a keyword or 8 hex digits; NodeUsageError otherwise."""
    if "." in text:
        raise NodeUsageError(f"sequence matching ({text}) is not supported")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", text):
        return int(text, 16)
    tag = tag_for_keyword(text)
    if tag is None:
        raise NodeUsageError(f"{text!r} is not a DICOM keyword or tag")
    return int(tag)


def _count(text: str, name: str, bound: int) -> int:
    if not text.isdigit() or len(text) > 9:
        raise NodeUsageError(f"{name} must be a non-negative integer")
    return min(int(text), bound)


def parse_query(params: Iterable[tuple[str, str]], level: str) -> Query:
    """The query of URL parameters ``params`` (in order, repeats kept) at ``level``."""
    keys: list[tuple[int, str]] = []
    include: set[int] = set()
    include_all = False
    limit, offset = MAX_LIMIT, 0
    warnings: list[str] = []
    for name, value in params:
        if len(keys) + len(include) > MAX_KEYS or len(value) > MAX_VALUE_CHARS:
            raise NodeUsageError("the query is too long")
        if name == "includefield":
            for part in filter(None, (p.strip() for p in value.split(","))):
                if part == "all":
                    include_all = True
                else:
                    include.add(tag_of(part))
        elif name == "limit":
            limit = _count(value, "limit", MAX_LIMIT)
        elif name == "offset":
            offset = _count(value, "offset", 1 << 30)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise NodeUsageError("fuzzymatching is true or false")
            if value.lower() == "true":
                warnings.append("fuzzymatching is not supported; matching is literal")
        else:  # anything else must name an attribute (tag_of refuses the rest)
            tag = tag_of(name)
            if tag in SEARCHABLE[level]:
                keys.append((tag, value))
            else:
                warnings.append(f"{name} is not a supported matching key here; ignored")
    return Query(level, tuple(keys), include_all, frozenset(include), limit, offset, tuple(warnings))


@cache
def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def glob_match(pattern: str, text: str, ignore_case: bool = False) -> bool:
    """Whether ``text`` matches ``pattern`` (``*`` any run, ``?`` one character), in O(len * len).

    Not a regular expression: ``*`` repeated hundreds of times would make a backtracking
    engine take exponential time, a denial of service in one query.  This keeps one
    backtracking point (the last ``*``), which is enough for ``*`` and ``?``.
    """
    if ignore_case:
        pattern, text = pattern.casefold(), text.casefold()
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _strings(element: dict[str, Any] | None) -> list[str]:
    """The values of a DICOM JSON element as strings (each PN component group separately)."""
    if not element:
        return []
    out: list[str] = []
    for value in element.get("Value", []):
        if isinstance(value, dict):  # PN
            out.extend(str(value[k]) for k in ("Alphabetic", "Ideographic", "Phonetic") if k in value)
        else:
            out.append(str(value))
    return out


def _in_range(value: str, spec: str) -> bool:
    low, _, high = spec.partition("-")
    # Dates and times compare as strings of digits once punctuation is gone (HHMMSS.frac too).
    value = value.replace(":", "")
    low, high = low.replace(":", ""), high.replace(":", "")
    return (not low or value[: len(low)] >= low) and (not high or value[: len(high)] <= high)


def element_matches(tag: int, spec: str, element: dict[str, Any] | None) -> bool:
    """Whether a DICOM JSON ``element`` (or its absence) matches the key ``spec`` of ``tag``."""
    if spec == "":
        return True
    values = _strings(element)
    vr = (element or {}).get("vr") or _vr(tag)
    if vr == "UI":
        wanted = {u.strip() for u in re.split(r"[,\\]", spec) if u.strip()}
        return any(v in wanted for v in values)
    if vr in _RANGE_VRS and "-" in spec:
        return any(_in_range(v, spec) for v in values)
    if vr in _RANGE_VRS:
        return any(v == spec.replace(":", "") or v.replace(":", "") == spec.replace(":", "") for v in values)
    return any(glob_match(spec, v, ignore_case=vr == "PN") for v in values)


def matches(attrs: dict[str, Any], query: Query) -> bool:
    """Whether the DICOM JSON object ``attrs`` matches every key of ``query``."""
    return all(element_matches(tag, spec, attrs.get(f"{tag:08X}")) for tag, spec in query.keys)


def select(attrs: dict[str, Any], query: Query) -> dict[str, Any]:
    """What of ``attrs`` the answer carries: the level's defaults, matched keys and included fields."""
    if query.include_all:
        return attrs
    wanted = {f"{t:08X}" for t in LEVEL_TAGS[query.level]}
    wanted.update(_UPPER_LEVELS[query.level] - _COUNTS)
    wanted.update(f"{t:08X}" for t, _ in query.keys)
    wanted.update(f"{t:08X}" for t in query.include)
    return {k: v for k, v in attrs.items() if k in wanted}


def page(items: Sequence[dict[str, Any]], query: Query) -> list[dict[str, Any]]:
    """The ``offset`` / ``limit`` window of the matching ``items``, selected."""
    return [select(a, query) for a in items[query.offset : query.offset + query.limit]]
