"""Where the missing AP goes: the TIDE error decomposition (Bolya et al., ECCV 2020) at IoU 0.4.

Written from the paper's definitions and the reference implementation's behaviour (tidecv), on the
metric's own matches (harness.eval.matches): a detection pycocotools counted as a true positive is
one; every other detection gets exactly one error type, tested in this order (t_f = the foreground
IoU, 0.4 here; t_b = the background IoU, 0.1 as in TIDE):

* ``loc``  (localisation): its best IoU with a ground-truth box of its own class is in [t_b, t_f].
* ``cls``  (classification): IoU >= t_f with a ground-truth box of another class.
* ``dupe`` (duplicate): IoU >= t_f with a box of its own class that a higher-scoring detection took.
* ``bkg``  (background): IoU <= t_b with every ground-truth box (or the image has none).
* ``both`` (classification and localisation): none of the above (TIDE's catch-all).
* ``miss`` (missed): a ground-truth box nobody matched and no cls / loc error can fix.

dAP of a type = the mAP with only the errors of that type fixed, minus the mAP (negative values,
which only binning can cause, are 0, as in TIDE). Fixing: a cls error becomes a true positive of the
box's class, a loc error a true positive of its own class, but only the highest-scoring cls/loc error
aimed at a box nobody matched (the others, and those aimed at a matched box, are removed); dupe, bkg
and both errors are removed; a missed box is removed from the ground truth. ``false_pos`` /
``false_neg`` are TIDE's two special errors: every false positive removed, every missed box removed.

The mAP is pycocotools' (classes with ground truth), so ``map`` equals the metric's mAP@0.4.

    errors = tide_errors(MatchTable.from_coco(gt, preds))
    errors.counts, errors.delta_ap, errors.map, errors.det_type
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.eval.matches import MatchTable, box_iou

#: TIDE's background threshold.
BG_THR = 0.1
#: The main error types, in TIDE's order.
ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "miss")
#: Short descriptions for reports.
ERROR_NAMES = {"cls": "classification", "loc": "localisation", "both": "cls + loc", "dupe": "duplicate",
               "bkg": "background", "miss": "missed", "false_pos": "all false positives",
               "false_neg": "all false negatives"}


@dataclass
class ErrorAnalysis:
    map: float
    counts: dict[str, int]
    delta_ap: dict[str, float]                    # main and special types -> dAP (mAP units, >= 0)
    det_type: pd.Series                           # per det row: "tp" or an error type
    gt_missed: pd.Series                          # per gt row: True = a "miss" error
    fix_target: np.ndarray = field(default=None)  # per det row: gt row a cls / loc error aims at (-1)
    fixer: np.ndarray = field(default=None)       # per gt row: det row whose fix takes the box (-1)


def _box(frame: pd.DataFrame) -> np.ndarray:
    return frame[["x", "y", "w", "h"]].to_numpy(np.float64)


def classify(table: MatchTable, bg_thr: float = BG_THR) -> tuple[np.ndarray, np.ndarray]:
    """(error type or "tp" per det row, target gt row per det row for cls / loc errors, else -1)."""
    det, gt = table.det, table.gt
    pos_thr = table.iou_thr
    kinds = np.where(det["tp"].to_numpy(bool), "tp", "").astype(object)
    kinds[det["ignore"].to_numpy(bool)] = "ignored"
    target = np.full(len(det), -1, np.int64)
    gt_live = gt[~gt["ignore"]]
    gt_groups = {image: rows.index.to_numpy() for image, rows in gt_live.groupby("image_id")}
    open_rows = np.flatnonzero(kinds == "")
    for image, rows in det.iloc[open_rows].groupby("image_id", sort=False):
        det_rows = rows.index.to_numpy()
        g_rows = gt_groups.get(image)
        if g_rows is None:
            kinds[det_rows] = "bkg"
            continue
        iou = box_iou(_box(rows), _box(gt.loc[g_rows]))
        same = rows["category_id"].to_numpy()[:, None] == gt.loc[g_rows, "category_id"].to_numpy()[None, :]
        used = (gt.loc[g_rows, "det_row"].to_numpy() >= 0)[None, :]
        iou_same, iou_other, iou_dupe = iou * same, iou * ~same, iou * same * used
        for i, row in enumerate(det_rows):
            j = int(np.argmax(iou_same[i]))
            if bg_thr <= iou_same[i, j] <= pos_thr:
                kinds[row], target[row] = "loc", g_rows[j]
                continue
            j = int(np.argmax(iou_other[i]))
            if iou_other[i, j] >= pos_thr:
                kinds[row], target[row] = "cls", g_rows[j]
                continue
            if iou_dupe[i].max() >= pos_thr:
                kinds[row] = "dupe"
            elif iou[i].max() <= bg_thr:
                kinds[row] = "bkg"
            else:
                kinds[row] = "both"
    return kinds, target


def fix_owners(table: MatchTable, target: np.ndarray) -> np.ndarray:
    """Per gt row, the det row of the one fix the box can take (-1: none): the best-scoring cls / loc
    error aimed at a box nobody matched (det rows are in score order: the first seen wins, as in TIDE)."""
    gt_used = table.gt["det_row"].to_numpy() >= 0
    fixer = np.full(len(table.gt), -1, np.int64)
    for row in np.flatnonzero(target >= 0):
        g = target[row]
        if not gt_used[g] and fixer[g] < 0:
            fixer[g] = row
    return fixer


def tide_errors(table: MatchTable, bg_thr: float = BG_THR) -> ErrorAnalysis:
    det, gt = table.det, table.gt
    kinds, target = classify(table, bg_thr)
    live_gt = ~gt["ignore"].to_numpy(bool)
    gt_used = gt["det_row"].to_numpy() >= 0
    fixer = fix_owners(table, target)
    usable = fixer >= 0
    missed = live_gt & ~gt_used & ~usable
    counts = {kind: int(np.count_nonzero(kinds == kind)) for kind in ERROR_TYPES if kind != "miss"}
    counts["miss"] = int(np.count_nonzero(missed))
    counts = {kind: counts[kind] for kind in ERROR_TYPES}
    base = table.map()
    n_gt = table.n_gt()
    delta = {}
    for kind in ERROR_TYPES:
        fixed_det, fixed_gt = fixed_data(table, kinds, target, fixer, missed, kind)
        delta[kind] = max(_fixed_map(table, fixed_det, fixed_gt) - base, 0.0)
    errors = ~det["tp"].to_numpy(bool) & ~det["ignore"].to_numpy(bool)
    delta["false_pos"] = max(_fixed_map(table, det[~errors], n_gt) - base, 0.0)
    unmatched = gt[live_gt & ~gt_used]["category_id"].value_counts()
    delta["false_neg"] = max(_fixed_map(table, det, {c: n - int(unmatched.get(c, 0)) for c, n in n_gt.items()})
                             - base, 0.0)
    return ErrorAnalysis(base, counts, delta, pd.Series(kinds, index=det.index, name="error"),
                         pd.Series(missed, index=gt.index, name="missed"),
                         target, fixer)


def fixed_data(table: MatchTable, kinds, target, fixer, missed, kind: str) -> tuple[pd.DataFrame, dict[int, int]]:
    """The detections and ground-truth counts per class with every error of `kind` fixed."""
    det, n_gt = table.det, table.n_gt()
    if kind == "miss":
        lost = table.gt[missed]["category_id"].value_counts()
        return det, {c: n - int(lost.get(c, 0)) for c, n in n_gt.items()}
    rows = np.flatnonzero(kinds == kind)
    if kind in ("cls", "loc"):
        promoted = rows[fixer[target[rows]] == rows]
        fixed = det.copy()
        fixed.loc[promoted, "tp"] = True
        if kind == "cls":
            fixed.loc[promoted, "category_id"] = table.gt["category_id"].to_numpy()[target[promoted]]
        dropped = np.setdiff1d(rows, promoted)
        return fixed.drop(index=dropped), n_gt
    return det.drop(index=rows), n_gt


def _fixed_map(table: MatchTable, det: pd.DataFrame, n_gt: dict[int, int]) -> float:
    """mAP over the metric's classes; a class left without ground truth counts 0 when it still has
    detections and drops out when it has none (TIDE's rule for empty classes)."""
    per_class = table.per_class_ap(det, n_gt)
    original = table.n_gt()
    cats_with_dets = set(det.loc[~det["ignore"], "category_id"].unique())
    values = []
    for cat, ap in per_class.items():
        if original.get(cat, 0) <= 0:
            continue
        if ap is None:
            if cat in cats_with_dets:
                values.append(0.0)
            continue
        values.append(ap)
    return float(np.mean(values)) if values else 0.0


def summary_line(name: str, errors: ErrorAnalysis) -> str:
    """One line: where a model's AP goes (the three largest dAP, in AP points)."""
    ranked = sorted(((errors.delta_ap[k], k) for k in ERROR_TYPES), reverse=True)
    parts = [f"{ERROR_NAMES[k]} {v * 100:+.1f}" for v, k in ranked[:3] if v > 0]
    if not parts:
        return f"{name}: mAP@0.4 {errors.map * 100:.1f}; fixing no single error type would add AP"
    return f"{name}: mAP@0.4 {errors.map * 100:.1f}; fixing {', '.join(parts)} AP points"
