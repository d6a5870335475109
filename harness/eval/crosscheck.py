"""Inputs for third-party evaluators, to cross-check the harness's metrics against them.

`map-boxes` ("Mean Average Precision for Boxes", the evaluator most VinBigData notebooks used)
scores only images present in its annotation table and matches each image's detections in the
order given. So: images without ground truth are passed as rows (class 14 "No finding" with the
0,0,1,1 box in the 15-class variant, the label "nan" - which it skips as a class - in the 14-class one),
and detections are passed sorted by score. Its columns are XMin, XMax, YMin, YMax (not x1,y1,x2,y2)
and it casts coordinates to float32. Equal scores: map-boxes collects a class's detections image by
image in its annotation table's order, then sorts them with numpy's unstable quicksort
(`np.argsort(-scores)`), so its AP with tied scores depends on the table's order and the sort's
internals; the harness keeps the detections' input order among equal scores (stable sort). `strict_order=True` hands map-boxes
the harness's order (each row's score replaced by its rank, highest first), so ties cannot move
its number; a check "equal to map-boxes" on real predictions (whose untrained-model scores often
tie) needs it.

IoU tie rules (a detection at IoU exactly 0.4 with a ground-truth box):
* harness VOC metric (harness.eval.voc_map, the Kaggle competition's rule): IoU > 0.4 -> a miss;
* pycocotools, mmdet ``eval_map`` and map-boxes: IoU >= 0.4 -> a hit.
"""
from __future__ import annotations

import numpy as np

from harness.classes import CLASSES, NO_FINDING_ID
from harness.eval.coco_map import load_gt
from harness.eval.voc_map import NORMAL_BOX, normal_scores
from harness.predictions import Predictions, xywh_to_xyxy


def map_boxes_arrays(gt_coco, preds: Predictions, with_no_finding: bool = False,
                     normal_score="1-max", strict_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(annotations N x 6, detections M x 7) object arrays for map_boxes.mean_average_precision_for_boxes,
    on preds.image_ids; labels are class names. strict_order: scores replaced by rank (see module doc)."""
    gt = load_gt(gt_coco)
    wanted = list(dict.fromkeys(preds.image_ids))
    wanted_set = set(wanted)
    ann, has_box = [], set()
    for a in gt.get("annotations", []):
        if a["image_id"] in wanted_set:
            x1, y1, x2, y2 = xywh_to_xyxy(*a["bbox"])
            ann.append([str(a["image_id"]), CLASSES[a["category_id"]], x1, x2, y1, y2])
            has_box.add(a["image_id"])
    for image_id in wanted:
        if image_id not in has_box:
            label = "No finding" if with_no_finding else "nan"  # map-boxes skips the "nan" label as a class
            ann.append([str(image_id), label, *_xxyy(NORMAL_BOX)])
    dets = sorted(preds.detections, key=lambda d: -float(d["score"]))
    rows = [[str(d["image_id"]), CLASSES[d["category_id"]], float(d["score"]), *_xxyy(xywh_to_xyxy(*d["bbox"]))]
            for d in dets]
    if with_no_finding:
        extra = sorted(normal_scores(preds, normal_score).items(), key=lambda kv: -kv[1])
        rows += [[str(i), "No finding", p, *_xxyy(NORMAL_BOX)] for i, p in extra]
        rows.sort(key=lambda r: -r[2])
    if strict_order:  # rows are sorted by score, ties in the harness's order: make that order strict
        for rank, row in enumerate(rows):
            row[2] = float(len(rows) - rank)
    return np.array(ann, dtype=object).reshape(-1, 6), np.array(rows, dtype=object).reshape(-1, 7)


def _xxyy(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, x2, y1, y2]


def map_boxes_map(gt_coco, preds: Predictions, iou_thr: float = 0.4, with_no_finding: bool = False,
                  normal_score="1-max", strict_order: bool = False) -> tuple[float, dict]:
    """map-boxes' (mAP, {class name: AP}) of preds (map-boxes must be installed: a test dependency)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints at import and while scoring
        from map_boxes import mean_average_precision_for_boxes

        ann, det = map_boxes_arrays(gt_coco, preds, with_no_finding, normal_score, strict_order)
        mean_ap, per_class = mean_average_precision_for_boxes(ann, det, iou_threshold=iou_thr, verbose=False)
    return float(mean_ap), {name: float(ap) for name, (ap, n) in per_class.items() if n > 0}


__all__ = ["map_boxes_arrays", "map_boxes_map", "NO_FINDING_ID"]
