"""Where a transferred study comes from and goes to: sources and destinations on their allow-lists.

A *source* (``mftp-node send``) is either

* an absolute path of a folder or file on the node's host (:class:`~mftp.node.pacs.FolderSource`), or
* ``dicomweb:<base URL>#<Study Instance UID>``: the study fetched by WADO-RS
  (:class:`~mftp.node.pacs.DicomWebSource`) into a private spill folder first, or
* ``dimse:<CALLED_AET>@<host>:<port>#<Study Instance UID>``: the study fetched by C-FIND and
  C-GET (:mod:`.dimse_and_attachments`) into the spill folder.

A *destination* (``mftp-node export``) is an absolute folder path (:class:`~mftp.node.pacs.FolderSink`),
a DICOMweb base URL ``http(s)://...`` (STOW-RS, :class:`~mftp.node.pacs.DicomWebSink`), or
``dimse:<CALLED_AET>@<host>:<port>`` (C-STORE, :mod:`.dimse_and_attachments`).

Every path and URL is checked against the node's allow-lists (:class:`Allowed`).
"""

from __future__ import annotations

import asyncio
import os
import stat
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import pydicom
import pydicom.errors

from mftp.transfer.deid_pixels import BurnedInChoice
from mftp.transfer.study import DeliveryReport, FileKind, ImportReport

from ..errors import NodeUsageError, sentences
from ..pacs import DicomWebSink, DicomWebSource, FolderSink, FolderSource, LocalFile
from ..urls import NormalURL, is_http_url, normalise_url
from .dimse_and_attachments import (
    DimseStudy,
    check_dimse_destination,
    deliver_dimse,
    fetch_dimse_study,
    is_dimse,
    parse_dimse_source,
    travelling_files,
)

DICOMWEB_PREFIX: Final = "dicomweb:"
_PATH_MAX: Final = 4096  # Linux's limits on a whole path and on one name, in bytes
_NAME_MAX: Final = 255


@dataclass(frozen=True)
class DicomWebStudy:
    """A study on a DICOMweb server."""

    base_url: str
    study_uid: str


Source = Path | DicomWebStudy | DimseStudy


@dataclass(frozen=True)
class Allowed:
    """Where the operator lets sends read and exports write (``[transfer]`` allow-lists)."""

    source_dirs: tuple[Path, ...]
    export_dirs: tuple[Path, ...]
    dicomweb_urls: tuple[str, ...]
    dimse_peers: tuple[str, ...] = ()  # "AET@host:port", matched exactly
    dimse_aet: str = "MFTP"  # our calling AE title
    export_file_mode: int = 0o640  # transfer.export_file_mode, for files exported into a folder

    def check_path(self, path: Path, dirs: tuple[Path, ...], key: str, *, must_exist: bool = False) -> Path:
        """``path`` resolved (links included); :class:`NodeUsageError` unless inside one of ``dirs``.

        ``dirs`` are resolved folders (the operator's links to them, and above them, are
        followed once, when the configuration is read).  The path is resolved as the kernel
        would (``..`` after a link goes up from the link's target); it must then lie inside a
        folder, so a link inside one that leads out, or ``..`` that climbs out, is refused.
        With ``must_exist`` it must also be an existing file or folder; without, what exists
        there must be a folder (an export's destination).  Every refusal is the
        same sentence, whether the path exists or not, is outside or inside: the answer tells
        nobody which files exist.  Readers and writers open the resolved path again without
        following any link (:mod:`mftp.node.pacs.folder`), so a link that appears later fails.
        """
        what = "an existing file or folder" if must_exist else "a folder path"
        refused = NodeUsageError(f"{str(path)[:300]} is not {what} inside a folder listed in transfer.{key}")
        try:
            resolved = Path(os.path.realpath(path))
            # Names no file system takes would only fail later, as a PACS's or our own fault.
            if len(os.fsencode(resolved)) >= _PATH_MAX or any(
                len(os.fsencode(part)) > _NAME_MAX for part in resolved.parts
            ):
                raise refused
        except (OSError, ValueError):  # a NUL byte, an unencodable name: not a path we can have
            raise refused from None
        if not path.is_absolute() or not any(resolved.is_relative_to(d) for d in dirs):
            raise refused
        try:
            kind: int | None = os.lstat(resolved).st_mode
        except (OSError, ValueError):
            kind = None
        if must_exist and not (kind is not None and (stat.S_ISDIR(kind) or stat.S_ISREG(kind))):
            raise refused
        if not must_exist and kind is not None and not stat.S_ISDIR(kind):
            raise refused  # an export folder that is a file: the same answer, not a failed export
        return resolved

    def check_url(self, url: str) -> str:
        """``url`` normalised (:func:`normalise_url`); :class:`NodeUsageError` unless under an allowed server.

        Both sides are normalised first (scheme and host in lower case, the default port made
        explicit, percent-escapes of unreserved characters decoded), and a URL with dot segments,
        credentials, a query or a fragment is refused outright.  Then scheme and host must match
        exactly, and the port too unless the allowed entry names none (then any port of that
        host); the path must lie under the allowed path on a ``/`` boundary.  A plain string
        prefix would let ``https://pacs.h.org`` admit ``https://pacs.h.org.evil.net``,
        ``https://pacs.h.org@evil.net`` or ``https://pacs.h.org/dicom-web/../admin``.  The
        normalised form is returned so that the client requests exactly what was checked.
        """
        try:
            given = normalise_url(url)
        except NodeUsageError as exc:
            raise NodeUsageError(f"{exc}; refused before matching transfer.dicomweb_urls") from None
        if not any(_url_within(given, allowed) for allowed in self.dicomweb_urls):
            raise NodeUsageError(f"{url} is not a DICOMweb server listed in transfer.dicomweb_urls")
        return given.text


def _url_within(given: NormalURL, allowed: str) -> bool:
    try:
        rule = normalise_url(allowed)
    except NodeUsageError:  # a bad entry allows nothing (the configuration check names it)
        return False
    same_server = (given.scheme, given.host) == (rule.scheme, rule.host) and (
        rule.port is None or given.effective_port == rule.effective_port
    )
    return same_server and (given.path == rule.path or given.path.startswith(rule.path + "/"))


def parse_source(text: str, allowed: Allowed) -> Source:
    """A source from its spelling (see the module docstring); :class:`NodeUsageError` if wrong."""
    if is_dimse(text):
        return parse_dimse_source(text, allowed.dimse_peers, allowed.dimse_aet)
    if text.startswith(DICOMWEB_PREFIX):
        url, _, study_uid = text.removeprefix(DICOMWEB_PREFIX).partition("#")
        if not is_http_url(url) or not study_uid:
            raise NodeUsageError("a DICOMweb source is dicomweb:<http(s) base URL>#<Study Instance UID>")
        return DicomWebStudy(allowed.check_url(url), study_uid)
    path = Path(text)
    if not path.is_absolute():  # said from the text alone: no file is looked at
        raise NodeUsageError(f"source must be an absolute path on the node's host: {text[:300]}")
    return allowed.check_path(path, allowed.source_dirs, "source_dirs", must_exist=True)


async def import_study(
    source: Source,
    spill: Path,
    *,
    attachments: bool = False,
    max_instances: int | None = None,
    burned_in: BurnedInChoice = "clean",
    processes: Executor | None = None,
) -> tuple[list[LocalFile], ImportReport]:
    """The files of ``source`` that travel (spilled into ``spill`` when they must be copied).

    ``attachments`` (identified mode only): attachments travel as encapsulated-document
    instances; otherwise they, and encapsulated documents, are reported as not sent
    (:func:`~.dimse_and_attachments.travelling_files`, which also applies ``burned_in``).
    ``max_instances`` bounds a DIMSE retrieval.  ``processes`` (the node's preparing workers)
    read a folder's files in parallel (:class:`~mftp.node.pacs.folder.FolderSource`).
    """
    report = ImportReport()
    if isinstance(source, Path):
        folder = FolderSource(source, processes=processes)
        files = await asyncio.to_thread(lambda: list(folder.scan(spill, report)))
    elif isinstance(source, DimseStudy):
        files = await fetch_dimse_study(source, spill, report, max_instances=max_instances)
    else:
        async with aiohttp.ClientSession() as session:
            reader = DicomWebSource(source.base_url, session)
            files = [f async for f in reader.fetch_study(source.study_uid, spill, report)]
    kept = await travelling_files(files, report, spill, attachments=attachments, burned_in=burned_in)
    return kept, report


def one_study(files: list[LocalFile], report: ImportReport, max_instances: int) -> str:
    """The Study Instance UID the files share; :class:`NodeUsageError` unless exactly one."""
    if not files:
        # Each reason a sentence of its own: a reason may hold ";" or ":" itself (BURNED_IN does).
        reasons = list(dict.fromkeys(f.reason for f in report.failures))[:3] or ["it holds no files"]
        raise NodeUsageError(sentences("the source holds no DICOM instance that can travel", *reasons))
    studies = {f.info.study_instance_uid for f in files}
    if len(studies) != 1:
        raise NodeUsageError(f"the source holds {len(studies)} studies; send one study at a time")
    if len(files) > max_instances:
        raise NodeUsageError(f"{len(files)} instances exceed transfer.max_instances = {max_instances}")
    return studies.pop()


def study_parties(files: list[LocalFile]) -> tuple[str, str, str]:
    """``(Patient ID, Issuer of Patient ID, description)`` of a study, for its ledger record.

    Read from the first instance that has a Patient ID (the original, before de-identification:
    the patient's tags are made by its home institution, which knows it by this id).  The
    description names the modalities and the instance count, never a patient attribute.
    """
    patient, issuer = "", ""
    for item in files:
        if item.info.kind is not FileKind.DICOM:
            continue
        try:
            ds = pydicom.dcmread(item.path, stop_before_pixels=True, specific_tags=[0x00100020, 0x00100021])
        except (OSError, pydicom.errors.InvalidDicomError, ValueError):
            continue
        patient = str(ds.get("PatientID", "") or "").strip()
        issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
        if patient:
            break
    modalities = sorted({f.info.modality for f in files if f.info.modality})
    description = f"{'/'.join(modalities) or 'imaging'} study, {len(files)} instance(s)"
    return patient[:64], issuer[:64], description


def check_destination(text: str, allowed: Allowed) -> str:
    """``text`` checked against the allow-lists: an absolute folder path, a DICOMweb URL or a DIMSE peer."""
    if is_dimse(text):
        return check_dimse_destination(text, allowed.dimse_peers, allowed.dimse_aet)
    if is_http_url(text):
        return allowed.check_url(text)
    if not Path(text).is_absolute():
        raise NodeUsageError(
            "the destination is an absolute folder path on the node's host, a DICOMweb URL or "
            "dimse:<called AE title>@<host>:<port>"
        )
    return str(allowed.check_path(Path(text), allowed.export_dirs, "export_dirs"))


async def deliver(files: list[LocalFile], destination: str, *, file_mode: int = 0o640) -> DeliveryReport:
    """Deliver ``files`` to a folder (its files of ``file_mode``), by STOW-RS to a DICOMweb server,
    or by C-STORE to a DIMSE peer."""
    if is_dimse(destination):
        return await deliver_dimse(files, destination)
    if destination.startswith(("http://", "https://")):
        async with aiohttp.ClientSession() as session:
            return await DicomWebSink(destination, session).deliver(files)
    return await FolderSink(Path(destination), file_mode=file_mode).deliver(files)
