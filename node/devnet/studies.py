"""Synthetic but real-looking studies for the viewer's tests and benchmark.

pydicom-data holds no CT series of more than a few slices; :func:`make_ct_series` makes one of
``slices`` slices from one real CT slice (``693_UNCR.dcm``): new Series and SOP Instance UIDs,
Instance Number and Image Position (Patient) stepping 5 mm, and pixels shifted a little per
slice so that slices differ.  Patient identity is made up.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_SLICE = "693_UNCR.dcm"


def make_ct_series(
    folder: Path, slices: int, *, study_uid: str | None = None, patient_id: str = "PAT-0042"
) -> list[Path]:
    """Write a CT series of ``slices`` files into ``folder``; returns their paths in slice order."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    source = get_testdata_file(SOURCE_SLICE)
    assert source is not None, f"pydicom-data lacks {SOURCE_SLICE}"
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(source)
    study_uid = study_uid or pydicom.uid.generate_uid()
    series_uid = pydicom.uid.generate_uid()
    pixels = base.pixel_array
    paths = []
    for index in range(slices):
        ds = base.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = patient_id, "Nordmann^Kari"
        ds.InstanceNumber = index + 1
        ds.SeriesNumber = 2
        position = [float(v) for v in base.get("ImagePositionPatient", [0.0, 0.0, 0.0])]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * index]
        ds.SliceLocation = position[2] + 5.0 * index
        shifted = np.roll(pixels, index % 16, axis=0).astype(pixels.dtype)
        ds.PixelData = shifted.tobytes()
        path = folder / f"ct-{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
