"""The match table and the TIDE error decomposition at IoU 0.4: hand-built cases for every error type,
and (when the unmaintained `tidecv` package is importable) the same decomposition as tidecv's."""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
from conftest import missing_reference
from test_eval_voc import random_case

from harness.classes import coco_categories
from harness.eval import coco_map
from harness.eval.errors import ERROR_TYPES, fixed_data, tide_errors
from harness.eval.matches import MatchTable
from harness.predictions import Predictions

#: AP of a class whose PR curve is precision 1 up to recall 0.5, then nothing (51 of 101 points).
HALF = 51 / 101


def case(gts, dets, images=(1,)):
    """gts: (image, class, box); dets: (image, class, box, score)."""
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "width": 600, "height": 600} for i in images],
          "annotations": [{"id": n + 1, "image_id": im, "category_id": c, "bbox": list(b), "area": b[2] * b[3],
                           "iscrowd": 0} for n, (im, c, b) in enumerate(gts)],
          "categories": coco_categories()}
    preds = Predictions("hand", None, list(images),
                        [{"image_id": im, "category_id": c, "bbox": list(b), "score": s} for im, c, b, s in dets])
    return gt, preds


def analyse(gt, preds):
    table = MatchTable.from_coco(gt, preds)
    errors = tide_errors(table)
    assert errors.map == coco_map(gt, preds, backend="pycocotools")["map40"]  # the metric's matches and AP
    return table, errors


A, B, C = (0, 0, 100, 100), (200, 200, 100, 100), (400, 400, 50, 50)


def only(errors, **expected):
    assert errors.counts == {k: expected.get(k, 0) for k in ERROR_TYPES}


def test_classification_error():
    _, errors = analyse(*case([(1, 0, A)], [(1, 1, A, 0.9)]))
    only(errors, cls=1)  # the box it aims at can be fixed, so it is no "missed" box
    assert errors.map == 0.0 and errors.delta_ap["cls"] == pytest.approx(1.0, abs=1e-12)
    assert errors.delta_ap["loc"] == errors.delta_ap["miss"] == 0.0


def test_localisation_error_at_the_benchmark_iou():
    # IoU 0.35 < 0.4: a localisation error; at 0.45 it is a true positive.
    _, errors = analyse(*case([(1, 0, A)], [(1, 0, (0, 0, 100, 35), 0.9)]))
    only(errors, loc=1)
    assert errors.delta_ap["loc"] == pytest.approx(1.0, abs=1e-12) and errors.delta_ap["cls"] == 0.0
    _, errors = analyse(*case([(1, 0, A)], [(1, 0, (0, 0, 100, 45), 0.9)]))
    only(errors)
    assert errors.map == pytest.approx(1.0, abs=1e-12)


def test_both_error_and_missed_box():
    gts = [(1, 0, A), (1, 0, B), (1, 1, C)]
    dets = [(1, 0, B, 0.5), (1, 1, C, 0.3), (1, 1, (0, 0, 100, 30), 0.9)]  # class 1 at IoU 0.3 with a class-0 box
    _, errors = analyse(*case(gts, dets))
    only(errors, both=1, miss=1)
    assert errors.map == pytest.approx((HALF + 0.5) / 2, abs=1e-15)
    assert errors.delta_ap["both"] == pytest.approx(0.25, abs=1e-15)            # class 1: 0.5 -> 1
    assert errors.delta_ap["miss"] == pytest.approx((1 - HALF) / 2, abs=1e-15)  # class 0: A leaves the GT


def test_duplicate_error():
    dets = [(1, 0, A, 0.9), (1, 0, (0, 0, 100, 90), 0.8), (1, 0, B, 0.5)]
    _, errors = analyse(*case([(1, 0, A), (1, 0, B)], dets))
    only(errors, dupe=1)
    assert errors.delta_ap["dupe"] == pytest.approx(1 - (51 + 50 * 2 / 3) / 101, abs=1e-12)


def test_background_errors_also_on_an_image_without_ground_truth():
    dets = [(1, 0, C, 0.9), (2, 0, A, 0.8), (1, 0, A, 0.5)]
    _, errors = analyse(*case([(1, 0, A)], dets, images=(1, 2)))
    only(errors, bkg=2)
    assert errors.delta_ap["bkg"] == pytest.approx(1 - 1 / 3, abs=1e-12)
    assert errors.delta_ap["false_pos"] == errors.delta_ap["bkg"]


def test_missed_error():
    _, errors = analyse(*case([(1, 0, A), (1, 0, B)], [(1, 0, A, 0.9)]))
    only(errors, miss=1)
    assert errors.delta_ap["miss"] == pytest.approx(1 - HALF, abs=1e-15)
    assert errors.delta_ap["false_neg"] == errors.delta_ap["miss"]


def test_one_fix_per_box_the_best_scoring_error_wins():
    # two localisation errors aim at A (nobody matched it): fixing promotes the 0.9 one and removes the 0.7 one
    dets = [(1, 0, (0, 0, 100, 35), 0.7), (1, 0, (0, 0, 100, 38), 0.9)]
    table, errors = analyse(*case([(1, 0, A)], dets))
    only(errors, loc=2)
    assert errors.fixer.tolist() == [int(np.flatnonzero(table.det["score"].to_numpy() == 0.9)[0])]
    fixed, _ = fixed_data(table, errors.det_type.to_numpy(), errors.fix_target, errors.fixer, errors.gt_missed, "loc")
    assert fixed["score"].tolist() == [0.9] and fixed["tp"].tolist() == [True]
    # an error aimed at a box that a detection matched is not promoted: removing it is the fix
    dets = [(1, 0, A, 0.5), (1, 1, A, 0.9)]
    _, errors = analyse(*case([(1, 0, A), (1, 1, C)], dets + [(1, 1, C, 0.4)]))
    only(errors, cls=1)
    assert errors.delta_ap["cls"] == pytest.approx(0.25, abs=1e-12)  # class 1: [FP, TP] -> [TP]


def test_localisation_is_tested_before_classification():
    # same-class IoU 0.3 (loc) and other-class IoU 1.0 (cls): TIDE calls it a localisation error
    gts = [(1, 0, A), (1, 1, (0, 0, 100, 30))]
    _, errors = analyse(*case(gts, [(1, 1, A, 0.9)]))
    assert errors.counts["loc"] == 1 and errors.counts["cls"] == 0


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_partition_every_detection_and_box(seed):
    gt, preds = random_case(seed, n_images=30)
    table, errors = analyse(gt, preds)
    n_fp = int((~table.det["tp"]).sum())
    assert sum(errors.counts[k] for k in ERROR_TYPES if k != "miss") == n_fp
    kinds = errors.det_type.to_numpy()
    assert set(kinds[table.det["tp"].to_numpy()]) <= {"tp"}
    assert errors.counts["miss"] <= int((table.gt["det_row"] < 0).sum())
    assert all(v >= 0 for v in errors.delta_ap.values())


# ----- against tidecv (Bolya et al.'s reference implementation) -----

def _import_tidecv():
    """tidecv if importable; CXR_TIDECV_PATH names a --target folder holding it (CI installs it there).
    It is unmaintained since 2020 and pulls in seaborn: a reference for tests, never a dependency."""
    extra = os.environ.get("CXR_TIDECV_PATH")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    try:
        return importlib.import_module("tidecv"), importlib.import_module("tidecv.errors.main_errors")
    except ImportError:
        missing_reference("tidecv", "CXR_TIDECV_PATH", "install it into a --target folder named by CXR_TIDECV_PATH, "
                          "as .ci/run does")


def _tidecv_case(seed, ties: bool = False):
    """A random case with images without ground truth (VinBigData's majority; registered with tidecv, which
    otherwise never visits them) and, with `ties`, scores on a 0.01 grid (tied pairs and triples). Only classes with
    ground truth are detected (tidecv averages a detected class without any in as AP 0)."""
    gt, preds = random_case(seed, n_images=40)
    cats = {a["category_id"] for a in gt["annotations"]}
    assert len({a["image_id"] for a in gt["annotations"]}) < len(gt["images"])  # images without ground truth
    dets = [{**d, "score": round(d["score"] * 100) / 100 if ties else d["score"]} for d in preds.detections
            if d["category_id"] in cats]
    return gt, Predictions("random", None, [img["id"] for img in gt["images"]], dets)


def _tidecv_run(tidecv, gt, preds):
    gt_data, pred_data = tidecv.Data("gt"), tidecv.Data("preds", max_dets=1000)
    for img in gt["images"]:  # every scored image, also those without ground truth
        gt_data.add_image(img["id"], str(img["id"]))
    for ann in gt["annotations"]:
        gt_data.add_ground_truth(ann["image_id"], ann["category_id"], list(ann["bbox"]))
    for det in preds.detections:
        pred_data.add_detection(det["image_id"], det["category_id"], det["score"], list(det["bbox"]))
    gt_data.max_dets = 1000
    return tidecv.TIDE(pos_threshold=0.4, background_threshold=0.1).evaluate(gt_data, pred_data, mode=tidecv.TIDE.BOX)


@pytest.mark.parametrize("seed", range(8))
def test_same_decomposition_as_tidecv(seed):
    """Same error counts, and for every error type the same fixed detections (score, TP) and ground-truth
    count per class as tidecv's fixed data. AP itself is compared through our AP (pycocotools'): tidecv
    samples recall at x/100 where pycocotools uses linspace(0, 1, 101), so a recall landing exactly on
    a sample point (7/20 = 0.35) can bin differently (up to ~0.2 AP points on these cases)."""
    tidecv, main_errors = _import_tidecv()
    names = {main_errors.ClassError: "cls", main_errors.BoxError: "loc", main_errors.OtherError: "both",
             main_errors.DuplicateError: "dupe", main_errors.BackgroundError: "bkg", main_errors.MissedError: "miss"}
    gt, preds = _tidecv_case(seed)
    table, errors = analyse(gt, preds)
    run = _tidecv_run(tidecv, gt, preds)
    assert {names[k]: v for k, v in run.count_errors().items()} == errors.counts
    assert errors.counts["bkg"] > 0
    assert run.ap == pytest.approx(errors.map * 100, abs=2.0)
    theirs_by_det = {err.pred["_id"]: names[type(err)] for err in run.errors if hasattr(err, "pred")}
    ours_by_det = dict(zip((table.det["det_id"] - 1).tolist(), errors.det_type.tolist()))
    assert {i: k for i, k in ours_by_det.items() if k != "tp"} == theirs_by_det
    for error_type, kind in names.items():
        fixed_ap = run.fix_errors(lambda err, t=error_type: isinstance(err, t))
        fixed_det, fixed_gt = fixed_data(table, errors.det_type.to_numpy(), errors.fix_target, errors.fixer,
                                         errors.gt_missed.to_numpy(), kind)
        for cat in table.category_ids:
            obj = fixed_ap.objs[cat] if cat in fixed_ap.objs else None
            ours = fixed_det[fixed_det["category_id"] == cat]
            theirs = sorted(obj.data_points.values(), key=lambda p: -p[0]) if obj is not None else []
            assert [(s, bool(c)) for s, c, _ in theirs] == list(zip(ours["score"], ours["tp"].astype(bool))), (kind, cat)
            assert (obj.num_gt_positives if obj is not None else 0) == fixed_gt[cat], (kind, cat)



@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_same_dap_as_tidecv_with_tied_scores_and_images_without_ground_truth(seed, ties):
    """Same error counts and, for every error type, the same dAP as tidecv's fix_main_errors within 0.5 AP
    points (tidecv samples recall at x/100, pycocotools at linspace(0, 1, 101), and orders tied scores
    its own way). With far more ties (scores on a 0.05 grid) tidecv's classification / duplicate dAP drop to
    0 where ours are 0.5-0.9 points: tidecv re-sorts a fixed detection behind the others of its score and
    clamps a negative dAP to 0; pycocotools' order (image, then input order) is the one the metric uses."""
    tidecv, main_errors = _import_tidecv()
    names = {main_errors.ClassError: "cls", main_errors.BoxError: "loc", main_errors.OtherError: "both",
             main_errors.DuplicateError: "dupe", main_errors.BackgroundError: "bkg", main_errors.MissedError: "miss"}
    gt, preds = _tidecv_case(seed, ties)
    if ties:
        assert len({d["score"] for d in preds.detections}) <= len(preds.detections) - 10  # ten or more tied
    _, errors = analyse(gt, preds)
    run = _tidecv_run(tidecv, gt, preds)
    assert {names[k]: v for k, v in run.count_errors().items()} == errors.counts
    theirs = {names[k]: v for k, v in run.fix_main_errors().items()}
    ours = {k: errors.delta_ap[k] * 100 for k in ERROR_TYPES}
    assert max(theirs.values()) > 1.0  # the comparison has something to compare
    for kind in ERROR_TYPES:
        assert ours[kind] == pytest.approx(theirs[kind], abs=0.5), (kind, ours, theirs)


@pytest.mark.parametrize("seed", range(3))
def test_match_table_gives_the_bootstrap_its_per_image_data(seed):
    from harness.eval.bootstrap import ImageMatches

    gt, preds = random_case(seed, n_images=25)
    ours = MatchTable.from_coco(gt, preds).image_matches()
    theirs = ImageMatches.from_coco(gt, preds)
    weights = np.random.default_rng(seed).integers(0, 3, (5, len(ours.image_ids))).astype(float)
    assert np.array_equal(ours.map(weights), theirs.map(weights))


def test_pr_curve_ends_at_the_class_recall_and_pools_folds():
    from harness.eval.matches import pr_curve

    gt, preds = random_case(3, n_images=30)
    table = MatchTable.from_coco(gt, preds)
    curve = pr_curve([table], 0)
    n_gt, tps = table.n_gt()[0], int(table.det[table.det["category_id"] == 0]["tp"].sum())
    assert curve["recall"].iloc[-1] == tps / n_gt
    assert (np.diff(curve["recall"]) >= 0).all() and (np.diff(curve["envelope"]) <= 1e-15).all()
    twice = pr_curve([table, table], 0)
    assert len(twice) == 2 * len(curve) and twice["recall"].iloc[-1] == curve["recall"].iloc[-1]
    assert pr_curve([table], 13).empty or table.n_gt()[13] > 0


def test_pr_legend_ap_is_the_pooled_curves_own():
    """Over several folds the PR chart pools the folds, so its legend gives the pooled curve's AP: the AP of
    the folds' images scored as one set (here: two cases merged with new ids), not the mean over folds."""
    from harness.report.analysis_charts import pooled_ap

    parts = [random_case(seed, n_images=15) for seed in (3, 4)]
    merged_images, merged_anns, merged_dets = [], [], []
    for offset, (gt, preds) in zip((0, 1000), parts):
        merged_images += [{**im, "id": im["id"] + offset} for im in gt["images"]]
        merged_anns += [{**a, "id": a["id"] + offset, "image_id": a["image_id"] + offset} for a in gt["annotations"]]
        merged_dets += [{**d, "image_id": d["image_id"] + offset} for d in preds.detections]
    merged = {**parts[0][0], "images": merged_images, "annotations": merged_anns}
    whole = MatchTable.from_coco(merged, Predictions("m", None, [im["id"] for im in merged_images], merged_dets))
    tables = [MatchTable.from_coco(gt, preds) for gt, preds in parts]
    checked = 0
    for cat, ap in whole.per_class_ap().items():
        if ap is None or any(t.n_gt().get(cat, 0) == 0 for t in tables):
            continue
        assert pooled_ap(tables, cat) == pytest.approx(ap, abs=1e-12)
        fold_mean = np.mean([t.per_class_ap()[cat] for t in tables])
        checked += abs(fold_mean - ap) > 1e-6
    assert checked  # at least one class where the pooled AP is not the fold mean
