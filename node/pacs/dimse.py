"""Import a study from a DIMSE PACS (C-FIND, then C-GET or C-MOVE) and deliver by C-STORE.

pynetdicom is synchronous and threaded; every association runs in a worker thread
(``asyncio.to_thread``), and instances received there reach the event loop through a queue, so
a study is yielded instance by instance while it arrives.

Presentation contexts carry exactly one transfer syntax each, for every SOP class found by
C-FIND, with the SCP role for C-GET: Orthanc then sends each instance in the transfer syntax it
has stored (a context offering several syntaxes gets one accepted and the others transcoded or
refused). pynetdicom is set to stream data sets to and from disk rather than decode them, so the
data set bytes travel untouched and memory stays at one PDU.

What a PACS sends by DIMSE is the stored data set re-encoded by its toolkit (DCMTK for Orthanc):
same transfer syntax and same element values (pixel data included, byte for byte), but the file
around it differs (a new File Meta header; sequence and item lengths may change encoding).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

from mftp.transfer.errors import TransferInputError
from mftp.transfer.study import DeliveryReport, ImportReport, StudyMatch, dicom_file, status_text
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

__all__ = ["DEFAULT_TRANSFER_SYNTAXES", "DimseLimits", "DimsePeer", "DimseSink", "DimseSource"]

DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired, still stored)
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.4.100",  # MPEG-2
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265
)
"""Transfer syntaxes proposed when retrieving: what PACSs commonly store."""

# Study Root Query/Retrieve Information Model (PS3.4 C.6.2); pynetdicom's names are not typed.
StudyRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.2.2"
StudyRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.2.3"
_MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
_STATUS_PENDING = frozenset({0xFF00, 0xFF01})
_STATUS_WARNINGS = frozenset({0xB000, 0xB006, 0xB007, 0x0001, 0x0107, 0x0116})
_COPY_CHUNK_BYTES = 1 << 20
_configured = threading.Lock()
_is_configured = False


def _configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings this module relies on (only this module uses pynetdicom)."""
    global _is_configured
    with _configured:
        if _is_configured:
            return
        # Stream data sets to/from disk untouched instead of decoding them in memory.
        _config.STORE_SEND_CHUNKED_DATASET = True
        _config.STORE_RECV_CHUNKED_DATASET = True
        # Query identifiers hold patient IDs: keep them out of logs.
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        _is_configured = True


@dataclass(frozen=True)
class DimsePeer:
    """A DIMSE PACS and how we call it."""

    host: str
    port: int
    called_aet: str
    calling_aet: str = "MFTP"


@dataclass(frozen=True)
class DimseLimits:
    """Bounds and timeouts for DIMSE work."""

    max_studies: int = 1000
    max_instances: int = 100_000
    max_file_bytes: int = 8 << 30
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 120.0
    network_timeout_s: float = 120.0
    max_pdu_bytes: int = 1 << 20
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    probe: ProbeLimits = field(default_factory=ProbeLimits)


@dataclass(frozen=True)
class _Instance:
    series_uid: str
    sop_uid: str
    sop_class: str


def _new_ae(aet: str, limits: DimseLimits) -> AE:
    _configure_pynetdicom()
    ae = AE(ae_title=aet)
    ae.acse_timeout = limits.acse_timeout_s
    ae.dimse_timeout = limits.dimse_timeout_s
    ae.network_timeout = limits.network_timeout_s
    ae.maximum_pdu_size = limits.max_pdu_bytes
    return ae


def _associate(ae: AE, peer: DimsePeer, **kwargs: Any) -> Association:
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.called_aet, **kwargs)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        raise PacsUnavailableError(f"association with {peer.called_aet} at {peer.host}:{peer.port} {why}")
    return assoc


def _final_status(responses: Any, abort: threading.Event | None = None) -> tuple[int, Dataset | None]:
    """Drain C-FIND/C-GET/C-MOVE responses; returns the final status and its data set."""
    last: tuple[int, Dataset | None] = (-1, None)
    for status, _identifier in responses:
        if not status:
            raise PacsUnavailableError("the PACS stopped answering (association lost or timed out)")
        last = (int(status.Status), status)
        if abort is not None and abort.is_set():
            break
    return last


class _Receiver:
    """Storage handler for C-GET and C-MOVE: keeps each instance of the study in the spill folder.

    Runs in pynetdicom's threads; it reports to the event loop through ``emit`` only.
    """

    def __init__(
        self, study_uid: str, spill_dir: Path, limits: DimseLimits, emit: Callable[[tuple[Any, ...]], None]
    ) -> None:
        self._study_uid = study_uid
        self._spill_dir = spill_dir
        self._limits = limits
        self._emit = emit
        self._lock = threading.Lock()
        self.count = 0
        self._kept: set[str] = set()  # SOP Instance UIDs kept, so a repeated one cannot replace a file
        self.abort = threading.Event()

    def handle(self, event: evt.Event) -> int:
        """EVT_C_STORE handler: 0x0000 when kept, a failure status otherwise."""
        with self._lock:
            self.count += 1
            index = self.count
        request = cast(C_STORE, event.request)
        uid = str(request.AffectedSOPInstanceUID or "")
        name = uid if is_safe_uid(uid) else f"instance {index}"
        received = Path(event.dataset_path)
        try:
            if self.abort.is_set() or index > self._limits.max_instances:
                return 0xA700
            item = self._keep(received, name, index)
        except TransferInputError as exc:
            self._emit(("fail", name, str(exc)))
            return 0xC000
        except OSError as exc:
            self._emit(("fail", name, f"cannot write to the spill folder: {exc.strerror or exc}"))
            return 0xA700
        finally:
            with contextlib.suppress(OSError):
                received.unlink()
        self._emit(("ok", item))
        return 0x0000

    def _keep(self, received: Path, name: str, index: int) -> LocalFile:
        with SpillFile(self._spill_dir, max_bytes=self._limits.max_file_bytes) as spill:
            with open(received, "rb") as src:
                while chunk := src.read(_COPY_CHUNK_BYTES):
                    spill.write(chunk)
            digest = spill.close()
            with open(spill.temp_path, "rb") as fp:
                probe = probe_dicom(fp, spill.size_bytes, name=name, limits=self._limits.probe)
            info = dicom_file(name, spill.size_bytes, digest, probe)
            if info.study_instance_uid != self._study_uid:
                raise TransferInputError("belongs to another study", name=name)
            with self._lock:
                if info.sop_instance_uid in self._kept:
                    raise TransferInputError("sent twice; the first copy is kept", name=name)
                self._kept.add(info.sop_instance_uid)
            return LocalFile(spill.commit(spill_name(info, index)), info)


class DimseSource:
    """Studies from a DIMSE PACS: C-FIND to find, C-GET (default) or C-MOVE to fetch.

    For C-MOVE a Storage SCP is started on ``move_listen`` (host, port) for the time of the
    retrieval, under ``move_aet`` (default: our calling AE title); the PACS must know that AE
    title, host and port (Orthanc: ``DicomModalities``). It accepts associations from the PACS's
    AE title only, and only instances of the study asked for.
    """

    def __init__(
        self,
        peer: DimsePeer,
        *,
        retrieve: Literal["get", "move"] = "get",
        move_listen: tuple[str, int] | None = None,
        move_aet: str | None = None,
        limits: DimseLimits | None = None,
    ) -> None:
        if retrieve == "move" and move_listen is None:
            raise ValueError("C-MOVE needs move_listen=(host, port), a port the PACS knows")
        self._peer = peer
        self._retrieve = retrieve
        self._move_listen = move_listen
        self._move_aet = move_aet or peer.calling_aet
        self._limits = limits or DimseLimits()

    async def find_studies(
        self, *, patient_id: str | None = None, accession: str | None = None, study_uid: str | None = None
    ) -> list[StudyMatch]:
        """Studies matching every key given (exact match; at least one key), by C-FIND."""
        keys = {"PatientID": patient_id, "AccessionNumber": accession, "StudyInstanceUID": study_uid}
        given = {k: v for k, v in keys.items() if v}
        if not given or any(any(c in v for c in "*?\\") or len(v) > 64 for v in given.values()):
            raise PacsError(
                "a study query needs exact keys (patient ID, accession or study UID, no wildcards)"
            )
        return await asyncio.to_thread(self._find_studies, given)

    def _find_studies(self, given: dict[str, str]) -> list[StudyMatch]:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        for keyword in ("StudyInstanceUID", "AccessionNumber", "StudyDate", "ModalitiesInStudy", "PatientID"):
            setattr(query, keyword, given.get(keyword, ""))
        query.NumberOfStudyRelatedInstances = ""
        matches: list[StudyMatch] = []
        for ident in self._c_find(query, self._limits.max_studies):
            uid = str(ident.get("StudyInstanceUID", ""))
            if not uid:
                continue
            count = ident.get("NumberOfStudyRelatedInstances")
            modalities = ident.get("ModalitiesInStudy") or []
            matches.append(
                StudyMatch(
                    study_instance_uid=uid[:64],
                    accession_number=str(ident.get("AccessionNumber", ""))[:64],
                    study_date=str(ident.get("StudyDate", ""))[:16],
                    modalities=tuple(
                        str(m)[:16] for m in ([modalities] if isinstance(modalities, str) else modalities)
                    ),
                    instance_count=int(count) if count not in (None, "") else None,
                )
            )
        return matches

    def _c_find(self, query: Dataset, max_results: int) -> list[Dataset]:
        ae = _new_ae(self._peer.calling_aet, self._limits)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = _associate(ae, self._peer)
        results: list[Dataset] = []
        try:
            for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if not status:
                    raise PacsUnavailableError("the PACS stopped answering C-FIND")
                if int(status.Status) in _STATUS_PENDING and ident is not None:
                    results.append(ident)
                    if len(results) > max_results:
                        assoc.abort()
                        raise PacsError(f"C-FIND returned more than {max_results} matches")
                elif int(status.Status) not in _STATUS_PENDING and int(status.Status) != 0:
                    raise PacsError(f"C-FIND failed: {status_text(int(status.Status))}")
        finally:
            if assoc.is_established:
                assoc.release()
        return results

    def _find_instances(self, study_uid: str) -> list[_Instance]:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        query.SOPInstanceUID = ""
        query.SOPClassUID = ""
        found = []
        for ident in self._c_find(query, self._limits.max_instances):
            instance = _Instance(
                str(ident.get("SeriesInstanceUID", "")),
                str(ident.get("SOPInstanceUID", "")),
                str(ident.get("SOPClassUID", "")),
            )
            if (
                is_safe_uid(instance.sop_uid)
                and is_safe_uid(instance.sop_class)
                and is_safe_uid(instance.series_uid)
            ):
                found.append(instance)
        return found

    async def fetch_study(
        self, study_uid: str, spill_dir: Path, report: ImportReport
    ) -> AsyncIterator[LocalFile]:
        """Retrieve every instance of a study into ``spill_dir``, yielding each as it arrives.

        Instances C-FIND listed that did not arrive are recorded in ``report`` as failures.
        Raises :class:`PacsError` if the study is unknown, :class:`PacsUnavailableError` if the
        PACS cannot be reached.
        """
        if not is_safe_uid(study_uid):
            raise PacsError("invalid Study Instance UID")
        instances = await asyncio.to_thread(self._find_instances, study_uid)
        if not instances:
            raise PacsError("study not found on the PACS (C-FIND found no instance)")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        def emit(message: tuple[Any, ...]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, message)

        receiver = _Receiver(study_uid, spill_dir, self._limits, emit)
        retrieve = self._c_get if self._retrieve == "get" else self._c_move
        worker = asyncio.create_task(asyncio.to_thread(retrieve, study_uid, instances, receiver))
        worker.add_done_callback(lambda _task: emit(("done",)))
        arrived: set[str] = set()
        try:
            while (message := await queue.get())[0] != "done":
                if message[0] == "ok":
                    item: LocalFile = message[1]
                    arrived.add(item.info.sop_instance_uid)
                    report.add_ok(item.info.name, item.info.size_bytes)
                    yield item
                else:
                    arrived.add(message[1])
                    report.add_failure(message[1], message[2])
        finally:
            receiver.abort.set()  # the consumer may have stopped early: let the worker end soon
            if not worker.done():
                worker.add_done_callback(_ignore_outcome)
        outcome = await worker  # raises PacsError / PacsUnavailableError from the thread
        for instance in instances:
            if instance.sop_uid not in arrived:
                report.add_failure(instance.sop_uid, f"not received ({outcome})")

    def _contexts_plan(self, instances: Sequence[_Instance]) -> list[list[str]]:
        """SOP classes grouped so that each group's contexts fit one association."""
        per_association = (_MAX_CONTEXTS - 1) // len(self._limits.transfer_syntaxes)
        classes = sorted({i.sop_class for i in instances})
        return [classes[i : i + per_association] for i in range(0, len(classes), per_association)]

    def _c_get(self, study_uid: str, instances: Sequence[_Instance], receiver: _Receiver) -> str:
        outcomes = []
        groups = self._contexts_plan(instances)
        for classes in groups:
            ae = _new_ae(self._peer.calling_aet, self._limits)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            for sop_class in classes:
                for syntax in self._limits.transfer_syntaxes:
                    ae.add_requested_context(sop_class, syntax)
            roles = [build_role(c, scp_role=True) for c in classes]
            assoc = _associate(
                ae, self._peer, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, receiver.handle)]
            )
            try:
                for query in _retrieve_queries(
                    study_uid, instances, set(classes), whole_study=len(groups) == 1
                ):
                    responses = assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
                    outcomes.append(_final_status(responses, receiver.abort))
                    if receiver.abort.is_set():
                        assoc.abort()
                        return "retrieval cancelled"
            finally:
                if assoc.is_established:
                    assoc.release()
        return _describe_outcomes(outcomes, "C-GET")

    def _c_move(self, study_uid: str, instances: Sequence[_Instance], receiver: _Receiver) -> str:
        assert self._move_listen is not None
        scp = _new_ae(self._move_aet, self._limits)
        scp.require_calling_aet = [self._peer.called_aet]
        classes = {str(c.abstract_syntax) for c in AllStoragePresentationContexts}
        classes |= {i.sop_class for i in instances}
        for sop_class in sorted(classes):
            scp.add_supported_context(sop_class, list(self._limits.transfer_syntaxes))
        try:
            server = scp.start_server(
                self._move_listen, block=False, evt_handlers=[(evt.EVT_C_STORE, receiver.handle)]
            )
        except OSError as exc:
            raise PacsUnavailableError(
                f"cannot listen for C-MOVE on port {self._move_listen[1]}: {exc}"
            ) from None
        assert server is not None  # block=False returns the running server
        try:
            ae = _new_ae(self._peer.calling_aet, self._limits)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = _associate(ae, self._peer)
            outcomes = []
            try:
                query = _retrieve_queries(study_uid, instances, set(classes), whole_study=True)[0]
                responses = assoc.send_c_move(
                    query, self._move_aet, StudyRootQueryRetrieveInformationModelMove
                )
                outcomes.append(_final_status(responses, receiver.abort))
            finally:
                if assoc.is_established:
                    assoc.release()
        finally:
            server.shutdown()
        return _describe_outcomes(outcomes, "C-MOVE")


def _ignore_outcome(task: asyncio.Task[str]) -> None:
    # The consumer left before the retrieval ended; its error, if any, has no one to go to.
    if not task.cancelled():
        task.exception()


def _retrieve_queries(
    study_uid: str, instances: Sequence[_Instance], classes: set[str], *, whole_study: bool
) -> list[Dataset]:
    """C-GET/C-MOVE identifiers: the whole study, or the series (else instances) of ``classes``."""
    if whole_study:
        return [_identifier("STUDY", StudyInstanceUID=study_uid)]
    series_classes: dict[str, set[str]] = {}
    for i in instances:
        series_classes.setdefault(i.series_uid, set()).add(i.sop_class)
    queries = []
    for series, found in sorted(series_classes.items()):
        if found <= classes:
            queries.append(_identifier("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series))
        elif found & classes:
            # A series mixing SOP classes of several associations: fetch its instances one by one.
            for i in instances:
                if i.series_uid == series and i.sop_class in classes:
                    queries.append(
                        _identifier(
                            "IMAGE",
                            StudyInstanceUID=study_uid,
                            SeriesInstanceUID=series,
                            SOPInstanceUID=i.sop_uid,
                        )
                    )
    return queries


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _describe_outcomes(outcomes: list[tuple[int, Dataset | None]], what: str) -> str:
    """A summary of the retrieval's final statuses, used as the reason for missing instances."""
    failed = 0
    worst = 0
    for code, status in outcomes:
        if code not in (0, -1):
            worst = code
        if status is not None:
            failed += int(status.get("NumberOfFailedSuboperations", 0) or 0)
    if worst:
        return f"{what} ended with {status_text(worst)}, {failed} sub-operations failed"
    return f"{what} completed without sending it"


class DimseSink:
    """Stores instances in a PACS by C-STORE: one association, one context per (SOP class, syntax).

    Files are sent as they are (no transcoding): a PACS that does not accept a file's transfer
    syntax gets nothing, and the file is reported as refused.
    """

    def __init__(self, peer: DimsePeer, *, limits: DimseLimits | None = None) -> None:
        self._peer = peer
        self._limits = limits or DimseLimits()

    async def deliver(self, files: Sequence[LocalFile], *, study_uid: str | None = None) -> DeliveryReport:
        """Store every file; attachments go as encapsulated documents of ``study_uid``.

        ``study_uid`` defaults to the files' only study; see :func:`wrap_attachments`.
        """
        return await asyncio.to_thread(self.deliver_sync, files, study_uid=study_uid)

    def deliver_sync(self, files: Sequence[LocalFile], *, study_uid: str | None = None) -> DeliveryReport:
        """Blocking form of :meth:`deliver`."""
        report = DeliveryReport()
        with tempfile.TemporaryDirectory(prefix="mftp-wrap-") as work:
            dicom = wrap_attachments(files, study_uid, Path(work), report)
            pairs = sorted({(f.info.sop_class_uid, f.info.transfer_syntax_uid) for f in dicom})
            for start in range(0, len(pairs), _MAX_CONTEXTS):
                group = set(pairs[start : start + _MAX_CONTEXTS])
                batch = [f for f in dicom if (f.info.sop_class_uid, f.info.transfer_syntax_uid) in group]
                try:
                    self._store_group(group, batch, report)
                except PacsUnavailableError as exc:  # raised before anything of the group was sent
                    for item in batch:
                        report.add_failure(item.info.name, exc)
        return report

    def _store_group(
        self, pairs: set[tuple[str, str]], batch: list[LocalFile], report: DeliveryReport
    ) -> None:
        ae = _new_ae(self._peer.calling_aet, self._limits)
        for sop_class, syntax in sorted(pairs):
            ae.add_requested_context(sop_class, syntax)
        assoc = _associate(ae, self._peer)
        try:
            accepted = {
                (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
            }
            for position, item in enumerate(batch):
                info = item.info
                if (info.sop_class_uid, info.transfer_syntax_uid) not in accepted:
                    report.add_failure(
                        info.name,
                        f"the PACS refused transfer syntax {info.transfer_syntax_uid} for this SOP class",
                    )
                    continue
                if not assoc.is_established:
                    for rest in batch[position:]:
                        report.add_failure(rest.info.name, "association lost before it was sent")
                    return
                self._store_one(assoc, item, report)
        finally:
            if assoc.is_established:
                assoc.release()

    @staticmethod
    def _store_one(assoc: Association, item: LocalFile, report: DeliveryReport) -> None:
        try:
            status = assoc.send_c_store(item.path)
        except (OSError, ValueError, AttributeError) as exc:
            report.add_failure(item.info.name, f"cannot send: {exc}")
            return
        if not status:
            report.add_failure(item.info.name, "no answer from the PACS (association lost or timed out)")
            return
        code = int(status.Status)
        if code == 0 or code in _STATUS_WARNINGS:
            report.add_ok(item.info.name, item.info.size_bytes)
        else:
            report.add_failure(item.info.name, f"refused by the PACS: {status_text(code)}")
