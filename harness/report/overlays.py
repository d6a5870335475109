"""Prediction overlays: predicted vs ground-truth boxes drawn on a few images.

Why: a number says how good a model is, a picture says how it fails (shifted boxes, missed small
nodules, duplicates). This is the picture a radiologist checks first, so it keeps the two kinds of box
apart at a glance: ground truth = solid white-edged boxes labelled below, predictions = dashed
boxes coloured by class, labelled above with name and score; a legend names both.

Images are chosen deterministically: images with the most ground-truth boxes first (abnormal cases
are what a reader checks), then images with the most confident predictions.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.classes import CLASSES, class_names
from harness.eval.coco_map import load_gt
from harness.predictions import Predictions
from harness.report.charts import _pyplot, save_figure
from harness.split import ImageRef

GT_COLOUR = "#00FF66"


def class_colour(category_id: int):
    plt = _pyplot()
    return plt.get_cmap("tab20")(category_id % 20)


def _images_from_gt(gt: dict, image_root: Path | None) -> dict[int, tuple[Path, str]]:
    root = Path(image_root) if image_root is not None else Path(".")
    return {img["id"]: (root / img["file_name"], str(img.get("image_key", img["id"]))) for img in gt["images"]}


def read_gray(path: Path) -> np.ndarray:
    import cv2

    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise FileNotFoundError(f"overlay: cannot read image {path}")
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return pixels


def draw_overlay(pixels: np.ndarray, gt_boxes: list[dict], dets: list[dict], title: str, path: Path,
                 classes: Sequence[str] = CLASSES) -> Path:
    """One overlay PNG: grayscale image, GT (solid) and predicted (dashed) boxes, labels (`classes`:
    the names by category id), legend."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    height, width = pixels.shape[:2]
    scale = 7.0 / max(width, height)
    fig, ax = plt.subplots(figsize=(max(4.0, width * scale), max(4.0, height * scale) + 0.6))
    ax.imshow(pixels, cmap="gray", interpolation="nearest")
    font = 8.0  # points on a ~7-inch figure: legible at any image size
    for ann in gt_boxes:
        x, y, w, h = ann["bbox"]
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=GT_COLOUR, lw=2.2, ls="-"))
        ax.text(x, min(y + h, height - 1), f"GT {classes[ann['category_id']]}", color="black", fontsize=font,
                va="top", ha="left", clip_on=True,
                bbox={"facecolor": GT_COLOUR, "alpha": 0.8, "pad": 1.0, "edgecolor": "none"})
    for det in sorted(dets, key=lambda d: d["score"]):
        x, y, w, h = det["bbox"]
        colour = class_colour(det["category_id"])
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, lw=1.8, ls="--"))
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ax.text(x, max(y, 0), f"{classes[det['category_id']]} {det['score']:.2f}", fontsize=font,
                color="black" if luminance > 0.6 else "white",
                va="bottom", ha="left", clip_on=True,
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 1.0, "edgecolor": "none"})
    handles = [Line2D([], [], color=GT_COLOUR, lw=2.2, ls="-", label="ground truth"),
               Line2D([], [], color="0.3", lw=1.8, ls="--", label="prediction (colour = class)")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path, dpi=max(110, int(min(max(width, height), 1024) / 7.0)))


def write_overlays(preds: Predictions, gt_coco: str | Path | dict | None, image_root: str | Path | None,
                   out_dir: str | Path, n: int = 6, score_thr: float = 0.3,
                   images: Sequence[ImageRef] | None = None, top_k: int = 3,
                   classes: Sequence[str] | None = None) -> list[Path]:
    """Overlays for up to `n` of the predicted images into `out_dir` (one PNG each).

    gt_coco: ground truth (path or dict; file_name relative to `image_root`), or None for unlabeled
    images, then `images` (ImageRefs) give the paths. Predictions scoring >= `score_thr` are drawn,
    and at least the image's `top_k` best ones whatever their score (weakly trained models and
    score-averaging ensembles rarely pass a fixed threshold, and an empty picture tells nothing).
    An unreadable image is reported in the log and skipped; the others are still drawn. `classes`: the
    class names by category id (default: the ground truth's categories, else VinBigData's)."""
    log = logging.getLogger(__name__)
    out_dir = Path(out_dir)
    gt = load_gt(gt_coco) if gt_coco is not None else {"images": [], "annotations": []}
    classes = tuple(classes) if classes is not None else class_names(gt)
    paths: dict[int, tuple[Path, str]] = _images_from_gt(gt, Path(image_root) if image_root else None)
    for ref in images or []:
        paths[ref.id] = (Path(ref.path), Path(ref.path).stem)
    gt_by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in gt["annotations"]:
        gt_by_image[ann["image_id"]].append(ann)
    all_by_image: dict[int, list[dict]] = defaultdict(list)
    for det in preds.detections:
        all_by_image[det["image_id"]].append(det)
    dets_by_image: dict[int, list[dict]] = defaultdict(list)
    for image_id, dets in all_by_image.items():
        ranked = sorted(dets, key=lambda d: -d["score"])
        dets_by_image[image_id] = [d for i, d in enumerate(ranked) if i < top_k or d["score"] >= score_thr]
    candidates = [i for i in dict.fromkeys(preds.image_ids) if i in paths]
    candidates.sort(key=lambda i: (-len(gt_by_image[i]), -max((d["score"] for d in dets_by_image[i]), default=0), i))
    written = []
    for image_id in candidates[: max(0, int(n))]:
        png, key = paths[image_id]
        try:
            pixels = read_gray(png)
        except FileNotFoundError as err:
            log.error("%s", err)
            continue
        title = (f"{key} ({preds.source}) - {len(gt_by_image[image_id])} GT boxes, "
                 f"{len(dets_by_image[image_id])} predictions (score >= {score_thr:g}, at least the top {top_k})")
        written.append(draw_overlay(pixels, gt_by_image[image_id], dets_by_image[image_id], title,
                                    out_dir / f"{key}.png", classes))
    return written
