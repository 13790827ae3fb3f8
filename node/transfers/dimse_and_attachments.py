"""DIMSE sources and destinations of a transfer, and the case attachments that travel with a study.

Used by :mod:`.sources` and :mod:`.preparing`, which dispatches on the spelling:

* a source ``dimse:<CALLED_AET>@<host>:<port>#<Study Instance UID>`` is fetched from a DIMSE
  PACS (:class:`~mftp.node.pacs.DimseSource`: C-FIND, then C-GET with one presentation context per
  transfer syntax) into the transfer's private spill folder;
* a destination ``dimse:<CALLED_AET>@<host>:<port>`` is stored into by C-STORE
  (:class:`~mftp.node.pacs.DimseSink`).

Both are allowed only for a peer listed in ``transfer.dimse_peers`` (``AET@host:port``, matched
exactly, host ignoring case: :func:`~mftp.node.config.split_dimse_peer`); we call as
``transfer.dimse_aet``.  Only C-GET: C-MOVE would need a port of ours that the PACS knows (its
modality table), so more configuration and a listening port on the node, for no gain here.

**Attachments** (non-DICOM files of the case, such as a surgical design in STL or notes in PDF;
they come from a folder source) travel only in ``identified`` mode, where the bytes go untouched:
each PDF, STL, OBJ or MTL becomes an encapsulated-document instance of the study
(:func:`~mftp.node.pacs.common.wrap_attachments`).  In the de-identifying modes the PS3.15 profile
replaces Encapsulated Document (0042,0011) with a dummy, so the document would arrive empty:
each attachment, and each encapsulated-document instance a PACS sent, is reported by name as not
sent (:data:`NOT_DEIDENTIFIABLE`) and the rest of the study goes on.  So is an image whose
Burned In Annotation (0028,0301) is YES (:data:`BURNED_IN`): de-identification would refuse it.
:func:`not_sent_summary` turns a report's files that will not travel into one line for the operator.

File names and UIDs go into reports and return values shown to the operator, never into logs
(folder names often carry patient names).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pydicom
import pydicom.errors

from mftp.transfer.deid_pixels import BurnedInChoice, text_risks, unexaminable
from mftp.transfer.study import DeliveryReport, FileFailure, FileKind, FileReport, ImportReport, SourceFile
from mftp.transfer.study_encapsulate import ENCAPSULATED_TYPES

from ..config import is_ae_title, split_dimse_peer
from ..errors import NodeUsageError
from ..pacs import DimseLimits, DimsePeer, DimseSink, DimseSource, LocalFile
from ..pacs.common import is_safe_uid, wrap_attachments

DIMSE_PREFIX: Final = "dimse:"
NOT_DEIDENTIFIABLE: Final = "its content cannot be de-identified; send it in identified mode"
PIXELS_REFUSED: Final = 'refused by burned_in = "refuse": its pixels may show identity'
"""Why an image is left out before the offer (one reason for all, so the summary groups them)."""
PIXELS_UNEXAMINABLE: Final = "its pixels may show identity and cannot be examined: {cause}"
ENCAPSULATED_DOCUMENT_CLASSES: Final = "1.2.840.10008.5.1.4.1.1.104."
"""Prefix of the Encapsulated PDF, CDA, STL, OBJ and MTL Storage SOP Class UIDs (PS3.4 B.5)."""
ATTACHMENTS_DIR: Final = "attachments"
SOURCE_SPELLING: Final = "dimse:<called AE title>@<host>:<port>#<Study Instance UID>"
DESTINATION_SPELLING: Final = "dimse:<called AE title>@<host>:<port>"

# The form check_destination hands to deliver: the checked peer and our calling AE title. The
# operator's spelling cannot contain "?", so only a checked destination carries the suffix.
_CHECKED = re.compile(r"dimse:(?P<peer>[^?]+)\?calling=(?P<calling>.+)", re.ASCII)
_MAX_NAME_CHARS = 80
_MAX_NAMES_PER_REASON = 4
_MAX_REASONS = 3


@dataclass(frozen=True)
class DimseStudy:
    """A study on a DIMSE PACS, and how we call that PACS."""

    peer: DimsePeer
    study_uid: str


def is_dimse(text: str) -> bool:
    """Whether ``text`` is spelled as a DIMSE source or destination."""
    return text.startswith(DIMSE_PREFIX)


def _allowed_peer(spelled: str, dimse_peers: Sequence[str], calling_aet: str, spelling: str) -> DimsePeer:
    """The peer ``AET@host:port``; :class:`NodeUsageError` if misspelled or not in the allow-list."""
    parsed = split_dimse_peer(spelled)
    if parsed is None:
        raise NodeUsageError(
            f"a DIMSE peer is {spelling} (AE title of 1-16 of A-Z a-z 0-9 _ . + -, a host name or "
            "IP address, IPv6 in brackets, a port; nothing else)"
        )
    if parsed not in {split_dimse_peer(entry) for entry in dimse_peers}:
        raise NodeUsageError(f"{spelled} is not a DIMSE peer listed in transfer.dimse_peers")
    if not is_ae_title(calling_aet):  # the configuration checks it; a caller's default might not
        raise NodeUsageError("transfer.dimse_aet must be an AE title")
    aet, host, port = parsed
    return DimsePeer(host.strip("[]"), port, aet, calling_aet)


def _canonical(peer: DimsePeer) -> str:
    host = f"[{peer.host}]" if ":" in peer.host else peer.host
    return f"{peer.called_aet}@{host}:{peer.port}"


def parse_dimse_source(text: str, dimse_peers: Sequence[str], calling_aet: str) -> DimseStudy:
    """The study named ``dimse:AET@host:port#UID``; :class:`NodeUsageError` unless allowed and well spelled.

    ``?retrieve=move`` and any other suffix are refused: only C-GET is offered (module docstring).
    """
    spelled, _, study_uid = text.removeprefix(DIMSE_PREFIX).partition("#")
    if "?" in text:
        raise NodeUsageError(f"a DIMSE source is {SOURCE_SPELLING}; only C-GET is offered (no ?options)")
    if not is_safe_uid(study_uid):
        raise NodeUsageError(f"a DIMSE source is {SOURCE_SPELLING}, with a valid Study Instance UID")
    return DimseStudy(_allowed_peer(spelled, dimse_peers, calling_aet, SOURCE_SPELLING), study_uid)


def check_dimse_destination(text: str, dimse_peers: Sequence[str], calling_aet: str) -> str:
    """``dimse:AET@host:port`` checked against the allow-list, in the form :func:`deliver_dimse` takes.

    That form adds our calling AE title (``?calling=...``), so delivery needs no configuration.
    """
    spelled = text.removeprefix(DIMSE_PREFIX)
    if "?" in spelled or "#" in spelled:
        raise NodeUsageError(f"a DIMSE destination is {DESTINATION_SPELLING}, nothing after the port")
    peer = _allowed_peer(spelled, dimse_peers, calling_aet, DESTINATION_SPELLING)
    return f"{DIMSE_PREFIX}{_canonical(peer)}?calling={peer.calling_aet}"


async def fetch_dimse_study(
    study: DimseStudy, spill: Path, report: ImportReport, *, max_instances: int | None = None
) -> list[LocalFile]:
    """Every instance of ``study``, by C-FIND then C-GET, spilled into ``spill``.

    At most ``max_instances`` (default: :class:`~mftp.node.pacs.DimseLimits`'s) are listed or accepted,
    so a PACS cannot fill the disk past the study limit.  Raises :class:`~mftp.node.pacs.PacsError`.
    """
    limits = DimseLimits()
    if max_instances is not None:
        limits = DimseLimits(max_instances=min(max_instances, limits.max_instances))
    source = DimseSource(study.peer, retrieve="get", limits=limits)
    return [item async for item in source.fetch_study(study.study_uid, spill, report)]


async def deliver_dimse(files: Sequence[LocalFile], destination: str) -> DeliveryReport:
    """Store ``files`` by C-STORE into a destination checked by :func:`check_dimse_destination`."""
    match = _CHECKED.fullmatch(destination)
    spelled, calling = (match["peer"], match["calling"]) if match else (destination[len(DIMSE_PREFIX) :], "")
    parsed = split_dimse_peer(spelled)
    if parsed is None or not is_ae_title(calling or "MFTP"):
        raise NodeUsageError(
            f"not a checked DIMSE destination; a DIMSE destination is {DESTINATION_SPELLING}"
        )
    aet, host, port = parsed
    return await DimseSink(DimsePeer(host.strip("[]"), port, aet, calling or "MFTP")).deliver(files)


def _is_encapsulated_document(info: SourceFile) -> bool:
    return info.kind is FileKind.DICOM and info.sop_class_uid.startswith(ENCAPSULATED_DOCUMENT_CLASSES)


def _drop_ok(report: FileReport, name: str, size_bytes: int) -> None:
    """Take ``name`` off the report's files that went through (the source counted it)."""
    if name in report.ok:
        report.ok.remove(name)
        report.ok_bytes -= size_bytes


async def travelling_files(
    files: Sequence[LocalFile],
    report: ImportReport,
    spill: Path,
    *,
    attachments: bool,
    burned_in: BurnedInChoice = "clean",
) -> list[LocalFile]:
    """The files of an imported study that travel, every other one recorded in ``report``.

    With ``attachments`` (identified mode) the DICOM instances, and the PDF, STL, OBJ and MTL
    attachments wrapped as encapsulated-document instances of the study into ``spill/attachments``;
    an attachment that cannot be wrapped (another type, no instance of its study) is reported.
    Without, the DICOM instances other than encapsulated documents; attachments and encapsulated
    documents are reported as :data:`NOT_DEIDENTIFIABLE` (a wrapped document is marked Burned-in
    Annotation YES, so de-identification would refuse it and fail the whole study).  With
    ``burned_in`` "refuse", images whose pixels may show identity
    (:func:`mftp.transfer.deid_pixels.text_risks`) are reported now, before the offer, so the
    offer's description counts only what travels; with "clean" they travel and are cleaned.
    """
    if attachments:
        if not any(f.info.kind is FileKind.ATTACHMENT for f in files):
            return [f for f in files if f.info.kind is FileKind.DICOM]
        work = spill / ATTACHMENTS_DIR
        work.mkdir(mode=0o700, exist_ok=True)
        sizes = {f.info.name: f.info.size_bytes for f in files}
        before = len(report.failures)
        kept = await asyncio.to_thread(wrap_attachments, files, None, work, report)
        for failure in report.failures[before:]:  # the attachments wrap_attachments could not wrap
            _drop_ok(report, failure.name, sizes.get(failure.name, 0))
        return kept
    kept = []
    for item in files:
        if item.info.kind is FileKind.ATTACHMENT and item.info.media_type not in ENCAPSULATED_TYPES:
            # It could not travel in identified mode either: say so, as wrap_attachments does.
            _drop_ok(report, item.info.name, item.info.size_bytes)
            report.add_failure(
                item.info.name,
                f"attachment of type {item.info.media_type}: no DICOM form, a PACS cannot store it",
            )
        elif item.info.kind is FileKind.ATTACHMENT or _is_encapsulated_document(item.info):
            _drop_ok(report, item.info.name, item.info.size_bytes)
            report.add_failure(item.info.name, NOT_DEIDENTIFIABLE)
        elif (refusal := await asyncio.to_thread(_pixel_refusal, item, burned_in)) is not None:
            _drop_ok(report, item.info.name, item.info.size_bytes)  # refused anyway: say so before the offer
            report.add_failure(item.info.name, refusal)
        elif item.info.kind is FileKind.DICOM:
            kept.append(item)
    return kept


def _pixel_refusal(item: LocalFile, burned_in: BurnedInChoice) -> str | None:
    """Why ``item`` will not travel for its pixels, decided before the offer; ``None`` if it will.

    Only images whose pixels may show identity (:func:`text_risks`, from the headers, private
    flags included) are looked at: with "refuse" they stay home; with "clean" those whose pixels
    cannot be decoded and examined do (the cleaning would refuse them after the offer, and the
    offer's description must count only what travels).
    """
    if item.info.kind is not FileKind.DICOM:
        return None
    try:
        ds = pydicom.dcmread(item.path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError, ValueError):
        return None  # unreadable: de-identification reports it by name
    if not text_risks(ds):
        return None
    if burned_in == "refuse":
        return PIXELS_REFUSED
    try:
        whole = pydicom.dcmread(item.path)
    except (OSError, pydicom.errors.InvalidDicomError, ValueError):
        return None
    cause = unexaminable(whole, item.info.name)
    return None if cause is None else PIXELS_UNEXAMINABLE.format(cause=cause)


def not_sent_summary(report: FileReport) -> str:
    """One short line naming the files of ``report`` that did not go through, and why; "" if none.

    Grouped by reason, a few names per reason, long names shortened.  For the operator (the
    transfer's ``detail``), never for a log: names can carry patient names.
    """
    if not report.failed_count:
        return ""
    by_reason: dict[str, list[FileFailure]] = {}
    for failure in report.failures:
        by_reason.setdefault(failure.reason, []).append(failure)
    parts = []
    for reason, failures in list(by_reason.items())[:_MAX_REASONS]:
        names = ", ".join(_short(f.name) for f in failures[:_MAX_NAMES_PER_REASON])
        more = len(failures) - _MAX_NAMES_PER_REASON
        parts.append(f"{names}{f' and {more} more' if more > 0 else ''} ({_short(reason)})")
    # Files of the other reasons, and failures past the report's memory bound (only counted).
    rest = report.failed_count - sum(len(f) for f in list(by_reason.values())[:_MAX_REASONS])
    tail = f"; {rest} other file(s)" if rest > 0 else ""
    return f"{report.failed_count} file(s) not sent: {'; '.join(parts)}{tail}"


def transfer_detail(report: FileReport, cleaned: Sequence[tuple[str, str]] = ()) -> str:
    """The transfer's ``detail`` for the operator: files not sent, then images whose pixels were
    cleaned, each part a sentence of its own ("" if there is nothing to say)."""
    parts = []
    if report.failed_count:
        parts.append(not_sent_summary(report) + ".")
    if cleaned:
        shown = "; ".join(f"{_short(name)} ({what})" for name, what in cleaned[:_MAX_NAMES_PER_REASON])
        more = len(cleaned) - _MAX_NAMES_PER_REASON
        parts.append(f"{len(cleaned)} image(s) cleaned: {shown}{f'; and {more} more' if more > 0 else ''}.")
    return " ".join(parts)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_NAME_CHARS else text[: _MAX_NAME_CHARS - 1] + "…"
