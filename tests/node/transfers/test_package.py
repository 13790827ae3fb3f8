"""Preparing a study to send: in-process and by worker processes, the same packaged files."""

from __future__ import annotations

import functools
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mftp.crypto.signing import SigningIdentity
from mftp.node.dataplane.blobstore import BlobStore
from mftp.node.errors import NodeError, NodeUsageError
from mftp.node.pacs import FolderSource, LocalFile
from mftp.node.transfers import preparing
from mftp.node.transfers.preparing import (
    MAX_WORKER_DEATHS,
    PARALLEL_MIN_FILES,
    WORKER_DIED,
    PreparePool,
    _process_alive,
    package_study,
    restore_files,
    verify_all,
)
from mftp.node.transfers.sources import one_study
from mftp.transfer.deid import Mode, Policy
from mftp.transfer.errors import TransferInputError
from mftp.transfer.package import Packager, recipient_object_key, storage_key_for
from mftp.transfer.study import FileReport, ImportReport

SENDER, RECIPIENT = SigningIdentity.generate(), SigningIdentity.generate()
SECRET = b"s" * 32


def study(folder: Path, count: int) -> list[str]:
    """``count`` CT images of one study; returns their SOP Instance UIDs in file order."""
    folder.mkdir()
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    study_uid, uids = pydicom.uid.generate_uid(), []
    for index in range(count):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = index
        ds.save_as(folder / f"{index:03d}.dcm")
        uids.append(str(ds.SOPInstanceUID))
    return uids


def _study_to_package(tmp_path: Path, transfer_id: bytes) -> tuple[list[LocalFile], BlobStore, Packager]:
    """A study of :data:`PARALLEL_MIN_FILES` files, imported, and a packager into a fresh store."""
    study(tmp_path / "study", PARALLEL_MIN_FILES)
    report = ImportReport()
    files = sorted(FolderSource(tmp_path / "study").scan(tmp_path, report), key=lambda f: f.info.name)
    one_study(files, report, max_instances=100)
    store = BlobStore(tmp_path / "blobs")
    packager = Packager(
        sender=SENDER.public,
        recipient=RECIPIENT.public,
        transfer_id=transfer_id,
        created_ms=1,
        storage_key=storage_key_for(SENDER),
        sink_factory=store.object_writer,
    )
    return files, store, packager


@pytest.mark.parametrize("workers", [1, 2])
def test_prepared_in_order_and_verified(tmp_path: Path, workers: int) -> None:
    files, store, packager = _study_to_package(tmp_path, b"t" * 16)
    seen: list[int] = []
    policy = Policy.for_mode(Mode.PSEUDONYMISED)
    pool = PreparePool(workers)
    try:
        result = package_study(files, packager, store, policy, SECRET, lambda n, _: seen.append(n), pool=pool)
    finally:
        pool.shutdown()
    manifest = result.manifest
    assert [e.name for e in manifest.entries] == [f"{i:05d}.dcm" for i in range(len(files))]
    assert seen == list(range(1, len(files) + 1))
    key_for = functools.partial(recipient_object_key, RECIPIENT)
    verify_all(store, manifest, key_for)
    (tmp_path / "spill").mkdir()
    restored = restore_files(store, manifest, key_for, tmp_path / "spill")
    numbers = [int(pydicom.dcmread(f.path).InstanceNumber) for f in restored]
    assert numbers == list(range(len(files)))  # the order of the source, whatever worker did it
    assert all(f.info.sop_instance_uid.startswith("2.25.") for f in restored)


def test_one_study_at_a_time(tmp_path: Path) -> None:
    study(tmp_path / "a", 1)
    study(tmp_path / "b", 1)
    report = ImportReport()
    files = list(FolderSource([tmp_path / "a", tmp_path / "b"]).scan(tmp_path, report))
    with pytest.raises(NodeUsageError, match="2 studies"):
        one_study(files, report, max_instances=100)
    with pytest.raises(NodeUsageError, match="no DICOM instance"):
        one_study([], report, max_instances=100)


def test_the_pool_is_reused_and_replaced_when_a_worker_dies(tmp_path: Path) -> None:
    import os
    import signal

    pool = PreparePool(2)
    try:
        pool.warm()
        executor = pool.executor()
        assert executor is not None and pool.executor() is executor  # one pool for every send
        victim = next(iter(executor._processes))  # a worker dies (the OOM killer, a codec crash)
        os.kill(victim, signal.SIGKILL)
        files, store, packager = _study_to_package(tmp_path, b"u" * 16)
        policy = Policy.for_mode(Mode.PSEUDONYMISED)
        report = ImportReport()
        result = package_study(
            files, packager, store, policy, SECRET, lambda n, _: None, pool=pool, report=report
        )
        # The files it had in flight were prepared again in fresh workers: none was to blame.
        assert len(result.manifest.entries) == len(files) and report.failed_count == 0
        assert pool.executor() is not executor  # the next send gets fresh workers too
    finally:
        pool.shutdown()


class _CrashingExecutor:
    """A pool whose worker dies on the files named ``crash`` (runs the others here, at once)."""

    def __init__(self, crash: set[str]) -> None:
        self.crash, self.broken = crash, False

    def submit(self, fn: Any, path: str, *args: Any) -> Future[Any]:
        if self.broken:
            raise BrokenProcessPool("a child process terminated abruptly")
        future: Future[Any] = Future()
        if Path(path).name in self.crash:
            self.broken = True
            future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        else:
            try:
                future.set_result(fn(path, *args))
            except Exception as exc:
                future.set_exception(exc)
        return future


class _CrashingPool:
    workers = 2

    def __init__(self, crash: set[str]) -> None:
        self.crash, self.started = crash, 0
        self._executor: _CrashingExecutor | None = None

    def executor(self) -> _CrashingExecutor:
        if self._executor is None:
            self._executor, self.started = _CrashingExecutor(self.crash), self.started + 1
        return self._executor

    def discard(self, broken: _CrashingExecutor) -> None:
        if self._executor is broken:
            self._executor = None


def test_a_file_that_kills_its_worker_is_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    files, store, packager = _study_to_package(tmp_path, b"k" * 16)
    pool = _CrashingPool({"003.dcm"})
    report, seen = ImportReport(), []
    policy = Policy.for_mode(Mode.PSEUDONYMISED)
    result = package_study(
        files,
        packager,
        store,
        policy,
        SECRET,
        lambda n, _: seen.append(n),
        pool=cast(Any, pool),
        report=report,
    )
    names = [e.name for e in result.manifest.entries]
    assert names == [f"{i:05d}.dcm" for i in range(len(files)) if i != 3]
    assert [(f.name, f.reason) for f in report.failures] == [("003.dcm", WORKER_DIED)]
    assert seen[-1] == len(files)  # the left-out file counts as done with
    assert pool.started == 3  # the first pool, one to try the suspect alone, one after it


def test_a_study_whose_files_keep_killing_workers_is_not_sent(tmp_path: Path) -> None:
    files, store, packager = _study_to_package(tmp_path, b"m" * 16)
    crash = {f"{i:03d}.dcm" for i in range(MAX_WORKER_DEATHS + 1)}
    policy = Policy.for_mode(Mode.PSEUDONYMISED)
    with pytest.raises(NodeError, match="worker processes died on"):
        package_study(
            files, packager, store, policy, SECRET, lambda n, _: None, pool=cast(Any, _CrashingPool(crash))
        )
    assert not any(store.has(object_id) for object_id in packager.committed)  # nothing left behind


def test_a_file_refused_while_preparing_is_reported_and_the_rest_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, store, packager = _study_to_package(tmp_path, b"r" * 16)
    prepare = preparing.prepare_file

    def refusing(path: str, name: str, *args: Any) -> Any:
        if Path(path).name == "005.dcm":
            raise TransferInputError("Burned In Annotation is YES: the pixels may show identity", name=name)
        return prepare(path, name, *args)

    monkeypatch.setattr(preparing, "prepare_file", refusing)
    report = ImportReport()
    policy = Policy.for_mode(Mode.PSEUDONYMISED)
    result = package_study(files, packager, store, policy, SECRET, lambda n, _: None, report=report)
    assert len(result.manifest.entries) == len(files) - 1
    assert [(f.name, f.reason) for f in report.failures] == [
        ("005.dcm", "Burned In Annotation is YES: the pixels may show identity")
    ]


def test_a_study_with_no_file_left_is_not_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, store, packager = _study_to_package(tmp_path, b"n" * 16)

    def refusing(path: str, name: str, *args: Any) -> Any:
        raise TransferInputError("not de-identifiable", name=name)

    monkeypatch.setattr(preparing, "prepare_file", refusing)
    report = ImportReport()
    policy = Policy.for_mode(Mode.PSEUDONYMISED)
    with pytest.raises(NodeError, match=f"none of the study's {len(files)} files"):
        package_study(files, packager, store, policy, SECRET, lambda n, _: None, report=report)
    assert report.failed_count == len(files)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_send_stopped_while_preparing_leaves_nothing_behind(tmp_path: Path, workers: int) -> None:
    """The recipient refuses (or the operator cancels) mid-way: progress raises, as the node's does."""
    files, store, _ = _study_to_package(tmp_path, b"c" * 16)
    packager = Packager(
        sender=SENDER.public,
        recipient=RECIPIENT.public,
        transfer_id=b"c" * 16,
        created_ms=1,
        storage_key=storage_key_for(SENDER),
        sink_factory=store.object_writer,
        bucket_target_bytes=1,  # every file sealed at once: objects are on disk when it stops
        large_object_bytes=1,
    )

    def progress(files_done: int, _bytes: int) -> None:
        if files_done == 5:
            raise NodeUsageError("transfer is refused; not preparing it")

    policy = Policy.for_mode(Mode.PSEUDONYMISED)
    pool = PreparePool(workers)
    try:
        with pytest.raises(NodeUsageError, match="refused"):
            package_study(files, packager, store, policy, SECRET, progress, pool=pool)
        assert packager.committed and not any(store.has(object_id) for object_id in packager.committed)
        # The pool is left to the next send, not broken by the abandoned jobs.
        (tmp_path / "next").mkdir()
        files2, store2, packager2 = _study_to_package(tmp_path / "next", b"d" * 16)
        result = package_study(files2, packager2, store2, policy, SECRET, lambda n, _: None, pool=pool)
        assert len(result.manifest.entries) == len(files2)
    finally:
        pool.shutdown()


def test_workers_end_when_their_node_is_killed(tmp_path: Path) -> None:
    import json
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import json, os, signal\n"
        "from mftp.node.transfers.preparing import PreparePool\n"
        "if __name__ == '__main__':\n"
        "    pool = PreparePool(2)\n"
        "    pool.warm()\n"
        "    print(json.dumps(list(pool.executor()._processes)), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would\n"
    )
    (tmp_path / "node.py").write_text(script)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "node.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL
    workers = json.loads(done.stdout)
    assert len(workers) == 2
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "pool workers outlived their node"


def _alive(pid: int) -> bool:
    return _process_alive(pid)


def test_a_file_swapped_for_a_link_after_the_scan_is_refused_by_name(tmp_path: Path) -> None:
    """Whoever can write into a source folder could swap a scanned file, or the folder above it,
    for a link to a file elsewhere before it is prepared: it is read without following links."""
    files, store, packager = _study_to_package(tmp_path, b"l" * 16)
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes(files[1].path.read_bytes())
    files[1].path.unlink()
    files[1].path.symlink_to(outside)
    report = FileReport()
    result = package_study(
        files, packager, store, Policy.for_mode(Mode.PSEUDONYMISED), SECRET, lambda *_: None, report=report
    )
    assert len(result.manifest.entries) == len(files) - 1
    (failure,) = report.failures
    assert failure.name == files[1].info.name and "a link, not followed" in failure.reason
