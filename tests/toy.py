"""A tiny, easy detection dataset in the prepared-dataset layout, for adapter and scoring tests.

Gray noisy background; class 3 ("Cardiomegaly") is a large bright disc low in the image, class 0
("Aortic enlargement") a smaller bright square high in the image on half of the abnormal images.
Both classes appear in the train and val images of each of the 2 folds. Easy enough that a few CPU
epochs learn it, so a learning test can compare trained vs untrained mAP.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.classes import coco_categories


def make_toy_dataset(root: Path, n_images: int = 24, size: int = 128, seed: int = 0, k: int = 2) -> dict:
    """Write root/images/<size>/*.png, root/labels/toy.json (COCO), root/folds/toy-k<k>.json.
    Returns {"labels": path, "folds": path, "root": root}."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    img_dir = root / "images" / str(size)
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n_images):
        key = f"toy{i:04d}"
        arr = rng.normal(70, 12, (size, size)).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        boxes = []
        if i % 4 != 3:  # every 4th image is normal
            r = int(size * rng.uniform(0.14, 0.2))
            cx, cy = int(size * rng.uniform(0.35, 0.65)), int(size * rng.uniform(0.6, 0.75))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(rng.integers(200, 240)))
            boxes.append((3, cx - r, cy - r, cx + r, cy + r))
            if i % 4 in (0, 1):  # half the abnormal images, in both folds
                s = int(size * rng.uniform(0.08, 0.12))
                x, y = int(size * rng.uniform(0.15, 0.7)), int(size * rng.uniform(0.1, 0.25))
                draw.rectangle([x, y, x + s, y + s], fill=int(rng.integers(220, 255)))
                boxes.append((0, x, y, x + s, y + s))
        img.save(img_dir / f"{key}.png")
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"images/{size}/{key}.png", "width": size,
                       "height": size, "image_key": key, "orig_width": size, "orig_height": size})
        for cat, x1, y1, x2, y2 in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0, "num_readers": 3})
    coco = {"info": {"description": "toy"}, "images": images, "annotations": annotations,
            "categories": coco_categories()}
    labels = root / "labels" / "toy.json"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text(json.dumps(coco))
    keys = [img["image_key"] for img in images]
    folds = [keys[f::k] for f in range(k)]
    folds_doc = {"scheme": "toy", "k": k, "seed": seed, "labels": "labels/toy.json", "folds": folds,
                 "hash": hashlib.sha256(json.dumps(folds).encode()).hexdigest()}
    folds_path = root / "folds" / f"toy-k{k}.json"
    folds_path.parent.mkdir(parents=True, exist_ok=True)
    folds_path.write_text(json.dumps(folds_doc))
    return {"labels": labels, "folds": folds_path, "root": root}

