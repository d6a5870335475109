"""Adapter fit throughput vs a plain ultralytics `YOLO(...).train()` call, same data, same process.

Why: the adapter wraps ultralytics' trainer (COCO -> YOLO conversion, offline sandbox, X-ray
augmentation defaults, deterministic seeding, fixed optimizer instead of "auto"). This measures what
that costs in training images per second against the native call a user would write:
`YOLO("<variant>.yaml").train(data=<the adapter's data.yaml>, epochs, batch, imgsz, device,
workers, val=False, plots=False)` with ultralytics' own defaults for everything else (mosaic 1.0,
SGD/AdamW "auto", non-deterministic). The native call runs inside the adapter's offline sandbox
too: without it ultralytics downloads a font on every train call, and this stack runs offline.

Two figures, both as adapter / native images-per-second ratios (<1 = the adapter is slower):
  * steady: training epochs only, from each run's results.csv cumulative `time` column, between
    the end of epoch 1 and the end of the second-to-last epoch (skips warm-up, dataloader creation
    and the final-epoch validation). Needs --epochs >= 3.
  * wall: the whole call - the adapter's fit (dataset conversion included) vs the native train()
    (label cache deleted in between so both build it; imports - torch._inductor, ~4 s, which the
    first deterministic trainer in a process pulls in - and a first model build happen before
    either timing).

    .venv/bin/python experiments/bench_yolov5.py --variant yolov5n --imgsz 128 --epochs 6
    .venv/bin/python experiments/bench_yolov5.py --labels data/x/labels/wbf.json --folds data/x/folds/f.json

Without --labels/--folds a toy dataset (tests/toy.py) is generated in the output folder.
Result: <out>/bench_yolov5.json (written atomically).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.base import AugSpec, TrainSpec  # noqa: E402
from adapters.yolov5 import VARIANTS, YoloV5Detector, ultralytics_offline, yolo_device  # noqa: E402
from harness import atomic  # noqa: E402
from benchdata import bench_split  # noqa: E402


def epoch_times(results_csv: Path) -> list[float]:
    """Cumulative seconds at the end of each epoch, from ultralytics' results.csv."""
    with open(results_csv, newline="") as handle:
        return [float(row["time"]) for row in csv.DictReader(handle, skipinitialspace=True)]


def steady_images_per_s(results_csv: Path, n_train: int) -> float:
    times = epoch_times(results_csv)
    if len(times) < 3:
        raise SystemExit(f"{results_csv}: {len(times)} epochs; --epochs must be >= 3 for the steady figure")
    return n_train * (len(times) - 2) / (times[-2] - times[0])


def run_native(variant: str, data_yaml: Path, args, out: Path) -> tuple[Path, float]:
    """The plain ultralytics call on the same data; returns (results.csv, wall seconds)."""
    with ultralytics_offline(out / "ultralytics_config"):
        from ultralytics import YOLO

        t0 = time.perf_counter()
        model = YOLO(f"{variant}.yaml")  # timed: the adapter's fit builds it too
        model.train(data=str(data_yaml), epochs=args.epochs, batch=args.batch, imgsz=args.imgsz,
                    device=yolo_device(args.device), workers=0, val=False, plots=False,
                    project=str(out), name="train", exist_ok=True)
        wall = time.perf_counter() - t0
        return Path(model.trainer.save_dir) / "results.csv", wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="yolov5n", choices=list(VARIANTS))
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labels"), ap.add_argument("--folds")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "yolov5"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    split = bench_split(args.labels, args.folds, out)

    spec = TrainSpec(variant=args.variant, epochs=args.epochs, batch_size=args.batch, imgsz=args.imgsz,
                     device=args.device, workers=0, aug=AugSpec(rotate_deg=0, hflip=0.5, vflip=0.0))
    det = YoloV5Detector(spec)
    with ultralytics_offline(out / "warmup"):  # imports and first model build out of both timings
        from ultralytics import YOLO

        YOLO(f"{args.variant}.yaml")
        import torch._inductor  # noqa: F401 - torch imports it lazily on the first seeded (deterministic) fit
    t0 = time.perf_counter()
    det.fit(split, out / "adapter")
    adapter_wall = time.perf_counter() - t0
    n_train = det.last_fit["train_images"]
    adapter_csv = Path(det.last_fit["save_dir"]) / "results.csv"

    for cache in (out / "adapter" / "yolo_data" / "labels").glob("*.cache"):
        cache.unlink()  # the native run builds its own label cache, as the adapter's did
    native_csv, native_wall = run_native(args.variant, out / "adapter" / "yolo_data" / "data.yaml", args,
                                         out / "native")
    total = n_train * args.epochs
    result = {
        "variant": args.variant, "imgsz": args.imgsz, "batch": args.batch, "epochs": args.epochs,
        "threads": args.threads, "device": args.device, "train_images": n_train,
        "train_json": str(split.train_json),
        "adapter_steady_images_per_s": steady_images_per_s(adapter_csv, n_train),
        "native_steady_images_per_s": steady_images_per_s(native_csv, n_train),
        "adapter_wall_s": adapter_wall, "native_wall_s": native_wall,
        "adapter_wall_images_per_s": total / adapter_wall, "native_wall_images_per_s": total / native_wall,
    }
    result["steady_ratio_adapter_over_native"] = (result["adapter_steady_images_per_s"]
                                                  / result["native_steady_images_per_s"])
    result["wall_ratio_adapter_over_native"] = result["adapter_wall_images_per_s"] / result["native_wall_images_per_s"]
    atomic.write_json(out / "bench_yolov5.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
