"""No link is followed below what a send reads or an export writes (issue: point 1).

A hostile neighbour who can write into a source folder plants links to files and folders
elsewhere; one who can write into an export folder plants links under the names a study's
folders and files will take.  Nothing outside may be read or written, and every such file is
named in the report.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from mftp.node.pacs import FolderSink, FolderSource, LocalFile
from mftp.node.pacs.common import LINK_NOT_FOLLOWED, open_dir_nofollow, open_file_nofollow
from mftp.transfer.study import ImportReport
from tests.samples import sample


def scan(paths: Path | list[Path], spill: Path) -> tuple[list[LocalFile], ImportReport]:
    report = ImportReport()
    return list(FolderSource(paths).scan(spill, report)), report


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A source root with one real file, and a secret folder outside it holding DICOM files."""
    root = tmp_path / "outgoing"
    study = root / "study"
    (study / "sub").mkdir(parents=True)
    (study / "ct.dcm").write_bytes(sample("CT_small.dcm"))
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "other.dcm").write_bytes(sample("MR_small.dcm"))
    (secret / "notes.pdf").write_bytes(b"%PDF-1.4\n% private\n%%EOF\n")
    spill = tmp_path / "spill"
    spill.mkdir()
    return {"root": root, "study": study, "secret": secret, "spill": spill}


def test_links_in_a_source_folder_are_reported_never_followed(layout: dict[str, Path]) -> None:
    study, secret = layout["study"], layout["secret"]
    (study / "link-to-file.dcm").symlink_to(secret / "other.dcm")
    (study / "link-to-pdf.pdf").symlink_to(secret / "notes.pdf")
    (study / "link-to-folder").symlink_to(secret)
    (study / "sub" / "deep-link.dcm").symlink_to(secret / "other.dcm")
    (study / "link-inside").symlink_to(study / "ct.dcm")  # even one that stays inside
    (study / "dangling.dcm").symlink_to(secret / "nothing-here.dcm")
    files, report = scan(study, layout["spill"])
    assert [f.info.name for f in files] == ["ct.dcm"]
    assert all(secret not in f.path.parents for f in files)
    reasons = {f.name: f.reason for f in report.failures}
    assert reasons == {
        name: LINK_NOT_FOLLOWED
        for name in (
            "link-to-file.dcm",
            "link-to-pdf.pdf",
            "link-to-folder",
            "sub/deep-link.dcm",
            "link-inside",
            "dangling.dcm",
        )
    }


def test_a_source_that_is_itself_a_link_is_not_followed(layout: dict[str, Path]) -> None:
    link_file = layout["root"] / "one.dcm"
    link_file.symlink_to(layout["secret"] / "other.dcm")
    link_dir = layout["root"] / "elsewhere"
    link_dir.symlink_to(layout["secret"])
    files, report = scan([link_file, link_dir], layout["spill"])
    assert files == []
    assert [(f.name, f.reason) for f in report.failures] == [
        ("one.dcm", LINK_NOT_FOLLOWED),
        ("elsewhere", LINK_NOT_FOLLOWED),
    ]


def test_a_folder_swapped_for_a_link_after_the_walk_is_not_read(layout: dict[str, Path]) -> None:
    """The race: the walk saw a real folder; by the time the file is opened it is a link."""
    study, secret = layout["study"], layout["secret"]
    (study / "sub" / "other.dcm").write_bytes(sample("CT_small.dcm"))
    assert os.read(open_file_nofollow(study / "sub" / "other.dcm"), 4) == sample("CT_small.dcm")[:4]
    (study / "sub" / "other.dcm").unlink()
    (study / "sub").rmdir()
    (study / "sub").symlink_to(secret)  # secret/other.dcm exists: a plain open would read it
    with pytest.raises(OSError) as refused:
        open_file_nofollow(study / "sub" / "other.dcm")
    assert refused.value.errno == errno.ELOOP and refused.value.strerror == LINK_NOT_FOLLOWED
    with pytest.raises(OSError):
        open_dir_nofollow(study / "sub")
    # And a link in a file's place, or something that is not a regular file, is refused too.
    (study / "swapped.dcm").symlink_to(secret / "other.dcm")
    with pytest.raises(OSError, match="a link, not followed"):
        open_file_nofollow(study / "swapped.dcm")
    os.mkfifo(study / "fifo.dcm")
    with pytest.raises(OSError, match="not a regular file"):
        open_file_nofollow(study / "fifo.dcm")  # and it did not block on the fifo
    _, report = scan(study, layout["spill"])  # a fifo in a folder is not read either (nor waited on)
    reasons = {f.name: f.reason for f in report.failures}
    assert reasons["fifo.dcm"] == "not a regular file or folder"
    assert reasons["sub"] == LINK_NOT_FOLLOWED


def test_dot_dot_is_refused_by_the_walkers(layout: dict[str, Path]) -> None:
    fd = open_dir_nofollow(layout["study"])
    try:
        for parts in (["..", "secret"], ["."], [""], ["a/b"]):
            with pytest.raises(OSError) as refused:
                open_dir_nofollow(parts, below=fd)
            assert refused.value.errno == errno.EINVAL
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- exports


def study_files(tmp_path: Path) -> tuple[list[LocalFile], str, str, str]:
    source = tmp_path / "src"
    source.mkdir()
    (source / "ct.dcm").write_bytes(sample("CT_small.dcm"))
    (source / "guide.pdf").write_bytes(b"%PDF-1.4\n% guide\n%%EOF\n")
    spill = tmp_path / "spill-x"
    spill.mkdir()
    files, report = scan(source, spill)
    assert report.all_ok and len(files) == 2
    ct = next(f.info for f in files if f.info.name == "ct.dcm")
    return files, ct.study_instance_uid, ct.series_instance_uid, ct.sop_instance_uid


def outside_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["victim.dcm"]
    assert (outside / "victim.dcm").read_bytes() == b"do not overwrite me"


@pytest.mark.parametrize("planted_at", ["study", "series", "attachments"])
def test_a_link_planted_under_a_folder_name_in_an_export_is_not_followed(
    tmp_path: Path, planted_at: str
) -> None:
    files, study, series, _ = study_files(tmp_path)
    out, outside = tmp_path / "incoming", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "victim.dcm").write_bytes(b"do not overwrite me")
    if planted_at == "study":
        (out / study).symlink_to(outside)
    else:
        (out / study).mkdir()
        (out / study / planted_at.replace("series", series)).symlink_to(outside)
    report = FolderSink(out, fsync=False).deliver_sync(files)
    failed = {f.name: f.reason for f in report.failures}
    expected = (
        {"ct.dcm", "guide.pdf"}
        if planted_at == "study"
        else {"series": {"ct.dcm"}, "attachments": {"guide.pdf"}}[planted_at]
    )
    assert failed.keys() == expected
    assert all(reason == f"cannot write: {LINK_NOT_FOLLOWED}" for reason in failed.values())
    outside_untouched(outside)


def test_a_link_planted_under_a_file_name_is_replaced_not_written_through(tmp_path: Path) -> None:
    files, study, series, sop = study_files(tmp_path)
    out, outside = tmp_path / "incoming", tmp_path / "outside"
    (out / study / series).mkdir(parents=True)
    (out / study / "attachments").mkdir()
    outside.mkdir()
    (outside / "victim.dcm").write_bytes(b"do not overwrite me")
    (out / study / series / f"{sop}.dcm").symlink_to(outside / "victim.dcm")
    (out / study / "attachments" / "guide.pdf").symlink_to(outside / "victim.dcm")
    report = FolderSink(out, fsync=False).deliver_sync(files)
    assert report.all_ok
    outside_untouched(outside)
    for written in (out / study / series / f"{sop}.dcm", out / study / "attachments" / "guide.pdf"):
        assert stat.S_ISREG(written.lstat().st_mode)  # the link itself was replaced by the file
    assert (out / study / series / f"{sop}.dcm").read_bytes() == sample("CT_small.dcm")


def test_a_link_as_the_source_of_an_export_file_is_refused(tmp_path: Path) -> None:
    """A restored file swapped for a link in the spill folder is not copied through it."""
    files, *_ = study_files(tmp_path)
    ct = next(f for f in files if f.info.name == "ct.dcm")
    moved = tmp_path / "moved.dcm"
    ct.path.rename(moved)
    ct.path.symlink_to(moved)
    report = FolderSink(tmp_path / "incoming", fsync=False).deliver_sync([ct])
    assert [f.reason for f in report.failures] == ["cannot write: Too many levels of symbolic links"]


@pytest.mark.parametrize("mode", [0o640, 0o600, 0o644, 0o660])
def test_exported_files_get_the_configured_mode_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    files, study, series, sop = study_files(tmp_path)
    out = tmp_path / "incoming"
    old = os.umask(0o077)  # the node's own umask narrows nothing the operator asked for...
    try:
        assert FolderSink(out, fsync=False, file_mode=mode).deliver_sync(files).all_ok
    finally:
        os.umask(old)
    folder_mode = mode | ((mode & 0o444) >> 2)
    for path in [out, out / study, out / study / series, out / study / "attachments"]:
        assert stat.S_IMODE(path.stat().st_mode) == folder_mode, path
    for path in (out / study / series / f"{sop}.dcm", out / study / "attachments" / "guide.pdf"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    old = os.umask(0o022)  # ...and a wide umask widens nothing either
    try:
        again = tmp_path / "incoming-2"
        assert FolderSink(again, fsync=False, file_mode=0o600).deliver_sync(files).all_ok
    finally:
        os.umask(old)
    assert stat.S_IMODE((again / study / series / f"{sop}.dcm").stat().st_mode) == 0o600
    assert stat.S_IMODE((again / study).stat().st_mode) == 0o700
