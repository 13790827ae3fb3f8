"""Long operations as jobs: an export answers at once with a job the caller follows.

An export of a large study takes minutes; a client that waited for it timed out while the node
went on, and its retry exported the study (and recorded the access) a second time.  Now
``POST /transfers/{id}/export`` checks the request, registers an :class:`ExportJob` and answers
``202`` at once; the job runs in the node (:data:`JOB_LIFECYCLE`: queued -> running -> done |
failed), counts its progress (files restored of the study's total) and is read with
``GET /transfers/{id}/export/{job_id}``.

**Idempotency.**  A job's key is the SHA-256 of (transfer id, destination as checked, purpose,
user party): the same request repeated while its job is queued or running, or within
:data:`REPEAT_WINDOW_S` after it completed, returns that job: no second export, no second
``STUDY_ACCESSED`` record.  A failed job is not reused: a retry after a failure runs again.
After the window, the same request is a new access and is exported and recorded again.  The
key is a hash, so the table names no user.  The table lives in memory: a restarted node forgets
its jobs (a running one fails with the node, and a retry then exports again).

**Bounds.**  At most :data:`MAX_JOBS` jobs are kept; a new one evicts the oldest finished job,
and is refused while every kept job is still live.  At most :data:`MAX_RUNNING` run at once;
the others wait, queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from mftp.transfer.errors import TransferError

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import NodeError, NodeUsageError, StorageDamaged
from ..lifecycle import Lifecycle

MAX_JOBS: Final = 256
MAX_RUNNING: Final = 2
REPEAT_WINDOW_S: Final = 3600.0
"""How long a completed export answers a repeat of its request instead of exporting again."""


class JobState(StrEnum):
    """Where a job is (the values are what the API says)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


JOB_LIFECYCLE: Final = Lifecycle(
    "job",
    {
        JobState.QUEUED: frozenset({JobState.RUNNING, JobState.FAILED}),
        JobState.RUNNING: frozenset({JobState.DONE, JobState.FAILED}),
        JobState.DONE: frozenset(),
        JobState.FAILED: frozenset(),
    },
)


def fault_of(exc: BaseException) -> str:
    """Whose fault a failure is: ``caller`` (API 400), ``storage`` or ``node`` (500), ``input`` (502)."""
    if isinstance(exc, StorageDamaged):
        return "storage"
    if isinstance(exc, NodeUsageError):
        return "caller"
    if isinstance(exc, OSError):  # our spill folder: a full or read-only disk
        return "node"
    if isinstance(exc, NodeError | TransferError):
        return "input"  # a peer's, the PACS's or a stored file's (NodeInputError, TransferError)
    return "node"  # anything else is our own bug


def job_key(*parts: str) -> str:
    """The idempotency key of a request: a hash of its parts (no identity kept in clear)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@dataclass
class ExportJob:
    """One export of a received study, followed by its caller."""

    job_id: str
    key: str
    transfer_id: str
    created_ms: int
    state: JobState = JobState.QUEUED
    phase: str = "queued"  # queued, restoring, delivering, recording, finished
    files: int = 0
    files_done: int = 0
    record: str = ""
    error: str = ""
    fault: str = ""
    finished_s: float | None = None  # monotonic, when done or failed
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def move(self, target: JobState) -> None:
        """Move to ``target`` (a usage error if the table forbids it)."""
        self.state = JOB_LIFECYCLE.move(self.state, target)

    @property
    def final(self) -> bool:
        """Whether the job has ended."""
        return JOB_LIFECYCLE.final(self.state)

    def view(self) -> dict[str, Any]:
        """What the API shows."""
        return {
            "job_id": self.job_id,
            "transfer_id": self.transfer_id,
            "state": self.state.value,
            "phase": self.phase,
            "files": self.files,
            "files_done": self.files_done,
            "record": self.record,
            "error": self.error,
            "fault": self.fault,
            "created_ms": self.created_ms,
        }


class ExportJobs:
    """The export jobs of a node: bounded, in memory, found again by their request's key."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        limit: int = MAX_JOBS,
        running: int = MAX_RUNNING,
        repeat_window_s: float = REPEAT_WINDOW_S,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.repeat_window_s = repeat_window_s
        self.slots = asyncio.Semaphore(running)
        self._jobs: OrderedDict[str, ExportJob] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._jobs)

    def find(self, key: str) -> ExportJob | None:
        """The job that answers a repeat of the request ``key``, if any (see the module docstring)."""
        now = self.clock.monotonic_s()
        for job in reversed(self._jobs.values()):
            if job.key != key:
                continue
            if not job.final:
                return job
            done = job.state is JobState.DONE and job.finished_s is not None
            if done and now - (job.finished_s or 0.0) < self.repeat_window_s:
                return job
        return None

    def add(self, key: str, transfer_id: str) -> ExportJob:
        """A new queued job; evicts the oldest finished job when full, refuses if none is."""
        if len(self._jobs) >= self.limit:
            oldest = next((j for j in self._jobs.values() if j.final), None)
            if oldest is None:
                raise NodeUsageError(f"{self.limit} exports are in progress; try again when one ends")
            del self._jobs[oldest.job_id]
        job = ExportJob(secrets.token_hex(16), key, transfer_id, self.clock.now_ms())
        self._jobs[job.job_id] = job
        return job

    def get(self, transfer_id: str, job_id: str) -> ExportJob | None:
        """The job ``job_id`` of ``transfer_id``, or ``None``."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.transfer_id == transfer_id else None

    def finish(self, job: ExportJob, error: BaseException | None = None) -> None:
        """End ``job``: done, or failed with ``error``'s message and whose fault it is."""
        if error is None:
            job.move(JobState.DONE)
        else:
            job.move(JobState.FAILED)
            job.error = str(error) or type(error).__name__
            job.fault = fault_of(error)
        job.phase = "finished"
        job.finished_s = self.clock.monotonic_s()
        job.ended.set()
