"""Ensembling prediction files (models, folds, TTA passes) with ensemble-boxes.

Why a stage of its own: an ensemble must be scored exactly like a model, so it reads and writes the
same `Predictions` format and the scorer cannot tell the difference. Methods (ensemble-boxes 1.0.9):

* ``wbf``       weighted_boxes_fusion (default): clusters same-class boxes with IoU > iou_thr across
                runs and averages their coordinates weighted by score. Score semantics (``conf_type``):
                "avg" = mean score of the cluster x min(n_runs, n_boxes) / sum(weights) -- a box found
                by only one of two equally weighted runs keeps half its score; "max" = the highest
                weighted score / max weight; "box_and_model_avg", "absent_model_aware_avg" see the
                library. With one run, or a run fused with an identical copy of itself, "avg"
                reproduces every (non-overlapping) box and its score.
* ``nms``       plain NMS over the union of the runs (``weights`` rescale scores by w_i / sum(w)).
* ``soft_nms``  Gaussian soft-NMS (``sigma``, ``soft_thresh``).
* ``nmw``       non_maximum_weighted (alias ``non_maximum_weighted``).

ensemble-boxes wants x1,y1,x2,y2 normalised to [0, 1]; boxes are normalised per image with the
image's PNG width/height (from a COCO file), clipped to [0, 1] (zero-area boxes after clipping are
dropped), and mapped back to pixels afterwards.

All inputs must describe the same images and the same split (split hash): otherwise the fusion
would silently be partial, so it is a PredictionFileError naming the files instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from harness.predictions import PredictionFileError, Predictions, detection

METHODS = ("wbf", "nms", "soft_nms", "nmw")
ALIASES = {"weighted_boxes_fusion": "wbf", "non_maximum_weighted": "nmw"}
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


def image_sizes_from_coco(coco_json: str | Path | dict) -> dict[int, tuple[int, int]]:
    """{image id: (width, height)} from a COCO file's `images`."""
    coco = coco_json if isinstance(coco_json, dict) else json.loads(Path(coco_json).read_text())
    return {int(img["id"]): (int(img["width"]), int(img["height"])) for img in coco["images"]}


def check_compatible(preds: Sequence[Predictions], names: Sequence[str]) -> None:
    """Every input must list the same image ids and carry the same split hash."""
    if not preds:
        raise PredictionFileError("nothing to fuse: no prediction files given")
    ref_ids, ref_hash = set(preds[0].image_ids), preds[0].split_hash
    for other, name in zip(preds[1:], names[1:]):
        if other.split_hash != ref_hash:
            raise PredictionFileError(
                f"cannot fuse {names[0]} (split {ref_hash}) with {name} (split {other.split_hash}): "
                "they were predicted on different splits"
            )
        ids = set(other.image_ids)
        if ids != ref_ids:
            only_a, only_b = sorted(ref_ids - ids), sorted(ids - ref_ids)
            raise PredictionFileError(
                f"cannot fuse {names[0]} and {name}: different image sets "
                f"({len(only_a)} only in the first, e.g. {only_a[:5]}; {len(only_b)} only in the second, "
                f"e.g. {only_b[:5]})"
            )


def _normalised(dets: list[dict], width: int, height: int, skip_box_thr: float):
    """(boxes (N,4) in [0,1], scores, labels) of one run on one image; zero-area boxes dropped."""
    rows = []
    for det in dets:
        if det["score"] < skip_box_thr:
            continue
        x, y, w, h = det["bbox"]
        box = np.clip([x / width, y / height, (x + w) / width, (y + h) / height], 0.0, 1.0)
        if box[2] > box[0] and box[3] > box[1]:
            rows.append((box, float(det["score"]), int(det["category_id"])))
    if not rows:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0)
    boxes, scores, labels = zip(*rows)
    return np.array(boxes), np.array(scores), np.array(labels, float)


def _fuse_one(boxes, scores, labels, method, iou_thr, skip_box_thr, weights, conf_type, sigma, soft_thresh):
    import ensemble_boxes as eb

    if sum(len(b) for b in boxes) == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0)
    if method == "wbf":
        return eb.weighted_boxes_fusion(boxes, scores, labels, weights=weights, iou_thr=iou_thr,
                                        skip_box_thr=skip_box_thr, conf_type=conf_type)
    if method == "nmw":
        return eb.non_maximum_weighted(boxes, scores, labels, weights=weights, iou_thr=iou_thr,
                                       skip_box_thr=skip_box_thr)
    # nms/soft_nms concatenate the runs: leave out empty ones (their weights too).
    keep = [i for i, b in enumerate(boxes) if len(b)]
    sub_weights = None if weights is None else [weights[i] for i in keep]
    args = ([boxes[i] for i in keep], [np.array(scores[i], float) for i in keep], [labels[i] for i in keep])
    if method == "nms":
        return eb.nms(*args, iou_thr=iou_thr, weights=sub_weights)
    return eb.soft_nms(*args, iou_thr=iou_thr, sigma=sigma, thresh=soft_thresh, weights=sub_weights)


def fuse_predictions(preds: Sequence[Predictions], image_sizes: dict[int, tuple[int, int]], method: str = "wbf",
                     iou_thr: float = 0.55, skip_box_thr: float = 0.0, weights: Sequence[float] | None = None,
                     conf_type: str = "avg", names: Sequence[str] | None = None, source: str | None = None,
                     sigma: float = 0.5, soft_thresh: float = 0.001, progress: bool = True) -> Predictions:
    """Fuse runs on the same images into one Predictions (PNG pixels, same split hash).

    image_sizes: {image id: (width, height)} of every predicted image (see image_sizes_from_coco).
    names: how to call each input in errors (file paths); default "run 0", "run 1", ...
    """
    preds = list(preds)
    names = list(names) if names is not None else [f"run {i} ({p.source})" for i, p in enumerate(preds)]
    if len(names) != len(preds):
        raise ValueError(f"{len(names)} names for {len(preds)} prediction sets")
    method = ALIASES.get(method, method)
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
    if conf_type not in CONF_TYPES:  # ensemble-boxes calls exit() on an unknown conf_type
        raise ValueError(f"unknown conf_type {conf_type!r}; choose one of {', '.join(CONF_TYPES)}")
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != len(preds):
            raise ValueError(f"{len(weights)} weights for {len(preds)} prediction sets ({', '.join(names)})")
    check_compatible(preds, names)
    image_ids = list(preds[0].image_ids)
    missing = [i for i in image_ids if i not in image_sizes]
    if missing:
        raise PredictionFileError(f"no image size for image ids {missing[:10]} of {names[0]} (wrong COCO file?)")
    per_run: list[dict[int, list[dict]]] = []
    for run in preds:
        by_image: dict[int, list[dict]] = {}
        for det in run.detections:
            by_image.setdefault(det["image_id"], []).append(det)
        per_run.append(by_image)
    fused: list[dict] = []
    for image_id in tqdm(image_ids, desc=f"fuse {method}", unit="img", disable=not progress, leave=False):
        width, height = image_sizes[image_id]
        parts = [_normalised(run.get(image_id, []), width, height, skip_box_thr) for run in per_run]
        boxes, scores, labels = (list(x) for x in zip(*parts))
        out_boxes, out_scores, out_labels = _fuse_one(boxes, scores, labels, method, iou_thr, skip_box_thr,
                                                      weights, conf_type, sigma, soft_thresh)
        for box, score, label in zip(out_boxes, out_scores, out_labels):
            xyxy = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
            fused.append(detection(image_id, int(label), xyxy, float(score)))
    return Predictions(source or f"ensemble:{method}", preds[0].split_hash, image_ids, fused)


def fuse_files(paths: Sequence[str | Path], coco_json: str | Path, out_path: str | Path | None = None,
               **kwargs) -> Predictions:
    """Load prediction files, fuse them (see fuse_predictions for kwargs), optionally save."""
    preds = [Predictions.load(p) for p in paths]
    kwargs.setdefault("names", [str(p) for p in paths])
    fused = fuse_predictions(preds, image_sizes_from_coco(coco_json), **kwargs)
    if out_path is not None:
        fused.save(out_path)
    return fused
