"""The manifest: one row per DICOM, the only source of coordinate mappings (DICOM px ↔ PNG px).

Columns follow docs/architecture.md. Every row also lives in a per-image sidecar JSON next to the
PNG (`images/<size>/.meta/<image_id>.json`), written after the PNG, so a rerun can rebuild the
manifest without decoding pixels again and knows which PNGs are complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from harness import atomic

COLUMNS = (
    "image_id", "split", "orig_height", "orig_width", "height", "width", "scale_x", "scale_y",
    "photometric", "bits_stored", "transfer_syntax", "status", "reason", "png",
    "pixel_path",  # which pixel pipeline made the PNG: exact, exact-fallback, lut, lut+j2k-r1 (harness.data.render)
)


def empty_row(image_id: str, split: str) -> dict:
    return {c: None for c in COLUMNS} | {"image_id": image_id, "split": split, "status": "failed", "reason": ""}


def write_manifest(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write rows (sorted by split, image_id) atomically as CSV."""
    path = Path(path)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame = frame.sort_values(["split", "image_id"], kind="stable").reset_index(drop=True)
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """The manifest as a DataFrame (image_id as str, sizes as nullable ints)."""
    frame = pd.read_csv(path, dtype={"image_id": str, "split": str, "photometric": str,
                                     "transfer_syntax": str, "status": str, "reason": str, "png": str,
                                     "pixel_path": str},
                        keep_default_na=False, na_values=[""])
    for col in ("orig_height", "orig_width", "height", "width", "bits_stored"):
        frame[col] = frame[col].astype("Int64")
    return frame


def original_sizes(manifest: pd.DataFrame, split: str | None = "train") -> dict[str, tuple[int, int]]:
    """{image_id: (orig_height, orig_width)} for rows whose size is known."""
    rows = manifest if split is None else manifest[manifest["split"] == split]
    rows = rows.dropna(subset=["orig_height", "orig_width"])
    return {r.image_id: (int(r.orig_height), int(r.orig_width)) for r in rows.itertuples()}


def sidecar_path(png: Path) -> Path:
    return png.parent / ".meta" / f"{png.stem}.json"


def write_sidecar(png: Path, row: dict, params: dict) -> None:
    """Temp + rename like harness.atomic, but without fsync: a sidecar is cheap to lose (the image is
    reconverted), and an fsync per image cost ~10% of prepare's throughput."""
    with atomic.atomic_path(sidecar_path(png)) as tmp:
        tmp.write_text(json.dumps({"row": row, "params": params}))


def read_sidecar(png: Path, params: dict) -> dict | None:
    """The stored row if the PNG and its sidecar exist and were made with the same `params`."""
    side = sidecar_path(png)
    if not (png.is_file() and side.is_file()):
        return None
    try:
        doc = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc["row"] if doc.get("params") == params else None
