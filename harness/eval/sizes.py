"""AP@0.4 by box size, with size bands taken from the data's own box sizes.

COCO's small / medium / large (32² and 96² px) were chosen for COCO's photographs; chest X-ray boxes
at a benchmark's image size have their own distribution (an aortic knob and a cardiomegaly box differ
by an order of magnitude). The bands here are the terciles of the ground-truth box areas of the
scored images (``size_bands``), so each band holds about a third of the boxes, and the edges (in
px², and as the side of a square) are stated with the results.

AP per band is pycocotools' own area-range evaluation (the metric's code: ground truth outside the
band is ignored, a detection matched to it is ignored, an unmatched detection outside the band is
ignored), at IoU 0.4, one pass for all bands.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.eval.coco_map import CocoMapEval
from harness.predictions import Predictions

BAND_NAMES = ("small", "medium", "large")


@dataclass(frozen=True)
class SizeBands:
    edges: tuple[float, float]   # area edges (px²) between small | medium | large

    def ranges(self) -> list[tuple[float, float]]:
        """Closed ranges as pycocotools tests them (lo <= area <= hi) that make the bands half-open
        [0, a), [a, b), [b, inf): every box is in exactly one band."""
        a, b = self.edges
        below = lambda edge: float(np.nextafter(edge, -np.inf))  # noqa: E731
        return [(0.0, below(a)), (a, below(b)), (b, 1e10)]

    def describe(self) -> str:
        a, b = self.edges
        return (f"small < {a:.0f} px² (side ≈ {np.sqrt(a):.0f} px) ≤ medium < {b:.0f} px² (side ≈ {np.sqrt(b):.0f} px) "
                f"≤ large: the terciles of the ground-truth box areas")


def size_bands(areas) -> SizeBands:
    """Terciles of the given ground-truth box areas (px²)."""
    areas = np.asarray(list(areas), float)
    if areas.size == 0:
        raise ValueError("size bands need at least one ground-truth box")
    low, high = np.quantile(areas, [1 / 3, 2 / 3])
    return SizeBands((float(low), float(max(high, low))))


def ap_by_size(gt_coco, preds: Predictions, bands: SizeBands, iou_thr: float = 0.4,
               max_dets: int | None = None) -> dict[str, dict]:
    """{band: {"map": mean AP over classes with ground truth in the band, "per_class": {cat: AP or None},
    "n_gt": boxes in the band}} for "all" and each band."""
    ev = CocoMapEval(gt_coco, preds, max_dets)
    names = ("all", *BAND_NAMES)
    ranges = [(0.0, 1e10), *bands.ranges()]
    scored = set(preds.image_ids)
    areas = [a["area"] for a in ev.coco_gt.dataset["annotations"] if a["image_id"] in scored and not a.get("iscrowd")]
    n_gt = {name: int(sum(lo <= a <= hi for a in areas)) for name, (lo, hi) in zip(names, ranges)}
    if ev.empty:
        return {name: {"map": 0.0 if n_gt[name] else None, "per_class": {}, "n_gt": n_gt[name]} for name in names}
    params = ev.cocoeval.params
    params.iouThrs = np.array([iou_thr])
    params.areaRng = [list(r) for r in ranges]
    params.areaRngLbl = list(names)
    ev.evaluate().accumulate()
    precision = ev.cocoeval.eval["precision"]  # [T=1, R, K, A, M]
    out = {}
    for a, name in enumerate(names):
        per_class = {}
        for k, cat in enumerate(ev.cat_ids):
            values = precision[0, :, k, a, -1]
            per_class[cat] = float(values.mean()) if (values > -1).all() else None
        present = [v for v in per_class.values() if v is not None]
        out[name] = {"map": float(np.mean(present)) if present else None, "per_class": per_class, "n_gt": n_gt[name]}
    return out
