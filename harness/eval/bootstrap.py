"""Bootstrap confidence intervals of mAP@0.4 over images, and paired bootstrap comparisons.

Why per-image match data: pycocotools matches detections to ground truth image by image and class,
so a detection's true/false-positive status does not change when the image set is resampled. One
COCOeval.evaluate() pass (IoU 0.4 only) therefore gives everything a resample needs: per class, every
detection's score, image and TP/FP flag, and each image's ground-truth count. A resample is then a
vector of image multiplicities ``w`` (how often each image was drawn); each detection counts ``w`` times
in the cumulative TP/FP sums, and AP is pycocotools' 101-point interpolation of those sums, computed
for a block of resamples at once. On the full set (``w = 1``) this is exactly pycocotools' mAP@0.4
(same sort, same envelope, same recall sampling; a test requires equality).

Ties: pycocotools orders equal scores by image (its ``imgIds`` order) and, within an image, by input
order; the precomputed order keeps that. A resampled image's copies stay next to each other.

Every class present in the full set is present in every resample (redrawn, not stratified): mAP is
the mean over the classes with ground truth, and a resample without a rare class's images would
average over fewer classes, so the intervals would mix the sampling of images with a change of
what is averaged (a long tail from the class mix, not from the models). A resample whose draw
leaves out every image of some class present in the full set is drawn again, whole, from the same
generator, until each such class has at least one image in it: the ordinary bootstrap conditioned on
"every class present", so each resample estimates the same quantity as the full-set mAP. Why not
stratified by class: images carry several classes, so strata would overlap, and drawing a fixed
number of images per class changes the images' weights (an image with three classes would be drawn
three times as often); redrawing keeps every image equally likely and the resample size n. The
share of resamples that needed a redraw is reported (``Bootstrap.redrawn_share``); when it is large,
the interval reflects few images of the rare classes and is wide for that reason.

Seeding: the resample indices come from ``seed``, the sorted image ids and (for the redraws) which
images hold which classes' ground truth, so two runs scored on the same images with the same ground
truth always get the same resamples: their bootstrap vectors subtract into a paired bootstrap of the
difference, with no second pass.

What the intervals cover: the choice of validation images only - not the training seed, the
split, or any other randomness of training (harness.report.seeds reports the spread over seeds).

    boot = ImageMatches.from_coco(gt, preds).bootstrap(resamples=1000, seed=0)
    boot.point, boot.ci(0.95)                      # full-set mAP@0.4, (low, high)
    paired(boot_a, boot_b).summary(0.95)           # {"delta", "low", "high", "p_a_gt_b", ...}
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from harness.eval.coco_map import CocoMapEval
from harness.predictions import Predictions

#: pycocotools' recall sampling points (Params.recThrs).
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: The largest resamples x detections block computed at once (memory: ~8 bytes x 6 arrays x this).
BLOCK_CELLS = 4_000_000
#: Draws allowed per resample on average before giving up on "every class present" (a class whose
#: ground truth sits on very few of many images): the error says which classes.
MAX_DRAWS_PER_RESAMPLE = 1000


@dataclass
class ClassMatches:
    """One class over all scored images, detections in pycocotools' accumulate order."""

    image: np.ndarray   # (D,) index into ImageMatches.image_ids of each detection
    tp: np.ndarray      # (D,) bool: matched at IoU 0.4 (not ignored)
    fp: np.ndarray      # (D,) bool: unmatched (not ignored)
    n_gt: np.ndarray    # (N,) non-ignored ground-truth boxes per image


@dataclass
class ImageMatches:
    """Per image and class match data of one prediction set, computed once."""

    image_ids: list[int]
    classes: dict[int, ClassMatches]   # category id -> matches (every category of the ground truth)

    @classmethod
    def from_coco(cls, gt_coco, preds: Predictions, max_dets: int | None = None) -> "ImageMatches":
        """Run pycocotools' matching once (IoU 0.4, area "all", the same maxDets as coco_map)."""
        ev = CocoMapEval(gt_coco, preds, max_dets)
        image_ids = sorted(set(preds.image_ids))
        index = {image_id: i for i, image_id in enumerate(image_ids)}
        n = len(image_ids)
        classes: dict[int, ClassMatches] = {}
        if ev.empty:
            for cat in ev.cat_ids:
                n_gt = np.zeros(n, np.int64)
                for ann in ev.coco_gt.dataset["annotations"]:
                    if ann["category_id"] == cat and ann["image_id"] in index and not ann.get("iscrowd", 0):
                        n_gt[index[ann["image_id"]]] += 1
                classes[cat] = ClassMatches(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool), n_gt)
            return cls(image_ids, classes)
        params = ev.cocoeval.params
        params.iouThrs = np.array([0.4])
        ev.evaluate()
        evals = ev.cocoeval.evalImgs
        n_area = len(params.areaRng)
        assert params.imgIds == image_ids
        for k, cat in enumerate(params.catIds):
            scores, images, tps, fps = [], [], [], []
            n_gt = np.zeros(n, np.int64)
            base = k * n_area * n  # evalImgs order: category, area range ("all" first), image
            for i in range(n):
                entry = evals[base + i]
                if entry is None:
                    continue
                dt_scores = np.asarray(entry["dtScores"][:ev.max_dets], float)
                matched = np.asarray(entry["dtMatches"][0, :ev.max_dets]) > 0
                ignored = np.asarray(entry["dtIgnore"][0, :ev.max_dets], bool)
                n_gt[i] = int(np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0))
                scores.append(dt_scores)
                images.append(np.full(len(dt_scores), i, np.int64))
                tps.append(matched & ~ignored)
                fps.append(~matched & ~ignored)
            if scores:
                all_scores = np.concatenate(scores)
                order = np.argsort(-all_scores, kind="mergesort")  # as COCOeval.accumulate
                matches = ClassMatches(np.concatenate(images)[order], np.concatenate(tps)[order],
                                       np.concatenate(fps)[order], n_gt)
            else:
                matches = ClassMatches(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool), n_gt)
            classes[cat] = matches
        return cls(image_ids, classes)

    def per_class_ap(self, weights: np.ndarray) -> dict[int, np.ndarray]:
        """AP@0.4 per class for each row of `weights` (R x N image multiplicities); NaN = no ground
        truth among the drawn images (pycocotools' -1, left out of the mean)."""
        weights = np.atleast_2d(np.asarray(weights, np.float64))
        return {cat: _class_ap(m, weights) for cat, m in self.classes.items()}

    def map(self, weights: np.ndarray) -> np.ndarray:
        """mAP@0.4 (mean over classes with ground truth) for each row of `weights`."""
        weights = np.atleast_2d(np.asarray(weights, np.float64))
        aps = np.stack(list(self.per_class_ap(weights).values()), axis=1) if self.classes else \
            np.full((len(weights), 1), np.nan)
        out = np.zeros(len(aps))
        for r, row in enumerate(aps):  # np.mean of the present classes, as CocoMapEval.summarize (bit-exact)
            present = row[~np.isnan(row)]
            out[r] = float(np.mean(present)) if present.size else 0.0
        return out

    def class_images(self) -> dict[int, np.ndarray]:
        """{category id: indices (into image_ids) of the images with its ground truth} for every class
        present in the full set."""
        return {cat: np.flatnonzero(m.n_gt > 0) for cat, m in self.classes.items() if m.n_gt.sum() > 0}

    def bootstrap(self, resamples: int = 1000, seed: int = 0) -> "Bootstrap":
        """Point estimate (full set) and `resamples` mAPs over images drawn with replacement, each
        resample holding every class of the full set (redrawn otherwise; see the module doc)."""
        n = len(self.image_ids)
        point = float(self.map(np.ones((1, n)))[0])
        counts, redrawn = resample_counts(self.image_ids, resamples, seed, self.class_images(), with_redrawn=True)
        return Bootstrap(point, self.map(counts), tuple(self.image_ids), int(seed), redrawn / resamples)


def _draw(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    draws = rng.integers(0, n, size=(rows, n))
    counts = np.zeros((rows, n), np.float64)
    np.add.at(counts, (np.repeat(np.arange(rows), n), draws.ravel()), 1.0)
    return counts


def _missing_class(counts: np.ndarray, required: list[np.ndarray]) -> np.ndarray:
    """Rows of `counts` in which some required class has no drawn image."""
    bad = np.zeros(len(counts), bool)
    for images in required:
        bad |= counts[:, images].sum(axis=1) == 0
    return bad


def resample_counts(image_ids, resamples: int, seed: int, class_images: dict[int, np.ndarray] | None = None,
                    with_redrawn: bool = False):
    """(resamples x N) multiplicities of each image (sorted ids) in `resamples` bootstrap draws;
    the same ids, seed and `class_images` give the same draws (that is what pairs two runs).
    `class_images` {class: indices into the sorted ids of its images}: a draw that leaves out every
    image of one of them is drawn again (whole) until none is left out. `with_redrawn`: also return
    how many resamples needed a redraw."""
    ids = sorted(image_ids)
    n = len(ids)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    digest = hashlib.sha256(repr(ids).encode()).digest()
    rng = np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])
    if n == 0:
        counts = np.zeros((resamples, 0))
        return (counts, 0) if with_redrawn else counts
    counts = _draw(rng, resamples, n)  # the ordinary bootstrap's draws, as before
    required = [np.asarray(v) for _, v in sorted((class_images or {}).items()) if len(v)]
    bad = _missing_class(counts, required) if required else np.zeros(resamples, bool)
    redrawn = int(bad.sum())
    draws = 0
    while bad.any():
        rows = np.flatnonzero(bad)
        draws += len(rows)
        if draws > MAX_DRAWS_PER_RESAMPLE * resamples:
            rare = sorted(cat for cat, v in (class_images or {}).items() if 0 < len(v) <= 2)
            raise ValueError(f"bootstrap: cannot draw {resamples} resamples of {n} images that each hold every "
                             f"class (classes on very few images: {rare}); score more images")
        counts[rows] = _draw(rng, len(rows), n)
        bad[rows] = _missing_class(counts[rows], required)
    return (counts, redrawn) if with_redrawn else counts


def ap101(tp: np.ndarray, fp: np.ndarray, n_gt: int) -> float:
    """pycocotools' 101-point AP of one class from its detections' TP / FP flags in accumulate order
    (score descending, ties as pycocotools orders them) and its number of ground-truth boxes."""
    tp, fp = np.asarray(tp, bool), np.asarray(fp, bool)
    matches = ClassMatches(np.zeros(len(tp), np.int64), tp, fp, np.array([int(n_gt)], np.int64))
    return float(_class_ap(matches, np.ones((1, 1)))[0])


def _class_ap(m: ClassMatches, weights: np.ndarray) -> np.ndarray:
    """pycocotools' 101-point AP of one class for every row of weights (R x N)."""
    n_rows = len(weights)
    npig = weights @ m.n_gt.astype(np.float64)
    out = np.full(n_rows, np.nan)
    has_gt = npig > 0
    out[has_gt] = 0.0
    n_det = len(m.image)
    if n_det == 0:
        return out
    tp_flags = m.tp.astype(np.float64)
    fp_flags = m.fp.astype(np.float64)
    block = max(1, BLOCK_CELLS // n_det)
    for start in range(0, n_rows, block):
        rows = np.arange(start, min(n_rows, start + block))
        rows = rows[has_gt[rows]]
        if rows.size == 0:
            continue
        w = weights[rows][:, m.image]                       # (r, D) multiplicity of each detection
        tp = np.cumsum(w * tp_flags, axis=1)
        fp = np.cumsum(w * fp_flags, axis=1)
        rc = tp / npig[rows, None]
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]   # precision envelope
        # a detection drawn 0 times repeats its predecessor's point (or (0, 0) first): it moves no
        # envelope value and no first-index-reaching-recall, so it can stay in the arrays
        for j, row in enumerate(rows):
            idx = np.searchsorted(rc[j], REC_THRS, side="left")
            q = np.where(idx < n_det, pr[j, np.minimum(idx, n_det - 1)], 0.0)
            out[row] = q.mean()
    return out


@dataclass
class Bootstrap:
    """A run's full-set mAP@0.4 and its bootstrap distribution over images."""

    point: float
    samples: np.ndarray
    image_ids: tuple
    seed: int
    redrawn_share: float = 0.0  # share of resamples drawn again because a class of the full set was missing

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval."""
        return percentile_ci(self.samples, level)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"ci level must be in (0, 1), got {level}")
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(samples, float), [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class Paired:
    """A - B on the same images with the same resamples."""

    delta: float
    samples: np.ndarray

    def summary(self, level: float = 0.95) -> dict:
        """Δ, its percentile CI, and `p_a_gt_b`: the share of resamples in which A scored higher than B
        (a description of the resamples, not the probability that A is the better model)."""
        low, high = percentile_ci(self.samples, level)
        return {"delta": self.delta, "low": low, "high": high,
                "p_a_gt_b": float(np.mean(self.samples > 0)), "distinguishable": bool(low > 0 or high < 0)}


def paired(a: Bootstrap | list[Bootstrap], b: Bootstrap | list[Bootstrap]) -> Paired:
    """Paired bootstrap of mAP(A) - mAP(B). Lists pair fold by fold (same images per position) and
    give the difference of the means over folds, each fold resampled independently."""
    a_list = a if isinstance(a, list) else [a]
    b_list = b if isinstance(b, list) else [b]
    if len(a_list) != len(b_list) or not a_list:
        raise ValueError("paired bootstrap needs the same, non-zero number of runs on each side")
    for x, y in zip(a_list, b_list):
        if x.image_ids != y.image_ids or x.seed != y.seed or len(x.samples) != len(y.samples):
            raise ValueError("paired bootstrap needs both runs on the same images with the same resamples")
    delta = float(np.mean([x.point - y.point for x, y in zip(a_list, b_list)]))
    samples = np.mean([x.samples - y.samples for x, y in zip(a_list, b_list)], axis=0)
    return Paired(delta, samples)


def fold_mean(boots: list[Bootstrap]) -> Bootstrap:
    """The mean over folds (each fold resampled independently) as one bootstrap distribution."""
    if not boots:
        raise ValueError("no runs")
    return Bootstrap(float(np.mean([b.point for b in boots])), np.mean([b.samples for b in boots], axis=0),
                     tuple(i for b in boots for i in b.image_ids), boots[0].seed,
                     float(np.mean([b.redrawn_share for b in boots])))
