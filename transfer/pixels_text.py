"""Finding burned-in text in pixels: boxes, the OCR interface and a model-free detector.

Everything here is pure numpy on arrays in memory. An OCR engine is a :class:`TextFinder`
passed in by the caller (the Tesseract shell is :mod:`mftp.transfer.ocr_tesseract`); the
model-free :func:`detect_text` needs nothing. :mod:`mftp.transfer.deid_pixels` blanks the union
of what both find.

Why a model-free detector as well as OCR (measured on the synthetic images of the tests, 2026-12:
see the closing note of issue 14): Tesseract reads clean text on black well but misses strings
drawn over speckle, small fonts and strings its page segmentation merges with the picture; what
must be blanked is every region that looks like text, read or not. Text rendered on an image is
made of sharp, high-contrast strokes packed into a band one glyph high; speckle and anatomy
change gradually, and the edges of a sector are one line, not a band. The detector marks pixels
where the image jumps by :data:`EDGE_MIN` or more across two pixels, counts them per cell of
:data:`CELL` pixels, joins cells along a text line and keeps the groups shaped like lines of
text. It over-blanks rather than misses: a blanked bright reflector costs the reader less than a
name left on the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

EDGE_MIN = 80
"""An 8-bit change across two pixels at least this large is a candidate glyph edge."""
CELL = 4
"""Side of the square cells in which edges are counted, in pixels."""
CELL_MIN_EDGES = 3
"""Edge pixels that make a cell part of a text candidate."""
GAP_CELLS = 3
"""Horizontal gaps of up to this many cells are bridged (the spaces between words)."""
MAX_TEXT_HEIGHT = 96
"""Candidate groups taller than this (pixels) are not lines of text but picture: a sector edge."""
MIN_TEXT_HEIGHT = 5
LINE_MIN = 48
"""Straight edge runs this long (pixels) are frame lines, not glyph strokes."""
CHAIN_FILL = 0.25
"""A group too tall for text whose cells fill less than this share of its box is a chain."""
RUN_CELLS = 4
"""In such a chain, runs of at least this many cells along a row are judged again as text."""
MARGIN = 3
"""Pixels added around every box before blanking: anti-aliasing and glyph parts outside a box."""


class Box(NamedTuple):
    """A rectangle in a frame, in pixels: rows ``top:bottom`` and columns ``left:right``."""

    top: int
    left: int
    bottom: int
    right: int

    def grown(self, margin: int, rows: int, columns: int) -> Box:
        """This box with ``margin`` pixels on every side, clipped to the frame."""
        return Box(
            max(0, self.top - margin),
            max(0, self.left - margin),
            min(rows, self.bottom + margin),
            min(columns, self.right + margin),
        )

    @property
    def area(self) -> int:
        """Pixels covered (0 for an empty box)."""
        return max(0, self.bottom - self.top) * max(0, self.right - self.left)


class TextFinder(Protocol):
    """An OCR engine: word boxes in each of a batch of 8-bit grayscale frames.

    ``frames`` is ``(n, rows, columns)`` uint8 as made by :func:`text_view`; the answer has one
    list of boxes per frame. Implementations may raise :class:`TransferInputError` for a frame
    they cannot read; the caller then refuses the image by name.
    """

    def __call__(self, frames: np.ndarray) -> list[list[Box]]: ...


def to_8bit(frame: np.ndarray, bits_stored: int) -> np.ndarray:
    """``frame`` (any unsigned or signed integer samples) scaled to uint8 over its own range.

    Scaling by the frame's range rather than by ``bits_stored`` keeps text legible in a 16-bit
    image that uses only part of its range; ``bits_stored`` bounds it for flat frames.
    """
    if frame.dtype == np.uint8:
        return frame
    data = frame.astype(np.float64)
    low, high = float(data.min()), float(data.max())
    span = high - low if high > low else float((1 << max(1, bits_stored)) - 1)
    return np.clip((data - low) * (255.0 / span), 0, 255).astype(np.uint8)


def text_view(frame8: np.ndarray) -> np.ndarray:
    """The grayscale an OCR engine reads: dark text on a light ground.

    Colour frames take the brightest channel (saturated yellow, cyan or green annotation stays
    bright, where luminance would make blue or red text dim); a mostly dark frame is inverted,
    because Tesseract is trained on dark print on paper.
    """
    gray = frame8.max(axis=-1) if frame8.ndim == 3 else frame8
    return np.ascontiguousarray(255 - gray if gray.mean() < 128 else gray)


def _edges(plane: np.ndarray) -> np.ndarray:
    data = plane.astype(np.int16)
    edges = np.zeros(plane.shape, bool)
    edges[:, 1:-1] |= np.abs(data[:, 2:] - data[:, :-2]) >= EDGE_MIN
    edges[1:-1, :] |= np.abs(data[2:, :] - data[:-2, :]) >= EDGE_MIN
    return edges


def _in_runs(mask: np.ndarray, length: int, axis: int) -> np.ndarray:
    """The marked elements of ``mask`` that lie in a run of ``length`` or more along ``axis``."""
    if mask.shape[axis] < length:
        return np.zeros(mask.shape, bool)
    full = np.lib.stride_tricks.sliding_window_view(mask, length, axis=axis).all(axis=-1)
    out = np.zeros(mask.shape, bool)
    for offset in range(length):  # an element is in a full window that starts up to length-1 before it
        index = [slice(None), slice(None)]
        index[axis] = slice(offset, offset + full.shape[axis])
        out[tuple(index)] |= full
    return out


def _without_lines(edges: np.ndarray) -> np.ndarray:
    """Edges minus straight horizontal and vertical lines longer than any glyph stroke.

    Window frames, panel borders and rulers would otherwise join the text that touches them
    into one group too large to be text.
    """
    return edges & ~_in_runs(edges, LINE_MIN, 0) & ~_in_runs(edges, LINE_MIN, 1)


def _cells(edges: np.ndarray) -> np.ndarray:
    rows, columns = edges.shape
    grid_rows, grid_columns = -(-rows // CELL), -(-columns // CELL)
    padded = np.zeros((grid_rows * CELL, grid_columns * CELL), np.int32)
    padded[:rows, :columns] = edges
    counts = padded.reshape(grid_rows, CELL, grid_columns, CELL).sum(axis=(1, 3))
    return counts >= CELL_MIN_EDGES


def _bridge(cells: np.ndarray) -> np.ndarray:
    """Fill horizontal gaps of up to :data:`GAP_CELLS` cells between marked cells."""
    out = cells.copy()
    for gap in range(1, GAP_CELLS + 1):
        left = cells[:, : -gap - 1]
        right = cells[:, gap + 1 :]
        both = left & right
        for step in range(1, gap + 1):
            out[:, step : step + both.shape[1]] |= both
    return out


def _labels(mask: np.ndarray) -> np.ndarray:
    """Connected components (4-neighbour) of a small boolean grid, by label propagation."""
    size = mask.size
    labels = np.where(mask, np.arange(1, size + 1).reshape(mask.shape), 0)
    big = size + 1
    while True:
        current = np.where(mask, labels, big)
        smallest = current.copy()
        smallest[1:, :] = np.minimum(smallest[1:, :], current[:-1, :])
        smallest[:-1, :] = np.minimum(smallest[:-1, :], current[1:, :])
        smallest[:, 1:] = np.minimum(smallest[:, 1:], current[:, :-1])
        smallest[:, :-1] = np.minimum(smallest[:, :-1], current[:, 1:])
        updated = np.where(mask, smallest, 0)
        if np.array_equal(updated, labels):
            return labels
        labels = updated


def _boxes(cells: np.ndarray, rows: int, columns: int, second_pass: bool = True) -> list[Box]:
    labels = _labels(cells)
    boxes: list[Box] = []
    for label in np.unique(labels[labels > 0]):
        component = labels == label
        ys, xs = np.nonzero(component)
        top, bottom = int(ys.min()) * CELL, min(rows, (int(ys.max()) + 1) * CELL)
        left, right = int(xs.min()) * CELL, min(columns, (int(xs.max()) + 1) * CELL)
        if bottom - top <= MAX_TEXT_HEIGHT:
            if bottom - top >= MIN_TEXT_HEIGHT:
                boxes.append(Box(top, left, bottom, right))
            continue
        fill = len(ys) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
        if second_pass and fill < CHAIN_FILL:
            # Too tall for text, and sparse: a chain such as a sector's edge, which a line of text
            # touching it joins. The edge leaves short runs of cells per row, text long ones:
            # keep the long runs and judge their groups again. A dense blob (Doppler colour,
            # bright anatomy) is picture and left alone.
            boxes += _boxes(_in_runs(component, RUN_CELLS, 1), rows, columns, second_pass=False)
    return boxes


def detect_text(frame8: np.ndarray) -> list[Box]:
    """Boxes of text-like regions in one 8-bit frame, ``(rows, columns)`` or ``(rows, columns, 3)``.

    Every channel is examined, so coloured text on a grey picture is found even when its
    brightness matches the picture's.
    """
    planes = [frame8[..., channel] for channel in range(frame8.shape[-1])] if frame8.ndim == 3 else [frame8]
    edges = np.zeros(frame8.shape[:2], bool)
    for plane in planes:
        edges |= _edges(plane)
    edges = _without_lines(edges)
    return _boxes(_bridge(_cells(edges)), *frame8.shape[:2])


def mask_of(boxes: Sequence[Box], rows: int, columns: int, margin: int = MARGIN) -> np.ndarray:
    """The boolean ``(rows, columns)`` mask of ``boxes``, each grown by ``margin``."""
    mask = np.zeros((rows, columns), bool)
    for box in boxes:
        grown = box.grown(margin, rows, columns)
        mask[grown.top : grown.bottom, grown.left : grown.right] = True
    return mask
