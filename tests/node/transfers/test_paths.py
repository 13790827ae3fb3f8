"""Allow-lists for what a send may read and an export may write (an API token alone cannot reach the disk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mftp.node.errors import NodeUsageError
from mftp.node.transfers.sources import Allowed, DicomWebStudy, check_destination, parse_source


def allowed(tmp_path: Path) -> Allowed:
    (tmp_path / "outgoing").mkdir()
    (tmp_path / "incoming").mkdir()
    return Allowed(
        ((tmp_path / "outgoing").resolve(),),
        ((tmp_path / "incoming").resolve(),),
        ("http://127.0.0.1:8042/dicom-web",),
    )


def test_sources_must_lie_in_a_listed_folder(tmp_path: Path) -> None:
    rules = allowed(tmp_path)
    study = tmp_path / "outgoing" / "study"
    study.mkdir()
    assert parse_source(str(study), rules) == study.resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(NodeUsageError, match=r"transfer\.source_dirs"):
        parse_source(str(elsewhere), rules)
    with pytest.raises(NodeUsageError, match=r"transfer\.source_dirs"):
        parse_source(str(tmp_path / "outgoing" / ".." / "elsewhere"), rules)
    escape = tmp_path / "outgoing" / "link"
    escape.symlink_to(elsewhere)
    with pytest.raises(NodeUsageError, match=r"transfer\.source_dirs"):
        parse_source(str(escape), rules)


def test_exports_and_dicomweb_servers_must_be_listed(tmp_path: Path) -> None:
    rules = allowed(tmp_path)
    inside = tmp_path / "incoming" / "case-1"
    assert check_destination(str(inside), rules) == str(inside.resolve())
    with pytest.raises(NodeUsageError, match=r"transfer\.export_dirs"):
        check_destination("/etc/cron.d", rules)
    assert check_destination("http://127.0.0.1:8042/dicom-web", rules).startswith("http://127.0.0.1:8042")
    with pytest.raises(NodeUsageError, match=r"transfer\.dicomweb_urls"):
        check_destination("http://169.254.169.254/latest", rules)
    for lookalike in (
        "http://127.0.0.1:8042/dicom-web-evil",  # not on a / boundary
        "http://127.0.0.1:8043/dicom-web",  # another port
        "http://127.0.0.1:8042@evil.example/dicom-web",  # credentials trick
        "https://127.0.0.1:8042/dicom-web",  # another scheme
    ):
        with pytest.raises(NodeUsageError, match=r"transfer\.dicomweb_urls"):
            check_destination(lookalike, rules)
    assert check_destination("http://127.0.0.1:8042/dicom-web/studies", rules)
    any_port = Allowed((), (), ("http://127.0.0.1",))
    assert check_destination("http://127.0.0.1:9999/dicom-web", any_port)
    with pytest.raises(NodeUsageError):
        check_destination("http://127.0.0.1.evil.example:80/x", any_port)
    source = parse_source("dicomweb:http://127.0.0.1:8042/dicom-web#1.2.3", rules)
    assert source == DicomWebStudy("http://127.0.0.1:8042/dicom-web", "1.2.3")
    with pytest.raises(NodeUsageError, match=r"transfer\.dicomweb_urls"):
        parse_source("dicomweb:http://10.0.0.9/dicom-web#1.2.3", rules)


def test_nothing_is_allowed_by_default(tmp_path: Path) -> None:
    rules = Allowed((), (), ())
    (tmp_path / "study").mkdir()
    with pytest.raises(NodeUsageError):
        parse_source(str(tmp_path / "study"), rules)
    with pytest.raises(NodeUsageError):
        check_destination(str(tmp_path / "out"), rules)


def test_compression_prefers_speed_on_small_hosts_unless_told() -> None:
    from mftp.node.transfers.preparing import prefers_speed

    assert prefers_speed("auto", cpus=2) and prefers_speed("auto", cpus=4)
    assert not prefers_speed("auto", cpus=16)
    assert prefers_speed("speed", cpus=64) and not prefers_speed("ratio", cpus=1)


# ------------------------------------------------------- links, dot segments, no oracle (point 1)


def _answer(exc: pytest.ExceptionInfo[NodeUsageError], path: str) -> str:
    """The refusal with the caller's own path taken out: what it tells about the disk."""
    return str(exc.value).replace(path, "<path>")


def test_outside_and_missing_paths_get_the_same_answer(tmp_path: Path) -> None:
    rules = allowed(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "exists.dcm").write_bytes(b"x")
    os.mkfifo(tmp_path / "outgoing" / "fifo")
    (tmp_path / "outgoing" / "escape").symlink_to(tmp_path / "elsewhere" / "exists.dcm")
    probes = [
        str(tmp_path / "elsewhere" / "exists.dcm"),  # outside, exists
        str(tmp_path / "elsewhere" / "missing.dcm"),  # outside, does not exist
        str(tmp_path / "outgoing" / "missing.dcm"),  # inside, does not exist
        str(tmp_path / "outgoing" / "fifo"),  # inside, not a file or folder
        str(tmp_path / "outgoing" / "escape"),  # inside, a link leading out to a file that exists
        str(tmp_path / "outgoing" / "missing" / ".." / ".." / "elsewhere" / "exists.dcm"),
        "/etc/passwd",
        "/nonexistent/passwd",
        "/",
    ]
    answers = set()
    for probe in probes:
        with pytest.raises(NodeUsageError) as refused:
            parse_source(probe, rules)
        answers.add(_answer(refused, probe))
    assert answers == {
        "<path> is not an existing file or folder inside a folder listed in transfer.source_dirs"
    }
    export_answers = set()
    (tmp_path / "incoming" / "a-file").write_bytes(b"x")
    for probe in (
        str(tmp_path / "elsewhere"),
        str(tmp_path / "nowhere"),
        "/etc/cron.d",
        "/no/such/dir",
        str(tmp_path / "incoming" / "a-file"),  # inside, but a file: not a folder to export into
    ):
        with pytest.raises(NodeUsageError) as refused:
            check_destination(probe, rules)
        export_answers.add(_answer(refused, probe))
    assert export_answers == {"<path> is not a folder path inside a folder listed in transfer.export_dirs"}


def test_hostile_spellings_are_refused_never_crash(tmp_path: Path) -> None:
    rules = allowed(tmp_path)
    for hostile in (
        str(tmp_path / "outgoing") + "\0/../../etc/passwd",  # a NUL byte: ValueError in os calls
        str(tmp_path / "outgoing" / ("x" * 5000)),  # a name too long
        str(tmp_path / "outgoing" / "/".join(["a"] * 3000)),  # a path too long
        str(tmp_path / "outgoing" / ".." / "incoming"),  # another allowed root, but not a source one
    ):
        with pytest.raises(NodeUsageError, match=r"transfer\.source_dirs"):
            parse_source(hostile, rules)
        if ".." not in hostile:
            with pytest.raises(NodeUsageError, match=r"transfer\.export_dirs"):
                check_destination(hostile.replace("outgoing", "incoming"), rules)
    with pytest.raises(NodeUsageError, match="absolute path"):
        parse_source("outgoing/study", rules)  # said from the text alone


def test_dot_segments_resolve_like_the_kernel(tmp_path: Path) -> None:
    rules = allowed(tmp_path)
    study = tmp_path / "outgoing" / "study"
    (study / "sub").mkdir(parents=True)
    assert parse_source(str(study / "sub" / ".." / "." / ""), rules) == study
    # ".." after a link goes up from the link's target, as open() would: here out of the root.
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (study / "jump").symlink_to(tmp_path / "elsewhere" / "deep")
    with pytest.raises(NodeUsageError):
        parse_source(str(study / "jump" / ".."), rules)
    with pytest.raises(NodeUsageError):
        check_destination(str(tmp_path / "incoming" / ".." / "elsewhere"), rules)


def test_links_below_a_root_that_lead_out_are_refused_for_exports_too(tmp_path: Path) -> None:
    rules = allowed(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "incoming" / "case").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NodeUsageError, match=r"transfer\.export_dirs"):
        check_destination(str(tmp_path / "incoming" / "case"), rules)
    with pytest.raises(NodeUsageError, match=r"transfer\.export_dirs"):
        check_destination(str(tmp_path / "incoming" / "case" / "new"), rules)
    # A link that stays inside is resolved, and the export goes to its target.
    (tmp_path / "incoming" / "real").mkdir()
    (tmp_path / "incoming" / "alias").symlink_to(tmp_path / "incoming" / "real")
    assert check_destination(str(tmp_path / "incoming" / "alias" / "x"), rules) == str(
        tmp_path / "incoming" / "real" / "x"
    )


def test_a_root_reached_through_a_link_is_the_operators_choice(tmp_path: Path) -> None:
    """Decided: links to a root and above it are the operator's, followed once at start.

    The service resolves ``source_dirs`` when it reads the configuration; a path spelled through
    the operator's link is resolved to the same place and accepted.  Below the root nothing is
    followed (see the tests above).
    """
    real = tmp_path / "mnt" / "outgoing"
    (real / "study").mkdir(parents=True)
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "outgoing").symlink_to(real)
    rules = Allowed(((tmp_path / "node" / "outgoing").resolve(),), (), ())
    assert parse_source(str(tmp_path / "node" / "outgoing" / "study"), rules) == real / "study"
    assert parse_source(str(real / "study"), rules) == real / "study"
