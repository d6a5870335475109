"""The one prediction format every adapter, the ensemble and the scorer share.

A prediction file is JSON:
    {
      "format": "cxr-bench-predictions/1",
      "source": "<model or ensemble name>",
      "split_hash": "<Split.split_hash, or null for unlabeled images>",
      "image_ids": [<every COCO image id predicted on, with or without detections>],
      "detections": [{"image_id": int, "category_id": int (0..N-1), "bbox": [x, y, w, h], "score": float}, ...]
    }
Coordinates are prepared-PNG pixels, COCO [x, y, width, height]. A category id is the class's index in
the label set the model was trained on (harness.classes; N = its size): the file does not name its
label set, so the scorer checks the ids against the ground truth's categories
(harness.eval.coco_map.check_images) and `load(path, num_classes=N)` where the label set is known.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from harness import atomic

FORMAT = "cxr-bench-predictions/1"


class PredictionFileError(ValueError):
    """A prediction file is malformed or does not match what it is used with."""


@dataclass
class Predictions:
    source: str
    split_hash: str | None
    image_ids: list[int]
    detections: list[dict] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        atomic.write_json(
            path,
            {
                "format": FORMAT,
                "source": self.source,
                "split_hash": self.split_hash,
                "image_ids": list(self.image_ids),
                "detections": self.detections,
            },
            indent=None,
        )

    @classmethod
    def load(cls, path: str | Path, num_classes: int | None = None) -> "Predictions":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise PredictionFileError(f"{path}: cannot read prediction file: {err}") from err
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise PredictionFileError(f"{path}: not a {FORMAT} file")
        preds = cls(raw["source"], raw.get("split_hash"), list(raw["image_ids"]), list(raw["detections"]))
        preds.validate(path, num_classes)
        return preds

    def validate(self, where: str | Path = "<predictions>", num_classes: int | None = None) -> None:
        """Raise PredictionFileError at the first malformed detection; `num_classes`: category ids must
        be below it (the label set's size), else only non-negative integers."""
        known = set(self.image_ids)
        for i, det in enumerate(self.detections):
            bbox = det.get("bbox")
            ok = (
                det.get("image_id") in known
                and isinstance(det.get("category_id"), int)
                and 0 <= det["category_id"] < (num_classes if num_classes is not None else det["category_id"] + 1)
                and isinstance(bbox, (list, tuple))
                and len(bbox) == 4
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
                and bbox[2] >= 0
                and bbox[3] >= 0
                and isinstance(det.get("score"), (int, float))
            )
            if not ok:
                raise PredictionFileError(f"{where}: detection #{i} is invalid: {det}")


def xyxy_to_xywh(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


def xywh_to_xyxy(x: float, y: float, w: float, h: float) -> list[float]:
    return [float(x), float(y), float(x + w), float(y + h)]


def detection(image_id: int, category_id: int, xyxy, score: float) -> dict:
    """One COCO result from an x1,y1,x2,y2 box."""
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [round(v, 2) for v in xyxy_to_xywh(*xyxy)],
        "score": round(float(score), 5),
    }


def cap_per_image(detections: list[dict], max_det: int) -> list[dict]:
    """At most `max_det` detections per image, the highest scores (ties keep their order): for
    outputs fused from several passes (hflip TTA), so they keep the protocol's cap."""
    by_image: dict[int, list[dict]] = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det)
    out = []
    for dets in by_image.values():
        out.extend(sorted(dets, key=lambda d: -d["score"])[:max_det])
    return out
