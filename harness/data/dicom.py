"""One DICOM file → one display-ready grayscale image (the pixel pipeline of `prepare`).

The steps are the ones radiologists' viewers apply, in their order: modality rescale (slope/intercept
or modality LUT), VOI LUT or window (`apply_voi_lut`), MONOCHROME1 inversion (so bone is always
bright), min-max to the output range, resize with area interpolation. Each failure mode raises
`DicomError` with a short, stable `reason` so a batch can report it per file and carry on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from harness.data import pixel_map


class DicomError(Exception):
    """A DICOM file that cannot become an image; `reason` is a short category, str() the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class DicomImage:
    """Decoded pixels in display orientation (float32, 0 = black, 1 = white) plus header facts."""

    pixels: np.ndarray
    photometric: str
    bits_stored: int
    transfer_syntax: str


@dataclass(frozen=True)
class Header:
    """Header facts needed for the manifest, read without decoding the pixels."""

    rows: int
    columns: int
    photometric: str
    bits_stored: int
    transfer_syntax: str


def _read_dataset(path: Path, pixels: bool, mapped: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise DicomError("missing", f"{path} does not exist")
    try:
        ds = pixel_map.read_mapped(path) if mapped else None
        return ds if ds is not None else pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError as err:
        raise DicomError("not DICOM", f"{path}: {err}") from err
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DicomError("corrupt or truncated", f"{path}: {type(err).__name__}: {err}") from err


def syntax_name(ds) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return str(uid.name) if uid is not None else "unknown"


def read_header(path: str | os.PathLike) -> Header:
    """Rows, columns, photometric, bits and syntax without touching pixel data (fast; used on resume)."""
    path = Path(path)
    ds = _read_dataset(path, pixels=False)
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomError("no pixel data", f"{path}: no Rows/Columns (not an image object)")
    return Header(int(ds.Rows), int(ds.Columns), str(ds.get("PhotometricInterpretation", "")),
                  int(ds.get("BitsStored", 0) or 0), syntax_name(ds))


def open_dicom(path: str | os.PathLike, mapped: bool = False):
    """The dataset of `path` with pixel data, checked to be a single-sample grayscale image; with
    `mapped`, large uncompressed pixel data is a read-only memory map of the file (`pixel_map`)."""
    path = Path(path)
    ds = _read_dataset(path, pixels=True, mapped=mapped)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError("no pixel data", f"{path}: the file has no pixel data element")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError("not grayscale", f"{path}: photometric {photometric!r}, expected MONOCHROME1/2")
    return ds


def decode(ds, path: str | os.PathLike, **options) -> np.ndarray:
    """The stored values of the first frame (2-D, dtype as pydicom decodes it); `options` are
    pydicom's decoding options (`pydicom.pixels.pixel_array`)."""
    syntax = syntax_name(ds)
    try:
        if options:
            from pydicom.pixels import pixel_array

            arr = pixel_array(ds, **options)
        else:
            arr = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, EOFError, OSError, KeyError, TypeError, AttributeError) as err:
        text = str(err)
        reason = "truncated pixel data" if ("less than" in text or "expected" in text and "bytes" in text) \
            else f"cannot decode {syntax}"
        raise DicomError(reason, f"{path}: {type(err).__name__}: {text}") from err
    if arr.ndim == 3:  # multi-frame: a radiograph has one; take the first
        arr = arr[0]
    if arr.ndim != 2 or arr.size == 0:
        raise DicomError("not grayscale", f"{path}: pixel array of shape {arr.shape}")
    return arr


def decode_view(ds, path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int] | None]:
    """`decode`, but uncompressed pixel data comes as a read-only view of the dataset's pixel bytes
    (read from the file, or a memory map of it: `pixel_map`); also the stored values' (min, max) when
    the check below computed them (None otherwise).

    pydicom copies uncompressed pixel data to clear the bits above BitsStored (PS3.5 8.1.1: their
    content is undefined). When every value of the view already lies in the BitsStored range
    (unsigned: below 2^BitsStored; signed: a proper sign extension) those bits hold nothing, the view
    equals pydicom's corrected array, and the copy is saved; otherwise the corrected array is decoded.
    Compressed data is decoded into a new array either way."""
    arr = decode(ds, path, view_only=True, correct_unused_bits=False)
    bits = int(ds.get("BitsStored", 0) or 0)
    if arr.flags.writeable or arr.dtype.kind not in "iu" or not 0 < bits < 8 * arr.dtype.itemsize:
        return arr, None
    lo, hi = int(arr.min()), int(arr.max())
    if arr.dtype.kind == "i":
        clean = -(1 << (bits - 1)) <= lo and hi < 1 << (bits - 1)
    else:
        clean = hi < 1 << bits
    return (arr, (lo, hi)) if clean else (decode(ds, path), None)


def display_values(arr: np.ndarray, ds, voi: bool) -> np.ndarray:
    """Modality rescale / LUT, then VOI LUT or window (if `voi`), as float32.

    Elementwise in the stored value, so the fast path evaluates exactly this function on the table of
    possible stored values (harness.data.lut) instead of on the image.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    identity = ("ModalityLUTSequence" not in ds and float(ds.get("RescaleSlope", 1) or 1) == 1.0
                and float(ds.get("RescaleIntercept", 0) or 0) == 0.0)
    if not identity:  # skipping the identity saves a float64 copy of the full image
        arr = apply_modality_lut(arr, ds)
    if voi:
        arr = apply_voi_lut(arr, ds)
    return np.asarray(arr, dtype=np.float32)


def normalize(values: np.ndarray, lo: float, hi: float, photometric: str) -> np.ndarray:
    """Min-max to [0, 1] with the given extremes, inverted for MONOCHROME1 (bone always bright)."""
    out = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out


def read_dicom(path: str | os.PathLike, voi: bool = True) -> DicomImage:
    """The exact path: decode `path`, apply modality rescale, VOI LUT/window (if `voi`) and
    MONOCHROME1 inversion on the full image in floating point.

    Returns pixels scaled to [0, 1] (min-max after the LUTs), so 8- and 16-bit outputs share one path.
    """
    ds = open_dicom(path)
    values = display_values(decode(ds, path), ds, voi)
    photometric = str(ds.PhotometricInterpretation)
    pixels = normalize(values, float(values.min()), float(values.max()), photometric)
    return DicomImage(pixels, photometric, int(ds.get("BitsStored", 0) or 0), syntax_name(ds))


def output_shape(height: int, width: int, size: int | str, square: bool) -> tuple[int, int]:
    """(out_h, out_w): longer side = `size` (aspect kept), or size×size when `square`; "orig" keeps it."""
    if size == "orig" or size is None:
        if square:
            side = max(height, width)
            return side, side
        return height, width
    size = int(size)
    if size <= 0:
        raise ValueError(f"size must be positive or 'orig', got {size}")
    if square:
        return size, size
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(pixels: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area interpolation when shrinking (no aliasing of rib edges/noise), linear when enlarging."""
    h, w = pixels.shape
    if (h, w) == (out_h, out_w):
        return pixels
    shrinking = out_h * out_w < h * w
    return cv2.resize(pixels, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def quantize(pixels: np.ndarray, bits: int) -> np.ndarray:
    """[0, 1] floats → uint8 (bits=8) or uint16 (bits=16), full range."""
    if bits == 8:
        return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    if bits == 16:
        return np.clip(np.rint(pixels * 65535.0), 0, 65535).astype(np.uint16)
    raise ValueError(f"bits must be 8 or 16, got {bits}")
