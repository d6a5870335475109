"""The "No finding" stage: the keep / add / replace arithmetic, the named policies, the 15-class
metric they feed, the fast threshold grid, and the classifier's metrics."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.eval.voc_map import voc_map
from harness.nofinding import (AbnormalScores, ThresholdGrid, apply_policy, at_threshold, classifier_metrics, decide,
                               detector_p_abnormal, image_policy, policy_thresholds, roc_auc, score_policy)
from harness.predictions import Predictions
from harness.submission import prediction_string

DETS = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.7},
        {"image_id": 1, "category_id": 0, "bbox": [50, 50, 5, 5], "score": 0.2}]


@pytest.mark.parametrize("p, expected", [
    (0.0, "replace"), (0.0799, "replace"),  # below low
    (0.08, "add"), (0.5, "add"), (0.9499, "add"),  # low is inclusive for add, high exclusive
    (0.95, "keep"), (1.0, "keep"),  # at or above high
])
def test_keep_add_replace_branches_and_boundaries(p, expected):
    assert decide(p, 0.08, 0.95) == expected
    dets, entry = image_policy(DETS, p, 0.08, 0.95)
    if expected == "replace":
        assert dets == [] and entry == 1.0
    elif expected == "add":
        assert dets == DETS and entry == pytest.approx(1.0 - p)
    else:
        assert dets == DETS and entry is None


def test_named_policies_are_the_rule_with_fixed_thresholds():
    assert policy_thresholds("keep_add_replace", 0.1, 0.9) == (0.1, 0.9)
    assert policy_thresholds("replace", 0.1, 0.9) == (0.1, 0.1)
    assert policy_thresholds("append", 0.1, 0.9) == (0.0, math.inf)
    assert policy_thresholds("none", 0.1, 0.9) == (0.0, 0.0)
    # replace: at low the image is kept unchanged (no add branch)
    assert image_policy(DETS, 0.1, *policy_thresholds("replace", 0.1, 0.9)) == (DETS, None)
    assert image_policy(DETS, 0.0999, *policy_thresholds("replace", 0.1, 0.9)) == ([], 1.0)
    # append: never replaces, always adds 1 - p, also at p = 0 and p = 1
    assert image_policy(DETS, 0.0, *policy_thresholds("append")) == (DETS, 1.0)
    assert image_policy(DETS, 1.0, *policy_thresholds("append")) == (DETS, 0.0)
    assert image_policy(DETS, 0.0, *policy_thresholds("none")) == (DETS, None)
    for bad in [(0.5, 0.4), (-0.1, 0.5), (float("nan"), 0.5)]:
        with pytest.raises(ValueError, match="low"):
            policy_thresholds("keep_add_replace", *bad)
    with pytest.raises(ValueError, match="policy"):
        policy_thresholds("filter")


def test_detector_only_score_and_missing_p():
    preds = Predictions("m", None, [1, 2], DETS)
    assert detector_p_abnormal(preds) == {1: 0.7, 2: 0.0}
    out = apply_policy(preds, None, "keep_add_replace", 0.08, 0.95)  # image 2 (no box) -> replaced
    assert out.actions == {1: "add", 2: "replace"}
    assert out.no_finding == {1: pytest.approx(0.3), 2: 1.0}
    assert out.predictions.detections == DETS
    with pytest.raises(ValueError, match=r"no P\(abnormal\) for image ids \[2\]"):
        apply_policy(preds, {1: 0.5})


def test_submission_uses_the_same_policy_code():
    args = dict(scale_x=1.0, scale_y=1.0, no_finding="keep_add_replace", low=0.08, high=0.95)
    assert prediction_string(DETS, p_abnormal=0.05, **args) == "14 1.0000 0 0 1 1"
    added = prediction_string(DETS, p_abnormal=0.4, **args)
    assert added.startswith("3 0.7000 10 10 30 30 0 0.2000 50 50 55 55") and added.endswith("14 0.6000 0 0 1 1")
    assert prediction_string(DETS, p_abnormal=0.95, **args) == "3 0.7000 10 10 30 30 0 0.2000 50 50 55 55"
    # without a classifier: the detector-only p (0.7) -> add 0.3
    assert prediction_string(DETS, 1.0, 1.0, no_finding="keep_add_replace").endswith("14 0.3000 0 0 1 1")


def _gt(normal_ids, abnormal_ids):
    images = [{"id": i, "width": 100, "height": 100} for i in sorted(normal_ids + abnormal_ids)]
    anns = [{"id": k + 1, "image_id": i, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}
            for k, i in enumerate(abnormal_ids)]
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in range(14)]}


def test_perfect_classifier_with_replace_turns_false_positives_into_no_finding():
    """Normal images 3, 4 carry confident false positives; the lesions on 1, 2 are found. A perfect
    classifier with `replace` removes the false positives and calls 3, 4 "No finding" correctly."""
    gt = _gt([3, 4], [1, 2])
    dets = [{"image_id": i, "category_id": 3, "bbox": [10, 10, 40, 40], "score": 0.8} for i in (1, 2)]
    dets += [{"image_id": i, "category_id": 3, "bbox": [60, 60, 30, 30], "score": 0.9} for i in (3, 4)]
    preds = Predictions("m", None, [1, 2, 3, 4], dets)
    perfect = {1: 1.0, 2: 1.0, 3: 0.0, 4: 0.0}
    none = score_policy(gt, preds, None, "none")
    detector = score_policy(gt, preds, None, "append")
    classifier = score_policy(gt, preds, perfect, "replace", low=0.5)
    assert none["per_class"]["No finding"] == 0.0
    assert detector["per_class"]["No finding"] < 1.0  # 1 - max score ranks the normals last
    assert classifier["per_class"]["Cardiomegaly"] == 1.0 and classifier["per_class"]["No finding"] == 1.0
    assert classifier["actions"] == {"replace": 2, "add": 0, "keep": 2}
    assert none["map"] < detector["map"] < classifier["map"] == 1.0
    # the old 15-class metric (1 - max) is the detector-only append policy
    assert detector["map"] == pytest.approx(voc_map(gt, preds, with_no_finding=True)["map"])


def test_threshold_grid_equals_policy_scoring():
    rng = np.random.default_rng(3)
    ids = list(range(1, 31))
    abnormal = [i for i in ids if i % 3]
    gt = _gt([i for i in ids if i not in abnormal], abnormal)
    dets = []
    for i in ids:
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 40, 2)
            score = float(rng.choice([0.5, 0.3, rng.uniform()]))  # ties across images
            dets.append({"image_id": i, "category_id": int(rng.choice([0, 3])), "bbox": [x, y, 40, 40], "score": score})
    preds = Predictions("m", None, ids, dets)
    p = {i: float(rng.choice([0.0, 0.5, rng.uniform()])) for i in ids}
    grid = ThresholdGrid(gt, preds, p)
    swapped = ThresholdGrid(gt, preds, None).with_p(p)  # matched once, another p source
    for low, high in [(0.0, 0.0), (0.0, math.inf), (0.08, 0.95), (0.5, 0.5), (0.3, 0.7), (0.6, 1.0)]:
        fast = grid.score(low, high)
        slow = score_policy(gt, preds, p, "keep_add_replace", low, high)
        assert fast["map"] == pytest.approx(slow["map"], abs=1e-12), (low, high)
        assert fast["per_class"] == pytest.approx(slow["per_class"], abs=1e-12)
        assert swapped.score(low, high) == fast and grid.actions(low, high) == slow["actions"]
    table = grid.table([0.0, 0.5], [0.3, 0.9])
    assert math.isnan(table[1, 0]) and table[0, 1] == pytest.approx(grid.score(0.0, 0.9)["map"])


def test_the_notebooks_scoring_is_a_named_variant():
    """The public 2-class filter notebook appends `14 p` (p = P(abnormal)) in the middle band, this
    harness `14 (1-p)`: the same bands, another class-14 score; the grid and the submission agree."""
    assert image_policy(DETS, 0.4, 0.08, 0.95, "notebook") == (DETS, pytest.approx(0.4))
    assert image_policy(DETS, 0.4, 0.08, 0.95) == (DETS, pytest.approx(0.6))
    assert image_policy(DETS, 0.05, 0.08, 0.95, "notebook") == ([], 1.0)  # replace: the same
    assert image_policy(DETS, 0.97, 0.08, 0.95, "notebook") == (DETS, None)  # keep: the same
    args = dict(scale_x=1.0, scale_y=1.0, no_finding="keep_add_replace", low=0.08, high=0.95, p_abnormal=0.4)
    assert prediction_string(DETS, scoring="notebook", **args).endswith("14 0.4000 0 0 1 1")
    with pytest.raises(ValueError, match="nofinding.scoring"):
        image_policy(DETS, 0.4, 0.08, 0.95, "p")
    rng = np.random.default_rng(5)
    ids = list(range(1, 25))
    gt = _gt([i for i in ids if i % 2], [i for i in ids if not i % 2])
    dets = [{"image_id": i, "category_id": 3, "bbox": [10, 10, 40, 40], "score": float(rng.uniform())} for i in ids]
    preds = Predictions("m", None, ids, dets)
    p = {i: float(rng.uniform()) for i in ids}
    grid = ThresholdGrid(gt, preds, p)
    for scoring in ("one_minus_p", "notebook"):
        fast = grid.score(0.1, 0.9, scoring)
        slow = score_policy(gt, preds, p, "keep_add_replace", 0.1, 0.9, scoring=scoring)
        assert fast["map"] == pytest.approx(slow["map"], abs=1e-12), scoring
    # a classifier that knows the normals: 1 - p ranks them first for "No finding", the notebook's p last
    knows = {i: (0.2 if i % 2 else 0.8) for i in ids}
    good = score_policy(gt, preds, knows, "keep_add_replace", 0.1, 0.9)["per_class"]["No finding"]
    notebook = score_policy(gt, preds, knows, "keep_add_replace", 0.1, 0.9, scoring="notebook")
    assert good == 1.0 and notebook["per_class"]["No finding"] < 0.6


def test_classifier_metrics_by_hand():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts half
    assert roc_auc([1, 1], [0.1, 0.2]) is None
    row = at_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.38)
    assert row == {"threshold": 0.38, "sensitivity": 0.5, "specificity": 0.5, "accuracy": 0.5}
    metrics = classifier_metrics({1: 0, 2: 1, 3: 1}, {1: 0.05, 2: 0.5, 3: 0.97})
    assert metrics["auc"] == 1.0 and metrics["at_low"]["specificity"] == 1.0 and metrics["at_high"]["sensitivity"] == 0.5


def test_abnormal_scores_file_round_trip(tmp_path):
    scores = AbnormalScores("classifier:resnet18", "abc", {3: 0.25, 1: 0.9})
    scores.save(tmp_path / "abnormal.json")
    assert AbnormalScores.load(tmp_path / "abnormal.json") == scores
    (tmp_path / "bad.json").write_text('{"format": "cxr-bench-abnormal/1", "image_ids": [1], "p_abnormal": [1.5]}')
    with pytest.raises(ValueError, match="bad.json"):
        AbnormalScores.load(tmp_path / "bad.json")


def test_report_section_rows_and_threshold_sweep(tmp_path):
    """A sweep with one model on two folds and a classifier run per fold: the report scores the
    model without the stage, detector-only and with the classifier under every policy, pools the
    folds for the threshold grid and leaves the classifier out of the detector tables."""
    from test_eval_voc import random_case

    from harness import atomic
    from harness.eval import evaluate
    from harness.nofinding import abnormal_labels
    from harness.report import NoFindingSettings, build_report, collect

    root = tmp_path / "sweep"
    for fold in (0, 1):
        gt, preds = random_case(40 + fold, n_images=30)
        shift = 100 * fold  # globally unique image ids, as the folds of one labels file have
        for img in gt["images"]:
            img["id"] += shift
        for item in gt["annotations"] + preds.detections:
            item["image_id"] += shift
        preds = Predictions("m", f"h{fold}", [i + shift for i in preds.image_ids], preds.detections)
        run = root / "yolov5" / f"fold{fold}"
        atomic.write_json(run / "split" / "val.json", gt)
        preds.save(run / "predictions.json")
        atomic.write_json(run / "metrics.json", {**evaluate(gt, preds), "model": "yolov5", "variant": "v",
                                                 "fold": fold, "split_hash": f"h{fold}", "config": {}})
        labels = abnormal_labels(gt)
        clf = root / "classifier" / f"fold{fold}"
        AbnormalScores("classifier:resnet18", f"h{fold}", {i: 0.99 * y for i, y in labels.items()}).save(
            clf / "abnormal.json")
        atomic.write_json(clf / "metrics.json", {"kind": "classifier", "model": "classifier", "variant": "resnet18",
                                                 "fold": fold, "split_hash": f"h{fold}", "auc": 1.0, "accuracy": 1.0,
                                                 **classifier_metrics(labels, {i: 0.99 * y for i, y in labels.items()})})
    results = collect(root)
    assert set(results.runs["name"]) == {"yolov5"} and not results.unreadable
    settings = NoFindingSettings(low=0.5, high=0.995, grid_low=(0.0, 0.5), grid_high=(0.5, 0.995, 1.0))
    paths = build_report(root, nofinding=settings, reader_reference=False)
    rows = pd.read_csv(paths["nofinding_csv"])
    fold0 = rows[rows["fold"] == "fold0"].set_index(["source", "policy"])["voc_map40_15"]
    assert len(fold0) == 7  # no stage + 3 policies x (detector, classifier)
    gt0, preds0 = random_case(40, n_images=30)
    assert fold0[("detector", "append")] == pytest.approx(evaluate(gt0, preds0)["voc_map40_15"])
    # a perfect classifier: replace removes every false positive on normal images and calls them normal
    assert fold0[("classifier", "replace")] > fold0[("detector", "replace")]
    assert fold0[("classifier", "replace")] > fold0[("–", "none")]
    md = paths["results_md"].read_text()
    assert "## \"No finding\" stage" in md and "classifier: keep/add/replace" in md and "AUC 1.000" in md
    sweep = pd.read_csv(paths["nofinding_sweep_csv"])
    # both scorings of the added entry, each over the grid, with the optimistic caveat on every row
    assert set(sweep["source"]) == {"detector", "classifier"} and set(sweep["scoring"]) == {"one_minus_p", "notebook"}
    assert len(sweep) == 2 * 2 * 2 * 3
    assert sweep["note"].str.startswith("optimistic: the best (low, high) is picked on the same predictions").all()
    cell = sweep.set_index(["source", "scoring", "low", "high"])["voc_map40_15"]
    assert cell[("classifier", "one_minus_p", 0.0, 0.995)] > cell[("classifier", "notebook", 0.0, 0.995)]  # all added
    assert cell[("classifier", "one_minus_p", 0.5, 0.5)] == cell[("classifier", "notebook", 0.5, 0.5)]  # no middle band
    assert "| 14 p (notebook) |" in md and "| 14 (1-p) |" in md and "optimistic" in md
    with Image.open(paths["nofinding_sweep_png"]) as img:
        assert img.size[0] > 300
