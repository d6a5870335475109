"""JPEG 2000 at reduced resolution: decode only the wavelet levels a smaller output needs.

A JPEG 2000 codestream is a wavelet pyramid; OpenJPEG (through Pillow's `reduce`) can stop `r` levels
early and return the low-pass band, 1/2^r of each side, for about 4^-r of the decoding work. The
result is a smoothed downsample, not INTER_AREA of the full image: close, not identical (the
tolerance is stated and tested in tests/test_dicom_fastpath.py). Used only by the fast path, only
when the output is at most half the original size in both directions, and one level at most
(MAX_LEVELS): on pydicom-data's chest CRs one level stays ≥ 48 dB PSNR from the exact output, two
levels (the LL band standing in for a 4×4 box) drop to ~40 dB with visible differences on edges.

`reduced_levels` returns 0 (decode normally) whenever this cannot reproduce pydicom's stored values:
not a JPEG 2000 transfer syntax, several frames, signed samples, a precision other than BitsStored,
more than one component, fewer decomposition levels, or a size where Pillow's reduced-size rounding
disagrees with OpenJPEG's (Pillow rounds half up, OpenJPEG rounds up: odd remainders break r ≥ 2).
"""
from __future__ import annotations

import io

import numpy as np

J2K_SYNTAXES = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
MAX_LEVELS = 1


def _levels_fit(rows: int, cols: int, out_h: int, out_w: int) -> int:
    """The most halvings that keep both sides ≥ the output (never upsample)."""
    r = 0
    while -(-rows // (2 << r)) >= out_h and -(-cols // (2 << r)) >= out_w:
        r += 1
    return r


def _pillow_agrees(side: int, r: int) -> bool:
    return (side + ((1 << r) >> 1)) // (1 << r) == -(-side // (1 << r))


def _codestream_facts(frame: bytes) -> dict | None:
    """Precision, signedness, components and decomposition levels from the SIZ and COD markers."""
    if frame[:4] != b"\xff\x4f\xff\x51" or len(frame) < 44:
        return None
    ssiz, comps = frame[42], int.from_bytes(frame[40:42], "big")
    cod = frame.find(b"\xff\x52", 4)
    if cod < 0 or len(frame) < cod + 10:
        return None
    return {"precision": (ssiz & 0x7F) + 1, "signed": bool(ssiz & 0x80), "components": comps,
            "levels": frame[cod + 9]}


def first_frame(ds) -> bytes:
    from pydicom.encaps import get_frame

    return get_frame(ds.PixelData, 0, number_of_frames=1)


def reduced_levels(ds, out_h: int, out_w: int) -> int:
    """How many resolution levels to skip when decoding `ds` for an out_h×out_w output (0: none)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or str(getattr(meta, "TransferSyntaxUID", "")) not in J2K_SYNTAXES:
        return 0
    if int(ds.get("NumberOfFrames", 1) or 1) != 1 or int(ds.get("PixelRepresentation", 0) or 0) != 0:
        return 0
    rows, cols = int(ds.Rows), int(ds.Columns)
    r = _levels_fit(rows, cols, out_h, out_w)
    if r == 0:
        return 0
    facts = _codestream_facts(first_frame(ds))
    if (facts is None or facts["signed"] or facts["components"] != 1
            or facts["precision"] != int(ds.BitsStored) or facts["precision"] > 16):
        return 0
    r = min(r, facts["levels"], MAX_LEVELS)
    while r > 0 and not (_pillow_agrees(rows, r) and _pillow_agrees(cols, r)):
        r -= 1
    return r


def decode_reduced(ds, levels: int) -> np.ndarray:
    """The first frame's stored values at 1/2^levels resolution (uint8 or uint16); raises OSError
    or ValueError if the codestream cannot be decoded that way."""
    from PIL import Image

    precision = int(ds.BitsStored)
    with Image.open(io.BytesIO(first_frame(ds))) as im:
        im.reduce = levels
        im.load()
        arr = np.asarray(im)
    if arr.dtype == np.uint16 and precision < 16:  # Pillow scales samples up to 16 bits
        arr = arr >> (16 - precision)
    return arr
