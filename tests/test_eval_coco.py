"""harness.eval: pycocotools mAP@0.4 on hand-computed cases, box conventions, errors, the 15-class variant."""
from __future__ import annotations

import json

import pytest
from conftest import coco_gt

from harness.classes import CLASSES
from harness.eval import CocoMapEval, evaluate
from harness.predictions import PredictionFileError, Predictions, detection, xywh_to_xyxy, xyxy_to_xywh


GT_BOXES = {
    1: [(0, [10, 10, 40, 30]), (3, [60, 80, 90, 70])],
    2: [(0, [120, 20, 30, 30])],
    3: [],  # a normal image
}


def perfect_predictions(gt: dict) -> Predictions:
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in gt["annotations"]]
    return Predictions("perfect", None, [img["id"] for img in gt["images"]], dets)


def test_perfect_predictions_score_one(tmp_path):
    gt = coco_gt(GT_BOXES)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    scores = evaluate(path, perfect_predictions(gt))
    for key in ("map40", "ap50", "ap50_95", "voc_map40", "voc_map40_15"):
        assert scores[key] == pytest.approx(1.0), key
    assert scores["per_class"]["Aortic enlargement"] == pytest.approx(1.0)
    assert scores["per_class"]["Cardiomegaly"] == pytest.approx(1.0)
    assert scores["per_class"]["Nodule/Mass"] is None  # no GT of that class
    assert set(scores["per_class"]) == set(CLASSES)
    assert scores["voc_per_class_15"]["No finding"] == pytest.approx(1.0)
    assert scores["n_images"] == 3 and scores["n_detections"] == 3
    json.dumps(scores)  # metrics.json-ready


def test_wrong_classes_score_zero():
    gt = coco_gt(GT_BOXES)
    preds = perfect_predictions(gt)
    for det in preds.detections:
        det["category_id"] = 8  # right place, wrong class
    scores = evaluate(gt, preds)
    assert scores["map40"] == 0.0 and scores["voc_map40"] == 0.0 and scores["ap50_95"] == 0.0
    assert scores["per_class"]["Aortic enlargement"] == 0.0
    assert scores["per_class"]["Nodule/Mass"] is None  # predicted but absent from GT: not averaged


def test_known_precision_recall_curve():
    """4 GT boxes of one class; 5 detections by descending score: TP FP TP FP TP (one GT missed).
    recall    .25 .25  .50 .50 .75
    precision 1   1/2  2/3 1/2 3/5"""
    gt = coco_gt({1: [(0, [10, 10, 30, 30]), (0, [100, 100, 40, 40])],
                  2: [(0, [20, 20, 50, 50]), (0, [120, 120, 30, 30])]})
    far = [170, 170, 20, 20]
    dets = [(1, [10, 10, 30, 30], 0.9), (1, far, 0.8), (2, [20, 20, 50, 50], 0.7), (2, far, 0.6),
            (1, [100, 100, 40, 40], 0.5)]
    preds = Predictions("pr", None, [1, 2], [{"image_id": i, "category_id": 0, "bbox": b, "score": s}
                                             for i, b, s in dets])
    scores = evaluate(gt, preds)
    # COCO: 101 recall points 0, .01, ..., 1; precision at r = max precision at recall >= r (envelope
    # 1, 2/3, 2/3, 3/5, 3/5): r in [0, .25] -> 1 (26 points), (.25, .5] -> 2/3 (25), (.5, .75] -> 3/5 (25),
    # above .75 -> 0 (25 points).
    coco_by_hand = (26 * 1.0 + 25 * (2 / 3) + 25 * 0.6) / 101
    assert scores["map40"] == pytest.approx(coco_by_hand, abs=1e-9)
    assert scores["per_class"]["Aortic enlargement"] == pytest.approx(coco_by_hand, abs=1e-9)
    # VOC all-point: area under the same envelope = .25 * 1 + .25 * 2/3 + .25 * 3/5
    assert scores["voc_map40"] == pytest.approx(0.25 * (1 + 2 / 3 + 0.6), abs=1e-12)
    assert scores["map40"] != pytest.approx(scores["voc_map40"], abs=1e-3)  # the two metrics differ


def test_box_conversion_both_ways_and_xyxy_in_bbox_slot_is_wrong():
    assert xyxy_to_xywh(60, 70, 80, 100) == [60.0, 70.0, 20.0, 30.0]
    assert xywh_to_xyxy(60, 70, 20, 30) == [60.0, 70.0, 80.0, 100.0]
    assert xywh_to_xyxy(*xyxy_to_xywh(1.5, 2.5, 9.25, 7.75)) == [1.5, 2.5, 9.25, 7.75]
    assert detection(1, 0, (60, 70, 80, 100), 0.5)["bbox"] == [60.0, 70.0, 20.0, 30.0]
    gt = coco_gt({1: [(0, [60, 70, 20, 30])]})
    right = Predictions("ok", None, [1], [detection(1, 0, (60, 70, 80, 100), 0.9)])
    wrong = Predictions("xyxy", None, [1], [{"image_id": 1, "category_id": 0, "bbox": [60, 70, 80, 100],
                                              "score": 0.9}])
    assert evaluate(gt, right)["map40"] == pytest.approx(1.0)
    bad = evaluate(gt, wrong)
    assert bad["map40"] == 0.0 and bad["voc_map40"] == 0.0


def test_only_listed_images_are_scored_and_unknown_images_are_an_error():
    gt = coco_gt(GT_BOXES)
    # image 2's GT box is not counted as missed: only image 1 was predicted on
    preds = Predictions("part", None, [1], [{"image_id": 1, "category_id": 0, "bbox": [10, 10, 40, 30], "score": 1.0},
                                            {"image_id": 1, "category_id": 3, "bbox": [60, 80, 90, 70], "score": 1.0}])
    assert evaluate(gt, preds)["map40"] == pytest.approx(1.0)
    assert evaluate(gt, preds)["n_images"] == 1
    stray = Predictions("stray", None, [1, 99, 100], [])
    with pytest.raises(PredictionFileError, match=r"99, 100"):
        evaluate(gt, stray)


def test_no_detections_scores_zero_for_classes_with_gt():
    scores = evaluate(coco_gt(GT_BOXES), Predictions("empty", None, [1, 2, 3], []))
    assert scores["map40"] == 0.0 and scores["voc_map40"] == 0.0
    assert scores["per_class"]["Cardiomegaly"] == 0.0 and scores["per_class"]["ILD"] is None
    # normal image 3 still gets its "No finding" right (score 1 - 0 = 1 everywhere, so AP = 1/3 precision
    # at full recall for one normal among three images)
    assert scores["voc_per_class_15"]["No finding"] == pytest.approx(1 / 3)


def test_max_dets_is_raised_so_no_detection_is_cut():
    """150 confident false positives, then the one true positive: COCO's default maxDets=100 would
    drop the TP and score 0."""
    gt = coco_gt({1: [(0, [10, 10, 20, 20])]}, 2000)
    dets = [{"image_id": 1, "category_id": 0, "bbox": [100 + 10 * i, 500, 8, 8], "score": 0.9 - i * 1e-4}
            for i in range(150)]
    dets.append({"image_id": 1, "category_id": 0, "bbox": [10, 10, 20, 20], "score": 0.1})
    preds = Predictions("many", None, [1], dets)
    scores = evaluate(gt, preds)
    assert scores["max_dets"] == 151
    assert scores["map40"] > 0  # the TP at rank 151 counts
    assert scores["voc_map40"] == pytest.approx(1 / 151)
    with pytest.raises(ValueError, match="would cut"):
        evaluate(gt, preds, max_dets=100)


def test_staged_api_exposes_cocoeval():
    gt = coco_gt(GT_BOXES)
    ev = CocoMapEval(gt, perfect_predictions(gt))
    assert ev.cocoeval.params.iouThrs[0] == pytest.approx(0.4)
    assert list(ev.cocoeval.params.maxDets) == [1, 10, 100]
    ev.evaluate()
    assert ev.cocoeval.evalImgs, "evaluate() fills per-image results"
    ev.accumulate()
    assert ev.cocoeval.eval["precision"].shape == (11, 101, 14, 4, 3)
    assert ev.summarize()["map40"] == pytest.approx(1.0)


def test_fifteen_class_variant_normal_score_sources():
    gt = coco_gt(GT_BOXES)
    preds = perfect_predictions(gt)  # every abnormal image has a 0.9 box: "1-max" gives them 0.1
    default = evaluate(gt, preds)
    assert default["voc_per_class_15"]["No finding"] == pytest.approx(1.0)
    # a classifier that calls the normal image least normal: the class-14 TP ranks last
    flipped = evaluate(gt, preds, normal_score={1: 0.9, 2: 0.8, 3: 0.1})
    assert flipped["voc_per_class_15"]["No finding"] == pytest.approx(1 / 3)
    assert flipped["voc_map40_15"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert flipped["voc_map40"] == default["voc_map40"]  # the 14-class metric ignores it
    with pytest.raises(ValueError, match="lacks image ids"):
        evaluate(gt, preds, normal_score={1: 0.5})
