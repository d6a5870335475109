"""A small scored sweep on the toy dataset's real PNGs, with known errors, for the report's analysis tests.

Per fold (val = the fold's images): "sharp" finds every box exactly and adds one box on nothing per
image (background errors); "loose" finds the class-0 boxes but shifts every class-3 box to IoU ~0.3
(localisation errors) and calls one class-0 box class 2 (a classification error); the ensemble
"wbf" is "sharp" without its background boxes.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness import atomic
from harness.eval import evaluate
from harness.predictions import Predictions


def _val_gt(labels: dict, keys: list[str]) -> dict:
    images = [img for img in labels["images"] if img["image_key"] in set(keys)]
    ids = {img["id"] for img in images}
    return {**labels, "images": images, "annotations": [a for a in labels["annotations"] if a["image_id"] in ids]}


def _predictions(gt: dict, model: str) -> list[dict]:
    dets = []
    first_class0 = True
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        cat, score = ann["category_id"], 0.9 - 0.01 * (ann["id"] % 10)
        if model == "loose" and cat == 3:
            dets.append({"image_id": ann["image_id"], "category_id": 3, "bbox": [x + 0.55 * w, y, w, h], "score": score})
        elif model == "loose" and cat == 0 and first_class0:
            first_class0 = False
            dets.append({"image_id": ann["image_id"], "category_id": 2, "bbox": [x, y, w, h], "score": score})
        else:
            dets.append({"image_id": ann["image_id"], "category_id": cat, "bbox": [x, y, w, h], "score": score})
    if model == "sharp":
        for img in gt["images"]:
            dets.append({"image_id": img["id"], "category_id": 3, "bbox": [2.0, 2.0, 10.0, 10.0], "score": 0.95})
    return dets


def make_analysis_sweep(toy: dict, root: Path) -> Path:
    labels = json.loads(Path(toy["labels"]).read_text())
    folds = json.loads(Path(toy["folds"]).read_text())["folds"]
    for fold, keys in enumerate(folds):
        gt = _val_gt(labels, keys)
        ids = [img["id"] for img in gt["images"]]
        config = {"data": {"prepared_dir": str(toy["root"])}}
        for model in ("sharp", "loose"):
            run = root / model / f"fold{fold}"
            preds = Predictions(model, f"h{fold}", ids, _predictions(gt, model))
            atomic.write_json(run / "split" / "val.json", gt)
            preds.save(run / "predictions.json")
            atomic.write_json(run / "metrics.json", {**evaluate(gt, preds), "model": model, "variant": "v",
                                                     "fold": fold, "split_hash": f"h{fold}", "config": config})
        ens = root / "ensemble" / "wbf" / f"fold{fold}"
        preds = Predictions("wbf", f"h{fold}", ids, _predictions(gt, "wbf"))
        preds.save(ens / "predictions.json")
        atomic.write_json(ens / "metrics.json", {**evaluate(gt, preds), "model": "ensemble", "variant": "wbf",
                                                 "fold": fold, "split_hash": f"h{fold}",
                                                 "val_json": str(root / "sharp" / f"fold{fold}" / "split" / "val.json")})
    return root
