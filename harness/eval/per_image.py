"""Per-image true positives, false positives and missed boxes, from the metric's matches.

Only detections scoring at least ``score_thr`` count (the same threshold as the confusion matrix):
TP = kept detections the metric matched at IoU 0.4; FP = the other kept detections; FN = ground-truth
boxes no kept detection matched. ``errors`` = FP + FN ranks the images for the worst-image gallery.
"""
from __future__ import annotations

import pandas as pd

from harness.eval.confusion import SCORE_THR
from harness.eval.matches import MatchTable

COLUMNS = ["image_id", "n_gt", "n_det", "tp", "fp", "fn", "errors"]


def per_image_counts(table: MatchTable, score_thr: float = SCORE_THR) -> pd.DataFrame:
    """One row per scored image (every image, also those without boxes), COLUMNS."""
    det = table.det[~table.det["ignore"] & (table.det["score"] >= score_thr)]
    gt = table.gt[~table.gt["ignore"]]
    found = set(det.loc[det["tp"], "gt_row"].tolist())
    frame = pd.DataFrame({"image_id": table.image_ids}).set_index("image_id")
    frame["n_gt"] = gt.groupby("image_id").size()
    frame["n_det"] = det.groupby("image_id").size()
    frame["tp"] = det[det["tp"]].groupby("image_id").size()
    frame["fn"] = gt[[row not in found for row in gt.index]].groupby("image_id").size()
    frame = frame.fillna(0).astype(int)
    frame["fp"] = frame["n_det"] - frame["tp"]
    frame["errors"] = frame["fp"] + frame["fn"]
    return frame.reset_index()[COLUMNS]
