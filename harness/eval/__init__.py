"""Scoring: mAP@0.4 by pycocotools (coco_map), the Kaggle VOC metric (voc_map), and `evaluate`
(harness.eval.scoring), the one call that gives every number a run's metrics.json records.

    from harness.eval import evaluate
    scores = evaluate("runs/x/yolov5/fold0/split/val.json", Predictions.load(".../predictions.json"))
"""
from harness.eval.coco_map import IOU_THRS, CocoMapEval, coco_map, load_gt
from harness.eval.scoring import evaluate
from harness.eval.voc_map import class_ap, iou_matrix, normal_scores, voc_ap, voc_map

__all__ = ["evaluate", "CocoMapEval", "coco_map", "voc_map", "voc_ap", "class_ap", "iou_matrix",
           "normal_scores", "load_gt", "IOU_THRS"]
