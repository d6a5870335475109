"""Every detection and every ground-truth box of one prediction set, with pycocotools' own match.

The analyses of the report (error decomposition, confusion matrix, precision-recall curves, AP by box
size, per-image counts) all start from this table, so they count exactly what the metric counted: one
COCOeval.evaluate() pass at IoU 0.4 (area "all", the same maxDets as harness.eval.coco_map) decides
which detection is a true positive and which ground-truth box it took. ``MatchTable.per_class_ap()``
reproduces pycocotools' AP@0.4 exactly (a test requires equality), and an analysis that changes the
table (drops or re-labels detections, removes ground truth) scores the result with the same code.

    table = MatchTable.from_coco(gt_coco, preds)
    table.det    # DataFrame: det_id, image_id, category_id, score, x, y, w, h, tp, gt_row, ignore
    table.gt     # DataFrame: ann_id, image_id, category_id, x, y, w, h, area, det_row, ignore
    table.per_class_ap()   # {category id: AP@0.4 or None (no ground truth)}
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.classes import class_names
from harness.eval.bootstrap import ClassMatches, ImageMatches, ap101, image_groups
from harness.eval.coco_map import CocoMapEval
from harness.predictions import Predictions

#: The benchmark's IoU threshold.
IOU_THR = 0.4

DET_COLUMNS = ["det_id", "image_id", "category_id", "score", "x", "y", "w", "h", "tp", "gt_row", "ignore"]
GT_COLUMNS = ["ann_id", "image_id", "category_id", "x", "y", "w", "h", "area", "det_row", "ignore"]


@dataclass
class MatchTable:
    """Detections and ground truth of the scored images, with the metric's matches.

    ``det.gt_row`` / ``gt.det_row`` are row positions into the other table (-1: unmatched). Rows of
    ``det`` are in the order pycocotools accumulates them within a class (score descending, then image
    in ``image_ids`` order, then input order), so a class's rows in table order give its PR curve."""

    image_ids: list[int]
    category_ids: list[int]
    det: pd.DataFrame
    gt: pd.DataFrame
    iou_thr: float = IOU_THR
    groups: tuple[str, ...] | None = None   # each image's group (patient) when the ground truth says so
    names: dict[int, str] | None = None     # category id -> class name (the ground truth's label set)

    @classmethod
    def from_coco(cls, gt_coco, preds: Predictions, iou_thr: float = IOU_THR,
                  max_dets: int | None = None) -> "MatchTable":
        ev = CocoMapEval(gt_coco, preds, max_dets)
        image_ids = sorted(set(preds.image_ids))
        scored = set(image_ids)
        anns = [a for a in ev.coco_gt.dataset["annotations"] if a["image_id"] in scored]
        gt = pd.DataFrame({
            "ann_id": [int(a["id"]) for a in anns],
            "image_id": [int(a["image_id"]) for a in anns],
            "category_id": [int(a["category_id"]) for a in anns],
            **{k: [float(a["bbox"][i]) for a in anns] for i, k in enumerate("xywh")},
            "area": [float(a["area"]) for a in anns],
            "det_row": -1,
            "ignore": [bool(a.get("iscrowd", 0)) for a in anns],
        }, columns=GT_COLUMNS)
        dets = preds.detections
        det = pd.DataFrame({
            "det_id": np.arange(1, len(dets) + 1),  # loadRes numbers results 1..N in input order
            "image_id": [int(d["image_id"]) for d in dets],
            "category_id": [int(d["category_id"]) for d in dets],
            "score": [float(d["score"]) for d in dets],
            **{k: [float(d["bbox"][i]) for d in dets] for i, k in enumerate("xywh")},
            "tp": False, "gt_row": -1, "ignore": False,
        }, columns=DET_COLUMNS)
        if not ev.empty:
            _apply_matches(ev, det, gt, iou_thr, image_ids)
        rank = {image_id: i for i, image_id in enumerate(image_ids)}
        order = np.lexsort((det["det_id"].to_numpy(), det["image_id"].map(rank).to_numpy(), -det["score"].to_numpy()))
        det = det.iloc[order].reset_index(drop=True)
        new_row = np.empty(len(order), np.int64)
        new_row[order] = np.arange(len(order))
        matched = gt["det_row"].to_numpy() >= 0
        gt.loc[matched, "det_row"] = new_row[gt.loc[matched, "det_row"].to_numpy()]
        return cls(image_ids, list(ev.cat_ids), det, gt, iou_thr, image_groups(ev.gt, image_ids),
                   dict(enumerate(class_names(ev.coco_gt.dataset))))

    # ----- scoring -----
    def n_gt(self) -> dict[int, int]:
        """Non-ignored ground-truth boxes per category."""
        counts = self.gt.loc[~self.gt["ignore"], "category_id"].value_counts()
        return {cat: int(counts.get(cat, 0)) for cat in self.category_ids}

    def per_class_ap(self, det: pd.DataFrame | None = None, n_gt: dict[int, int] | None = None) -> dict[int, float | None]:
        """pycocotools' 101-point AP per category of `det` (default: this table) rows in table order,
        against `n_gt` ground-truth boxes (default: this table's); None = no ground truth."""
        det = self.det if det is None else det
        n_gt = self.n_gt() if n_gt is None else n_gt
        det = det[~det["ignore"]]
        by_cat = dict(tuple(det.groupby("category_id", sort=False)))
        out = {}
        for cat in self.category_ids:
            if n_gt.get(cat, 0) <= 0:
                out[cat] = None
                continue
            rows = by_cat.get(cat)
            tp = rows["tp"].to_numpy(bool) if rows is not None else np.zeros(0, bool)
            out[cat] = ap101(tp, ~tp, n_gt[cat])
        return out

    def map(self, det: pd.DataFrame | None = None, n_gt: dict[int, int] | None = None) -> float:
        """Mean AP over the categories with ground truth (as CocoMapEval.summarize)."""
        present = [v for v in self.per_class_ap(det, n_gt).values() if v is not None]
        return float(np.mean(present)) if present else 0.0

    def image_matches(self) -> ImageMatches:
        """The same matches as harness.eval.bootstrap's per-image data (for resampling), without a second
        COCOeval pass."""
        index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        det = self.det[~self.det["ignore"]]
        gt = self.gt[~self.gt["ignore"]]
        classes = {}
        for cat in self.category_ids:
            rows = det[det["category_id"] == cat]
            n_gt = np.zeros(len(self.image_ids), np.int64)
            np.add.at(n_gt, gt.loc[gt["category_id"] == cat, "image_id"].map(index).to_numpy(np.int64), 1)
            tp = rows["tp"].to_numpy(bool)
            classes[cat] = ClassMatches(rows["image_id"].map(index).to_numpy(np.int64), tp, ~tp, n_gt)
        return ImageMatches(list(self.image_ids), classes, self.groups, self.names)


def pr_curve(tables: list[MatchTable], category_id: int) -> pd.DataFrame:
    """The precision-recall curve of one class over one or more tables (folds: their val images are
    disjoint, so pooling gives the out-of-fold curve): one row per detection in score order with score,
    recall, precision and the precision envelope pycocotools interpolates; empty without ground truth."""
    n = sum(t.n_gt().get(category_id, 0) for t in tables)
    parts = [t.det[(t.det["category_id"] == category_id) & ~t.det["ignore"]] for t in tables]
    rows = pd.concat(parts) if parts else pd.DataFrame(columns=DET_COLUMNS)
    if n == 0 or rows.empty:
        return pd.DataFrame(columns=["score", "recall", "precision", "envelope"])
    rows = rows.iloc[np.argsort(-rows["score"].to_numpy(float), kind="mergesort")]
    tp = np.cumsum(rows["tp"].to_numpy(float))
    fp = np.cumsum(~rows["tp"].to_numpy(bool))
    precision = tp / (tp + fp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return pd.DataFrame({"score": rows["score"].to_numpy(float), "recall": tp / n, "precision": precision,
                         "envelope": envelope})


def _apply_matches(ev: CocoMapEval, det: pd.DataFrame, gt: pd.DataFrame, iou_thr: float, image_ids: list[int]) -> None:
    """Copy the TP / ignore flags and matched ids of one evaluate() pass at `iou_thr` into the tables."""
    params = ev.cocoeval.params
    params.iouThrs = np.array([iou_thr])
    ev.evaluate()
    assert list(params.imgIds) == image_ids
    gt_row_of = {ann_id: row for row, ann_id in enumerate(gt["ann_id"].to_numpy())}
    det_tp = np.zeros(len(det), bool)
    det_gt = np.full(len(det), -1, np.int64)
    det_ignore = np.zeros(len(det), bool)
    gt_ignore = gt["ignore"].to_numpy().copy()
    gt_det = np.full(len(gt), -1, np.int64)
    n_area, n_img = len(params.areaRng), len(image_ids)
    for k in range(len(params.catIds)):
        base = k * n_area * n_img  # evalImgs order: category, area range ("all" first), image
        for entry in ev.cocoeval.evalImgs[base:base + n_img]:
            if entry is None:
                continue
            dt_rows = np.asarray(entry["dtIds"][:ev.max_dets], np.int64) - 1
            matched_ids = np.asarray(entry["dtMatches"][0, :ev.max_dets]).astype(np.int64)
            ignored = np.asarray(entry["dtIgnore"][0, :ev.max_dets], bool)
            det_ignore[dt_rows] = ignored
            for row, ann_id, ign in zip(dt_rows, matched_ids, ignored):
                if ann_id > 0 and not ign:
                    det_tp[row] = True
                    det_gt[row] = gt_row_of[int(ann_id)]
                    gt_det[det_gt[row]] = row
            for ann_id, ign in zip(entry["gtIds"], entry["gtIgnore"]):
                gt_ignore[gt_row_of[int(ann_id)]] = bool(ign)
    det["tp"], det["gt_row"], det["ignore"] = det_tp, det_gt, det_ignore
    gt["det_row"], gt["ignore"] = gt_det, gt_ignore


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (n, 4) x (m, 4) [x, y, w, h] boxes, pycocotools' definition (no +1)."""
    from pycocotools import mask as mask_utils

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a, b = np.ascontiguousarray(a, np.float64), np.ascontiguousarray(b, np.float64)  # pycocotools reads C order
    return np.asarray(mask_utils.iou(a, b, [0] * len(b)))
