"""Import a study from a DICOMweb server and deliver one into it.

:class:`DicomWebSource` finds studies with QIDO-RS and fetches one with WADO-RS asking for
``transfer-syntax=*``, so the server sends every instance as stored instead of transcoding it
(Orthanc answers 500 for JPEG 2000 otherwise, and transcoding would change the bytes). The
multipart answer is parsed as it streams in and each instance is written straight to a spill
folder, so a study of any size costs one network chunk of memory.

:class:`DicomWebSink` stores instances with STOW-RS, in batches, each a multipart body
streamed from the files on disk, and reports per file what the server said.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp

from mftp.transfer.errors import TransferInputError
from mftp.transfer.multipart import (
    MultipartLimits,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
    closing_delimiter,
    multipart_content_type,
    new_boundary,
    part_head,
)
from mftp.transfer.study import (
    DeliveryReport,
    ImportReport,
    StudyMatch,
    dicom_file,
    parse_qido_studies,
    parse_stow_response,
    qido_study_query,
)
from mftp.transfer.study_probe import ProbeLimits, probe_dicom

from .common import (
    LocalFile,
    PacsError,
    PacsUnavailableError,
    SpillFile,
    is_safe_uid,
    spill_name,
    wrap_attachments,
)

__all__ = ["DicomWebLimits", "DicomWebSink", "DicomWebSource"]

_DICOM = "application/dicom"
_ACCEPT_STUDY = f'multipart/related; type="{_DICOM}"; transfer-syntax=*'
_ACCEPT_JSON = "application/dicom+json, application/json"
_READ_CHUNK_BYTES = 256 << 10


@dataclass(frozen=True)
class DicomWebLimits:
    """Bounds and timeouts for talking to a DICOMweb server."""

    max_studies: int = 1000
    """Most studies a query may return."""
    max_json_bytes: int = 32 << 20
    multipart: MultipartLimits = field(default_factory=MultipartLimits)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    """Longest silence while reading an answer (the whole study may take much longer)."""
    batch_files: int = 50
    """STOW-RS: instances per request."""
    batch_bytes: int = 256 << 20
    """STOW-RS: bytes per request (a single larger instance goes alone)."""


def _refuse_redirect(response: aiohttp.ClientResponse, what: str) -> None:
    """Raise :class:`PacsError` if ``response`` is a redirect (3xx), which is never followed.

    Every request is made with ``allow_redirects=False``: a redirect could lead from a server on
    the allow-list to any host (an internal service, another PACS), and the list was checked for
    the first URL only.  The PACS is at fault: the operator configures its final URL instead.
    """
    if 300 <= response.status < 400:
        target = urlsplit(response.headers.get("Location", ""))
        where = f" to {target.scheme}://{target.netloc.rpartition('@')[2]}" if target.netloc else ""
        raise PacsError(
            f"{what}: the DICOMweb server answered HTTP {response.status}, a redirect{where}. "
            "Redirects are not followed; list the server's final URL in transfer.dicomweb_urls"
        )


def _timeout(limits: DicomWebLimits) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, sock_connect=limits.connect_timeout_s, sock_read=limits.read_timeout_s
    )


async def _read_json(response: aiohttp.ClientResponse, limits: DicomWebLimits) -> object:
    """Read a JSON answer of bounded size; raises :class:`PacsError` if it is not JSON."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
        body += chunk
        if len(body) > limits.max_json_bytes:
            raise PacsError(f"DICOMweb answer larger than {limits.max_json_bytes} bytes")
    if not body.strip():
        return []  # QIDO-RS answers 204 No Content, or an empty body, for no match
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PacsError(f"DICOMweb answer is not JSON: {exc}") from None


class DicomWebSource:
    """Studies from a DICOMweb server (QIDO-RS to find, WADO-RS to fetch).

    ``base_url`` is the DICOMweb root (e.g. ``http://pacs:8042/dicom-web``); ``session`` is the
    caller's aiohttp session (authentication, TLS and connection pooling are its business).
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        limits: DicomWebLimits | None = None,
        probe_limits: ProbeLimits | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._limits = limits or DicomWebLimits()
        self._probe_limits = probe_limits

    async def find_studies(
        self, *, patient_id: str | None = None, accession: str | None = None, study_uid: str | None = None
    ) -> list[StudyMatch]:
        """Studies matching every key given (exact match; at least one key)."""
        try:
            params = qido_study_query(
                patient_id=patient_id,
                accession=accession,
                study_uid=study_uid,
                limit=self._limits.max_studies + 1,
            )
        except TransferInputError as exc:
            raise PacsError(str(exc)) from None
        doc = await self._get_json(f"{self._base}/studies", params)
        try:
            return parse_qido_studies(doc, max_results=self._limits.max_studies)
        except TransferInputError as exc:
            raise PacsError(f"QIDO-RS: {exc}") from None

    async def _get_json(self, url: str, params: Mapping[str, str]) -> object:
        try:
            async with self._session.get(
                url,
                params=params,
                headers={"Accept": _ACCEPT_JSON},
                timeout=_timeout(self._limits),
                allow_redirects=False,
            ) as response:
                _refuse_redirect(response, "QIDO-RS")
                if response.status == 204:
                    return []
                if response.status != 200:
                    raise PacsError(f"QIDO-RS answered HTTP {response.status}")
                return await _read_json(response, self._limits)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PacsUnavailableError(f"DICOMweb server unreachable: {type(exc).__name__}: {exc}") from None

    async def fetch_study(
        self, study_uid: str, spill_dir: Path, report: ImportReport
    ) -> AsyncIterator[LocalFile]:
        """Fetch every instance of a study into ``spill_dir``, yielding each as it completes.

        Bad instances are recorded in ``report`` and skipped. Raises :class:`PacsError` if the
        server refuses, and :class:`PacsUnavailableError` if the connection fails midway (the
        files already yielded are complete and valid).
        """
        if not is_safe_uid(study_uid):
            raise PacsError("invalid Study Instance UID")
        expected = await self._instance_count(study_uid)
        received = 0
        url = f"{self._base}/studies/{quote(study_uid)}"
        try:
            async with self._session.get(
                url, headers={"Accept": _ACCEPT_STUDY}, timeout=_timeout(self._limits), allow_redirects=False
            ) as response:
                _refuse_redirect(response, "WADO-RS")
                if response.status == 404:
                    raise PacsError("study not found on the DICOMweb server")
                if response.status != 200:
                    raise PacsError(f"WADO-RS answered HTTP {response.status}")
                try:
                    boundary = boundary_of(response.headers.get("Content-Type", ""))
                except TransferInputError as exc:
                    raise PacsError(f"WADO-RS: {exc}") from None
                async for item in self._parts(response, boundary, study_uid, spill_dir, report):
                    received += 1
                    yield item
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PacsUnavailableError(f"WADO-RS transfer failed: {type(exc).__name__}: {exc}") from None
        if expected is not None and received < expected:
            report.notes.append(f"the server announced {expected} instances, {received} arrived intact")

    async def _instance_count(self, study_uid: str) -> int | None:
        """How many instances QIDO-RS announces, to tell a complete fetch; None if it cannot say."""
        try:
            matches = await self.find_studies(study_uid=study_uid)
        except PacsUnavailableError:
            raise
        except PacsError:
            return None  # a server without QIDO-RS can still serve WADO-RS
        counts = [m.instance_count for m in matches if m.study_instance_uid == study_uid]
        return counts[0] if counts else None

    async def _parts(
        self,
        response: aiohttp.ClientResponse,
        boundary: str,
        study_uid: str,
        spill_dir: Path,
        report: ImportReport,
    ) -> AsyncIterator[LocalFile]:
        parser = MultipartParser(boundary, self._limits.multipart)
        spill: SpillFile | None = None
        seen: set[str] = set()  # SOP Instance UIDs kept, so a repeated one cannot replace a file
        try:
            async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
                try:
                    events = parser.feed(chunk)
                except TransferInputError as exc:
                    raise PacsError(f"WADO-RS body: {exc}") from None
                for event in events:
                    if isinstance(event, PartStart):
                        spill = self._start_part(event, spill_dir, report)
                    elif isinstance(event, PartData) and spill is not None:
                        spill = self._write_part(spill, event, report)
                    elif isinstance(event, PartEnd) and spill is not None:
                        item = self._finish_part(spill, event.index, study_uid, report, seen)
                        spill = None
                        if item is not None:
                            yield item
            try:
                parser.close()
            except TransferInputError as exc:
                raise PacsUnavailableError(f"WADO-RS body: {exc}") from None
        finally:
            if spill is not None:
                spill.discard()

    def _start_part(self, event: PartStart, spill_dir: Path, report: ImportReport) -> SpillFile | None:
        if event.content_type != _DICOM:
            report.add_failure(f"part {event.index}", f"unexpected part type {event.content_type[:60]!r}")
            return None
        try:
            return SpillFile(spill_dir, max_bytes=self._limits.multipart.max_part_bytes)
        except OSError as exc:
            report.add_failure(f"part {event.index}", _spill_failure(exc))
            return None

    @staticmethod
    def _write_part(spill: SpillFile, event: PartData, report: ImportReport) -> SpillFile | None:
        try:
            spill.write(event.data)
            return spill
        except TransferInputError as exc:
            report.add_failure(f"part {event.index}", exc)
        except OSError as exc:
            report.add_failure(f"part {event.index}", _spill_failure(exc))
        spill.discard()
        return None

    def _finish_part(
        self, spill: SpillFile, index: int, study_uid: str, report: ImportReport, seen: set[str]
    ) -> LocalFile | None:
        """Check a complete part and keep it under its SOP Instance UID, or drop it with a reason."""
        digest = spill.close()
        name = f"part {index}"
        try:
            with open(spill.temp_path, "rb") as fp:
                probe = probe_dicom(fp, spill.size_bytes, name=name, limits=self._probe_limits)
            # A UID names the file only if it is one: the bytes come from outside.
            uid = probe.sop_instance_uid
            info = dicom_file(uid if is_safe_uid(uid) else name, spill.size_bytes, digest, probe)
            if info.study_instance_uid != study_uid:
                raise TransferInputError("belongs to another study", name=info.name)
            if not probe.has_part10_header:
                raise TransferInputError("served without File Meta Information", name=info.name)
            if info.sop_instance_uid in seen:
                raise TransferInputError("sent twice; the first copy is kept", name=info.name)
            path = spill.commit(spill_name(info, index))
            seen.add(info.sop_instance_uid)
        except TransferInputError as exc:
            report.add_failure(exc.name or name, exc)
            spill.discard()
            return None
        except OSError as exc:
            report.add_failure(name, _spill_failure(exc))
            spill.discard()
            return None
        report.add_ok(info.name, info.size_bytes)
        return LocalFile(path, info)


def _spill_failure(exc: OSError) -> str:
    return f"cannot write to the spill folder: {exc.strerror or exc}"


class DicomWebSink:
    """Stores instances on a DICOMweb server with STOW-RS, in streamed batches."""

    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, *, limits: DicomWebLimits | None = None
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._limits = limits or DicomWebLimits()

    async def deliver(self, files: Sequence[LocalFile], *, study_uid: str | None = None) -> DeliveryReport:
        """Store every file; attachments go as encapsulated documents of ``study_uid``.

        ``study_uid`` defaults to the files' only study; see :func:`wrap_attachments`.
        """
        report = DeliveryReport()
        with tempfile.TemporaryDirectory(prefix="mftp-wrap-") as work:
            dicom = await asyncio.to_thread(wrap_attachments, files, study_uid, Path(work), report)
            batches = self._batches(dicom)
            for i, batch in enumerate(batches):
                try:
                    await self._store_batch(batch, report)
                except PacsError as exc:  # unreachable, or a redirect: the rest cannot go either
                    for rest in batches[i:]:
                        for item in rest:
                            report.add_failure(item.info.name, exc)
                    break
        return report

    def _batches(self, files: Sequence[LocalFile]) -> list[list[LocalFile]]:
        batches: list[list[LocalFile]] = []
        current: list[LocalFile] = []
        size = 0
        for item in files:
            if current and (
                len(current) >= self._limits.batch_files
                or size + item.info.size_bytes > self._limits.batch_bytes
            ):
                batches.append(current)
                current, size = [], 0
            current.append(item)
            size += item.info.size_bytes
        if current:
            batches.append(current)
        return batches

    async def _store_batch(self, batch: list[LocalFile], report: DeliveryReport) -> None:
        boundary = new_boundary()
        headers = {"Content-Type": multipart_content_type(boundary), "Accept": _ACCEPT_JSON}
        try:
            async with self._session.post(
                f"{self._base}/studies",
                data=_stow_body(batch, boundary),
                headers=headers,
                timeout=_timeout(self._limits),
                allow_redirects=False,
            ) as response:
                _refuse_redirect(response, "STOW-RS")
                status = response.status
                doc = await _read_json(response, self._limits) if _is_json(response) else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PacsUnavailableError(f"STOW-RS failed: {type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise PacsUnavailableError(f"cannot read a file to send: {exc.strerror or exc}") from None
        _record_stow(batch, status, doc, report)


def _is_json(response: aiohttp.ClientResponse) -> bool:
    return "json" in response.headers.get("Content-Type", "")


async def _stow_body(batch: list[LocalFile], boundary: str) -> AsyncIterator[bytes]:
    """The multipart body of one STOW-RS request, read from disk as it is sent."""
    for item in batch:
        yield part_head(boundary, _DICOM)
        # Local-disk reads of 256 KiB take well under a millisecond: read inline, as aiohttp
        # itself does for small payloads, rather than paying a thread hop per chunk.
        with open(item.path, "rb") as fp:
            while chunk := fp.read(_READ_CHUNK_BYTES):
                yield chunk
        yield b"\r\n"
    yield closing_delimiter(boundary)


def _record_stow(batch: list[LocalFile], status: int, doc: object, report: DeliveryReport) -> None:
    """Per file: stored if the response lists it, else failed with the server's reason."""
    stored: frozenset[str] = frozenset()
    failed: Mapping[str, str] = {}
    if doc is not None:
        with contextlib.suppress(TransferInputError):
            result = parse_stow_response(doc)
            stored, failed = result.stored, result.failed
    everything_ok = status == 200 and doc is None  # PS3.18: 200 means every instance was stored
    for item in batch:
        uid = item.info.sop_instance_uid
        if uid in stored or everything_ok:
            report.add_ok(item.info.name, item.info.size_bytes)
        elif uid in failed:
            report.add_failure(item.info.name, f"refused by the PACS: {failed[uid]}")
        else:
            report.add_failure(item.info.name, f"not stored by the PACS (HTTP {status}, no reason given)")
