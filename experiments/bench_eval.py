"""Scoring speed: the bootstrap of mAP@0.4 and the human-reader reference (moved here from the tests,
which assert no wall-clock limits).

  * bootstrap: 1000 resamples of a random 1500-image case (tests/test_eval_voc.random_case), timed
    after the one pycocotools matching pass (also timed); the figure to watch is seconds per 1000
    resamples (the report's default), previously asserted < 20 s in tests/test_bootstrap.py.
  * reader reference: leave-one-reader-out on the real VinBigData train.csv (torchxrayvision's copy,
    15,000 images, 3 rotations, 20 random tie orders), previously asserted < 90 s in
    tests/test_reader_reference.py.

    .venv/bin/python experiments/bench_eval.py [--out bench_out] [--images 1500] [--resamples 1000]

Result: <out>/bench_eval.json (written atomically) and one line per figure on stdout.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from harness import atomic  # noqa: E402


def bench_bootstrap(n_images: int, resamples: int) -> dict:
    from test_eval_voc import random_case

    from harness.eval.bootstrap import ImageMatches

    gt, preds = random_case(10, n_images=n_images)
    started = time.perf_counter()
    matches = ImageMatches.from_coco(gt, preds)
    matching_s = time.perf_counter() - started
    started = time.perf_counter()
    boot = matches.bootstrap(resamples=resamples, seed=0)
    resample_s = time.perf_counter() - started
    return {"images": n_images, "resamples": resamples, "detections": len(preds.detections),
            "matching_s": round(matching_s, 2), "resampling_s": round(resample_s, 2),
            "samples": len(boot.samples)}


def bench_reader_reference() -> dict | None:
    from harness.data.labels import parse_train_csv
    from harness.eval.reader_reference import reader_reference
    from harness.synth.readers import real_csv_path

    path = real_csv_path()
    if path is None:
        print("reader reference: skipped (the real train.csv ships in torchxrayvision==1.5.7)")
        return None
    started = time.perf_counter()
    result = reader_reference(parse_train_csv(path).rows)
    return {"images": result["n_images"], "tie_orders": result["map40_tie_orders"]["orders"],
            "seconds": round(time.perf_counter() - started, 1), "map40": round(result["map40"], 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out")
    p.add_argument("--images", type=int, default=1500)
    p.add_argument("--resamples", type=int, default=1000)
    args = p.parse_args()
    result = {"host": platform.node(), "bootstrap": bench_bootstrap(args.images, args.resamples),
              "reader_reference": bench_reader_reference()}
    b = result["bootstrap"]
    print(f"bootstrap: {b['images']} images, {b['detections']} detections: matching {b['matching_s']} s, "
          f"{b['resamples']} resamples {b['resampling_s']} s")
    if result["reader_reference"]:
        r = result["reader_reference"]
        print(f"reader reference: {r['images']} images, {r['tie_orders']} tie orders: {r['seconds']} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "bench_eval.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
