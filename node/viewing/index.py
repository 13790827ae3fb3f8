"""What the viewer knows of one transfer's instances, computed once and stored encrypted.

:func:`describe` reads one restored instance (in memory) into an :class:`InstanceInfo`: its
UIDs, its DICOM JSON metadata (:mod:`.dicomjson`, bulk values as URIs) and the attributes QIDO
matches on.  A :class:`TransferIndex` holds those of one transfer; it grows while the study
still arrives (:mod:`.catalog` adds each batch of verified instances) and, once the transfer is
complete, is sealed with :func:`seal_index` (XChaCha20-Poly1305 under a key derived from the
node's storage key, bound to the transfer id) into a blob-store record, so a series of a
thousand instances answers its metadata by joining stored bytes instead of reading a thousand
files.  :func:`study_attributes` and :func:`series_attributes` derive the upper QIDO levels.

Pure code: no disk, network or clock (the caller stores and loads the sealed bytes).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import pydicom
from pydicom.errors import InvalidDicomError

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError, DecryptionError
from mftp.crypto.primitives import hkdf
from mftp.crypto.stream import decrypt_stream, encrypt_stream

from ..errors import StorageDamaged
from . import dicomjson
from .qido import INSTANCE, SEARCHABLE, SERIES, STUDY

INDEX_TYPE: Final = "mftp-viewing-index"
INDEX_AD: Final = b"MFTP-VIEWING-INDEX-v1\x00"
INDEX_KEY_INFO: Final = b"mftp viewing index key v1"
MAX_INDEX_BYTES: Final = 256 << 20
# Kept beside the searchable ones: what OHIF and previews ask for at the study and series levels.
_EXTRA_TAGS: Final = frozenset({0x00080008, 0x00080022, 0x00080032, 0x00180050, 0x00200032, 0x00200037})
_KEPT: Final = frozenset(f"{t:08X}" for t in SEARCHABLE[INSTANCE] | _EXTRA_TAGS)
_STUDY_KEYS: Final = frozenset(f"{t:08X}" for t in SEARCHABLE[STUDY])
_SERIES_KEYS: Final = frozenset(f"{t:08X}" for t in SEARCHABLE[SERIES] | {0x00080022, 0x00080032, 0x00180050})


def index_key(storage_key: bytes) -> bytes:
    """The key that seals viewing indexes, derived from the node's storage key."""
    return hkdf(storage_key, salt=b"", info=INDEX_KEY_INFO, length=32)


@dataclass(frozen=True)
class InstanceInfo:
    """One instance as the viewer serves it (``name``: its entry in the transfer's manifest)."""

    name: str
    study: str
    series: str
    sop: str
    number: int  # Instance Number (0 if absent): the order within the series
    meta: bytes  # its DICOM JSON metadata, bulk URIs under the base placeholder
    attrs: dict[str, Any] = field(compare=False, repr=False)  # what QIDO matches and answers


def _attrs(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k in _KEPT}


def _number(meta: dict[str, Any]) -> int:
    try:
        return int(meta["00200013"]["Value"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return 0


def describe(name: str, data: bytes) -> InstanceInfo | None:
    """The viewer's description of one restored instance; ``None`` if it is not a DICOM image or object."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    except (InvalidDicomError, AttributeError, ValueError, TypeError, EOFError, KeyError, OSError):
        return None
    if not (study and series and sop):
        return None
    meta = dicomjson.instance_metadata(ds, study, series, sop)
    return InstanceInfo(name, study, series, sop, _number(meta), dicomjson.encode(meta), _attrs(meta))


@dataclass
class TransferIndex:
    """The instances of one transfer the viewer can serve, by SOP Instance UID."""

    transfer_id: str
    complete: bool = False
    instances: dict[str, InstanceInfo] = field(default_factory=dict)
    _series_meta: dict[tuple[str, str], bytes] = field(default_factory=dict, repr=False)

    def add(self, infos: Iterable[InstanceInfo]) -> None:
        """Add instances (a SOP Instance UID seen twice keeps its first file)."""
        for info in infos:
            if info.sop not in self.instances:
                self.instances[info.sop] = info
                self._series_meta.pop((info.study, info.series), None)

    def series(self, study: str, series: str) -> list[InstanceInfo]:
        """The instances of one series, in Instance Number order."""
        found = [i for i in self.instances.values() if i.study == study and i.series == series]
        return sorted(found, key=lambda i: (i.number, i.sop))

    def series_metadata(self, study: str, series: str) -> bytes:
        """The series' metadata array (placeholder base), joined once and kept."""
        key = (study, series)
        if key not in self._series_meta:
            self._series_meta[key] = dicomjson.json_array(i.meta for i in self.series(study, series))
        return self._series_meta[key]


def seal_index(index: TransferIndex, key: bytes) -> bytes:
    """The index encrypted under ``key`` (from :func:`index_key`), bound to its transfer id."""
    inner = canonical.encode(
        {
            "instances": [
                [i.name, i.study, i.series, i.sop, i.number, i.meta] for i in index.instances.values()
            ],
            "complete": index.complete,
        }
    )
    body = io.BytesIO()
    ad = INDEX_AD + bytes.fromhex(index.transfer_id)
    encrypt_stream(key, io.BytesIO(inner), body, associated_data=ad)
    return canonical.encode({"type": INDEX_TYPE, "v": 1, "body": body.getvalue()})


def open_index(data: bytes, key: bytes, transfer_id: str) -> TransferIndex:
    """Reverse :func:`seal_index`; :class:`~mftp.node.errors.StorageDamaged` if it does not open."""
    try:
        outer = canonical.decode(data, max_bytes=MAX_INDEX_BYTES, max_depth=1)
        if not isinstance(outer, dict) or outer.get("type") != INDEX_TYPE or outer.get("v") != 1:
            raise ValueError("not a viewing index")
        plain = io.BytesIO()
        ad = INDEX_AD + bytes.fromhex(transfer_id)
        decrypt_stream(key, io.BytesIO(outer["body"]), plain, associated_data=ad)
        inner = canonical.decode(
            plain.getvalue(), max_bytes=MAX_INDEX_BYTES, max_depth=3, max_containers=1 << 21
        )
        index = TransferIndex(transfer_id, complete=bool(inner["complete"]))
        for name, study, series, sop, number, meta in inner["instances"]:
            attrs = _attrs(json.loads(meta))
            index.add([InstanceInfo(name, study, series, sop, int(number), bytes(meta), attrs)])
        return index
    except (DecodeError, DecryptionError, KeyError, TypeError, ValueError) as exc:
        raise StorageDamaged(f"the viewing index of transfer {transfer_id} is damaged: {exc}") from None


def _value(vr: str, values: list[Any]) -> dict[str, Any]:
    return {"vr": vr, "Value": values}


def study_attributes(instances: list[InstanceInfo], base: str) -> dict[str, Any]:
    """The QIDO study-level object of a study's instances (non-empty; of every visible transfer)."""
    first = min(instances, key=lambda i: (i.series, i.number, i.sop))
    attrs = {k: v for k, v in first.attrs.items() if k in _STUDY_KEYS}
    modalities = sorted(
        {str(v) for i in instances for v in i.attrs.get("00080060", {}).get("Value", []) if v}
    )
    attrs["00080061"] = _value("CS", modalities) if modalities else {"vr": "CS"}
    attrs["00201206"] = _value("IS", [len({i.series for i in instances})])
    attrs["00201208"] = _value("IS", [len(instances)])
    attrs["00080056"] = _value("CS", ["ONLINE"])
    attrs["00081190"] = _value("UR", [f"{base}/studies/{first.study}"])
    return dict(sorted(attrs.items()))


def series_attributes(instances: list[InstanceInfo], base: str) -> dict[str, Any]:
    """The QIDO series-level object of a series' instances (non-empty)."""
    first = min(instances, key=lambda i: (i.number, i.sop))
    attrs = {k: v for k, v in first.attrs.items() if k in _SERIES_KEYS}
    attrs["00201209"] = _value("IS", [len(instances)])
    attrs["00080056"] = _value("CS", ["ONLINE"])
    attrs["00081190"] = _value("UR", [f"{base}/studies/{first.study}/series/{first.series}"])
    return dict(sorted(attrs.items()))


def instance_attributes(info: InstanceInfo, base: str) -> dict[str, Any]:
    """The QIDO instance-level object of one instance."""
    attrs = dict(info.attrs)
    attrs["00080056"] = _value("CS", ["ONLINE"])
    attrs["00081190"] = _value(
        "UR", [f"{base}/studies/{info.study}/series/{info.series}/instances/{info.sop}"]
    )
    return dict(sorted(attrs.items()))
