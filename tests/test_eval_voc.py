"""The Kaggle VOC metric: hand cases, devkit matching rules, and agreement with mmdet's eval_map."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import random_case  # test_bootstrap, test_nofinding and test_report import it from here too

from harness.classes import NUM_CLASSES
from harness.eval import class_ap, evaluate, iou_matrix, voc_ap, voc_map
from harness.predictions import Predictions, xywh_to_xyxy


def test_voc_ap_all_point_by_hand():
    # recall .25 .25 .5 .5 .75 / precision 1 .5 .667 .5 .6 -> .25*1 + .25*2/3 + .25*.6
    recall = np.array([0.25, 0.25, 0.5, 0.5, 0.75])
    precision = np.array([1, 0.5, 2 / 3, 0.5, 0.6])
    assert voc_ap(recall, precision) == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.25 * 0.6)
    assert voc_ap(np.array([1.0]), np.array([1.0])) == 1.0
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0


def test_iou_and_devkit_matching_rules():
    assert iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]) == pytest.approx(np.array([[1 / 3, 0]]))
    gts = {1: np.array([[0, 0, 10, 10.0]])}
    # a duplicate of an already matched box is a false positive
    ap, recall, precision = class_ap([(1, 0.9, (0, 0, 10, 10)), (1, 0.8, (0, 0, 10, 10))], gts)
    assert ap == 1.0 and list(precision) == [1.0, 0.5]
    # IoU must exceed 0.4: 1/3 does not
    assert class_ap([(1, 0.9, (5, 0, 15, 10))], gts)[0] == 0.0
    # no GT of the class -> None (excluded from the mean)
    assert class_ap([(1, 0.9, (0, 0, 1, 1))], {})[0] is None


def mmdet_inputs(gt: dict, preds: Predictions):
    det_results, annotations = [], []
    for img in gt["images"]:
        per_class = [np.zeros((0, 5), np.float32) for _ in range(NUM_CLASSES)]
        for cat in range(NUM_CLASSES):
            rows = [xywh_to_xyxy(*d["bbox"]) + [d["score"]] for d in preds.detections
                    if d["image_id"] == img["id"] and d["category_id"] == cat]
            if rows:
                per_class[cat] = np.array(rows, np.float64)
        det_results.append(per_class)
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        annotations.append({"bboxes": np.array([xywh_to_xyxy(*a["bbox"]) for a in anns], np.float64).reshape(-1, 4),
                            "labels": np.array([a["category_id"] for a in anns], np.int64)})
    return det_results, annotations


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_mmdet_eval_map(seed):
    from mmdet.evaluation.functional import eval_map

    gt, preds = random_case(seed)
    ours = voc_map(gt, preds, iou_thr=0.4)
    det_results, annotations = mmdet_inputs(gt, preds)
    mean_ap, results = eval_map(det_results, annotations, iou_thr=0.4, eval_mode="area", nproc=1, logger="silent")
    assert ours["map"] == pytest.approx(mean_ap, abs=1e-6)
    assert 0.05 < ours["map"] < 0.95  # a non-trivial case
    for (name, ap), result in zip(ours["per_class"].items(), results):
        if result["num_gts"] == 0:
            assert ap is None, name
        else:
            assert ap == pytest.approx(float(result["ap"]), abs=1e-6), name
    assert evaluate(gt, preds)["voc_map40"] == pytest.approx(mean_ap, abs=1e-6)
