"""Preparing a study to send: in-process and by worker processes, the same packaged files."""

from __future__ import annotations

import functools
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mftp.crypto.signing import SigningIdentity
from mftp.node.blobstore import BlobStore
from mftp.node.errors import NodeError, NodeUsageError
from mftp.node.pacs import FolderSource, LocalFile
from mftp.node.transfer_io import (
    PARALLEL_MIN_FILES,
    PreparePool,
    _process_alive,
    one_study,
    package_study,
    restore_files,
    verify_all,
)
from mftp.transfer.deid import Mode, Policy
from mftp.transfer.package import Packager, recipient_object_key, storage_key_for
from mftp.transfer.study import ImportReport

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
        with pytest.raises(NodeError, match="worker process"):
            package_study(files, packager, store, policy, SECRET, lambda n, _: None, pool=pool)
        assert not any(store.has(object_id) for object_id in packager.committed)  # nothing left behind
        assert pool.executor() is not executor  # the next send gets fresh workers
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
        "from mftp.node.transfer_io import PreparePool\n"
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
