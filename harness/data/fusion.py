"""Multi-reader fusion: three radiologists' boxes per image → one training box set.

Methods: "wbf" (ensemble_boxes.weighted_boxes_fusion, one box list per reader, what the top Kaggle
teams used at iou 0.4), "nms" (keep one of each overlapping group), "none" (every reader's box).
Boxes are normalised per image before fusion (ensemble_boxes wants [0, 1]) and mapped back to DICOM
pixels after. An image read by a single (remaining) reader keeps that reader's boxes as drawn:
fusion merges across readers. Each fused box records `num_readers`: how many distinct readers drew a box in it —
the agreement signal used by stats and available to training.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.classes import NO_FINDING_ID

METHODS = ("wbf", "nms", "none")
FUSED_COLUMNS = ("image_id", "class_id", "x_min", "y_min", "x_max", "y_max", "num_readers")


def filter_readers(rows: pd.DataFrame, keep: Iterable[str] | None = None, drop: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows of the readers in `keep` (all if None) and not in `drop`."""
    mask = np.ones(len(rows), dtype=bool)
    if keep:
        mask &= rows["rad_id"].isin(list(keep)).to_numpy()
    if drop:
        mask &= ~rows["rad_id"].isin(list(drop)).to_numpy()
    return rows[mask]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def _fuse_image(image_id: str, boxes_px: np.ndarray, labels: np.ndarray, readers: np.ndarray, method: str,
                iou_thr: float, skip_box_thr: float, scale: np.ndarray) -> list[tuple]:
    """Fuse one image's boxes (N×4 pixels, class ids, reader ids) → rows of FUSED_COLUMNS."""
    from ensemble_boxes import nms, weighted_boxes_fusion

    names = np.unique(readers)
    if len(names) == 1:  # nothing to fuse across readers: a single reader's boxes stay as drawn
        return [(image_id, int(c), *map(float, b), 1) for b, c in zip(boxes_px, labels)]
    norm = boxes_px / scale
    boxes_list = [norm[readers == r] for r in names]
    labels_list = [labels[readers == r] for r in names]
    scores_list = [np.ones(len(b)) for b in boxes_list]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ensemble_boxes warns on clipped/zero boxes; input is validated
        if method == "wbf":
            # box_and_model_avg: score = (distinct readers in the cluster) / (readers) with all scores 1
            boxes, scores, out_labels = weighted_boxes_fusion(
                boxes_list, scores_list, labels_list, iou_thr=iou_thr, skip_box_thr=skip_box_thr,
                conf_type="box_and_model_avg")
            counts = np.rint(scores * len(names)).astype(int)
        else:
            boxes, scores, out_labels = nms(boxes_list, scores_list, labels_list, iou_thr=iou_thr)
            counts = np.zeros(len(boxes), dtype=int)
            for i, (box, label) in enumerate(zip(boxes, out_labels)):  # readers overlapping the kept box
                for b, lab in zip(boxes_list, labels_list):
                    same = b[lab == label]
                    counts[i] += bool(len(same) and (_iou(box, same) >= iou_thr).any())
    return [(image_id, int(label), *(np.asarray(box, dtype=float) * scale).tolist(), max(1, int(count)))
            for box, label, count in zip(boxes, out_labels, counts)]


def fuse_readers(rows: pd.DataFrame, method: str = "wbf", iou_thr: float = 0.4, skip_box_thr: float = 0.0,
                 sizes: dict[str, tuple[int, int]] | None = None, readers_keep: Iterable[str] | None = None,
                 readers_drop: Iterable[str] | None = None, progress: bool = False) -> pd.DataFrame:
    """Fuse finding rows (image_id, class_id, rad_id, x_min..y_max; "No finding" rows are ignored).

    `sizes` ({image_id: (h, w)}) normalises coordinates; without it each image is normalised by its
    largest coordinate (fusion results do not depend on the scale). Returns FUSED_COLUMNS in the input's
    pixel coordinates, sorted by image_id, class_id.
    """
    if method not in METHODS:
        raise ValueError(f"fusion method must be one of {METHODS}, got {method!r}")
    rows = filter_readers(rows, readers_keep, readers_drop)
    rows = rows[rows["class_id"] != NO_FINDING_ID]
    if method == "none" or rows.empty:
        out = rows[["image_id", "class_id", "x_min", "y_min", "x_max", "y_max"]].copy()
        out["num_readers"] = 1
        return out.sort_values(["image_id", "class_id"], kind="stable").reset_index(drop=True)
    rows = rows.sort_values("image_id", kind="stable")
    ids = rows["image_id"].to_numpy()
    coords = rows[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)
    labels = rows["class_id"].to_numpy(int)
    readers = rows["rad_id"].to_numpy(str)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    fused = []
    for a, b in tqdm(zip(starts, ends), total=len(starts), desc=f"fusion ({method})", unit="img", disable=not progress):
        image_id = ids[a]
        if sizes is not None and image_id in sizes:
            h, w = sizes[image_id]
        else:
            w, h = float(coords[a:b, 2].max()), float(coords[a:b, 3].max())
        scale = np.array([w, h, w, h], dtype=float)
        fused += _fuse_image(image_id, coords[a:b], labels[a:b], readers[a:b], method, iou_thr, skip_box_thr, scale)
    out = pd.DataFrame(fused, columns=list(FUSED_COLUMNS))
    return out.sort_values(["image_id", "class_id", "x_min", "y_min"], kind="stable").reset_index(drop=True)


def counts_per_class(fused: pd.DataFrame) -> pd.Series:
    """Number of fused boxes per class id (0-13, zeros included)."""
    return fused["class_id"].value_counts().reindex(range(NO_FINDING_ID), fill_value=0).sort_index()
