"""Real DICOM files from pydicom-data, for tests."""

from __future__ import annotations

from functools import cache

from pydicom.data import get_testdata_file


@cache
def sample(name: str) -> bytes:
    """The bytes of a pydicom test file (``name`` as pydicom-data spells it)."""
    path = get_testdata_file(name)
    assert path is not None, name
    with open(str(path), "rb") as f:
        return f.read()
