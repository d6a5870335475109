"""Who read each synthetic image and which boxes they drew.

With the real VinBigData train.csv available (it ships in the torchxrayvision wheel), an abnormal
synthetic image copies one real abnormal image's three reader box sets, scaled to the synthetic
image: real positions, sizes, reader ids, misses and disagreement. The lesions are drawn at the
readers' consensus (their fused boxes). A normal image copies a real normal image's reader ids.
Without the file, built-in statistics stand in: R8/R9/R10 read most abnormal images, each reader
may miss a finding and jitters the boxes, and readers always agree on normal vs abnormal.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.classes import NO_FINDING_ID, NUM_CLASSES
from harness.data.fusion import fuse_readers
from harness.synth.lesions import sample_box

ALL_READERS = tuple(f"R{i}" for i in range(1, 18))
# relative class frequency of fused boxes in the real train.csv (WBF iou 0.4)
CLASS_FREQ = np.array([3201, 226, 724, 2335, 428, 687, 915, 1942, 1821, 1779, 1606, 3796, 128, 3131], float)
# real frames are ~2000-3000 px; box coordinates are normalised by at least this (w, h)
REAL_FRAME = (2400.0, 2600.0)


def real_csv_path() -> Path | None:
    """torchxrayvision's copy of the real train.csv, found without importing torchxrayvision."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "vinbigdata-train.csv.gz"
        if path.is_file():
            return path
    return None


@dataclass
class Finding:
    """One true lesion (drawn) and the reader boxes that reported it (normalised x1, y1, x2, y2)."""

    class_id: int
    box: tuple[float, float, float, float]


@dataclass
class ReadingPlan:
    """The findings to draw and the CSV rows the readers wrote (normalised coordinates)."""

    readers: list[str]
    findings: list[Finding]
    rows: list[tuple[str, int, tuple | None]]  # (rad_id, class_id, normalised box or None for No finding)


class RealTemplates:
    """Per-image reader box sets from the real train.csv."""

    def __init__(self, path: Path, classes: set[int] | None = None):
        df = pd.read_csv(path)
        findings = df[df["class_id"] != NO_FINDING_ID]
        frame = findings.groupby("image_id")[["x_max", "y_max"]].max()
        self.frames = {i: (max(REAL_FRAME[0], r.x_max * 1.02), max(REAL_FRAME[1], r.y_max * 1.02))
                       for i, r in frame.iterrows()}
        by_image = {k: g for k, g in findings.groupby("image_id")}
        if classes is not None:
            by_image = {k: g for k, g in by_image.items() if set(g["class_id"]) <= classes}
        self.abnormal_ids = sorted(by_image)
        self.by_image = by_image
        normal = df[df["class_id"] == NO_FINDING_ID]
        self.normal_readers = [sorted(g["rad_id"]) for _, g in normal.groupby("image_id")]
        self._fuse = fuse_readers
        self.source = str(path)

    def abnormal(self, rng: np.random.Generator) -> ReadingPlan:
        image_id = self.abnormal_ids[int(rng.integers(len(self.abnormal_ids)))]
        g = self.by_image[image_id]
        fw, fh = self.frames[image_id]
        scale = np.array([fw, fh, fw, fh])
        fused = self._fuse(g, "wbf", 0.4)
        findings = [Finding(int(r.class_id), tuple(np.array([r.x_min, r.y_min, r.x_max, r.y_max]) / scale))
                    for r in fused.itertuples()]
        rows = [(r.rad_id, int(r.class_id), tuple(np.array([r.x_min, r.y_min, r.x_max, r.y_max]) / scale))
                for r in g.itertuples()]
        return ReadingPlan(sorted(g["rad_id"].unique()), findings, rows)

    def normal(self, rng: np.random.Generator) -> ReadingPlan:
        readers = self.normal_readers[int(rng.integers(len(self.normal_readers)))]
        return ReadingPlan(list(readers), [], [(r, NO_FINDING_ID, None) for r in readers])


class BuiltinReaders:
    """Reader behaviour from summary statistics (used when the real csv is not installed)."""

    def __init__(self, classes: set[int] | None = None, miss: float = 0.35, jitter: float = 0.08):
        freq = CLASS_FREQ.copy()
        if classes is not None:
            freq[[c for c in range(NUM_CLASSES) if c not in classes]] = 0
        self.freq = freq / freq.sum()
        self.miss, self.jitter = miss, jitter
        self.source = "built-in statistics"

    def _readers(self, rng: np.random.Generator, abnormal: bool) -> list[str]:
        if abnormal and rng.random() < 0.94:
            return ["R10", "R8", "R9"]
        others = [r for r in ALL_READERS if r not in ("R8", "R9", "R10")]
        return sorted(rng.choice(others, 3, replace=False).tolist())

    def abnormal(self, rng: np.random.Generator) -> ReadingPlan:
        readers = self._readers(rng, True)
        n = 1 + rng.poisson(1.0)
        classes = rng.choice(NUM_CLASSES, size=n, p=self.freq)
        findings = []
        for cid in classes:
            x1, y1, x2, y2 = sample_box(int(cid), 1, 1, rng)
            findings.append(Finding(int(cid), (x1, y1, x2, y2)))
        marks = rng.random((len(readers), len(findings))) >= self.miss
        marks[rng.integers(len(readers)), :] |= ~marks.any(0)  # every finding seen by someone
        for r in range(len(readers)):  # every reader calls the image abnormal
            if not marks[r].any():
                marks[r, rng.integers(len(findings))] = True
        rows = []
        for r, rad in enumerate(readers):
            for f, finding in enumerate(findings):
                if marks[r, f]:
                    b = np.array(finding.box)
                    size = np.array([b[2] - b[0], b[3] - b[1]] * 2)
                    box = np.clip(b + rng.normal(0, self.jitter, 4) * size, 0.0, 1.0)
                    if box[2] - box[0] > 1e-3 and box[3] - box[1] > 1e-3:
                        rows.append((rad, finding.class_id, tuple(box)))
        return ReadingPlan(readers, findings, rows)

    def normal(self, rng: np.random.Generator) -> ReadingPlan:
        readers = self._readers(rng, False)
        return ReadingPlan(readers, [], [(r, NO_FINDING_ID, None) for r in readers])


def make_readers(classes: set[int] | None, use_real: bool | None = None):
    """RealTemplates when the real csv is installed (and `use_real` is not False), else BuiltinReaders."""
    path = real_csv_path() if use_real is not False else None
    if use_real and path is None:
        raise FileNotFoundError("real VinBigData train.csv not found: install torchxrayvision==1.5.7 (--no-deps)")
    return RealTemplates(path, classes) if path is not None else BuiltinReaders(classes)
