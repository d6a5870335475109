"""The fast path's pixel mapping: one table look-up instead of float arithmetic on the full image.

Modality rescale / LUT, VOI LUT or window (linear, linear-exact, sigmoid, LUT sequence), min-max and
MONOCHROME1 inversion are all functions of the stored value alone. `display_table` evaluates the
exact path's own functions (`dicom.display_values`, `dicom.normalize`, `dicom.quantize`) once on each
stored value between the image's minimum and maximum (at most 65536 values), with the min-max taken
over the values actually present in the image, so mapping the image through the table gives the
exact path's pixels bit for bit before resizing. Monotone mappings take their extremes at the ends
of that run; a non-monotone LUT sequence gets a histogram of the values present instead.

Only 8- and 16-bit integer pixel arrays have such a table; `supports` says so, and the caller falls
back to the exact path for anything else (float pixel data, 32-bit stored values).
"""
from __future__ import annotations

import cv2
import numpy as np

from harness.data import dicom

_UNSIGNED = {1: np.uint8, 2: np.uint16}


def supports(arr: np.ndarray) -> bool:
    """True for 8- or 16-bit integer stored values (signed or not): the ones a table can index."""
    return arr.dtype.kind in "iu" and arr.dtype.itemsize in _UNSIGNED


def table_index(arr: np.ndarray) -> np.ndarray:
    """The stored values reinterpreted as unsigned table indices (no copy; int16 -1 → 65535)."""
    return arr.view(_UNSIGNED[arr.dtype.itemsize])


def present(index: np.ndarray, entries: int) -> np.ndarray:
    """Boolean mask over table entries: which indices occur in `index` (uint8/uint16 image)."""
    hist = cv2.calcHist([np.ascontiguousarray(index)], [0], None, [entries], [0, entries])
    return hist.ravel() > 0


def _extremes(values: np.ndarray, index: np.ndarray, stored: np.ndarray) -> tuple[float, float]:
    """Min and max of the display values of the stored values present in the image.

    `values[i]` belongs to `stored[i]`, the ascending run from the image's smallest to its largest
    stored value. Both ends occur in the image, so when the values are monotone along the run (any
    window, rescale or monotone LUT) the ends are the extremes; otherwise a histogram says which
    stored values occur."""
    steps = np.diff(values)
    if values.size == 1 or (steps >= 0).all() or (steps <= 0).all():
        return float(min(values[0], values[-1])), float(max(values[0], values[-1]))
    used = values[present(index, 1 << (8 * index.itemsize))[table_index(stored)]]
    return float(used.min()), float(used.max())


def display_table(arr: np.ndarray, ds, voi: bool, bits: int, extent: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (bits=8) or uint16 (bits=16) table: output grey level for each stored value of `arr`.

    Evaluated on the stored values from the image's minimum to its maximum only (`extent`, when the
    caller already has them); other entries are 0 (no pixel indexes them)."""
    index = table_index(arr)
    lo, hi = extent if extent is not None else (int(arr.min()), int(arr.max()))
    stored = np.arange(lo, hi + 1).astype(arr.dtype)
    values = dicom.display_values(stored, ds, voi)
    lo, hi = _extremes(values, index, stored)
    table = np.zeros(1 << (8 * arr.dtype.itemsize), np.uint8 if bits == 8 else np.uint16)
    table[table_index(stored)] = dicom.quantize(dicom.normalize(values, lo, hi, str(ds.PhotometricInterpretation)),
                                                bits)
    return table


def apply(arr: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map the image through the table: one gather, output dtype = table dtype."""
    index = table_index(arr)
    if index.dtype == np.uint8 and table.dtype == np.uint8:
        return cv2.LUT(index, table)
    return table[index]
