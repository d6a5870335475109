"""The real NIH ChestX-ray14 test subset (tests/data/nih-cxr14-mini: 11 radiographs, 15 boxes, in the
release's layout; licence and attribution in its README) and helpers the NIH tests share."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

NIH_MINI = Path(__file__).parent / "data" / "nih-cxr14-mini"


def box_rows(raw_dir: Path = NIH_MINI) -> list[dict]:
    """The box file's rows as the release writes them: name, label, x, y, w, h (floats)."""
    with open(raw_dir / "BBox_List_2017.csv", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [{"name": r[0], "label": r[1], "xywh": [float(v) for v in r[2:6]]} for r in reader if r]


def copy_mini(dst: Path) -> Path:
    """A writable copy of the subset (tests that damage files or add some)."""
    shutil.copytree(NIH_MINI, dst)
    return dst


def image_paths(raw_dir: Path = NIH_MINI) -> dict[str, Path]:
    return {p.name: p for p in sorted(raw_dir.rglob("*.png"))}
