"""Write a synthetic radiograph as a DICOM file with the variety real archives have.

MONOCHROME1 or MONOCHROME2, 12–16 bits stored, window center/width tags, rescale tags, and some files
JPEG 2000 lossless or RLE compressed — so `prepare` is exercised on everything it must handle.
UIDs derive from the image id, so the same seed gives byte-identical files.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from harness import atomic

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
SYNTAX_MIX = (0.6, 0.25, 0.15)  # default shares of uncompressed, JPEG 2000 lossless, RLE lossless


def encode(image01: np.ndarray, image_id: str, rng: np.random.Generator,
           syntaxes: tuple[float, float, float] = SYNTAX_MIX) -> tuple[bytes, dict]:
    """DICOM bytes for a [0, 1] display image (dense = bright) and the variety chosen."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import JPEG2000Lossless, RLELossless, ExplicitVRLittleEndian, generate_uid

    bits = int(rng.choice([12, 14, 15, 16]))
    photometric = "MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2"
    syntax = rng.choice(["raw", "j2k", "rle"], p=list(syntaxes))
    top = (1 << bits) - 1
    lo, hi = rng.uniform(0.02, 0.15) * top, rng.uniform(0.75, 0.98) * top  # not the full range
    values = lo + image01 * (hi - lo)
    if photometric == "MONOCHROME1":
        values = lo + hi - values
    pixels = np.clip(np.rint(values), 0, top).astype(np.uint16)

    h, w = pixels.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[image_id, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[image_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[image_id, "series"])
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.PatientID = image_id[:8]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter = round((lo + hi) / 2)
    ds.WindowWidth = round((hi - lo) * rng.uniform(0.9, 1.05))
    ds.PixelData = pixels.tobytes()
    if syntax == "j2k":
        ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    elif syntax == "rle":
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), {"bits": bits, "photometric": photometric, "syntax": str(syntax)}


def write(path: Path, image01: np.ndarray, image_id: str, rng: np.random.Generator,
          syntaxes: tuple[float, float, float] = SYNTAX_MIX) -> dict:
    data, variety = encode(image01, image_id, rng, syntaxes)
    atomic.write_bytes(path, data)
    return variety
