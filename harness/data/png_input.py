"""PNG radiographs (NIH ChestX-ray14 and other PNG releases) → the prepared PNG + manifest row.

The PNG counterpart of `prepare.convert_dicom`, without a DICOM stage: the stored grey levels are
already display values, so they are only made grey (colour and alpha PNGs exist in the NIH release:
luminance, alpha dropped), resized like the DICOM path (`dicom.resize`: area when shrinking) and
written with the same PNG settings, atomically, with the same sidecar. Never raises: a file that
cannot be read becomes a "failed" row naming the file and the reason.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from harness import atomic
from harness.data import dicom, manifest

PNG_SUFFIXES = (".png",)
PIXEL_PATH = "png"


class PngError(Exception):
    """A PNG input that cannot be converted (the message says why)."""


def read_grey(path: Path) -> np.ndarray:
    """The image's grey levels (uint8 or uint16, 2-D); raises PngError naming the file."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise PngError(f"unreadable image (not a PNG, or truncated): {path}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise PngError(f"unsupported pixel type {pixels.dtype} (8- or 16-bit grey expected): {path}")
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2GRAY)
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    elif pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise PngError(f"unsupported image shape {pixels.shape}: {path}")
    return pixels


def to_bits(pixels: np.ndarray, bits: int) -> np.ndarray:
    """8- or 16-bit grey levels rescaled to `bits` (x257 up, /257 rounded down the other way)."""
    if bits == 8:
        return pixels if pixels.dtype == np.uint8 else np.rint(pixels / 257.0).astype(np.uint8)
    if bits == 16:
        return pixels if pixels.dtype == np.uint16 else pixels.astype(np.uint16) * 257
    raise ValueError(f"bits must be 8 or 16, got {bits}")


def convert_png(src: Path, dst: Path, split: str, settings, out_root: Path, source: dict | None = None) -> dict:
    """Convert one PNG to `dst` atomically; return its manifest row (never raises); `source` goes into
    the sidecar (harness.data.prepare)."""
    row = manifest.empty_row(src.stem, split)
    try:
        pixels = read_grey(src)
        h, w = pixels.shape
        out_h, out_w = dicom.output_shape(h, w, settings.size, settings.square)
        out = to_bits(dicom.resize(pixels, out_h, out_w), int(settings.bits))
        with atomic.atomic_path(dst) as tmp:
            if not cv2.imwrite(str(tmp), out, settings.png_params()):
                raise PngError(f"cv2.imwrite could not write {tmp}")
        row.update(orig_height=h, orig_width=w, height=out_h, width=out_w, scale_x=out_w / w, scale_y=out_h / h,
                   photometric="MONOCHROME2", bits_stored=8 * pixels.dtype.itemsize, transfer_syntax="PNG",
                   status="ok", reason="", png=dst.relative_to(out_root).as_posix(), pixel_path=PIXEL_PATH)
        manifest.write_sidecar(dst, row, settings.params(), source)
    except PngError as err:
        row["reason"] = str(err)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
        row["reason"] = f"unexpected error: {type(err).__name__}: {err} ({src})"
    return row
