"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.orthanc_server import OrthancServer, orthanc_available, run_orthanc


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """A real Orthanc PACS on loopback, empty, for one test."""
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make test`, which installs Debian's orthanc packages")
    with run_orthanc(tmp_path) as server:
        yield server
