"""Confusion matrix with background, from the metric's matches (harness.eval.matches).

Rows are the true class (the label set's classes, then "background" = boxes on no ground truth), columns the
predicted class (then "background" = ground truth no kept detection found). Only detections scoring
at least ``score_thr`` count (a matrix over every low-score detection would be all background); the
metric's greedy matching is by score, so the true positives among the kept detections are exactly
the metric's.

* a true positive of class c (IoU >= 0.4, same class): cell (c, c);
* a false positive of class p that overlaps (IoU >= 0.4) a ground-truth box of another class t that
  no kept detection matched: cell (t, p), each box taken at most once, by the highest-scoring such
  detection (its best-IoU free box);
* any other false positive of class p: (background, p); any ground-truth box of class t left over:
  (t, background).

So each kept detection is counted once in its column and each ground-truth box once in its row: a
class's row sums to its ground-truth count. ``normalised`` divides each row by its sum.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.classes import CLASSES
from harness.eval.matches import MatchTable, box_iou

BACKGROUND = "background"
#: Default score threshold of the kept detections (ultralytics' confusion matrix uses 0.25 too).
SCORE_THR = 0.25


def labels(classes=CLASSES) -> list[str]:
    return [*classes, BACKGROUND]


def _ids(column: pd.Series) -> np.ndarray:
    """A column of ids as integer indices (an empty selection comes back as float/object)."""
    return column.to_numpy().astype(np.int64)


def confusion_matrix(table: MatchTable, score_thr: float = SCORE_THR, classes=CLASSES) -> pd.DataFrame:
    """Counts, (classes + background) square DataFrame: index = true class, columns = predicted class
    (see module doc); `classes`: the dataset's class names by category id."""
    n = len(classes)
    counts = np.zeros((n + 1, n + 1), np.int64)
    det = table.det[~table.det["ignore"] & (table.det["score"] >= score_thr)]
    gt = table.gt[~table.gt["ignore"]]
    found = np.zeros(len(table.gt), bool)
    tps = det[det["tp"]]
    np.add.at(counts, (_ids(tps["category_id"]), _ids(tps["category_id"])), 1)
    found[_ids(tps["gt_row"])] = True
    false_pos = det[~det["tp"]]
    gt_by_image = {image: rows for image, rows in gt.groupby("image_id")}
    for image, rows in false_pos.groupby("image_id", sort=False):
        boxes = gt_by_image.get(image)
        if boxes is None:
            np.add.at(counts, (n, _ids(rows["category_id"])), 1)
            continue
        iou = box_iou(rows[["x", "y", "w", "h"]].to_numpy(), boxes[["x", "y", "w", "h"]].to_numpy())
        other = rows["category_id"].to_numpy()[:, None] != boxes["category_id"].to_numpy()[None, :]
        gt_rows = boxes.index.to_numpy()
        for i, pred in enumerate(_ids(rows["category_id"])):  # rows are in score order
            candidates = np.where(other[i] & ~found[gt_rows] & (iou[i] >= table.iou_thr), iou[i], -1.0)
            j = int(np.argmax(candidates))
            if candidates[j] >= 0:
                found[gt_rows[j]] = True
                counts[_ids(boxes["category_id"])[j], pred] += 1
            else:
                counts[n, pred] += 1
    left = gt[~found[gt.index.to_numpy()]]
    np.add.at(counts, (_ids(left["category_id"]), n), 1)
    return pd.DataFrame(counts, index=labels(classes), columns=labels(classes))


def normalised(counts: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its sum (rows without boxes stay 0)."""
    sums = counts.sum(axis=1).to_numpy(float)[:, None]
    return pd.DataFrame(np.divide(counts.to_numpy(float), sums, out=np.zeros(counts.shape), where=sums > 0),
                        index=counts.index, columns=counts.columns)
