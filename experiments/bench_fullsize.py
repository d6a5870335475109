"""Seconds per training iteration and peak memory per framework at 512 and 1024 px on CPU, on real
NIH ChestX-ray14 radiographs: the figures a user needs to size a full-size job.

Each (framework, size) runs in its own process (so its peak resident memory is its own): the NIH
images are prepared at that size, then the adapter fits three times at batch 1, one epoch: a warm-up
on 1 image (untimed: lazy imports, first model build), then 1 image and K images (timed). Seconds per
iteration = (time(K) - time(1)) / (K - 1): the fixed cost of a fit (dataset conversion, model build,
checkpoint writing) cancels out. Peak memory: the process's maximum resident set size (ru_maxrss)
at the end, imports and both fits included. Prediction: seconds per image over the 2 held-out images
with the last checkpoint. The small variant of each framework (yolov5n, R18-FPN), trained from scratch.

    nice .venv/bin/python experiments/bench_fullsize.py                      # tests/data/nih-cxr14-mini
    nice .venv/bin/python experiments/bench_fullsize.py --raw ../shared/nih-cxr14 --sizes 512 1024 --k 4

Result: <out>/bench_fullsize.json and a Markdown table on stdout (written atomically).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import atomic  # noqa: E402

FRAMEWORKS = {  # (variant, native overrides): the small variants; the R-CNNs sample fewer proposals/ROIs
    "yolov5": ("yolov5n", {"warmup_epochs": 0, "nbs": 1, "mosaic": 0.0}),
    "detectron2_frcnn": ("R18-FPN", {"MODEL.RPN.POST_NMS_TOPK_TEST": 300, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128}),
    "mmdet_frcnn": ("R18-FPN", {"model.test_cfg.rpn.max_per_img": 300, "model.train_cfg.rcnn.sampler.num": 128,
                                "val_cfg": None, "val_dataloader": None, "val_evaluator": None}),
}


def one(name: str, size: int, raw: Path, out: Path, k: int, threads: int) -> dict:
    """Measure one framework at one size in this process."""
    import torch

    from adapters import get_detector
    from adapters.base import AugSpec, TrainSpec
    from harness.classes import NIH_CLASSES
    from harness.data.nih import prepare_nih
    from harness.split import make_split

    torch.set_num_threads(threads)
    summary = prepare_nih(raw, out / f"data-{size}", size=size, folds=2, workers=0, progress=False)
    keys = [img["image_key"] for img in json.loads(summary.labels.read_text())["images"]]
    val, train = keys[:2], keys[2:2 + k]
    variant, native = FRAMEWORKS[name]

    def fit(n: int, tag: str) -> tuple[float, object, object]:
        folds = out / f"{name}-{size}-{tag}.folds.json"
        folds.write_text(json.dumps({"folds": [val, train[:n]]}))
        split = make_split(summary.labels, folds, 0, out / f"{name}-{size}-{tag}")
        spec = TrainSpec(variant=variant, epochs=1, batch_size=1, imgsz=size, lr=0.001, seed=0, workers=0,
                         aug=AugSpec(hflip=0.5), native=dict(native), batch_predict=1, classes=list(NIH_CLASSES),
                         negatives="keep", resume=False)
        detector = get_detector(name, spec)
        started = time.perf_counter()
        checkpoint = detector.fit(split, out / f"{name}-{size}-{tag}" / "native")
        return time.perf_counter() - started, detector, (checkpoint, split)

    fit(1, "warmup")
    t1, _, _ = fit(1, "one")
    tk, detector, (checkpoint, split) = fit(k, f"k{k}")
    refs = split.images("val")
    started = time.perf_counter()
    detector.predict(checkpoint, refs, out / f"{name}-{size}-predict")
    predict_s = (time.perf_counter() - started) / len(refs)
    return {"framework": name, "variant": variant, "size": size, "batch": 1, "k": k,
            "fit_1_s": round(t1, 2), f"fit_{k}_s": round(tk, 2), "s_per_iter": round((tk - t1) / (k - 1), 2),
            "predict_s_per_image": round(predict_s, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "torch_threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=ROOT / "tests" / "data" / "nih-cxr14-mini",
                        help="NIH ChestX-ray14 folder in the release's layout")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_fullsize")
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=list(FRAMEWORKS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--k", type=int, default=4, help="training images (= iterations) of the long fit")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        result = one(args.one[0], int(args.one[1]), args.raw, args.out, args.k, args.threads)
        atomic.write_json(args.out / f"{args.one[0]}-{args.one[1]}.json", result)
        return
    results = []
    for name in args.frameworks:
        for size in args.sizes:
            cmd = [sys.executable, __file__, "--one", name, str(size), "--raw", str(args.raw), "--out", str(args.out),
                   "--k", str(args.k), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name} at {size} px FAILED:\n{proc.stderr[-3000:]}", file=sys.stderr)
                results.append({"framework": name, "size": size, "error": proc.stderr.strip().splitlines()[-1:]})
                continue
            results.append(json.loads((args.out / f"{name}-{size}.json").read_text()))
            print(json.dumps(results[-1]), flush=True)
    atomic.write_json(args.out / "bench_fullsize.json", {"results": results, "raw": str(args.raw)})
    print("\n| framework | variant | px | s / iteration (batch 1) | predict s / image | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['framework']} | – | {r['size']} | failed | – | – |")
        else:
            print(f"| {r['framework']} | {r['variant']} | {r['size']} | {r['s_per_iter']} | "
                  f"{r['predict_s_per_image']} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
