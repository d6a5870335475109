"""The "No finding" stage: per image, P(abnormal) from a normal/abnormal classifier (or from the
detector itself) decides what happens to the image's detections and its class-14 entry.

With p = P(abnormal) and thresholds ``low <= high`` (``nofinding.low/high``):

* ``p < low``:          replace every detection by ``14 1 0 0 1 1`` (the image is called normal);
* ``low <= p < high``:  keep the detections and add ``14 (1-p) 0 0 1 1``;
* ``p >= high``:        keep the detections unchanged (no class-14 entry).

The named policies are that rule with fixed thresholds, so one function implements them all:

* ``keep_add_replace``: (low, high) as configured (the public "2-class filter" notebook's three
  bands; see the scorings below for how its added entry differs);
* ``replace``: (low, low): replace below low, otherwise keep unchanged (a hard filter, no add);
* ``append``: (0, inf): never replace, always add ``14 (1-p)`` (the 2nd-place Kaggle team's rule;
  with p from the detections it is the harness's old default, ``1 - max score``);
* ``none``: (0, 0): detections as they are, no class-14 entry (the detector without the stage).

The added entry's score (``nofinding.scoring``), two named variants:

* ``one_minus_p`` (default): ``14 (1-p) 0 0 1 1``, the "No finding" confidence falls as P(abnormal)
  rises - the sensible score, and this harness's own rule;
* ``notebook``: ``14 p 0 0 1 1``, the score the public VinBigData "2-class filter" notebook appends
  (its middle band adds the row with P(abnormal) itself, not 1 - P(abnormal)).

Default thresholds 0.08 / 0.95 are that notebook's (EfficientNet-B6 classifier, AUC 0.98). Its
reported gain on a YOLOv5 (Kaggle 0.154 -> 0.201) was measured with its own scoring, ``notebook``,
not with this harness's default ``one_minus_p``; the report's threshold sweep scores both on the
out-of-fold predictions. The original study's notebooks used 0.00 / 0.99
(``experiment=original_study``, which says which scoring it uses: with low 0.00 almost every image
falls in the middle band, so the scoring decides the class-14 AP).

The detector-only baseline takes p from the detections: p = the image's highest detection score
(0 for an image without detections), i.e. ``1 - p`` is the old "1 - max" normal score.

Scoring: ``score_policy`` applies a policy and scores the result with the 15-class Kaggle metric;
``ThresholdGrid`` scores many (low, high) pairs fast on the same predictions (used for the
threshold sweep on out-of-fold predictions) and equals ``score_policy`` at every pair.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import atomic
from harness.classes import CLASSES, NO_FINDING_ID, NO_FINDING_NAME, class_names, require_vinbigdata
from harness.eval.coco_map import check_images, load_gt
from harness.eval.voc_map import ap_from_flags, match_flags, voc_map
from harness.predictions import Predictions, xywh_to_xyxy

# The stage's defaults, here and nowhere else (conf/base.yaml leaves `nofinding.*` null = these).
DEFAULT_LOW = 0.08
DEFAULT_HIGH = 0.95
DEFAULT_GRID_LOW = (0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)  # the report's threshold sweep
DEFAULT_GRID_HIGH = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
POLICIES = ("none", "append", "replace", "keep_add_replace")
# the score of the class-14 entry the middle band adds (see the module doc)
SCORINGS = ("one_minus_p", "notebook")
DEFAULT_SCORING = "one_minus_p"
SCORES_FORMAT = "cxr-bench-abnormal/1"
REPLACE, ADD, KEEP = "replace", "add", "keep"


@dataclass
class NoFindingSettings:
    """The stage's settings: thresholds (low, high), the added entry's scoring, and the report's
    threshold grid (grid_low x grid_high)."""

    low: float = DEFAULT_LOW
    high: float = DEFAULT_HIGH
    grid_low: tuple = DEFAULT_GRID_LOW
    grid_high: tuple = DEFAULT_GRID_HIGH
    scoring: str = DEFAULT_SCORING

    def __post_init__(self) -> None:
        check_scoring(self.scoring)


def policy_thresholds(policy: str, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH) -> tuple[float, float]:
    """The (low, high) pair a named policy applies (see the module doc)."""
    if policy == "keep_add_replace":
        check_thresholds(low, high)
        return float(low), float(high)
    if policy == "replace":
        check_thresholds(low, low)
        return float(low), float(low)
    if policy == "append":
        return 0.0, math.inf
    if policy == "none":
        return 0.0, 0.0
    raise ValueError(f"no-finding policy must be one of {', '.join(POLICIES)}, not {policy!r}")


def check_thresholds(low: float, high: float) -> None:
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or math.isnan(low) or math.isnan(high):
        raise ValueError(f"nofinding.low/high must be numbers, not {low!r} / {high!r}")
    if not 0.0 <= low <= high:
        raise ValueError(f"nofinding thresholds need 0 <= low <= high, not low={low} high={high}")


def decide(p: float, low: float, high: float) -> str:
    """"replace", "add" or "keep" for one image with P(abnormal) p."""
    if p < low:
        return REPLACE
    if p < high:
        return ADD
    return KEEP


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f"nofinding.scoring must be one of {', '.join(SCORINGS)}, not {scoring!r}")
    return scoring


def added_score(p, scoring: str = DEFAULT_SCORING):
    """The added class-14 entry's score for P(abnormal) p (a float or an array): 1 - p, or the
    notebook's p."""
    return p if check_scoring(scoring) == "notebook" else 1.0 - p


def image_policy(dets: list[dict], p: float, low: float, high: float,
                 scoring: str = DEFAULT_SCORING) -> tuple[list[dict], float | None]:
    """One image: (the detections kept, the class-14 score or None for no class-14 entry)."""
    action = decide(p, low, high)
    if action == REPLACE:
        return [], 1.0
    if action == ADD:
        return list(dets), float(added_score(p, scoring))
    return list(dets), None


def detector_p_abnormal(preds: Predictions) -> dict[int, float]:
    """The detector-only P(abnormal): each image's highest detection score (0 without detections)."""
    top: dict[int, float] = defaultdict(float)
    for det in preds.detections:
        top[det["image_id"]] = max(top[det["image_id"]], float(det["score"]))
    return {i: top[i] for i in preds.image_ids}


def check_p(preds: Predictions, p_abnormal: Mapping[int, float], where: str = "P(abnormal)") -> None:
    missing = [i for i in preds.image_ids if i not in p_abnormal]
    if missing:
        raise ValueError(f"{where}: no P(abnormal) for image ids {missing[:10]} of {preds.source!r} "
                         f"({len(missing)} of {len(preds.image_ids)} images)")
    bad = [(i, p_abnormal[i]) for i in preds.image_ids if not 0.0 <= float(p_abnormal[i]) <= 1.0]
    if bad:
        raise ValueError(f"{where}: P(abnormal) outside [0, 1] for {bad[:5]}")


@dataclass
class PolicyOutput:
    """A policy's result: the lesion detections kept, and the class-14 entries {image_id: score}."""

    predictions: Predictions
    no_finding: dict[int, float] = field(default_factory=dict)
    actions: dict[int, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {REPLACE: 0, ADD: 0, KEEP: 0}
        for action in self.actions.values():
            out[action] += 1
        return out


def apply_policy(preds: Predictions, p_abnormal: Mapping[int, float] | None, policy: str = "keep_add_replace",
                 low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, where: str = "P(abnormal)",
                 scoring: str = DEFAULT_SCORING) -> PolicyOutput:
    """Apply a named policy to every image of `preds`; p_abnormal None = the detector-only score;
    `scoring`: the added entry's score (one_minus_p | notebook)."""
    lo, hi = policy_thresholds(policy, low, high)
    p_abnormal = detector_p_abnormal(preds) if p_abnormal is None else p_abnormal
    check_p(preds, p_abnormal, where)
    no_finding, actions = {}, {}
    for image_id in dict.fromkeys(preds.image_ids):
        p = float(p_abnormal[image_id])
        actions[image_id] = decide(p, lo, hi)
        _, score = image_policy([], p, lo, hi, scoring)
        if score is not None:
            no_finding[image_id] = score
    # the kept detections in their original order (the metric breaks score ties by order)
    kept = [det for det in preds.detections if actions[det["image_id"]] != REPLACE]
    out = Predictions(preds.source, preds.split_hash, list(preds.image_ids), kept)
    return PolicyOutput(out, no_finding, actions)


def score_policy(gt_coco, preds: Predictions, p_abnormal: Mapping[int, float] | None, policy: str = "keep_add_replace",
                 low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, iou_thr: float = 0.4,
                 scoring: str = DEFAULT_SCORING) -> dict:
    """The 15-class Kaggle metric of `preds` after the policy: {"map", "per_class", "actions"}."""
    out = apply_policy(preds, p_abnormal, policy, low, high, scoring=scoring)
    scores = voc_map(gt_coco, out.predictions, iou_thr, with_no_finding=True, no_finding=out.no_finding)
    return {**scores, "actions": out.counts()}


class ThresholdGrid:
    """The 15-class metric of one prediction set under the keep/add/replace rule, for many (low, high)
    pairs. Matching runs once: which detections are true positives depends only on the other
    detections of their image (harness.eval.voc_map.match_flags), and a policy keeps or drops an
    image's detections all together; class 14 is one entry per image, a true positive on normal
    images. Equal to score_policy at every pair (a test checks it)."""

    def __init__(self, gt_coco, preds: Predictions, p_abnormal: Mapping[int, float] | None, iou_thr: float = 0.4):
        gt = load_gt(gt_coco)
        require_vinbigdata(class_names(gt), "the 'No finding' stage")
        check_images(gt, preds, "<ground truth>")
        p_abnormal = detector_p_abnormal(preds) if p_abnormal is None else p_abnormal
        check_p(preds, p_abnormal)
        self.image_ids = list(dict.fromkeys(preds.image_ids))
        index = {image_id: k for k, image_id in enumerate(self.image_ids)}
        self.p = np.array([float(p_abnormal[i]) for i in self.image_ids], float)
        gts: list[dict[int, list]] = [defaultdict(list) for _ in CLASSES]
        has_box = np.zeros(len(self.image_ids), bool)
        for ann in gt.get("annotations", []):
            if ann["image_id"] in index and 0 <= ann["category_id"] < len(CLASSES):
                gts[ann["category_id"]][ann["image_id"]].append(xywh_to_xyxy(*ann["bbox"]))
                has_box[index[ann["image_id"]]] = True
        self.normal = ~has_box
        dets: list[list] = [[] for _ in CLASSES]
        for det in preds.detections:
            dets[det["category_id"]].append((det["image_id"], float(det["score"]), tuple(xywh_to_xyxy(*det["bbox"]))))
        self.classes = []  # (n_gt, image index per det, scores, tp flags) per lesion class
        for cat in range(len(CLASSES)):
            arrays = {i: np.asarray(b, float).reshape(-1, 4) for i, b in gts[cat].items()}
            n_gt = sum(len(b) for b in arrays.values())
            flags = match_flags(dets[cat], arrays, iou_thr)
            self.classes.append((n_gt, np.array([index[d[0]] for d in dets[cat]], int),
                                 np.array([d[1] for d in dets[cat]], float), flags))

    def with_p(self, p_abnormal: Mapping[int, float] | None, preds: Predictions | None = None) -> "ThresholdGrid":
        """The same matched detections under another P(abnormal) source (None: the detector-only score,
        which needs `preds`); matching does not depend on p, so it is not redone."""
        import copy

        if p_abnormal is None:
            if preds is None:
                raise ValueError("the detector-only P(abnormal) needs the predictions")
            p_abnormal = detector_p_abnormal(preds)
        missing = [i for i in self.image_ids if i not in p_abnormal]
        if missing:
            raise ValueError(f"no P(abnormal) for image ids {missing[:10]}")
        other = copy.copy(self)
        other.p = np.array([float(p_abnormal[i]) for i in self.image_ids], float)
        return other

    def actions(self, low: float, high: float) -> dict[str, int]:
        """How many images the rule replaces, adds to and keeps."""
        replace = int((self.p < low).sum())
        keep = int((self.p >= max(low, high)).sum())
        return {REPLACE: replace, ADD: len(self.p) - replace - keep, KEEP: keep}

    def score(self, low: float, high: float, scoring: str = DEFAULT_SCORING) -> dict:
        """{"map", "per_class"} of the rule with these thresholds and added-entry scoring (as
        score_policy gives)."""
        kept = self.p >= low
        per_class = {}
        for name, (n_gt, image_idx, scores, flags) in zip(CLASSES, self.classes):
            keep = kept[image_idx]
            per_class[name] = ap_from_flags(scores[keep], flags[keep], n_gt)[0]
        entry = (self.p < high)  # replaced or added: one class-14 entry, in image order
        nf_scores = np.where(self.p < low, 1.0, added_score(self.p, scoring))[entry]
        per_class[NO_FINDING_NAME] = ap_from_flags(nf_scores, self.normal[entry], int(self.normal.sum()))[0]
        present = [ap for ap in per_class.values() if ap is not None]
        return {"map": float(np.mean(present)) if present else 0.0, "per_class": per_class}

    def table(self, lows, highs, scoring: str = DEFAULT_SCORING) -> np.ndarray:
        """len(lows) x len(highs) 15-class scores; NaN where high < low."""
        out = np.full((len(lows), len(highs)), np.nan)
        for a, low in enumerate(lows):
            for b, high in enumerate(highs):
                if high >= low:
                    out[a, b] = self.score(float(low), float(high), scoring)["map"]
        return out


# ---------------------------------------------------------------------------------------------
# The classifier's output file and its metrics
# ---------------------------------------------------------------------------------------------

@dataclass
class AbnormalScores:
    """Per-image P(abnormal) (a classifier run's `abnormal.json`), keyed by COCO image id."""

    source: str
    split_hash: str | None
    p_abnormal: dict[int, float]

    def save(self, path: str | Path) -> None:
        atomic.write_json(path, {"format": SCORES_FORMAT, "source": self.source, "split_hash": self.split_hash,
                                 "image_ids": list(self.p_abnormal),
                                 "p_abnormal": [round(float(p), 6) for p in self.p_abnormal.values()]}, indent=None)

    @classmethod
    def load(cls, path: str | Path) -> "AbnormalScores":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read P(abnormal) file: {err}") from err
        if not isinstance(raw, dict) or raw.get("format") != SCORES_FORMAT:
            raise ValueError(f"{path}: not a {SCORES_FORMAT} file")
        ids, ps = raw.get("image_ids") or [], raw.get("p_abnormal") or []
        if len(ids) != len(ps) or not all(isinstance(p, (int, float)) and 0.0 <= p <= 1.0 for p in ps):
            raise ValueError(f"{path}: image_ids and p_abnormal must be lists of equal length, p in [0, 1]")
        return cls(str(raw.get("source", "")), raw.get("split_hash"), {int(i): float(p) for i, p in zip(ids, ps)})


def abnormal_labels(coco: dict) -> dict[int, int]:
    """{image id: 1 when the image has at least one finding box, else 0} of a COCO dict."""
    labels = {int(img["id"]): 0 for img in coco["images"]}
    for ann in coco.get("annotations", []):
        if ann["image_id"] in labels and 0 <= ann["category_id"] < len(CLASSES):
            labels[ann["image_id"]] = 1
    return labels


def roc_auc(labels, scores) -> float | None:
    """Area under the ROC curve (scikit-learn's; tied scores count half); None without both classes."""
    from sklearn.metrics import roc_auc_score  # imported here: only the classifier's metrics need it

    y = np.asarray(labels, int)
    if y.size == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, np.asarray(scores, float)))


def at_threshold(labels, scores, threshold: float) -> dict:
    """Called abnormal when p >= threshold: sensitivity (abnormal called abnormal), specificity
    (normal called normal), accuracy."""
    y = np.asarray(labels, int).astype(bool)
    called = np.asarray(scores, float) >= threshold
    sens = float((called & y).sum() / y.sum()) if y.any() else None
    spec = float((~called & ~y).sum() / (~y).sum()) if (~y).any() else None
    return {"threshold": float(threshold), "sensitivity": sens, "specificity": spec,
            "accuracy": float((called == y).mean()) if len(y) else None}


def classifier_metrics(labels: Mapping[int, int], p_abnormal: Mapping[int, float], low: float = DEFAULT_LOW,
                       high: float = DEFAULT_HIGH) -> dict:
    """AUC, accuracy at 0.5, and sensitivity/specificity at 0.5, low and high, on the images of `labels`
    that have a P(abnormal)."""
    ids = [i for i in labels if i in p_abnormal]
    y = [labels[i] for i in ids]
    s = [p_abnormal[i] for i in ids]
    half = at_threshold(y, s, 0.5)
    return {"auc": roc_auc(y, s), "accuracy": half["accuracy"], "n_images": len(ids), "n_abnormal": int(sum(y)),
            "at_0.5": half, "at_low": at_threshold(y, s, low), "at_high": at_threshold(y, s, high),
            "thresholds": {"low": float(low), "high": float(high)}}


__all__ = ["DEFAULT_LOW", "DEFAULT_HIGH", "POLICIES", "NO_FINDING_ID", "policy_thresholds", "decide", "image_policy",
           "detector_p_abnormal", "apply_policy", "score_policy", "PolicyOutput", "ThresholdGrid", "AbnormalScores",
           "abnormal_labels", "roc_auc", "at_threshold", "classifier_metrics"]
