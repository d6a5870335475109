"""`evaluate`: one call gives every number a run's metrics.json records.

    from harness.eval import evaluate
    scores = evaluate("runs/x/yolov5/fold0/split/val.json", Predictions.load(".../predictions.json"))

Only the images listed in ``preds.image_ids`` are scored (a fold's val images); images the
predictions name but the ground truth lacks are an error, never silently skipped.

* ``map40``, ``per_class``, ``ap50``, ``ap50_95``: pycocotools COCOeval (bbox), see coco_map.py for
  the IoU thresholds and the raised ``maxDets`` (recorded as ``max_dets``).
* ``voc_map40``, ``voc_per_class``: the Kaggle VOC all-point metric over the 14 lesion classes.
* ``voc_map40_15``, ``voc_per_class_15``: the 15-class Kaggle variant with "No finding"
  (``normal_score`` picks the class-14 score source, default 1 - max abnormality score); None for a
  dataset whose label set has no "No finding" class (harness.classes, e.g. NIH ChestX-ray14).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.classes import class_names, is_vinbigdata
from harness.eval.coco_map import coco_map, load_gt
from harness.eval.voc_map import voc_map
from harness.predictions import Predictions


def evaluate(gt_coco: str | Path | dict, preds: Predictions, max_dets: int | None = None,
             normal_score: str | float | Mapping = "1-max") -> dict:
    """All metrics of `preds` against the ground-truth COCO (path or dict); see the module doc.
    max_dets None = automatic (largest per-image detection count, at least 100)."""
    gt = load_gt(gt_coco)
    where = gt_coco if not isinstance(gt_coco, dict) else "<dict>"
    try:
        coco = coco_map(gt, preds, max_dets)
        voc = voc_map(gt, preds, 0.4)
        with_no_finding = is_vinbigdata(class_names(gt))
        voc15 = voc_map(gt, preds, 0.4, with_no_finding=True, normal_score=normal_score) if with_no_finding \
            else {"map": None, "per_class": None}
    except ValueError as err:
        raise type(err)(f"{err} [ground truth: {where}]") from err
    return {
        "map40": coco["map40"],
        "per_class": coco["per_class"],
        "ap50": coco["ap50"],
        "ap50_95": coco["ap50_95"],
        "max_dets": coco["max_dets"],
        "voc_map40": voc["map"],
        "voc_per_class": voc["per_class"],
        "voc_map40_15": voc15["map"],
        "voc_per_class_15": voc15["per_class"],
        "n_images": len(set(preds.image_ids)),
        "n_detections": len(preds.detections),
    }
