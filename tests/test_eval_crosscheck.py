"""The VOC metric against a third evaluator (map-boxes) and every evaluator's rule at IoU exactly 0.4."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import random_case
from test_eval_voc import mmdet_inputs

from harness.classes import coco_categories
from harness.eval import coco_map, voc_map
from harness.eval.crosscheck import map_boxes_map
from harness.predictions import Predictions


def _float32_boxes(preds: Predictions, gt: dict):
    """map-boxes casts coordinates to float32: give every evaluator the same float32 boxes."""
    def f32(b):
        x1, y1, w, h = (float(np.float32(v)) for v in (b[0], b[1], b[0] + b[2], b[1] + b[3]))
        return [x1, y1, w - x1, h - y1]
    for d in preds.detections:
        d["bbox"] = f32(d["bbox"])
    for a in gt["annotations"]:
        a["bbox"] = f32(a["bbox"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_voc_metric_equals_map_boxes_on_random_cases(seed):
    gt, preds = random_case(seed, n_images=15)
    gt["images"].append({"id": 99, "file_name": "99.png", "width": 256, "height": 256})  # normal image, FPs only
    preds.image_ids.append(99)
    preds.detections.append({"image_id": 99, "category_id": 0, "bbox": [10, 10, 40, 40], "score": 0.995})
    _float32_boxes(preds, gt)
    ours = voc_map(gt, preds, 0.4)
    theirs, per_class = map_boxes_map(gt, preds, 0.4)
    assert 0.05 < ours["map"] < 0.95
    assert ours["map"] == pytest.approx(theirs, abs=1e-9)
    for name, ap in per_class.items():
        assert ours["per_class"][name] == pytest.approx(ap, abs=1e-9), name
    ours15 = voc_map(gt, preds, 0.4, with_no_finding=True)
    theirs15, per_class15 = map_boxes_map(gt, preds, 0.4, with_no_finding=True)
    assert ours15["map"] == pytest.approx(theirs15, abs=1e-9)
    assert ours15["per_class"]["No finding"] == pytest.approx(per_class15["No finding"], abs=1e-9)


def test_unsorted_detections_or_missing_normal_rows_would_change_map_boxes():
    """Why map_boxes_arrays sorts and adds normal images: without it map-boxes gives other numbers."""
    import contextlib
    import io

    from harness.eval.crosscheck import map_boxes_arrays
    gt, preds = random_case(3, n_images=15)
    gt["images"].append({"id": 99, "file_name": "99.png", "width": 256, "height": 256})
    preds.image_ids.append(99)
    preds.detections.append({"image_id": 99, "category_id": 0, "bbox": [10, 10, 40, 40], "score": 0.995})
    ann, det = map_boxes_arrays(gt, preds)
    with contextlib.redirect_stdout(io.StringIO()):
        from map_boxes import mean_average_precision_for_boxes
        right = mean_average_precision_for_boxes(ann, det, 0.4, verbose=False)[0]
        no_normal = mean_average_precision_for_boxes(ann[[r[0] != "99" for r in ann]], det, 0.4, verbose=False)[0]
        unsorted = mean_average_precision_for_boxes(ann, det[::-1], 0.4, verbose=False)[0]
    assert no_normal != pytest.approx(right, abs=1e-6)
    assert unsorted != pytest.approx(right, abs=1e-6)


def test_iou_exactly_point_four_on_integer_boxes():
    """GT [0,0,10,10], detection [0,0,10,4]: IoU = 40/100 = 0.4 exactly. Kaggle/VOC here: > 0.4 (miss);
    pycocotools, mmdet eval_map, map-boxes: >= 0.4 (hit)."""
    from mmdet.evaluation.functional import eval_map

    gt = {"images": [{"id": 1, "file_name": "1.png", "width": 64, "height": 64}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
          "categories": coco_categories()}
    preds = Predictions("tie", None, [1], [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 4], "score": 0.9}])
    assert 40 / 100 == 0.4
    assert voc_map(gt, preds, 0.4)["map"] == 0.0                       # IoU > 0.4 required
    assert coco_map(gt, preds)["map40"] == pytest.approx(1.0)          # IoU >= 0.4
    assert map_boxes_map(gt, preds, 0.4)[0] == pytest.approx(1.0)      # IoU >= 0.4
    det_results, annotations = mmdet_inputs(gt, preds)
    mean_ap, _ = eval_map(det_results, annotations, iou_thr=0.4, eval_mode="area", nproc=1, logger="silent")
    assert mean_ap == pytest.approx(1.0)                               # IoU >= 0.4
    # one pixel more overlap and all four agree
    preds.detections[0]["bbox"] = [0, 0, 10, 5]
    assert voc_map(gt, preds, 0.4)["map"] == 1.0 == map_boxes_map(gt, preds, 0.4)[0]


def test_tied_scores_go_to_map_boxes_in_the_harness_order():
    """With equal scores, map-boxes' order comes from its annotation table's image order and an unstable
    quicksort; strict_order hands it the harness's (stable, input) order, so the two agree on
    predictions full of ties (as a briefly trained model's are)."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in range(1, 41)]
    anns = [{"id": k, "image_id": i, "category_id": 0, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}
            for k, i in enumerate(range(40, 0, -1))]  # annotation rows in reverse image order
    gt = {"images": images, "annotations": anns, "categories": coco_categories()}
    dets = [{"image_id": i, "category_id": 0, "bbox": [10, 10, 30, 30] if i < 10 else [60, 60, 30, 30],
             "score": 0.5} for i in range(1, 41)]  # one score; hits on images 1-9, misses elsewhere
    preds = Predictions("ties", None, list(range(1, 41)), dets)
    ours = voc_map(gt, preds, 0.4)["map"]
    assert ours == pytest.approx(0.225)  # the 9 hits ranked first, as given
    theirs, _ = map_boxes_map(gt, preds, 0.4, strict_order=True)
    assert ours == pytest.approx(theirs, abs=1e-9)
    raw, _ = map_boxes_map(gt, preds, 0.4)
    assert raw != pytest.approx(ours, abs=1e-3)  # why strict_order: its own tie order ranks the misses first
    ours15 = voc_map(gt, preds, 0.4, with_no_finding=True)["map"]
    theirs15, _ = map_boxes_map(gt, preds, 0.4, with_no_finding=True, strict_order=True)
    assert ours15 == pytest.approx(theirs15, abs=1e-9)
