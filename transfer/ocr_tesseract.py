"""The Tesseract OCR engine as a :class:`~mftp.transfer.pixels_text.TextFinder`: the I/O shell.

This module is the one place in ``transfer/`` that starts a process: the pure cleaning code in
:mod:`mftp.transfer.deid_pixels` only ever sees the :class:`TextFinder` interface, so its tests
can pass fixed boxes, and :func:`parse_tsv` (the part that could be wrong) is pure and has its
own test vectors. Debian's ``tesseract-ocr`` package provides the ``tesseract`` command
(``make system-deps`` installs it).

How it is called, and why
    Frames go in as one binary PGM on standard input (no temporary file, no image library) and
    the words come back as TSV on standard output, with their boxes. Several frames of a cine loop
    are stacked into one tall image with a blank band between them, so one process reads them all
    (starting Tesseract costs about 0.1 s). Page segmentation mode 11, "sparse text", suits
    scattered annotation better than the default page layout, which looks for paragraphs.
    Frames are upscaled twice, because Tesseract reads glyphs of 20-30 pixels best and ultrasound
    annotation is often 10-14 pixels high.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np

from .errors import TransferInputError, TransferUsageError
from .pixels_text import Box

TIMEOUT_S = 120
"""Longest a call may take before the image is refused as not examinable."""
SCALE = 2
BAND_ROWS = 16
"""Blank rows between stacked frames, so no word straddles two frames."""
MAX_STACK_ROWS = 8_000
"""Frames are stacked into images at most this tall (Tesseract's memory grows with the page)."""
MIN_CONFIDENCE = 0.0
"""Words at or above this confidence count: for blanking, a doubtful word is still a word."""


def parse_tsv(tsv: str, scale: int = 1) -> list[Box]:
    """Word boxes from Tesseract's TSV output, in the coordinates of the image before upscaling.

    Rows of level 5 (words) with some non-blank text and a confidence of at least
    :data:`MIN_CONFIDENCE` are kept; malformed rows are skipped (Tesseract wrote them, not a peer).
    """
    boxes = []
    for line in tsv.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) < 12 or fields[0] != "5" or not fields[11].strip():
            continue
        try:
            left, top, width, height = (int(v) for v in fields[6:10])
            confidence = float(fields[10])
        except ValueError:
            continue
        if confidence < MIN_CONFIDENCE or width <= 0 or height <= 0:
            continue
        boxes.append(
            Box(top // scale, left // scale, -(-(top + height) // scale), -(-(left + width) // scale))
        )
    return boxes


def pgm(image: np.ndarray) -> bytes:
    """A binary PGM (P5) of a 2-D uint8 array."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise TransferUsageError("pgm takes a 2-D uint8 array")
    return b"P5 %d %d 255\n" % (image.shape[1], image.shape[0]) + image.tobytes()


def _split(boxes: list[Box], offsets: list[int], rows: int) -> list[list[Box]]:
    """Boxes of a stacked image, given back to the frames they fall in."""
    per_frame: list[list[Box]] = [[] for _ in offsets]
    for box in boxes:
        for index, offset in enumerate(offsets):
            if offset <= box.top < offset + rows + BAND_ROWS:
                top, bottom = box.top - offset, min(rows, box.bottom - offset)
                if top < rows:
                    per_frame[index].append(Box(top, box.left, bottom, box.right))
                break
    return per_frame


# One thread per call: the node already runs one preparing process per core, and Tesseract's
# OpenMP threads on top of them only contend (its own documentation advises this for batches).
_ENV = {**os.environ, "OMP_THREAD_LIMIT": "1"}


class Tesseract:
    """Runs ``tesseract`` on batches of frames (see the module docstring)."""

    def __init__(self, command: str = "tesseract", language: str = "eng") -> None:
        self.command = command
        self.language = language

    @staticmethod
    def available(command: str = "tesseract") -> bool:
        """Whether the command is installed."""
        return shutil.which(command) is not None

    def __call__(self, frames: np.ndarray) -> list[list[Box]]:
        """Word boxes per frame of ``(n, rows, columns)`` uint8 frames (dark text on light)."""
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise TransferUsageError("Tesseract takes (frames, rows, columns) uint8")
        count, rows, columns = frames.shape
        per_stack = max(1, MAX_STACK_ROWS // (rows + BAND_ROWS))
        found: list[list[Box]] = []
        for start in range(0, count, per_stack):
            batch = frames[start : start + per_stack]
            offsets = [index * (rows + BAND_ROWS) for index in range(len(batch))]
            stacked = np.full((offsets[-1] + rows, columns), 255, np.uint8)
            for offset, frame in zip(offsets, batch, strict=True):
                stacked[offset : offset + rows] = frame
            found += _split(self._words(stacked), offsets, rows)
        return found

    def _words(self, image: np.ndarray) -> list[Box]:
        big = np.repeat(np.repeat(image, SCALE, axis=0), SCALE, axis=1)
        argv = [self.command, "stdin", "stdout", "-l", self.language, "--psm", "11", "tsv"]
        try:
            done = subprocess.run(
                argv, input=pgm(big), capture_output=True, timeout=TIMEOUT_S, check=False, env=_ENV
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TransferInputError(f"OCR could not run ({type(exc).__name__})") from exc
        if done.returncode != 0:
            raise TransferInputError(f"OCR failed (tesseract exit {done.returncode})")
        return parse_tsv(done.stdout.decode("utf-8", "replace"), SCALE)
