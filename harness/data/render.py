"""One DICOM → output-size grey levels, by the fast path (default) or the exact one (`exact=True`).

Exact: float pipeline on the full image (`dicom.read_dicom`), resize in float32, quantize last.
Fast: decode (uncompressed data as a read-only view of a memory map of the file, `pixel_map` and
`dicom.decode_view`; JPEG 2000 at reduced resolution when the output is ≤ half size, see
`harness.data.j2k`), map the stored values through one look-up table to the output grey levels
(`harness.data.lut`) and shrink with area averaging in the same pass (`harness.data.area`;
enlarging: look up, then resize). Before resizing the fast pixels equal the exact ones; resizing
after quantizing moves a pixel by at most one grey level (tests/test_dicom_fastpath.py checks every
file of the test corpus).

The fast path falls back to the exact one, per file, when the stored values are not 8- or 16-bit
integers (float pixel data, 32-bit stored values) — `Rendered.method` says "exact-fallback" then.
Other photometric interpretations (palette, RGB, YBR) are not grayscale and fail on both paths alike.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data import area, dicom, j2k, lut

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rendered:
    pixels: np.ndarray  # uint8 or uint16, out_h × out_w
    orig_height: int
    orig_width: int
    photometric: str
    bits_stored: int
    transfer_syntax: str
    method: str  # "exact", "exact-fallback", "lut" or "lut+j2k-r<levels>" (reduced JPEG 2000 decoding)


def _exact(path: Path, out_size, square: bool, bits: int, voi: bool, method: str) -> Rendered:
    img = dicom.read_dicom(path, voi=voi)
    h, w = img.pixels.shape
    out_h, out_w = dicom.output_shape(h, w, out_size, square)
    pixels = dicom.quantize(dicom.resize(img.pixels, out_h, out_w), bits)
    return Rendered(pixels, h, w, img.photometric, img.bits_stored, img.transfer_syntax, method)


def _decode_fast(ds, path: Path, size, square: bool) -> tuple[np.ndarray, tuple[int, int] | None, str]:
    """Stored values, their (min, max) if already known, and the method name."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows and cols:
        try:
            levels = j2k.reduced_levels(ds, *dicom.output_shape(rows, cols, size, square))
            if levels:
                return j2k.decode_reduced(ds, levels), None, f"lut+j2k-r{levels}"
        except Exception as err:  # noqa: BLE001 - the full decode below reports a broken file properly
            log.debug("%s: reduced JPEG 2000 decoding failed (%s); decoding in full", path, err)
    return *dicom.decode_view(ds, path), "lut"


def render(path: str | os.PathLike, size: int | str = 1024, square: bool = False, bits: int = 8,
           voi: bool = True, exact: bool = False) -> Rendered:
    """Decode `path` into display-ready grey levels at the output size; raises `dicom.DicomError`."""
    path = Path(path)
    if exact:
        return _exact(path, size, square, bits, voi, "exact")
    ds = dicom.open_dicom(path, mapped=True)
    arr, extent, method = _decode_fast(ds, path, size, square)
    if not lut.supports(arr):
        return _exact(path, size, square, bits, voi, "exact-fallback")
    # the original size: the decoded pixels' (as on the exact path), the header's when decoded reduced
    h, w = arr.shape if method == "lut" else (int(ds.Rows), int(ds.Columns))
    out_h, out_w = dicom.output_shape(h, w, size, square)
    table = lut.display_table(arr, ds, voi, bits, extent)
    pixels = area.shrink(lut.table_index(arr), table, out_h, out_w)  # look-up and shrink in one pass
    if pixels is None:  # same size or enlarging
        pixels = dicom.resize(lut.apply(arr, table), out_h, out_w)
    return Rendered(pixels, h, w, str(ds.PhotometricInterpretation), int(ds.get("BitsStored", 0) or 0),
                    dicom.syntax_name(ds), method)
