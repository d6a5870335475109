"""cxr-report's matching passes, before and after "each pass once", on a demo-size and a VinBigData-size
synthetic fold. Run it on a quiet machine; figures from a loaded one are not figures.

Per run (one model's predictions on one fold) the report used to run pycocotools three times: the
bootstrap's matching (ImageMatches.from_coco), the analysis' match table (MatchTable.from_coco) and AP by
size (COCOeval over four area ranges). Now one MatchTable feeds all of them (table.image_matches() for the
bootstrap, ap_by_size_from_table for the bands) and FROC / CPM / AUROC. Both paths are still in the code,
so they are timed side by side on the same case, and their results are checked equal:

  * before: ImageMatches.from_coco + MatchTable.from_coco + ap_by_size
  * after:  MatchTable.from_coco + table.image_matches() + ap_by_size_from_table
  * also:   the bootstrap itself (1000 resamples, unchanged) and FROC/CPM/AUROC with its intervals

    .venv/bin/python experiments/bench_report.py [--out bench_out] [--sizes demo vinbigdata] [--resamples 1000]

Cases: demo = 51 images, ~15 detections per image (the demo's fold-0 scale); vinbigdata = 3,000 images
(70% without findings, 14 classes), ~33 detections per image (~100,000). Result: <out>/bench_report.json
(written atomically) and one line per figure on stdout.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import atomic  # noqa: E402
from harness.eval import froc  # noqa: E402
from harness.eval.bootstrap import ImageMatches  # noqa: E402
from harness.eval.matches import MatchTable  # noqa: E402
from harness.eval.sizes import ap_by_size, ap_by_size_from_table, size_bands  # noqa: E402
from harness.predictions import Predictions  # noqa: E402

CASES = {"demo": (51, 15), "vinbigdata": (3000, 33)}


def synthetic_fold(n_images: int, dets_per_image: int, seed: int = 0):
    """Ground truth (30% of images with 1-6 boxes of 14 classes) and detections: jittered copies of the
    boxes (some of the wrong class) and random boxes, ~dets_per_image per image, scores with ties."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 1024, "height": 1024})
        boxes = []
        if rng.random() < 0.3:
            for _ in range(int(rng.integers(1, 7))):
                w, h = rng.uniform(20, 400, 2)
                x, y = rng.uniform(0, 1024 - w), rng.uniform(0, 1024 - h)
                cat = int(rng.integers(0, 14))
                boxes.append((cat, x, y, w, h))
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                             "area": w * h, "iscrowd": 0})
        n = int(rng.poisson(dets_per_image))
        for k in range(n):
            if boxes and k < 3 * len(boxes):
                cat, x, y, w, h = boxes[k % len(boxes)]
                j = rng.normal(0, 0.2, 4) * [w, h, w, h]
                box = [x + j[0], y + j[1], max(2.0, w + j[2]), max(2.0, h + j[3])]
                cat = cat if rng.random() < 0.8 else int(rng.integers(0, 14))
            else:
                w, h = rng.uniform(10, 300, 2)
                box, cat = [rng.uniform(0, 1024 - w), rng.uniform(0, 1024 - h), w, h], int(rng.integers(0, 14))
            dets.append({"image_id": image_id, "category_id": cat, "bbox": [float(v) for v in box],
                         "score": float(round(rng.beta(1.2, 3.0), 3))})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in range(14)]}
    return gt, Predictions("bench", None, [img["id"] for img in images], dets)


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def bench(case: str, resamples: int) -> dict:
    n_images, per_image = CASES[case]
    gt, preds = synthetic_fold(n_images, per_image)
    bands = size_bands([a["area"] for a in gt["annotations"]])
    old_matches, t_old_boot = timed(lambda: ImageMatches.from_coco(gt, preds))
    old_table, t_table = timed(lambda: MatchTable.from_coco(gt, preds))
    old_sizes, t_old_sizes = timed(lambda: ap_by_size(gt, preds, bands))
    table, t_new_table = timed(lambda: MatchTable.from_coco(gt, preds))
    new_matches, t_new_boot = timed(table.image_matches)
    new_sizes, t_new_sizes = timed(lambda: ap_by_size_from_table(table, bands))
    weights = np.random.default_rng(0).integers(0, 3, (5, n_images)).astype(float)
    assert np.array_equal(old_matches.map(weights), new_matches.map(weights)), "bootstrap data differ"
    assert old_sizes == new_sizes, "AP by size differs"
    boot, t_bootstrap = timed(lambda: new_matches.bootstrap(resamples, 0))

    def lesion_level():
        hits = froc.LesionHits.from_table(table)
        w = new_matches.counts(resamples, 0)
        return froc.cpm(hits, weights=w), froc.auroc(hits, weights=w)

    _, t_froc = timed(lesion_level)
    before = t_old_boot + t_table + t_old_sizes
    after = t_new_table + t_new_boot + t_new_sizes
    return {"case": case, "images": n_images, "detections": len(preds.detections), "boxes": len(gt["annotations"]),
            "before_s": {"bootstrap_matching": t_old_boot, "match_table": t_table, "ap_by_size": t_old_sizes,
                         "total": before},
            "after_s": {"match_table": t_new_table, "image_matches": t_new_boot, "ap_by_size_from_table": t_new_sizes,
                        "total": after},
            "speedup": before / after if after > 0 else None,
            "bootstrap_s": t_bootstrap, "froc_cpm_auroc_with_intervals_s": t_froc, "resamples": resamples,
            "map40": boot.point}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out")
    parser.add_argument("--sizes", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    results = {"machine": platform.platform(), "python": platform.python_version(), "runs": []}
    for case in args.sizes:
        row = bench(case, args.resamples)
        results["runs"].append(row)
        print(f"{case}: {row['images']} images, {row['detections']} detections: matching passes "
              f"{row['before_s']['total']:.1f} s -> {row['after_s']['total']:.1f} s ({row['speedup']:.1f}x); "
              f"bootstrap {row['bootstrap_s']:.1f} s, FROC/CPM/AUROC with intervals {row['froc_cpm_auroc_with_intervals_s']:.1f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out / "bench_report.json", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
