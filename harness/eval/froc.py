"""Lesion-level FROC, CPM and image-level AUROC of one prediction set, from its match table.

Radiology detection papers report how many lesions a model finds at a tolerable number of false marks
per image (FROC) and whether it flags the right images at all (image-level AUROC). Both are computed
here from the run's one ``MatchTable`` (harness.eval.matches): no second pycocotools pass.

The lesion-hit rule (``rule``):

- ``"iou"`` (default): the harness's own match, pycocotools' at IoU ≥ 0.4 - a detection hits a lesion
  when the metric counted it a true positive (same class, one-to-one, in score order).
- ``"centre"``: the centre-in-box rule some challenges use - a detection hits a lesion of its class
  whose box contains the detection's centre (edges included); one-to-one in score order, a detection
  taking, of the lesions it may still take, the one it overlaps most (IoU; then the earliest box).

Under both rules a second mark on a lesion already found counts as a false positive (as the metric
counts it), and detections the metric ignores (crowd regions) are left out.

FROC: at each distinct score threshold t, sensitivity = lesions hit by detections with score ≥ t /
all lesions, and FP per image = unmatched detections with score ≥ t / scored images (every scored
image counts, also those without lesions or detections). ``sensitivity_at(r)`` is the highest
sensitivity among the operating points whose FP per image is ≤ r (0 when none is: no detection
kept); a curve that never reaches r FP per image gives its last (all detections kept) sensitivity
there. CPM (the LUNA16 competition performance metric) = mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4
and 8 FP per image. All classes: every class's detections and lesions pooled (a detection of the
wrong class is a false positive); per class: that class's detections and lesions only.

Image-level AUROC: abnormal = the image holds at least one (non-ignored) ground-truth box; the image's
score = its highest detection score over all classes (0 without detections); the area under the ROC
curve is the Mann-Whitney statistic, ties counted one half. Undefined (NaN) when the images are all
normal or all abnormal.

Every function takes ``weights`` (R x N image multiplicities, the bootstrap's draws from
``harness.eval.bootstrap.resample_counts``; default one row of ones = the full set) and returns one
value per row, so intervals come from the same draws as the results table.

    hits = LesionHits.from_table(table)                 # rule="iou"
    cpm(hits), auroc(hits), froc_curve(hits)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.eval.matches import MatchTable

#: FP-per-image rates of the CPM (LUNA16; NODE21 reports sensitivity at such fixed rates).
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
HIT_RULES = ("iou", "centre")
#: The lesion-hit rule used unless another is asked for.
DEFAULT_HIT_RULE = "iou"
#: The largest resamples x detections block computed at once.
BLOCK_CELLS = 4_000_000


@dataclass
class LesionHits:
    """Every counted detection (score order) with whether it hit a lesion, and the lesions per image."""

    image_ids: list[int]
    image: np.ndarray      # (D,) index into image_ids
    category: np.ndarray   # (D,) category id
    score: np.ndarray      # (D,) score, descending
    hit: np.ndarray        # (D,) bool
    lesions: dict[int, np.ndarray]  # category id -> (N,) non-ignored ground-truth boxes per image
    rule: str = DEFAULT_HIT_RULE

    @classmethod
    def from_table(cls, table: MatchTable, rule: str = DEFAULT_HIT_RULE) -> "LesionHits":
        if rule not in HIT_RULES:
            raise ValueError(f"lesion-hit rule must be one of {HIT_RULES}, got {rule!r}")
        index = {image_id: i for i, image_id in enumerate(table.image_ids)}
        det = table.det[~table.det["ignore"]]
        gt = table.gt[~table.gt["ignore"]]
        hit = det["tp"].to_numpy(bool) if rule == "iou" else _centre_hits(det, gt)
        score = det["score"].to_numpy(float)
        order = np.argsort(-score, kind="mergesort")  # table order within a class; pooled by score
        lesions = {}
        for cat in table.category_ids:
            counts = np.zeros(len(table.image_ids), np.int64)
            np.add.at(counts, gt.loc[gt["category_id"] == cat, "image_id"].map(index).to_numpy(np.int64), 1)
            lesions[cat] = counts
        return cls(list(table.image_ids), det["image_id"].map(index).to_numpy(np.int64)[order],
                   det["category_id"].to_numpy(np.int64)[order], score[order], hit[order], lesions, rule)

    def select(self, category: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image, score, hit, lesions per image) of one class, or of all classes pooled (None)."""
        if category is None:
            lesions = sum(self.lesions.values()) if self.lesions else np.zeros(len(self.image_ids), np.int64)
            return self.image, self.score, self.hit, np.asarray(lesions)
        keep = self.category == category
        return self.image[keep], self.score[keep], self.hit[keep], self.lesions[category]

    def abnormal(self) -> np.ndarray:
        """(N,) bool: the image holds a ground-truth box."""
        lesions = sum(self.lesions.values()) if self.lesions else np.zeros(len(self.image_ids), np.int64)
        return np.asarray(lesions) > 0

    def image_scores(self) -> np.ndarray:
        """(N,) the highest detection score of each image (0 without detections)."""
        out = np.zeros(len(self.image_ids))
        np.maximum.at(out, self.image, self.score)
        return out


def _centre_hits(det: pd.DataFrame, gt: pd.DataFrame) -> np.ndarray:
    """Centre-in-box hits, one-to-one in the table's order (score descending within a class)."""
    hit = np.zeros(len(det), bool)
    boxes = {key: rows for key, rows in gt.groupby(["image_id", "category_id"], sort=False)}
    taken: dict[tuple, set] = {}
    for pos, (image_id, cat, x, y, w, h) in enumerate(zip(det["image_id"], det["category_id"], det["x"], det["y"],
                                                             det["w"], det["h"])):
        rows = boxes.get((image_id, cat))
        if rows is None:
            continue
        cx, cy = x + w / 2, y + h / 2
        used = taken.setdefault((image_id, cat), set())
        best, best_iou = None, -1.0
        for row, gx, gy, gw, gh in zip(rows.index, rows["x"], rows["y"], rows["w"], rows["h"]):
            if row in used or not (gx <= cx <= gx + gw and gy <= cy <= gy + gh):
                continue
            iou = _iou((x, y, w, h), (gx, gy, gw, gh))
            if iou > best_iou:
                best, best_iou = row, iou
        if best is not None:
            used.add(best)
            hit[pos] = True
    return hit


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _weights(hits: LesionHits, weights) -> np.ndarray:
    n = len(hits.image_ids)
    return np.ones((1, n)) if weights is None else np.atleast_2d(np.asarray(weights, np.float64))


def sensitivity_at(hits: LesionHits, rates=FP_RATES, category: int | None = None, weights=None) -> np.ndarray:
    """(R x len(rates)) sensitivity at each FP-per-image rate, per row of `weights`; NaN where the
    drawn images hold no lesion (of `category`; None = all classes pooled)."""
    weights = _weights(hits, weights)
    rates = np.asarray(rates, float)
    image, score, hit, lesions = hits.select(category)
    n_pos = weights @ lesions.astype(np.float64)
    n_img = weights.sum(axis=1)
    out = np.zeros((len(weights), len(rates)))
    if len(score):
        ends = np.flatnonzero(np.r_[score[1:] != score[:-1], True])  # last detection of each distinct score
        hit_f, miss_f = hit.astype(np.float64), (~hit).astype(np.float64)
        block = max(1, BLOCK_CELLS // len(score))
        for start in range(0, len(weights), block):
            rows = slice(start, min(len(weights), start + block))
            w = weights[rows][:, image]
            tp = np.cumsum(w * hit_f, axis=1)[:, ends]
            fppi = np.cumsum(w * miss_f, axis=1)[:, ends] / np.maximum(n_img[rows], 1e-12)[:, None]
            for k, rate in enumerate(rates):
                last = (fppi <= rate + 1e-12).sum(axis=1) - 1   # fppi rises along the curve
                out[rows, k] = np.where(last >= 0, np.take_along_axis(tp, np.maximum(last, 0)[:, None], 1)[:, 0], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / n_pos[:, None]
    out[n_pos <= 0] = np.nan
    return out


def cpm(hits: LesionHits, category: int | None = None, weights=None) -> np.ndarray:
    """(R,) the mean sensitivity at FP_RATES per row of `weights`."""
    return sensitivity_at(hits, FP_RATES, category, weights).mean(axis=1)


def froc_curve(hits: LesionHits, category: int | None = None) -> pd.DataFrame:
    """The full-set FROC curve: one row per distinct score threshold (descending) with threshold,
    fp_per_image, sensitivity, tp, fp; empty without detections or lesions."""
    image, score, hit, lesions = hits.select(category)
    n_pos, n_img = int(lesions.sum()), len(hits.image_ids)
    columns = ["threshold", "fp_per_image", "sensitivity", "tp", "fp"]
    if not len(score) or n_pos == 0 or n_img == 0:
        return pd.DataFrame(columns=columns)
    ends = np.flatnonzero(np.r_[score[1:] != score[:-1], True])
    tp, fp = np.cumsum(hit)[ends], np.cumsum(~hit)[ends]
    return pd.DataFrame({"threshold": score[ends], "fp_per_image": fp / n_img, "sensitivity": tp / n_pos,
                         "tp": tp, "fp": fp}, columns=columns)


def auroc(hits: LesionHits, weights=None) -> np.ndarray:
    """(R,) image-level AUROC (abnormal vs normal from the image's highest score) per row of `weights`;
    NaN where the drawn images are all normal or all abnormal."""
    weights = _weights(hits, weights)
    scores, positive = hits.image_scores(), hits.abnormal()
    order = np.argsort(scores, kind="mergesort")
    scores, positive, weights = scores[order], positive[order], weights[:, order]
    n = len(scores)
    out = np.full(len(weights), np.nan)
    if n == 0:
        return out
    starts = np.searchsorted(scores, scores, side="left")      # first image of each one's tie group
    ends = np.searchsorted(scores, scores, side="right")       # one past its last
    neg = weights * (~positive)
    cum = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(neg, axis=1)], axis=1)
    below = cum[:, starts]                                      # negatives scored strictly lower
    tied = cum[:, ends] - cum[:, starts]                        # negatives with the same score
    pos_w = weights * positive
    wins = (pos_w * (below + 0.5 * tied)).sum(axis=1)
    n_pos, n_neg = pos_w.sum(axis=1), neg.sum(axis=1)
    ok = (n_pos > 0) & (n_neg > 0)
    out[ok] = wins[ok] / (n_pos[ok] * n_neg[ok])
    return out


def pool(parts: list[LesionHits]) -> LesionHits:
    """Several folds' hits as one set (their val images are disjoint): the out-of-fold curve."""
    if not parts:
        raise ValueError("no hits to pool")
    offsets = np.cumsum([0, *[len(p.image_ids) for p in parts[:-1]]])
    image = np.concatenate([p.image + off for p, off in zip(parts, offsets)])
    score = np.concatenate([p.score for p in parts])
    order = np.argsort(-score, kind="mergesort")
    cats = sorted({c for p in parts for c in p.lesions})
    lesions = {c: np.concatenate([p.lesions.get(c, np.zeros(len(p.image_ids), np.int64)) for p in parts]) for c in cats}
    return LesionHits([i for p in parts for i in p.image_ids], image[order],
                      np.concatenate([p.category for p in parts])[order], score[order],
                      np.concatenate([p.hit for p in parts])[order], lesions, parts[0].rule)


def operating_points(hits: LesionHits) -> pd.DataFrame:
    """Precision, recall (= lesion sensitivity), F1 and FP per image at every distinct score threshold
    (all classes pooled, descending threshold): a detection counts when its score is >= threshold."""
    curve = froc_curve(hits)
    if curve.empty:
        return pd.DataFrame(columns=[*curve.columns, "precision", "recall", "f1"])
    precision = curve["tp"] / (curve["tp"] + curve["fp"])
    recall = curve["sensitivity"]
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall).where(lambda s: s > 0, 1), 0.0)
    return curve.assign(precision=precision, recall=recall, f1=f1)


def threshold_for_budget(points: pd.DataFrame, fp_per_image: float) -> pd.Series | None:
    """The operating point with the most lesions found while FP per image stays <= the budget (the
    lowest such threshold); None when even the highest threshold exceeds it."""
    within = points[points["fp_per_image"] <= fp_per_image + 1e-12]
    return None if within.empty else within.iloc[-1]
