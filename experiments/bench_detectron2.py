"""Benchmark: the cxr-bench detectron2 adapter's training throughput vs a plain detectron2 run.

Why: the adapter wraps detectron2's DefaultTrainer (its own optimizer choice, augmentation list,
atomic checkpointing, dataset registration, image checks). This script shows that the wrapping costs
nothing measurable per iteration: same data, same model config, same process, same iteration count;
the reference is detectron2's stock `DefaultTrainer` with `register_coco_instances` and its default
DatasetMapper (only its writers are swapped, because the stock list needs tensorboard).

Seconds per iteration come from detectron2's own IterationTimer ("Overall training speed", which
skips the first iterations); wall seconds include model building and data registration.

    .venv/bin/python experiments/bench_detectron2.py                        # toy data, R18-FPN, 128 px
    .venv/bin/python experiments/bench_detectron2.py --variant R50-FPN --imgsz 256 --iters 20
    .venv/bin/python experiments/bench_detectron2.py --labels data/x/labels/wbf.json --folds data/x/folds/f.json

Writes a JSON result (atomically) to --out (default: <workdir>/bench_detectron2.json).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from adapters.base import AugSpec, TrainSpec  # noqa: E402
from harness import atomic  # noqa: E402
from benchdata import bench_split  # noqa: E402

SPEED = re.compile(r"Overall training speed: (\d+) iterations in .* \(([\d.]+) s / it\)")


class SpeedCatcher(logging.Handler):
    """Collects detectron2's IterationTimer summary (s/it over the timed iterations)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.sec_per_iter: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = SPEED.search(record.getMessage())
        if match:
            self.sec_per_iter = float(match.group(2))


def timed(fn) -> tuple[float, float | None]:
    catcher = SpeedCatcher()
    logger = logging.getLogger("detectron2")
    logger.addHandler(catcher)
    logger.setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        fn()
    finally:
        logger.removeHandler(catcher)
    return time.perf_counter() - start, catcher.sec_per_iter


def run_adapter(spec: TrainSpec, split, workdir: Path) -> None:
    from adapters.detectron2_frcnn import Detectron2FasterRCNN

    Detectron2FasterRCNN(spec).fit(split, workdir)


def run_native(spec: TrainSpec, split, workdir: Path, n_train: int) -> None:
    """Stock detectron2: register_coco_instances + DefaultTrainer, same model config."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultTrainer
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    from adapters.detectron2_frcnn import build_config

    name = f"bench_native_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(split.train_json), str(split.image_root))
    try:
        cfg = build_config(spec, n_train=n_train, train_dataset=name, output_dir=workdir)
        cfg.INPUT.RANDOM_FLIP = "horizontal"  # detectron2's default train augmentation
        workdir.mkdir(parents=True, exist_ok=True)

        class Trainer(DefaultTrainer):
            def build_writers(self):  # the stock list adds a TensorboardXWriter (tensorboard absent)
                return [CommonMetricPrinter(self.max_iter), JSONWriter(str(workdir / "metrics.json"))]

        seed_all_rng(cfg.SEED)
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=Path, help="COCO labels (default: a generated toy dataset)")
    parser.add_argument("--folds", type=Path, help="fold file matching --labels")
    parser.add_argument("--variant", default="R18-FPN")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_d2_"))
    split = bench_split(args.labels, args.folds, workdir)

    from adapters.base import count_split_training_set

    n_train = count_split_training_set(split.train_json, "drop")["images"]
    spec = TrainSpec(variant=args.variant, batch_size=args.batch, imgsz=args.imgsz, device=args.device,
                     aug=AugSpec(hflip=0.5), native={"SOLVER.MAX_ITER": args.iters}, seed=0)
    adapter_wall, adapter_spi = timed(lambda: run_adapter(spec, split, workdir / "adapter"))
    native_wall, native_spi = timed(lambda: run_native(spec, split, workdir / "native", n_train))
    result = {
        "variant": args.variant, "imgsz": args.imgsz, "batch": args.batch, "iters": args.iters,
        "device": args.device, "threads": args.threads,
        "adapter": {"wall_s": round(adapter_wall, 2), "sec_per_iter": adapter_spi},
        "native": {"wall_s": round(native_wall, 2), "sec_per_iter": native_spi},
        # throughput ratio adapter / native (1.0 = same speed; > 1 = adapter faster)
        "throughput_ratio": round(native_spi / adapter_spi, 3) if adapter_spi and native_spi else None,
        "wall_ratio": round(native_wall / adapter_wall, 3),
    }
    out = args.out or workdir / "bench_detectron2.json"
    atomic.write_json(out, result)
    print(json.dumps(result, indent=1))
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()
