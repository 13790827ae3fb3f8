"""The DICOM validator dciodvfy (dicom3tools) finds no error in our output that the original lacked.

Every de-identifying mode runs on a varied set of real images (CT, MR, enhanced MR, SR, RT plan
and dose, overlays, ultrasound single and multi-frame, palette colour, secondary captures, JPEG,
JPEG 2000 and JPEG-LS sources, cleaned pixels included). Errors are compared as text with UIDs
masked, since the UIDs change; warnings are not compared.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mftp.transfer.deid import Mode, deidentify_bytes
from tests.samples import sample
from tests.transfer.deid_helpers import SECRET, policy

FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "emri_small.dcm",
    "liver.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "examples_overlay.dcm",
    "SC_rgb_small_odd.dcm",
    "JPEG2000.dcm",
    "MR2_J2KR.dcm",
    "US1_UNCR.dcm",
    "US1_J2KI.dcm",
    "OBXXXX1A.dcm",
    "examples_palette.dcm",
    "examples_ybr_color.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "gdcm-US-ALOKA-16.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPEGLSNearLossless_08.dcm",
    "mlut_18.dcm",
)
MODES = (Mode.PSEUDONYMISED, Mode.DEIDENTIFIED, Mode.ANONYMOUS)
_UID = re.compile(r"<[0-9.]{3,}>")


def _errors(path: Path) -> Counter[str]:
    done = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return Counter(_UID.sub("<UID>", " ".join(line.split())) for line in lines if line.startswith("Error"))


@pytest.fixture(scope="module")
def dciodvfy() -> None:
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy is not installed: run `make test`, which installs Debian's dicom3tools")


@pytest.mark.usefixtures("dciodvfy")
@pytest.mark.parametrize("name", FILES)
def test_no_mode_adds_a_validator_error(name: str, tmp_path: Path) -> None:
    source = tmp_path / "original.dcm"
    source.write_bytes(sample(name))
    before = _errors(source)
    new: dict[str, list[str]] = {}
    for mode in MODES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = deidentify_bytes(sample(name), policy(mode), SECRET, name=name)
        target = tmp_path / f"{mode.value}.dcm"
        target.write_bytes(out)
        added = _errors(target) - before
        if added:
            new[mode.value] = sorted(added)
    assert not new


@pytest.mark.usefixtures("dciodvfy")
def test_the_check_sees_an_error_we_would_add(tmp_path: Path) -> None:
    """The test of the test: an emptied Type 3 sequence (the old X/Z -> Z) is caught."""
    ds = pydicom.dcmread(io.BytesIO(sample("CT_small.dcm")))
    original = tmp_path / "o.dcm"
    ds.save_as(original)
    ds.ReferencedStudySequence = Sequence()
    ds.ReferencedPerformedProcedureStepSequence = Sequence([Dataset()])
    broken = tmp_path / "b.dcm"
    ds.save_as(broken)
    added = _errors(broken) - _errors(original)
    assert any("ReferencedStudySequence" in line for line in added)
