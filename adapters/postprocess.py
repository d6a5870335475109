"""The shared post-processing: one implementation for every framework's raw detections."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.predictions import detection
from harness.split import ImageRef


@dataclass
class RawDetections:
    """One image's detections as a framework returned them, after its own class-aware NMS:
    boxes x1,y1,x2,y2 in the image's PNG pixels, scores, class indices 0..classes-1."""

    boxes: Any
    scores: Any
    labels: Any


def postprocess(ref: ImageRef, raw: RawDetections, score_thr: float, max_det: int, num_classes: int) -> list[dict]:
    """The harness's post-processing, identical for every framework: drop non-finite boxes and
    unknown classes, clip boxes to the image, drop boxes with no area left, keep scores >= score_thr,
    sort by score (ties keep the framework's order), keep the best `max_det`; COCO results."""
    boxes = np.asarray(raw.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(raw.scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(raw.labels).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"{ref.path}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    ok = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & (scores >= score_thr)
    ok &= (labels >= 0) & (labels < num_classes) & (labels == np.round(labels))
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, ref.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, ref.height)
    ok &= (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    keep = np.flatnonzero(ok)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_det]
    return [detection(ref.id, int(labels[k]), boxes[k].tolist(), float(scores[k])) for k in keep]
