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


def source_identity(src: Path) -> dict:
    """What a PNG was made from: the source file's resolved path, size and mtime (ns). A replaced,
    touched or other file (another `data.raw_dir`, a DICOM replaced in place) has another identity."""
    st = Path(src).stat()
    return {"path": str(Path(src).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_sidecar(png: Path, row: dict, params: dict, source: dict | None = None) -> None:
    """Temp + rename like harness.atomic, but without fsync: a sidecar is cheap to lose (the image is
    reconverted), and an fsync per image cost ~10% of prepare's throughput. Only an "ok" row is
    recorded (a failed file is never reused as converted)."""
    if row.get("status") != "ok":
        raise ValueError(f"{png}: only a converted image gets a sidecar (status {row.get('status')!r})")
    with atomic.atomic_path(sidecar_path(png)) as tmp:
        tmp.write_text(json.dumps({"row": row, "params": params, "source": source}))


def sidecar_state(png: Path, params: dict, source: dict | None = None) -> tuple[dict | None, str]:
    """(the stored row, "") if the PNG and its sidecar exist and were made with the same `params` from
    the same `source` (source_identity; None: not compared); else (None, why it is converted)."""
    side = sidecar_path(png)
    if not (png.is_file() and side.is_file()):
        return None, "new"
    try:
        doc = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None, "unreadable sidecar"
    if doc.get("params") != params:
        return None, "other settings"
    if (doc.get("row") or {}).get("status") != "ok":
        return None, "not converted"
    if source is not None and doc.get("source") != source:
        before = doc.get("source") or {}
        if not before:
            return None, "source not recorded"
        changed = [f"{key} {before.get(key)} -> {source[key]}" for key in source if before.get(key) != source[key]]
        return None, "source changed (" + ", ".join(changed) + ")"
    return doc["row"], ""


def read_sidecar(png: Path, params: dict, source: dict | None = None) -> dict | None:
    """The stored row if the PNG and its sidecar exist and were made with the same `params` (and
    from the same `source`, when given)."""
    return sidecar_state(png, params, source)[0]
