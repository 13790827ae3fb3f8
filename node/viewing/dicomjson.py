"""The DICOM JSON model of a dataset (PS3.18 F.2), with large values left out as bulk data.

:func:`instance_metadata` turns one instance (a pydicom dataset) into the JSON object that
WADO-RS metadata answers carry: every attribute, except that Pixel Data (of any kind) and any
other top-level binary value longer than :data:`BULK_THRESHOLD_BYTES` is replaced by a
``BulkDataURI``.  Values nested in sequences stay inline (``InlineBinary``): they are small in
practice (icons, LUTs), and a URI would need a path into the sequence.

The URI is written with :data:`BASE_PLACEHOLDER` in place of the server's address, because the
metadata is computed once at receipt and stored, while the address is the one the browser
used for *this* request (OHIF resolves bulk data against it): :func:`with_base` puts it in at
serving time with one bytes replacement.

Pure code: no disk, network or clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.tag import BaseTag

BULK_THRESHOLD_BYTES: Final = 1024
"""Binary values longer than this are served as bulk data, not inline."""
BASE_PLACEHOLDER: Final = "@@MFTP-DICOMWEB-BASE@@"
"""Stands for the DICOMweb root URL in stored metadata (replaced per request by :func:`with_base`)."""
BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS: Final = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel, Float, Double Float Pixel Data


def bulk_path(study: str, series: str, sop: str, tag: int) -> str:
    """The path (below the DICOMweb root) of a bulk value: ``.../instances/{sop}/bulkdata/{tag}``."""
    return f"studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag:08X}"


def is_bulk(element: DataElement) -> bool:
    """Whether ``element`` is served as bulk data (its metadata holds a BulkDataURI, not the value)."""
    if int(element.tag) in PIXEL_TAGS:
        return True
    if element.VR not in BINARY_VRS or element.value is None:
        return False
    return len(element.value) > BULK_THRESHOLD_BYTES


def instance_metadata(ds: Dataset, study: str, series: str, sop: str) -> dict[str, Any]:
    """The DICOM JSON object of ``ds`` (file meta left out), bulk values as URIs under the placeholder.

    Private and retired attributes are kept, as the standard's metadata response does; group
    lengths are left out (they describe an encoding, not the data).
    """
    bulk: dict[str, Any] = {}
    trimmed = Dataset()
    for element in ds:
        tag = int(element.tag)
        if element.tag.element == 0:  # group length
            continue
        if is_bulk(element):
            uri = f"{BASE_PLACEHOLDER}/{bulk_path(study, series, sop, tag)}"
            bulk[f"{tag:08X}"] = {"vr": element.VR if element.VR in BINARY_VRS else "OB", "BulkDataURI": uri}
            continue
        trimmed.add(element)
    value: dict[str, Any] = trimmed.to_json_dict(bulk_data_threshold=1 << 30)
    value.update(bulk)
    return dict(sorted(value.items()))


def bulk_tag(text: str) -> BaseTag:
    """The tag of a bulk data path segment (8 hex digits); ValueError otherwise."""
    if len(text) != 8:
        raise ValueError("a bulk data tag is 8 hex digits")
    return BaseTag(int(text, 16))


def json_array(items: Iterable[bytes]) -> bytes:
    """A JSON array of already-encoded JSON values (stored metadata joined without re-parsing)."""
    return b"[" + b",".join(items) + b"]"


def encode(value: Any) -> bytes:
    """Compact JSON bytes (what is stored and served)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def with_base(data: bytes, base: str) -> bytes:
    """``data`` with the placeholder replaced by ``base`` (the DICOMweb root the client used)."""
    return data.replace(BASE_PLACEHOLDER.encode(), base.rstrip("/").encode())
