"""Bootstrap confidence intervals of mAP@0.4 over images (or patients), and paired bootstrap comparisons.

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

The draw: the ordinary bootstrap, no conditioning. Images are drawn with replacement, each equally
likely (n draws of n images); when the ground truth says its images are grouped (a COCO ``info.group_by``,
written by harness.split for patient-grouped folds, e.g. NIH ChestX-ray14's patients), whole groups are
drawn instead (a cluster bootstrap: G draws of the G groups, a patient's images always together),
because follow-up images of one patient are not independent. A class with no image in a resample
drops out of that resample's mean, exactly as a class without ground truth drops out of the full
set's mAP (pycocotools' rule). An earlier version redrew such resamples until every class was
present; that conditions the draw (an only carrier of a class came in 1.55 times on average instead
of once) and made the intervals narrowest where the data are thinnest (experiments/bootstrap_coverage.py).

The interval: BCa (bias-corrected and accelerated percentile interval; Efron 1987) from the
resamples, with the acceleration from a jackknife over the same units (images, or groups; at most
``JACKKNIFE_UNITS`` blocks of them), after spreading the resamples around the point to the
jackknife's standard error where that is larger (``bca_ci``). On small sets the bootstrap
distribution of mAP is too narrow and too close to the (upward-biased) point: the plain percentile
interval, and BCa alone, cover about 0.91 at nominal 0.95 on 51 images; the coverage of each is
measured in experiments/bootstrap_coverage.py and tabled in docs/benchmarks.md ("Bootstrap
coverage"). It reaches the nominal level only when every class has several images, so classes with
fewer than ``FEW_IMAGES`` images in the scored set are named beside the interval (``Bootstrap.thin``).

Seeding: the resample indices come from ``seed``, the sorted image ids and their groups, so two
runs scored on the same images always get the same resamples: their bootstrap vectors subtract into
a paired bootstrap of the difference, with no second pass. Pairing also requires the same
``split_hash`` (the same fold of the same fused labels): ids alone do not say the ground truth is the
same.

What the intervals cover: the choice of validation images only - not the training seed, the
split, or any other randomness of training (harness.report.seeds adds the spread over seeds).

    boot = ImageMatches.from_coco(gt, preds).bootstrap(resamples=1000, seed=0)
    boot.point, boot.ci(0.95)                      # full-set mAP@0.4, (low, high)
    paired(boot_a, boot_b).summary(0.95)           # {"delta", "low", "high", "p_a_gt_b", ...}
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from harness.classes import class_names
from harness.data.folds import GROUPINGS
from harness.eval.coco_map import CocoMapEval
from harness.predictions import Predictions

#: pycocotools' recall sampling points (Params.recThrs).
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: The largest resamples x detections block computed at once (memory: ~8 bytes x 6 arrays x this).
BLOCK_CELLS = 4_000_000
#: A class with ground truth on fewer scored images than this is named beside the interval: below it,
#: the interval covers less than its nominal level (docs/benchmarks.md, "Bootstrap coverage").
FEW_IMAGES = 5
#: The jackknife behind BCa's acceleration leaves out one unit (image or group) at a time, or one of
#: at most this many consecutive blocks of units on larger sets.
JACKKNIFE_UNITS = 400
_NORMAL = NormalDist()


@dataclass
class ClassMatches:
    """One class over all scored images, detections in pycocotools' accumulate order."""

    image: np.ndarray   # (D,) index into ImageMatches.image_ids of each detection
    tp: np.ndarray      # (D,) bool: matched at IoU 0.4 (not ignored)
    fp: np.ndarray      # (D,) bool: unmatched (not ignored)
    n_gt: np.ndarray    # (N,) non-ignored ground-truth boxes per image


def image_groups(gt_dataset: dict, image_ids) -> tuple[str, ...] | None:
    """Each image's group (sorted ids' order) when the ground truth says its images are grouped
    (``info.group_by``, e.g. "patient": harness.data.folds.GROUPINGS on the image keys); else None."""
    group_by = (gt_dataset.get("info") or {}).get("group_by")
    if not group_by:
        return None
    if group_by not in GROUPINGS:
        raise ValueError(f"ground truth info.group_by={group_by!r} is not one of {sorted(GROUPINGS)}")
    keys = {img["id"]: str(img.get("image_key", img.get("file_name", img["id"]))) for img in gt_dataset["images"]}
    return tuple(GROUPINGS[group_by](keys[i]) for i in sorted(image_ids))


@dataclass
class ImageMatches:
    """Per image and class match data of one prediction set, computed once."""

    image_ids: list[int]
    classes: dict[int, ClassMatches]   # category id -> matches (every category of the ground truth)
    groups: tuple[str, ...] | None = None   # each image's group (patient), resampled whole; None: images
    names: dict[int, str] | None = None     # category id -> class name (for the thin-class note)

    @classmethod
    def from_coco(cls, gt_coco, preds: Predictions, max_dets: int | None = None) -> "ImageMatches":
        """Run pycocotools' matching once (IoU 0.4, area "all", the same maxDets as coco_map)."""
        ev = CocoMapEval(gt_coco, preds, max_dets)
        image_ids = sorted(set(preds.image_ids))
        index = {image_id: i for i, image_id in enumerate(image_ids)}
        n = len(image_ids)
        dataset = ev.coco_gt.dataset
        groups = image_groups(ev.gt, image_ids)
        names = dict(enumerate(class_names(dataset)))
        classes: dict[int, ClassMatches] = {}
        if ev.empty:
            for cat in ev.cat_ids:
                n_gt = np.zeros(n, np.int64)
                for ann in dataset["annotations"]:
                    if ann["category_id"] == cat and ann["image_id"] in index and not ann.get("iscrowd", 0):
                        n_gt[index[ann["image_id"]]] += 1
                classes[cat] = ClassMatches(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool), n_gt)
            return cls(image_ids, classes, groups, names)
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
        return cls(image_ids, classes, groups, names)

    def per_class_ap(self, weights: np.ndarray) -> dict[int, np.ndarray]:
        """AP@0.4 per class for each row of `weights` (R x N image multiplicities); NaN = no ground
        truth among the drawn images (pycocotools' -1, left out of the mean)."""
        weights = np.atleast_2d(np.asarray(weights, np.float64))
        return {cat: _class_ap(m, weights) for cat, m in self.classes.items()}

    def map(self, weights: np.ndarray) -> np.ndarray:
        """mAP@0.4 (mean over the classes with ground truth among the drawn images) per row of `weights`."""
        weights = np.atleast_2d(np.asarray(weights, np.float64))
        aps = np.stack(list(self.per_class_ap(weights).values()), axis=1) if self.classes else \
            np.full((len(weights), 1), np.nan)
        return mean_present(aps)

    def class_images(self) -> dict[int, np.ndarray]:
        """{category id: indices (into image_ids) of the images with its ground truth} for every class
        present in the full set."""
        return {cat: np.flatnonzero(m.n_gt > 0) for cat, m in self.classes.items() if m.n_gt.sum() > 0}

    def thin_classes(self, few: int = FEW_IMAGES) -> tuple[tuple[str, int], ...]:
        """(class name, images) of every class with ground truth on fewer than `few` scored images."""
        names = self.names or {}
        return tuple((names.get(cat, str(cat)), len(images)) for cat, images in self.class_images().items()
                     if len(images) < few)

    def counts(self, resamples: int, seed: int = 0) -> np.ndarray:
        """This set's bootstrap draws (resample_counts with its groups): the draws every interval of
        these images uses, so per-class intervals and the mAP interval come from the same resamples."""
        return resample_counts(self.image_ids, resamples, seed, groups=self.groups)

    def jackknife_weights(self) -> np.ndarray:
        """(U x N) weights leaving out one unit (image or group, or a block of them) at a time."""
        return jackknife_weights(len(self.image_ids), self.groups)

    def bootstrap(self, resamples: int = 1000, seed: int = 0, split_hash: str | None = None) -> "Bootstrap":
        """Point estimate (full set), `resamples` mAPs over images (or groups) drawn with replacement,
        and the jackknife influence of each unit (for BCa); see the module doc."""
        n = len(self.image_ids)
        point = float(self.map(np.ones((1, n)))[0])
        jack = self.map(self.jackknife_weights()) if n else np.zeros(0)
        return Bootstrap(point, self.map(self.counts(resamples, seed)), tuple(self.image_ids), int(seed),
                         influence(jack), self.thin_classes(), split_hash, self.groups is not None)


def mean_present(aps: np.ndarray) -> np.ndarray:
    """Per row of (R x C) class APs, the mean over the classes that are not NaN (0 when none is):
    np.mean of the present classes, as CocoMapEval.summarize (bit-exact)."""
    out = np.zeros(len(aps))
    for r, row in enumerate(aps):
        present = row[~np.isnan(row)]
        out[r] = float(np.mean(present)) if present.size else 0.0
    return out


def influence(jack: np.ndarray) -> np.ndarray:
    """Jackknife influence values (mean of the leave-one-out statistics minus each one)."""
    jack = np.asarray(jack, float)
    return jack.mean() - jack if jack.size else jack


def _units(n: int, groups) -> tuple[np.ndarray, int]:
    """Each image's unit index (its group's, in first-seen order over the sorted ids) and the count."""
    if groups is None:
        return np.arange(n), n
    if len(groups) != n:
        raise ValueError(f"groups: {len(groups)} labels for {n} images")
    index: dict = {}
    unit = np.array([index.setdefault(g, len(index)) for g in groups], np.int64)
    return unit, len(index)


def jackknife_weights(n: int, groups=None, max_units: int = JACKKNIFE_UNITS) -> np.ndarray:
    """(U x N) image weights, row u leaving out unit u (an image, or a group; consecutive blocks of
    them when there are more than `max_units`)."""
    unit, n_units = _units(n, groups)
    blocks = min(n_units, max_units)
    block = (unit * blocks) // max(n_units, 1)
    weights = np.ones((blocks, n))
    weights[block, np.arange(n)] = 0.0
    return weights


def resample_counts(image_ids, resamples: int, seed: int, *, groups=None) -> np.ndarray:
    """(resamples x N) multiplicities of each image (sorted ids) in `resamples` bootstrap draws: n
    images drawn with replacement, or, with `groups` (each sorted id's group label), G of the G groups
    drawn with replacement and every image of a drawn group counted with it. The same ids, groups and
    seed give the same draws (that is what pairs two runs)."""
    ids = sorted(image_ids)
    n = len(ids)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    key = repr(ids) if groups is None else repr((ids, list(groups)))
    digest = hashlib.sha256(key.encode()).digest()
    rng = np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])
    if n == 0:
        return np.zeros((resamples, 0))
    unit, n_units = _units(n, groups)
    draws = rng.integers(0, n_units, size=(resamples, n_units))
    unit_counts = np.zeros((resamples, n_units), np.float64)
    np.add.at(unit_counts, (np.repeat(np.arange(resamples), n_units), draws.ravel()), 1.0)
    return unit_counts[:, unit]


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
    """A run's full-set mAP@0.4, its bootstrap distribution over images (or groups), and the
    jackknife influence of each unit (BCa's acceleration)."""

    point: float
    samples: np.ndarray
    image_ids: tuple
    seed: int
    influence: np.ndarray | None = None     # None: percentile interval
    thin: tuple = ()                        # (class name, images) of classes on < FEW_IMAGES images
    split_hash: str | None = None           # the split scored (pairing requires the same)
    clustered: bool = False                 # resampled by group (patient)

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """BCa interval (percentile where no influence values are known or the draws are degenerate)."""
        return bca_ci(self.samples, self.point, self.influence, level)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"ci level must be in (0, 1), got {level}")
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(samples, float), [alpha, 1 - alpha])
    return float(low), float(high)


def jackknife_se(influence_values: np.ndarray) -> float:
    """The jackknife standard error from influence values: sqrt((k - 1) / k * sum(U²))."""
    u = np.asarray(influence_values, float)
    k = u.size
    return float(np.sqrt((k - 1) / k * np.sum(u ** 2))) if k > 1 else 0.0


def bca_ci(samples: np.ndarray, point: float, influence_values: np.ndarray | None,
           level: float = 0.95, scale_to_jackknife: bool = True) -> tuple[float, float]:
    """Efron's BCa interval: the percentile interval at quantiles moved by the bias correction z0 (the
    share of resamples below the point) and the acceleration a (skewness of the jackknife influence
    values). `scale_to_jackknife`: where the jackknife standard error is larger than the resamples'
    standard deviation, the resamples are first spread out around the point to match it (the
    bootstrap under-states the spread of mAP on small sets; the jackknife's is conservative - the
    Efron-Stein inequality - and this is what reaches the coverage in docs/benchmarks.md). Falls back
    to the percentile interval when the resamples do not straddle the point."""
    if not 0 < level < 1:
        raise ValueError(f"ci level must be in (0, 1), got {level}")
    samples = np.asarray(samples, float)
    if influence_values is None or samples.size == 0:
        return percentile_ci(samples, level)
    spread = float(np.std(samples, ddof=1)) if samples.size > 1 else 0.0
    if scale_to_jackknife and spread > 0:
        factor = jackknife_se(influence_values) / spread
        if factor > 1:
            samples = point + (samples - point) * factor
    below = (np.count_nonzero(samples < point) + 0.5 * np.count_nonzero(samples == point)) / samples.size
    if not 0 < below < 1:
        return percentile_ci(samples, level)
    z0 = _NORMAL.inv_cdf(below)
    u = np.asarray(influence_values, float)
    denom = float(np.sum(u ** 2))
    accel = float(np.sum(u ** 3)) / (6.0 * denom ** 1.5) if denom > 0 else 0.0
    alpha = (1 - level) / 2
    quantiles = []
    for z in (_NORMAL.inv_cdf(alpha), _NORMAL.inv_cdf(1 - alpha)):
        shifted = z0 + (z0 + z) / (1 - accel * (z0 + z))
        quantiles.append(_NORMAL.cdf(shifted))
    low, high = np.quantile(samples, quantiles)
    return float(low), float(high)


@dataclass
class Paired:
    """A - B on the same images with the same resamples."""

    delta: float
    samples: np.ndarray
    influence: np.ndarray | None = None

    def summary(self, level: float = 0.95) -> dict:
        """Δ, its BCa CI, and `p_a_gt_b`: the share of resamples in which A scored higher than B
        (a description of the resamples, not the probability that A is the better model)."""
        low, high = bca_ci(self.samples, self.delta, self.influence, level)
        return {"delta": self.delta, "low": low, "high": high,
                "p_a_gt_b": float(np.mean(self.samples > 0)), "distinguishable": bool(low > 0 or high < 0)}


def check_pairable(a: Bootstrap, b: Bootstrap) -> None:
    """Raise ValueError (saying why) unless `a` and `b` were scored on the same split and images with
    the same resamples."""
    if a.split_hash != b.split_hash:
        raise ValueError(f"paired bootstrap needs both runs scored on the same split: split_hash {a.split_hash} vs "
                         f"{b.split_hash} (other folds or other fused labels); score both on one prepared split")
    if a.image_ids != b.image_ids or a.seed != b.seed or len(a.samples) != len(b.samples) \
            or a.clustered != b.clustered:
        raise ValueError("paired bootstrap needs both runs on the same images with the same resamples")


def _combined_influence(parts: list[np.ndarray | None], scale: float) -> np.ndarray | None:
    if any(p is None for p in parts):
        return None
    return np.concatenate([np.asarray(p, float) * scale for p in parts]) if parts else None


def paired(a: Bootstrap | list[Bootstrap], b: Bootstrap | list[Bootstrap]) -> Paired:
    """Paired bootstrap of mAP(A) - mAP(B). Lists pair fold by fold (same split and images per
    position) and give the difference of the means over folds, each fold resampled independently."""
    a_list = a if isinstance(a, list) else [a]
    b_list = b if isinstance(b, list) else [b]
    if len(a_list) != len(b_list) or not a_list:
        raise ValueError("paired bootstrap needs the same, non-zero number of runs on each side")
    for x, y in zip(a_list, b_list):
        check_pairable(x, y)
    delta = float(np.mean([x.point - y.point for x, y in zip(a_list, b_list)]))
    samples = np.mean([x.samples - y.samples for x, y in zip(a_list, b_list)], axis=0)
    parts = [None if x.influence is None or y.influence is None else x.influence - y.influence
             for x, y in zip(a_list, b_list)]
    return Paired(delta, samples, _combined_influence(parts, 1 / len(a_list)))


def fold_mean(boots: list[Bootstrap]) -> Bootstrap:
    """The mean over folds (each fold resampled independently) as one bootstrap distribution; each
    fold's units count 1/K in the mean's influence values."""
    if not boots:
        raise ValueError("no runs")
    thin = tuple(t for b in boots for t in b.thin)
    hashes = {b.split_hash for b in boots}
    return Bootstrap(float(np.mean([b.point for b in boots])), np.mean([b.samples for b in boots], axis=0),
                     tuple(i for b in boots for i in b.image_ids), boots[0].seed,
                     _combined_influence([b.influence for b in boots], 1 / len(boots)), thin,
                     hashes.pop() if len(hashes) == 1 else None, any(b.clustered for b in boots))
