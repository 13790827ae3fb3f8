"""Allow-lists for what a send may read and an export may write (an API token alone cannot reach the disk)."""

from __future__ import annotations

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
