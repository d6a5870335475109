"""AP@0.4 by box size, with size bands taken from the data's own box sizes.

COCO's small / medium / large (32² and 96² px) were chosen for COCO's photographs; chest X-ray boxes
at a benchmark's image size have their own distribution (an aortic knob and a cardiomegaly box differ
by an order of magnitude). The bands here are the terciles of the ground-truth box areas of the
scored images (``size_bands``), so each band holds about a third of the boxes, and the edges (in
px², and as the side of a square) are stated with the results.

AP per band follows pycocotools' own area-range evaluation (ground truth outside the band is ignored, a
detection matched to it is ignored, an unmatched detection outside the band is ignored), at IoU 0.4.
``ap_by_size`` runs it (one COCOeval pass for all bands); ``ap_by_size_from_table`` gets the same numbers
from the run's match table (harness.eval.matches) without another pass: an image-and-class group whose
boxes all lie in the band keeps the table's matches, one with none of its boxes in the band keeps them as
ignored matches, and only a group with boxes on both sides is matched again with pycocotools' rule
(boxes in the band first; a detection falls back to an ignored box only when no box in the band takes
it). Tests require equality with ``ap_by_size``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.eval.bootstrap import ap101
from harness.eval.coco_map import CocoMapEval
from harness.eval.matches import MatchTable, box_iou
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


def ap_by_size_from_table(table: MatchTable, bands: SizeBands) -> dict[str, dict]:
    """``ap_by_size`` from the run's match table: the same {band: {"map", "per_class", "n_gt"}}, without a
    second pycocotools pass. Raises ValueError for ground truth with crowd regions (use ap_by_size)."""
    gt, det = table.gt, table.det
    if gt["ignore"].any() or det["ignore"].any():
        raise ValueError("ap_by_size_from_table: crowd regions in the ground truth; use ap_by_size")
    names = ("all", *BAND_NAMES)
    ranges = [(0.0, 1e10), *bands.ranges()]
    gt_area = gt["area"].to_numpy(float)
    det_area = (det["w"] * det["h"]).to_numpy(float)
    det_tp = det["tp"].to_numpy(bool)
    det_cat = det["category_id"].to_numpy()
    det_boxes = det[["x", "y", "w", "h"]].to_numpy(float)
    gt_boxes = gt[["x", "y", "w", "h"]].to_numpy(float)
    gt_groups = {key: rows.to_numpy() for key, rows in gt.groupby(["image_id", "category_id"], sort=False).groups.items()}
    det_groups = {key: np.sort(rows.to_numpy()) for key, rows in
                  det.groupby(["image_id", "category_id"], sort=False).groups.items()}
    out = {}
    for name, (lo, hi) in zip(names, ranges):
        gt_in = (gt_area >= lo) & (gt_area <= hi)
        det_in = (det_area >= lo) & (det_area <= hi)
        tp, ignore = det_tp.copy(), np.zeros(len(det), bool)
        if name != "all":
            for key, drows in det_groups.items():
                grows = gt_groups.get(key, np.zeros(0, np.int64))
                inside = gt_in[grows]
                if len(grows) and inside.all():  # the table's own matches; a miss outside the band is ignored
                    ignore[drows] = ~det_tp[drows] & ~det_in[drows]
                    continue
                if not inside.any():  # every box ignored: a match is an ignored detection
                    tp[drows] = False
                    ignore[drows] = det_tp[drows] | ~det_in[drows]
                    continue
                _rematch(drows, grows, inside, det_boxes, gt_boxes, det_in, table.iou_thr, tp, ignore)
        n_gt = {cat: int(np.count_nonzero(gt_in & (gt["category_id"].to_numpy() == cat))) for cat in table.category_ids}
        kept = ~ignore
        per_class = {}
        for cat in table.category_ids:
            if n_gt[cat] == 0:
                per_class[cat] = None
                continue
            rows = kept & (det_cat == cat)
            per_class[cat] = ap101(tp[rows], ~tp[rows], n_gt[cat])
        present = [v for v in per_class.values() if v is not None]
        out[name] = {"map": float(np.mean(present)) if present else None, "per_class": per_class,
                     "n_gt": int(np.count_nonzero(gt_in))}
    return out


def _rematch(drows, grows, inside, det_boxes, gt_boxes, det_in, iou_thr, tp, ignore) -> None:
    """pycocotools' evaluateImg matching of one image and class with some boxes outside the band."""
    order = np.argsort(~inside, kind="mergesort")  # boxes in the band first, as pycocotools sorts by ignore
    g_ignored = ~inside[order]
    ious = box_iou(det_boxes[drows], gt_boxes[grows[order]])
    taken = np.zeros(len(order), bool)
    for d, row in enumerate(drows):
        best, m = min(iou_thr, 1 - 1e-10), -1
        for g in range(len(order)):
            if taken[g]:
                continue
            if m > -1 and not g_ignored[m] and g_ignored[g]:
                break
            if ious[d, g] < best:
                continue
            best, m = ious[d, g], g
        if m == -1:
            tp[row], ignore[row] = False, not det_in[row]
        else:
            taken[m] = True
            tp[row], ignore[row] = not g_ignored[m], bool(g_ignored[m])
