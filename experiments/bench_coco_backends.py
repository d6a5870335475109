"""Benchmark: scoring one fold at VinBigData scale with pycocotools vs faster-coco-eval, and the
report's 1,000-resample bootstrap, in the same run.

The case: `--images` val images (default 3,000, a VinBigData fold is ~3,000), `--dets` detections per
image (default 100, a typical max_det), 14 classes, 0-6 ground-truth boxes per image (~70 % of the
images without findings, as in VinBigData), detections scattered around the boxes (some match, most
do not), scores distinct. Each backend runs `coco_map` (the metric: build the COCO objects, evaluate,
accumulate, summarise at IoU 0.4 and 0.50:0.95) `--repeats` times, alternating, and keeps the best.
Their mAP@0.4 / AP50 / AP50:95 and per-class APs are compared (max abs difference printed). The
bootstrap (harness.eval.bootstrap: one pycocotools pass at IoU 0.4 for the per-image match records,
then 1,000 resamples) is timed once: it reads evalImgs, which only pycocotools keeps, so it has one
figure whatever the metric's backend.

    .venv/bin/python experiments/bench_coco_backends.py --images 3000 --dets 100 --repeats 3

Prints one JSON object. Not a test (the equality tests are tests/test_coco_backends.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from harness.classes import NUM_CLASSES, coco_categories  # noqa: E402
from harness.eval.bootstrap import ImageMatches  # noqa: E402
from harness.eval.coco_map import coco_map  # noqa: E402
from harness.predictions import Predictions  # noqa: E402


def make_case(n_images: int, dets_per_image: int, seed: int = 0) -> tuple[dict, Predictions]:
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 1024, "height": 1024})
        boxes = []
        if rng.random() < 0.3:
            for _ in range(int(rng.integers(1, 7))):
                x, y = rng.uniform(0, 800, 2)
                w, h = rng.uniform(20, 300, 2)
                cat = int(rng.integers(0, NUM_CLASSES))
                boxes.append((cat, x, y, w, h))
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                             "area": w * h, "iscrowd": 0})
        for k in range(dets_per_image):
            if boxes and k < 3 * len(boxes):
                cat, x, y, w, h = boxes[k % len(boxes)]
                jitter = rng.normal(0, 0.2, 4) * [w, h, w, h]
                cat = cat if rng.random() < 0.8 else int(rng.integers(0, NUM_CLASSES))
                box = [x + jitter[0], y + jitter[1], max(4.0, w + jitter[2]), max(4.0, h + jitter[3])]
            else:
                cat = int(rng.integers(0, NUM_CLASSES))
                box = [*rng.uniform(0, 900, 2).tolist(), *rng.uniform(10, 250, 2).tolist()]
            dets.append({"image_id": image_id, "category_id": cat, "bbox": [float(v) for v in box]})
    scores = rng.permutation(len(dets)) / len(dets) * 0.98 + 0.01
    for det, score in zip(dets, scores):
        det["score"] = float(score)
    gt = {"images": images, "annotations": anns, "categories": coco_categories()}
    return gt, Predictions("bench", None, [img["id"] for img in images], dets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    gt, preds = make_case(args.images, args.dets)
    times: dict[str, list[float]] = {"pycocotools": [], "faster_coco_eval": []}
    scores = {}
    for _ in range(args.repeats):
        for backend in times:
            start = time.perf_counter()
            scores[backend] = coco_map(gt, preds, backend=backend)
            times[backend].append(time.perf_counter() - start)
    ref, fast = scores["pycocotools"], scores["faster_coco_eval"]
    diffs = [abs(ref[k] - fast[k]) for k in ("map40", "ap50", "ap50_95")]
    diffs += [abs(v - fast["per_class"][c]) for c, v in ref["per_class"].items() if v is not None]
    start = time.perf_counter()
    matches = ImageMatches.from_coco(gt, preds)
    match_s = time.perf_counter() - start
    start = time.perf_counter()
    boot = matches.bootstrap(resamples=args.resamples, seed=0)
    boot_s = time.perf_counter() - start
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({
        "case": {"images": args.images, "detections": len(preds.detections), "gt_boxes": len(gt["annotations"]),
                 "classes": NUM_CLASSES},
        "coco_map_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "coco_map_best_s": {k: round(v, 2) for k, v in best.items()},
        "speedup": round(best["pycocotools"] / best["faster_coco_eval"], 2),
        "map40": ref["map40"], "max_abs_difference": max(diffs),
        "bootstrap": {"match_pass_s": round(match_s, 2), "resamples": args.resamples, "resample_s": round(boot_s, 2),
                      "point_minus_pycocotools": boot.point - ref["map40"]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_1min": round(os.getloadavg()[0], 2)},
    }, indent=1))


if __name__ == "__main__":
    main()
