"""Adapter fit throughput vs a plain mmengine Runner on mmdet's packaged config, same data, same process.

Why: the adapter changes the packaged recipe (from-scratch GroupNorm, the scratch 4-conv GN box head
for R50/R101, grad clipping, the shared augmentations) and wraps the Runner. This measures what that
costs per training iteration against the packaged `faster-rcnn_r50_fpn_1x_coco.py` run natively with
only the edits needed to run offline on this data (paths, 14 classes, backbone depth, no
ImageNet download, resize to --imgsz, batch size, workers 0, no evaluation).

Both runs use mmengine's IterTimerHook: seconds per iteration are read from each run's
`vis_data/scalars.json` ("time"), skipping the first --skip iterations (warm-up). The ratio is
adapter / native (>1 = the adapter's recipe is slower per iteration).

    .venv/bin/python experiments/bench_mmdet.py --variant R18-FPN --imgsz 256 --epochs 2
    .venv/bin/python experiments/bench_mmdet.py --labels data/x/labels/wbf.json --folds data/x/folds/f.json

Without --labels/--folds a toy dataset (tests/toy.py) is generated in the output folder.
Result: <out>/bench_mmdet.json (written atomically).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.base import AugSpec, TrainSpec  # noqa: E402
from adapters.mmdet_frcnn import VARIANTS, MMDetFasterRCNN, packaged_config_dir  # noqa: E402
from harness import atomic  # noqa: E402
from harness.classes import CLASSES, NUM_CLASSES  # noqa: E402
from benchdata import bench_split  # noqa: E402


def iter_times(workdir: Path, skip: int) -> list[float]:
    times = []
    for path in sorted(Path(workdir).glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "time" in row and "loss" in row:  # training-iteration rows only
                times.append(float(row["time"]))
    return times[skip:]


def native_config(variant: str, split, imgsz: int, batch: int, epochs: int, workdir: Path):
    """mmdet's packaged config with only the edits needed to run it on this data, offline."""
    from mmengine.config import Config

    rel, depth, in_channels = VARIANTS[variant]
    cfg = Config.fromfile(str(packaged_config_dir() / rel))
    cfg.model.backbone.update(depth=depth, init_cfg=None)
    cfg.model.neck.in_channels = in_channels
    cfg.model.roi_head.bbox_head.num_classes = NUM_CLASSES
    ds = cfg.train_dataloader.dataset
    ds.update(data_root=str(split.image_root), ann_file=str(split.train_json), data_prefix={"img": ""},
              metainfo={"classes": CLASSES})
    for step in ds.pipeline:
        if step["type"] == "Resize":
            step["scale"] = (imgsz, imgsz)
    cfg.train_dataloader.update(batch_size=batch, num_workers=0, persistent_workers=False)
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.train_cfg = {"type": "EpochBasedTrainLoop", "max_epochs": epochs}
    cfg.default_hooks.checkpoint = {"type": "CheckpointHook", "interval": epochs, "max_keep_ckpts": 1}
    cfg.default_hooks.logger = {"type": "LoggerHook", "interval": 1}
    cfg.log_processor = {"type": "LogProcessor", "window_size": 1, "by_epoch": True}
    cfg.visualizer.name = f"bench-native-{uuid.uuid4().hex[:8]}"
    cfg.work_dir = str(workdir)
    cfg.experiment_name = cfg.visualizer.name
    return cfg


def run_native(cfg) -> None:
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope("mmdet"):
        Runner.from_cfg(cfg).train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="R18-FPN", choices=list(VARIANTS))
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--skip", type=int, default=2, help="warm-up iterations left out of the mean")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labels"), ap.add_argument("--folds")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "mmdet"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    split = bench_split(args.labels, args.folds, out)

    spec = TrainSpec(variant=args.variant, epochs=args.epochs, batch_size=args.batch, imgsz=args.imgsz,
                     workers=0, aug=AugSpec(rotate_deg=0, hflip=0.5, vflip=0.0),
                     native={"train_cfg.val_interval": 10**6, "default_hooks.logger.interval": 1,
                             "log_processor.window_size": 1})
    t0 = time.perf_counter()
    MMDetFasterRCNN(spec).fit(split, out / "adapter")
    adapter_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_native(native_config(args.variant, split, args.imgsz, args.batch, args.epochs, out / "native"))
    native_wall = time.perf_counter() - t0

    a, n = iter_times(out / "adapter", args.skip), iter_times(out / "native", args.skip)
    if not a or not n:
        raise SystemExit(f"too few iterations to time (adapter {len(a)}, native {len(n)}): raise --epochs")
    result = {
        "variant": args.variant, "imgsz": args.imgsz, "batch": args.batch, "epochs": args.epochs,
        "threads": args.threads, "device": "cpu", "train_images": str(split.train_json),
        "adapter_s_per_iter": sum(a) / len(a), "native_s_per_iter": sum(n) / len(n),
        "adapter_iters_timed": len(a), "native_iters_timed": len(n),
        "adapter_wall_s": adapter_wall, "native_wall_s": native_wall,
    }
    result["ratio_adapter_over_native"] = result["adapter_s_per_iter"] / result["native_s_per_iter"]
    atomic.write_json(out / "bench_mmdet.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
