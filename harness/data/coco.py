"""Fused boxes (DICOM px) + manifest → the shared COCO labels file (PNG px), per docs/architecture.md.

Every converted train image is listed — also those without findings, which are the negatives every
framework must see. Image ids are 1-based in image_id order so they are stable across reruns.
"""
from __future__ import annotations

import pandas as pd

from harness.classes import coco_categories


def build_coco(fused: pd.DataFrame, manifest: pd.DataFrame, info: dict | None = None,
               labeled: set[str] | None = None, categories: list[dict] | None = None) -> dict:
    """COCO dict of the manifest's ok train images with `fused` boxes scaled by (scale_x, scale_y).

    `labeled`: image ids with at least one (kept) train.csv row; other train DICOMs are left out
    rather than passed off as normal. Boxes are clipped to the PNG; boxes of images that did not
    convert are left out (the caller reports how many). `categories`: the dataset's label set
    (default VinBigData's 14 classes).
    """
    train = manifest[(manifest["split"] == "train") & (manifest["status"] == "ok")].sort_values("image_id")
    if labeled is not None:
        train = train[train["image_id"].isin(labeled)]
    images, index = [], {}
    for i, row in enumerate(train.itertuples(), start=1):
        images.append({"id": i, "file_name": row.png, "width": int(row.width), "height": int(row.height),
                       "image_key": row.image_id, "orig_width": int(row.orig_width),
                       "orig_height": int(row.orig_height)})
        index[row.image_id] = (i, float(row.scale_x), float(row.scale_y), int(row.width), int(row.height))
    annotations = []
    for box in fused.itertuples():
        if box.image_id not in index:
            continue
        image_id, sx, sy, w, h = index[box.image_id]
        x1, x2 = min(max(box.x_min * sx, 0.0), w), min(max(box.x_max * sx, 0.0), w)
        y1, y2 = min(max(box.y_min * sy, 0.0), h), min(max(box.y_max * sy, 0.0), h)
        bw, bh = round(x2 - x1, 2), round(y2 - y1, 2)
        if bw <= 0 or bh <= 0:
            continue
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(box.class_id),
                            "bbox": [round(x1, 2), round(y1, 2), bw, bh], "area": round(bw * bh, 2),
                            "iscrowd": 0, "num_readers": int(box.num_readers)})
    return {"info": dict(info or {}), "images": images, "annotations": annotations,
            "categories": categories if categories is not None else coco_categories()}
