"""The fast path's pixel mapping: one table look-up instead of float arithmetic on the full image.

Modality rescale / LUT, VOI LUT or window (linear, linear-exact, sigmoid, LUT sequence), min-max and
MONOCHROME1 inversion are all functions of the stored value alone. `display_table` evaluates the
exact path's own functions (`dicom.display_values`, `dicom.normalize`, `dicom.quantize`) once on every
value the pixel type can hold (256 or 65536 entries), with the min-max taken over the values actually
present in the image (a histogram), so mapping the image through the table gives the exact path's
pixels bit for bit before resizing. Nothing here assumes the functions are monotone.

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


def domain(dtype: np.dtype) -> np.ndarray:
    """Every value of `dtype`, in table-index order: domain(d)[table_index(a)] == a."""
    unsigned = _UNSIGNED[np.dtype(dtype).itemsize]
    return np.arange(np.iinfo(unsigned).max + 1, dtype=unsigned).view(dtype)


def present(index: np.ndarray, entries: int) -> np.ndarray:
    """Boolean mask over table entries: which indices occur in `index` (uint8/uint16 image)."""
    hist = cv2.calcHist([np.ascontiguousarray(index)], [0], None, [entries], [0, entries])
    return hist.ravel() > 0


def display_table(arr: np.ndarray, ds, voi: bool, bits: int) -> np.ndarray:
    """uint8 (bits=8) or uint16 (bits=16) table: output grey level for each stored value of `arr`."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # entries no pixel uses may overflow
        values = dicom.display_values(domain(arr.dtype), ds, voi)
        used = values[present(table_index(arr), values.size)]
        lo, hi = float(used.min()), float(used.max())
        return dicom.quantize(dicom.normalize(values, lo, hi, str(ds.PhotometricInterpretation)), bits)


def apply(arr: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map the image through the table: one gather, output dtype = table dtype."""
    index = table_index(arr)
    if index.dtype == np.uint8 and table.dtype == np.uint8:
        return cv2.LUT(index, table)
    return np.take(table, index)
