"""The VinBigData Kaggle metric: PASCAL VOC 2010 all-point mAP at IoU > 0.4.

Why a second metric next to pycocotools: the competition (and most public notebooks) scored with
the VOC definition, which differs from COCO in two ways that move the number:

* all-point interpolation (area under the monotone precision envelope at every recall step) instead
  of COCO's 101 sampled recall points;
* no per-image cap on detections.

Matching follows the VOC devkit: detections of a class, sorted by score over all images, each take
the ground-truth box of the same image with the highest IoU; IoU > ``iou_thr`` and that box not yet
taken -> true positive, otherwise false positive (a duplicate of a taken box is a false positive even
if a second box would match). Boxes are continuous x1,y1,x2,y2 (no VOC "+1" pixel convention).
mAP is the mean AP over the classes that have ground truth in the evaluated images.

The 15-class variant (``voc_map40_15``) adds class 14 "No finding", as the competition scored it:
each normal image (no ground-truth box) carries a ``0 0 1 1`` ground-truth box of class 14, and every
image gets one ``14 p 0 0 1 1`` prediction whose "normal" score ``p`` comes from ``normal_score``:
"1-max" (default: 1 - the image's highest abnormality score, 1 when it has none), a constant float,
or a mapping {image_id: p} (e.g. from a normal/abnormal classifier).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from harness.classes import NO_FINDING_ID, NO_FINDING_NAME, class_names, require_vinbigdata
from harness.eval.coco_map import check_images, load_gt
from harness.predictions import Predictions, xywh_to_xyxy

NORMAL_BOX = (0.0, 0.0, 1.0, 1.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2010+ all-point AP: area under the precision envelope (precision made non-increasing)."""
    mrec = np.concatenate([[0.0], np.asarray(recall, float), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, float), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every x1,y1,x2,y2 box in a (N,4) against every box in b (M,4) -> (N,M)."""
    a = np.asarray(boxes_a, float).reshape(-1, 4)
    b = np.asarray(boxes_b, float).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, np.finfo(float).tiny), 0.0)


def match_flags(dets: list[tuple[int, float, tuple]], gts: Mapping[int, np.ndarray], iou_thr: float = 0.4
                ) -> np.ndarray:
    """VOC devkit matching of one class: a bool per detection (in the order given), True = true positive.
    Detections are visited by descending score (ties keep the order given); each takes the unmatched
    ground-truth box of its image with the highest IoU when that IoU is above iou_thr. Which detections
    of an image match depends only on that image's detections, so dropping whole images keeps the
    flags of the others (what harness.nofinding's threshold grid relies on)."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # stable: ties keep input order
    taken = {image_id: np.zeros(len(boxes), bool) for image_id, boxes in gts.items()}
    flags = np.zeros(len(dets), bool)
    for i in order:
        image_id, _, box = dets[i]
        boxes = gts.get(image_id)
        if boxes is None or len(boxes) == 0:
            continue
        ious = iou_matrix(np.asarray(box)[None], boxes)[0]
        best = int(np.argmax(ious))
        if ious[best] > iou_thr and not taken[image_id][best]:
            taken[image_id][best] = True
            flags[i] = True
    return flags


def ap_from_flags(scores: np.ndarray, flags: np.ndarray, n_gt: int) -> tuple[float | None, np.ndarray, np.ndarray]:
    """(AP, recall, precision) of detections with these scores and true-positive flags (ties in score
    keep the order given); AP is None when the class has no ground truth."""
    if n_gt == 0:
        return None, np.zeros(0), np.zeros(0)
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    tp = np.asarray(flags, float)[order]
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1 - tp)
    recall = tp_cum / n_gt
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(float).eps)
    return voc_ap(recall, precision), recall, precision


def class_ap(dets: list[tuple[int, float, tuple]], gts: Mapping[int, np.ndarray], iou_thr: float = 0.4
             ) -> tuple[float | None, np.ndarray, np.ndarray]:
    """AP of one class. dets: (image_id, score, xyxy); gts: image_id -> (N,4) xyxy array.
    Returns (ap or None when the class has no ground truth, recall, precision)."""
    n_gt = sum(len(boxes) for boxes in gts.values())
    if n_gt == 0:
        return None, np.zeros(0), np.zeros(0)
    flags = match_flags(dets, gts, iou_thr)
    return ap_from_flags(np.array([d[1] for d in dets], float), flags, n_gt)


def normal_scores(preds: Predictions, normal_score: str | float | Mapping = "1-max") -> dict[int, float]:
    """The class-14 "No finding" score of every image in preds (see module doc)."""
    if isinstance(normal_score, Mapping):
        missing = [i for i in preds.image_ids if i not in normal_score]
        if missing:
            raise ValueError(f"normal_score mapping lacks image ids {missing[:10]}")
        return {i: float(normal_score[i]) for i in preds.image_ids}
    if isinstance(normal_score, (int, float)) and not isinstance(normal_score, bool):
        return {i: float(normal_score) for i in preds.image_ids}
    if normal_score != "1-max":
        raise ValueError(f"normal_score must be '1-max', a number or a mapping, not {normal_score!r}")
    top: dict[int, float] = defaultdict(float)
    for det in preds.detections:
        top[det["image_id"]] = max(top[det["image_id"]], float(det["score"]))
    return {i: 1.0 - top[i] for i in preds.image_ids}


def voc_map(gt_coco: str | Path | dict, preds: Predictions, iou_thr: float = 0.4, with_no_finding: bool = False,
            normal_score: str | float | Mapping = "1-max", no_finding: Mapping[int, float] | None = None) -> dict:
    """{"map": mean AP over classes with GT, "per_class": {name: AP or None}} on preds.image_ids.
    with_no_finding=True scores the 15-class Kaggle variant (class 14 "No finding", see module doc).
    `no_finding` {image_id: score}, when given, is the explicit list of class-14 entries instead of
    `normal_score`: only the images it names get a ``14 score 0 0 1 1`` (the output of a "No finding"
    policy, harness.nofinding)."""
    gt = load_gt(gt_coco)
    check_images(gt, preds, str(gt_coco) if not isinstance(gt_coco, dict) else "<dict>")
    image_ids = list(dict.fromkeys(preds.image_ids))
    wanted = set(image_ids)
    classes = class_names(gt)
    if with_no_finding:
        require_vinbigdata(classes, "the 15-class VOC metric")
    n_classes = len(classes) + (1 if with_no_finding else 0)
    gt_boxes: list[dict[int, list]] = [defaultdict(list) for _ in range(n_classes)]
    has_box: set[int] = set()
    for ann in gt.get("annotations", []):
        if ann["image_id"] in wanted and 0 <= ann["category_id"] < len(classes):
            gt_boxes[ann["category_id"]][ann["image_id"]].append(xywh_to_xyxy(*ann["bbox"]))
            has_box.add(ann["image_id"])
    dets: list[list] = [[] for _ in range(n_classes)]
    for det in preds.detections:
        dets[det["category_id"]].append((det["image_id"], float(det["score"]), tuple(xywh_to_xyxy(*det["bbox"]))))
    if with_no_finding:
        for image_id in image_ids:
            if image_id not in has_box:
                gt_boxes[NO_FINDING_ID][image_id].append(list(NORMAL_BOX))
        if no_finding is not None:
            unknown = [i for i in no_finding if i not in wanted]
            if unknown:
                raise ValueError(f"no_finding names image ids {unknown[:10]} that are not in the predictions")
            entries = {i: float(no_finding[i]) for i in image_ids if i in no_finding}
        else:
            entries = normal_scores(preds, normal_score)
        for image_id, p in entries.items():
            dets[NO_FINDING_ID].append((image_id, p, NORMAL_BOX))
    names = list(classes) + ([NO_FINDING_NAME] if with_no_finding else [])
    per_class = {}
    for cat in range(n_classes):
        arrays = {i: np.asarray(b, float).reshape(-1, 4) for i, b in gt_boxes[cat].items()}
        per_class[names[cat]] = class_ap(dets[cat], arrays, iou_thr)[0]
    present = [ap for ap in per_class.values() if ap is not None]
    return {"map": float(np.mean(present)) if present else 0.0, "per_class": per_class}
