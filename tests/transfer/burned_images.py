"""Synthetic images with burned-in text, for the pixel-cleaning tests and the recall figure.

Each case is an ultrasound- or screen-capture-like image made with numpy and Pillow: a speckled
sector or a flat panel, and identifying strings (names, record numbers, accession numbers, dates,
a hospital) drawn at varied positions, sizes and colours, on one frame or across a cine loop.
The strings are kept with the pixels they changed ("ink"), so a test can check that every one of
them was blanked and that nothing else changed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

LAST = ("NORDMANN", "HANSEN", "OLSEN", "BERG", "JOHANSEN", "LARSEN", "ANDERSEN", "PEDERSEN")
FIRST = ("KARI", "OLA", "INGRID", "LARS", "SIGRID", "NILS", "ASTRID", "ERIK")
HOSPITALS = ("ST OLAV HOSPITAL", "HAUKELAND UNIV", "RIKSHOSPITALET", "BAPTIST MED CTR")
COLOURS = ((255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (200, 200, 200), (255, 128, 0))
US_CLASS = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
WINDOW = 225  # the grey of a screen capture's window, brighter than any speckle


@dataclass
class Drawn:
    """One identifying string drawn into the pixels."""

    text: str
    frames: tuple[int, ...]
    ink: np.ndarray  # (rows, columns) bool: the pixels the string changed, in each of its frames


@dataclass
class Case:
    """A synthetic image with the strings drawn on it."""

    name: str
    ds: Dataset
    background: np.ndarray  # the pixels before any text, (frames, rows, columns[, 3])
    drawn: list[Drawn] = field(default_factory=list)


def _strings(rng: random.Random) -> list[str]:
    last, first = rng.choice(LAST), rng.choice(FIRST)
    year, month, day = rng.randint(1940, 2020), rng.randint(1, 12), rng.randint(1, 28)
    return [
        f"{last}^{first}",
        f"MRN {rng.randint(10_000_000, 99_999_999)}",
        f"ACC A{rng.randint(100_000, 999_999)}",
        f"{year}-{month:02d}-{day:02d}",
        rng.choice(HOSPITALS),
        f"DOB {day:02d}.{month:02d}.{year}",
    ]


def _speckle(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """An ultrasound-like picture: a speckled sector on black."""
    # Speckle is spatially correlated: Rayleigh noise smoothed over a few pixels, as a probe sees it.
    noise = rng.rayleigh(1.0, (rows + 4, columns + 4))
    smooth = sum(noise[dy : dy + rows, dx : dx + columns] for dy in range(5) for dx in range(5)) / 25
    image = np.clip((smooth - 0.6) * 110, 0, 190)
    y, x = np.mgrid[0:rows, 0:columns]
    apex_y, apex_x = rows * 0.15, columns / 2
    radius = np.hypot(y - apex_y, x - apex_x)
    angle = np.degrees(np.arctan2(x - apex_x, y - apex_y))
    sector = (radius > rows * 0.05) & (radius < rows * 0.95) & (np.abs(angle) < 38)
    return np.where(sector, image, 0).astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw(picture: Image.Image, text: str, xy: tuple[int, int], size: int, colour: tuple[int, ...]) -> None:
    ImageDraw.Draw(picture).text(xy, text, fill=colour, font=_font(size))


def _place(
    rng: random.Random, texts: list[str], base: np.ndarray, sizes: tuple[int, int]
) -> list[tuple[str, tuple[int, int], int]]:
    """Positions for ``texts`` that do not overlap: top rows, sides, bottom and over the picture.

    A string is not put across the border of a screen capture's light window and dark panel: no
    single colour would be legible on both, and an illegible string is not a test of anything.
    """
    rows, columns = base.shape[:2]
    placed: list[tuple[str, tuple[int, int], int]] = []
    taken: list[tuple[int, int, int, int]] = []
    for text in texts:
        size = rng.randint(*sizes)
        box = _font(size).getbbox(text)
        width, height = box[2] + 4, box[3] + 4
        for _ in range(200):
            x = rng.randint(2, max(2, columns - width - 2))
            y = rng.choice([rng.randint(2, max(2, rows // 6)), rng.randint(2, max(2, rows - height - 2))])
            rect = (x, y, x + width, y + height)
            under = base[y : y + height, x : x + width]
            straddles = bool((under == WINDOW).any() and (under != WINDOW).any())
            free = all(rect[2] < t[0] or rect[0] > t[2] or rect[3] < t[1] or rect[1] > t[3] for t in taken)
            if free and not straddles:
                taken.append(rect)
                placed.append((text, (x, y), size))
                break
    return placed


def _dataset(pixels: np.ndarray, sop_class: str, modality: str, colour: bool) -> Dataset:
    frames, rows, columns = pixels.shape[:3]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "NORDMANN^KARI", "12345678", "A123456"
    ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "19600101", "F", "20240317", "101010"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.ReferringPhysicianName = "1", 1, 1, ""
    ds.Modality, ds.Manufacturer, ds.InstitutionName = modality, "ACME", "ST OLAV HOSPITAL"
    ds.PatientOrientation, ds.ConversionType = "", "WSD"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = 40
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.PixelData = pixels.tobytes()
    return ds


def make_case(seed: int, kind: str) -> Case:
    """One synthetic image: ``kind`` is "us_rgb", "us_mono", "screen" or "cine"."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    rows, columns, frames = (240, 320, 6) if kind == "cine" else (480, 640, 1)
    colour = kind != "us_mono"
    if kind == "screen":  # a screen capture: a light window with a dark picture panel
        base = np.full((rows, columns), WINDOW, np.uint8)
        base[rows // 4 : rows - 40, 40 : columns - 40] = _speckle(nrng, rows - 40 - rows // 4, columns - 80)
    else:
        base = _speckle(nrng, rows, columns)
    background = np.stack([np.stack([base] * 3, axis=-1) if colour else base] * frames)
    texts = _strings(rng)
    sizes = (10, 16) if kind == "cine" else (11, 30)
    placed = _place(rng, texts, base, sizes)
    pixels = background.copy()
    drawn: list[Drawn] = []
    for index, (text, xy, size) in enumerate(placed):
        if kind == "screen":  # dark text on the light window, light text on the dark panel
            width, height = _font(size).getbbox(text)[2:]
            under = background[0, xy[1] : xy[1] + height, xy[0] : xy[0] + width]
            fill: tuple[int, ...] = (0, 0, 0) if under.mean() > 128 else (255, 255, 255)
        else:
            fill = rng.choice(COLOURS)
        # In a cine loop some strings are on every frame, others on some only.
        on = (
            tuple(range(frames))
            if index % 2 == 0
            else tuple(sorted(rng.sample(range(frames), 1 + frames // 2)))
        )
        ink = np.zeros((rows, columns), bool)
        for frame in on:
            picture = Image.fromarray(pixels[frame])
            _draw(picture, text, xy, size, fill if colour else (max(fill),))
            after = np.asarray(picture)
            changed = after != pixels[frame]
            ink |= changed.any(axis=-1) if colour else changed
            pixels[frame] = after
        drawn.append(Drawn(text, on, ink))
    sop_class = {"cine": US_MULTIFRAME_CLASS, "screen": SC_CLASS}.get(kind, US_CLASS)
    modality = "OT" if kind == "screen" else "US"
    ds = _dataset(pixels, sop_class, modality, colour)
    return Case(f"{kind}-{seed}.dcm", ds, background, drawn)
