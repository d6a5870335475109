"""Table look-up fused with area-average shrinking: one pass over the full-resolution stored values.

`lut.apply` followed by `cv2.resize(INTER_AREA)` reads and writes the full image twice; here each
stored value is looked up and added straight into its output pixel(s), and only the output-size
image is written. The weights are OpenCV's INTER_AREA weights: output pixel x averages the source
interval [x·s, (x+1)·s) (s = in/out ≥ 1), a source pixel cut by a cell border counting with the
part inside, so the result equals look-up-then-INTER_AREA up to float rounding (≤ 1 grey level;
tested against the exact path in tests/test_dicom_fastpath.py).

Compiled with numba (a dependency of ensemble-boxes, so always installed with cxr-bench); `shrink`
returns None when it does not apply (enlarging, or numba missing) and the caller uses
`lut.apply` + `dicom.resize` instead.
"""
from __future__ import annotations

import functools
import math

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba ships with the environment
    numba = None


def _jit(**options):
    """numba.njit with an on-disk cache; without numba the plain function (then `shrink` is unused)."""
    return numba.njit(cache=True, **options) if numba is not None else (lambda function: function)


@functools.lru_cache(maxsize=64)
def cell_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each source index: its first output cell, its weight there and in the next cell.

    OpenCV's INTER_AREA table (what the exact path's float resize uses): cell x spans
    [x·s, x·s + s), weights are overlap / cell width, and a partial pixel overlapping a cell by
    1e-3 or less is left out without renormalising (it moves 16-bit outputs by up to ~30 levels,
    so matching it matters)."""
    first = np.full(n_in, -1, np.int64)
    w0, w1 = np.zeros(n_in), np.zeros(n_in)
    _fill_cells(n_in, n_out, first, w0, w1)
    # pixels only ever left out: zero weight in the previous pixel's cell, so that the cells never
    # decrease along the row (the kernel finishes a cell when the next one starts)
    first = np.maximum(np.maximum.accumulate(first), 0)
    return first.astype(np.int32), w0.astype(np.float32), w1.astype(np.float32)


@_jit()
def _fill_cells(n_in, n_out, first, w0, w1):  # pragma: no cover - compiled
    scale = n_in / n_out
    for x in range(n_out):
        lo, hi = x * scale, (x + 1) * scale
        width = min(scale, n_in - lo)
        full_hi = min(math.floor(hi), n_in - 1)
        full_lo = min(math.ceil(lo), full_hi)
        if full_lo - lo > 1e-3:
            _add(first, w0, w1, full_lo - 1, x, (full_lo - lo) / width)
        for src in range(full_lo, full_hi):
            first[src], w0[src] = x, 1.0 / width
        if hi - full_hi > 1e-3:
            _add(first, w0, w1, full_hi, x, min(hi - full_hi, 1.0, width) / width)


@_jit()
def _add(first, w0, w1, src, cell, weight):  # pragma: no cover - compiled
    if first[src] == -1 or first[src] == cell:
        first[src], w0[src] = cell, w0[src] + weight
    else:  # the pixel's second cell
        w1[src] += weight


@_jit(nogil=True)
def _shrink(index, table, x0, wx0, wx1, y0, wy0, wy1, top, out):  # pragma: no cover - compiled
    h, w = index.shape
    out_h, out_w = out.shape
    acc = np.zeros((out_h, out_w), np.float32)
    row = np.zeros(out_w + 1, np.float32)
    for i in range(h):
        # along the row, sums for the current cell and the next one stay in registers; a cell
        # is stored once, when the first pixel of a later cell arrives (adding into memory
        # pixel by pixel waits on the previous store every time)
        cell, here, after = x0[0], np.float32(0.0), np.float32(0.0)
        for j in range(w):
            v = np.float32(table[index[i, j]])
            while cell < x0[j]:
                row[cell] = here
                here, after = after, np.float32(0.0)
                cell += 1
            here += wx0[j] * v
            after += wx1[j] * v
        row[cell], row[cell + 1] = here, after
        a, b, yy = wy0[i], wy1[i], y0[i]
        for x in range(out_w):
            acc[yy, x] += a * row[x]
        if b != 0.0:
            for x in range(out_w):
                acc[yy + 1, x] += b * row[x]
    for y in range(out_h):
        for x in range(out_w):
            out[y, x] = min(max(np.rint(acc[y, x]), np.float32(0.0)), top)


def shrink(index: np.ndarray, table: np.ndarray, out_h: int, out_w: int) -> np.ndarray | None:
    """table[index] area-averaged to out_h × out_w (dtype of `table`), or None if not shrinking."""
    h, w = index.shape
    if numba is None or out_h > h or out_w > w or (out_h, out_w) == (h, w):
        return None
    x0, wx0, wx1 = cell_weights(w, out_w)
    y0, wy0, wy1 = cell_weights(h, out_h)
    out = np.empty((out_h, out_w), table.dtype)
    _shrink(np.ascontiguousarray(index), table, x0, wx0, wx1, y0, wy0, wy1,
            np.float32(np.iinfo(table.dtype).max), out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel specialisation `shrink` uses: uint8/uint16
    stored values, writeable or read-only (a view of an uncompressed file's buffer), 8/16-bit tables.
    Run once in prepare's fork server so its workers start with the compiled code."""
    for index_dtype in (np.uint8, np.uint16):
        for table_dtype in (np.uint8, np.uint16):
            index = np.zeros((4, 4), index_dtype)
            table = np.zeros(1 << (8 * index.itemsize), table_dtype)
            shrink(index, table, 2, 2)
            index.flags.writeable = False
            shrink(index, table, 2, 2)
