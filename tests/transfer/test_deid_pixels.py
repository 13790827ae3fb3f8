"""Burned-in text: which images are examined, cleaning with the real Tesseract, refusals by name.

The synthetic images (:mod:`tests.transfer.burned_images`) carry names, record numbers,
accession numbers, dates and hospitals at varied positions, sizes and colours, on single frames
and across cine loops. A cleaned image must have every drawn string blanked, OCR must read none
of them any more, and every pixel that changed must be a blanked one.
"""

from __future__ import annotations

import copy
import io
import pickle
import re
import shutil
import subprocess
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from mftp.transfer.deid import (
    Mode,
    PixelsRefused,
    Policy,
    deidentify_bytes,
    deidentify_file,
    deidentify_study,
)
from mftp.transfer.deid_pixels import FIXED_REGIONS, fixed_boxes, text_risks
from mftp.transfer.errors import TransferUsageError
from mftp.transfer.ocr_tesseract import Tesseract, _split, parse_tsv, pgm
from mftp.transfer.pixels_text import Box, detect_text, mask_of
from tests.samples import sample
from tests.transfer.burned_images import Case, make_case
from tests.transfer.deid_helpers import CT, MR, SECRET, original, policy, read, to_bytes

CLEAN = policy(Mode.DEIDENTIFIED)
REFUSE = policy(Mode.DEIDENTIFIED, burned_in="refuse")


@pytest.fixture(scope="module")
def tesseract() -> Tesseract:
    if not Tesseract.available():
        pytest.fail("tesseract is not installed: run `make test`, which installs Debian's tesseract-ocr")
    return Tesseract()


def _read_text(frame: np.ndarray) -> str:
    """Everything the real Tesseract reads in a frame, upper-case (the privacy officer's check)."""
    gray = frame.max(axis=-1) if frame.ndim == 3 else frame
    gray = 255 - gray if gray.mean() < 128 else gray
    big = np.repeat(np.repeat(np.ascontiguousarray(gray), 2, axis=0), 2, axis=1)
    done = subprocess.run(
        ["tesseract", "stdin", "stdout", "--psm", "11"], input=pgm(big), capture_output=True, timeout=60
    )
    return done.stdout.decode("utf-8", "replace").upper()


def _tokens(text: str) -> set[str]:
    """The parts of a drawn string that would identify: words and numbers of 4+ characters."""
    return {t for t in re.split(r"[^A-Z0-9]+", text.upper()) if len(t) >= 4}


def _pixels(data: bytes) -> np.ndarray:
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    array = np.asarray(ds.pixel_array)
    return array if frames > 1 else array[np.newaxis]


# --------------------------------------------------------------------------- which images


def test_kinds_that_carry_text_are_examined_and_others_are_not() -> None:
    assert "modality US" in text_risks(original("US1_UNCR.dcm"))
    assert "secondary capture SOP class" in text_risks(original("SC_rgb_small_odd.dcm"))
    assert "ultrasound cine SOP class" in text_risks(original("examples_ybr_color.dcm"))
    assert "multi-frame cine" in text_risks(original("examples_ybr_color.dcm"))
    assert text_risks(original(CT)) == ()
    assert text_risks(original(MR)) == ()  # DERIVED\\SECONDARY reformat: not a screen capture
    ct = original(CT)
    ct.BurnedInAnnotation = "YES"
    ct.RecognizableVisualFeatures = "YES"
    assert text_risks(ct) == ("Burned In Annotation is YES", "Recognizable Visual Features is YES")
    ct = original(CT)
    ct.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert text_risks(ct) == ("screen capture",)
    ct = original(CT)
    ct.SeriesDescription = "Dose Report"
    assert text_risks(ct) == ("screen capture",)


def test_a_vendor_private_burned_in_graphics_flag_is_read() -> None:
    """The image of issue 14: no Burned In Annotation, the vendor's private flag says 1."""
    ds = original(CT)
    block = ds.private_block(0x0019, "SIEMENS MED SMS USG ANTARES", create=True)
    block.add_new(0x0C, "US", 1)
    assert text_risks(ds) == ("SIEMENS MED SMS USG ANTARES Burned in Graphics",)
    block[0x0C].value = 0
    assert text_risks(ds) == ()


def test_fixed_regions_of_documented_scanners() -> None:
    ds = Dataset()
    ds.Manufacturer, ds.ManufacturerModelName, ds.Rows, ds.Columns = "ACUSON", "Sequoia", 480, 640
    assert fixed_boxes(ds) == [Box(0, 0, 30, 640)]
    ds.Rows = 600
    assert fixed_boxes(ds) == []
    assert all(entry.manufacturer == entry.manufacturer.upper() for entry in FIXED_REGIONS)


def test_policy_choice_is_checked() -> None:
    with pytest.raises(TransferUsageError):
        Policy(Mode.DEIDENTIFIED, burned_in="keep")  # type: ignore[arg-type]
    assert Policy(Mode.DEIDENTIFIED).burned_in == "clean"


# --------------------------------------------------------------------------- pure core, test vectors


def test_parse_tsv_vectors() -> None:
    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
        "1\t1\t0\t0\t0\t0\t0\t0\t640\t480\t-1\t\n"
        "5\t1\t1\t1\t1\t1\t20\t10\t61\t17\t96.5\tHANSEN\n"
        "5\t1\t1\t1\t1\t2\t90\t10\t5\t17\t12.0\t \n"
        "5\t1\t1\t1\t1\t3\tx\t10\t5\t17\t12.0\tbad\n"
    )
    assert parse_tsv(tsv) == [Box(10, 20, 27, 81)]
    assert parse_tsv(tsv, scale=2) == [Box(5, 10, 14, 41)]
    assert parse_tsv("") == []


def test_stacked_frames_give_their_boxes_back_to_each_frame() -> None:
    # two frames of 100 rows stacked with a 16-row band: the second starts at row 116
    found = _split([Box(5, 1, 20, 30), Box(120, 2, 130, 40)], [0, 116], 100)
    assert found == [[Box(5, 1, 20, 30)], [Box(4, 2, 14, 40)]]


def test_a_finder_box_is_blanked_and_nothing_else_changes() -> None:
    ds = original(CT)
    ds.Modality = "OT"  # a kind that is examined; CT pixels have no text
    before = ds.pixel_array.copy()

    def finder(frames: np.ndarray) -> list[list[Box]]:
        assert frames.shape == (1, 128, 128) and frames.dtype == np.uint8
        return [[Box(10, 20, 30, 60)]]

    out = deidentify_file(to_bytes(ds), CLEAN, SECRET, name="f.dcm", text_finder=finder)
    after = read(out.data).pixel_array
    mask = mask_of([Box(10, 20, 30, 60), *detect_text(_8bit(before))], 128, 128)
    assert (after[~mask] == before[~mask]).all()
    assert (after[7:33, 17:63] == before.min()).all()  # the box with its margin of 3
    assert out.pixels is not None and out.pixels.ocr and out.pixels.frames == 1


def _8bit(frame: np.ndarray) -> np.ndarray:
    from mftp.transfer.pixels_text import to_8bit

    return to_8bit(frame, 16)


def test_detector_finds_nothing_on_a_flat_frame_and_text_on_a_drawn_one() -> None:
    assert detect_text(np.zeros((64, 64), np.uint8)) == []
    case = make_case(7, "us_mono")
    frame = np.frombuffer(case.ds.PixelData, np.uint8).reshape(480, 640)
    mask = mask_of(detect_text(frame), 480, 640)
    assert all((d.ink & ~mask).sum() == 0 for d in case.drawn)


# --------------------------------------------------------------------------- cleaning, real tesseract


def _check_cleaned(case: Case, data: bytes) -> None:
    before = np.frombuffer(case.ds.PixelData, np.uint8).reshape(case.background.shape)
    after = _pixels(data)
    changed = (after != before).any(axis=-1) if after.ndim == 4 else after != before
    blank = after.reshape(*changed.shape, -1).max(axis=-1) == 0
    assert (blank | ~changed).all(), "a pixel changed that was not blanked"
    for drawn in case.drawn:
        ys, xs = np.nonzero(drawn.ink)
        for frame in drawn.frames:  # the whole box of the string is blank, not only its ink
            assert blank[frame][ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all(), drawn.text
    assert changed.mean() < 0.3  # the picture is still there


CASES = [("us_rgb", 1), ("us_mono", 2), ("screen", 3), ("cine", 4)]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "seed"), CASES)
def test_burned_in_text_is_blanked_and_ocr_reads_none_of_it(
    kind: str, seed: int, tesseract: Tesseract
) -> None:
    case = make_case(seed, kind)
    original_text = _read_text(np.frombuffer(case.ds.PixelData, np.uint8).reshape(case.background.shape)[0])
    result = deidentify_file(to_bytes(case.ds), CLEAN, SECRET, name=case.name, text_finder=tesseract)
    _check_cleaned(case, result.data)
    out = read(result.data)
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert result.pixels is not None and result.pixels.frames == case.background.shape[0]
    read_back = " ".join(_read_text(frame) for frame in _pixels(result.data))
    tokens = {t for d in case.drawn for t in _tokens(d.text)}
    assert any(t in original_text for t in tokens)  # the check can read these strings at all
    assert not {t for t in tokens if t in read_back}


@pytest.mark.slow
def test_a_real_ultrasound_loses_its_hospital_name(tesseract: Tesseract) -> None:
    """US1_UNCR (GE LOGIQ 700) has "BAPTIST MED CTR" written in its top-left corner."""
    data = sample("US1_UNCR.dcm")
    assert "BAPTIST" in _read_text(_pixels(data)[0])
    out = deidentify_file(data, CLEAN, SECRET, name="us.dcm", text_finder=tesseract)
    assert "BAPTIST" not in _read_text(_pixels(out.data)[0])
    assert out.pixels is not None and "modality US" in out.pixels.reasons


def test_lossless_sources_stay_exact_outside_the_blanked_regions() -> None:
    plain, j2k = _pixels(sample("US1_UNCR.dcm")), sample("US1_J2KR.dcm")  # same picture, J2K lossless
    out = deidentify_file(j2k, CLEAN, SECRET, name="j2k.dcm")
    after = _pixels(out.data)
    changed = (after != plain).any(axis=-1)
    assert changed.any() and (after[changed] == 0).all()
    assert "LossyImageCompression" not in read(out.data) or read(out.data).LossyImageCompression == "00"


def test_a_lossy_source_stays_marked_lossy() -> None:
    out = read(deidentify_bytes(sample("US1_J2KI.dcm"), CLEAN, SECRET, name="lossy.dcm"))
    assert out.LossyImageCompression == "01" and out.LossyImageCompressionMethod == "ISO_15444_1"
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_palette_and_multiframe_ultrasound_are_cleaned_per_frame() -> None:
    out = deidentify_file(sample("OBXXXX1A_2frame.dcm"), CLEAN, SECRET, name="p.dcm")
    ds = read(out.data)
    assert ds.PhotometricInterpretation == "PALETTE COLOR" and out.pixels is not None
    assert out.pixels.frames == 2 and out.pixels.regions > 0
    before, after = _pixels(sample("OBXXXX1A_2frame.dcm")), _pixels(out.data)
    assert (after != before).any(axis=(1, 2)).all()  # both frames examined and cleaned


# --------------------------------------------------------------------------- refusals and modes


def test_refuse_policy_names_the_image_and_why() -> None:
    with pytest.raises(PixelsRefused) as info:
        deidentify_bytes(sample("US1_UNCR.dcm"), REFUSE, SECRET, name="us.dcm")
    assert info.value.name == "us.dcm" and "modality US" in info.value.reasons
    assert "refuse" in info.value.cause


def test_what_cannot_be_examined_is_refused_by_name_and_the_study_goes_on() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = list(
            deidentify_study(
                [
                    ("bad-j2k.dcm", sample("JPEG2000-embedded-sequence-delimiter.dcm")),
                    ("us.dcm", sample("US1_UNCR.dcm")),
                    ("ct.dcm", sample(CT)),
                ],
                CLEAN,
                SECRET,
            )
        )
    bad, us, ct = results
    assert isinstance(bad.error, PixelsRefused) and "cannot be examined" in bad.error.cause
    assert bad.error.name == "bad-j2k.dcm"
    assert us.ok and us.pixels is not None and "blanked" in us.pixels.summary
    assert ct.ok and ct.pixels is None


def test_refusals_and_reports_cross_process_boundaries_whole() -> None:
    """The node prepares files in worker processes: what they raise or return is pickled."""
    refused = PixelsRefused(("modality US",), "cannot be examined: 1-bit pixels", name="a.dcm")
    again = pickle.loads(pickle.dumps(refused))
    assert (again.reasons, again.cause, again.name, str(again)) == (
        refused.reasons, refused.cause, refused.name, str(refused)
    )  # fmt: skip
    report = deidentify_file(sample("US1_UNCR.dcm"), CLEAN, SECRET, name="us.dcm").pixels
    assert pickle.loads(pickle.dumps(report)) == report


def test_identified_mode_is_byte_exact_for_images_with_text() -> None:
    data = sample("US1_UNCR.dcm")
    out = deidentify_file(data, policy(Mode.IDENTIFIED), SECRET, name="us.dcm")
    assert out.data is data and out.pixels is None


def test_burned_in_annotation_no_is_written_only_when_cleaned() -> None:
    ct = read(deidentify_bytes(sample(CT), CLEAN, SECRET, name="ct.dcm"))
    assert "BurnedInAnnotation" not in ct
    ds = copy.deepcopy(original(CT))
    ds.BurnedInAnnotation = "YES"
    assert read(deidentify_bytes(to_bytes(ds), CLEAN, SECRET, name="b.dcm")).BurnedInAnnotation == "NO"


def test_tesseract_is_on_the_path() -> None:
    assert shutil.which("tesseract"), "run `make test`: it installs Debian's tesseract-ocr"
