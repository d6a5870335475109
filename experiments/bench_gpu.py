"""GPU benchmark: each adapter's fit against its framework's native training entry point, on one GPU.

For each framework, in one call and on the same data: the adapter's `fit`, then the framework's own
entry point with the same model and settings, AMP on; then the adapter's `predict` on held-out images.
Figures per run:
  * steady-state training images/s, measured as detectron2's published comparison does: a clock
    records the end of every training iteration (the same instrumentation in both runs: ultralytics'
    `on_train_batch_end` callback, detectron2's `TrainerBase.after_step`, mmengine's
    `EpochBasedTrainLoop.run_iter`); the first --skip iterations (warm-up: cudnn autotuning, loader
    start) are left out and the images of the remaining iterations are divided by their time;
  * peak GPU memory (`torch.cuda.max_memory_allocated`, reset before each run);
  * prediction images/s of the adapter's `predict` (the shared post-processing included), after a
    2-image warm-up.
The ratio adapter / native images/s is the figure to read (the target: within 3 %); absolute numbers
depend on the GPU, its clocks and the data loader's CPU.

The native runs:
  * ultralytics: `YOLO("<variant>.yaml").train(**kwargs)` with the keyword arguments the adapter
    passes (`adapters.yolov5.train_args`: same data.yaml, augmentation, optimizer, AMP), so the
    difference is the adapter's wrapping (dataset conversion happens before training and is not timed);
  * detectron2: the stock `DefaultTrainer` on `register_coco_instances` data with the adapter's
    config (`adapters.detectron2_frcnn.build_config`) and detectron2's default RandomFlip;
  * mmdet: a plain mmengine `Runner.from_cfg(cfg).train()` on mmdet's packaged Faster R-CNN config
    with the adapter's model and train pipeline, data paths, batch, optimizer, `AmpOptimWrapper`
    (experiments/bench_mmdet.py's offline edits otherwise).

Sizes (default, for one H100/H200; well under 8 minutes in total): YOLOv5s at 640 px batch 16;
Faster R-CNN R50-FPN at 1024 px batch 8 in detectron2 and mmdet; a synthetic 1024 px dataset
(tests/toy.py). `--tiny` runs the same code on CPU in about a minute or two (yolov5n, R18-FPN, 128 px).

    python experiments/bench_gpu.py                          # GPU, all three frameworks
    python experiments/bench_gpu.py --tiny                   # CPU smoke run
    python experiments/bench_gpu.py --frameworks yolov5 --yolo-ddp 2   # + ultralytics DDP on 2 GPUs

`--yolo-ddp N` (N GPUs) also trains the adapter with `train.gpus=N` (ultralytics' own DDP, CUDA only)
and reports its throughput. On the GPU test machine (no network) run it through
experiments/run_bench_gpu.sh, which installs the missing packages from the wheelhouse built by
experiments/gpu_wheelhouse.sh. Result: <out>/bench_gpu.json and <out>/bench_gpu.md (written atomically).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

from adapters.base import AugSpec, TrainSpec, count_split_training_set  # noqa: E402
from harness import atomic  # noqa: E402

log = logging.getLogger("bench_gpu")
FRAMEWORKS = ("yolov5", "detectron2_frcnn", "mmdet_frcnn")


@dataclass
class Size:
    variant: str
    imgsz: int
    batch: int
    epochs: int


FULL = {"yolov5": Size("yolov5s", 640, 16, 9), "detectron2_frcnn": Size("R50-FPN", 1024, 8, 4),
        "mmdet_frcnn": Size("R50-FPN", 1024, 8, 4)}
TINY = {"yolov5": Size("yolov5n", 128, 4, 3), "detectron2_frcnn": Size("R18-FPN", 128, 2, 2),
        "mmdet_frcnn": Size("R18-FPN", 128, 2, 2)}


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
@dataclass
class IterClock:
    """End time and image count of every training iteration of one run."""

    ends: list[float] = field(default_factory=list)
    images: list[int] = field(default_factory=list)

    def tick(self, n_images: int) -> None:
        self.ends.append(time.perf_counter())
        self.images.append(int(n_images))

    def steady(self, skip: int) -> dict:
        """Images/s over the iterations after the first `skip` (their time runs from the end of
        iteration `skip` to the end of the last one)."""
        n = len(self.ends)
        if n < skip + 2:
            return {"iterations": n, "timed_iterations": 0, "images_per_s": None, "s_per_iter": None}
        seconds = self.ends[-1] - self.ends[skip]
        images = sum(self.images[skip + 1:])
        return {"iterations": n, "timed_iterations": n - skip - 1, "images_per_s": images / seconds,
                "s_per_iter": seconds / (n - skip - 1)}


@contextlib.contextmanager
def clocked(framework: str, clock: IterClock, batch: int):
    """The same per-iteration clock in the adapter's run and the native one (see the docstring)."""
    if framework == "yolov5":
        from ultralytics.utils.callbacks import base

        seen = {"epoch": None, "images": 0}

        def on_batch_end(trainer) -> None:
            # the batch is local to ultralytics' loop: count it from the batch size, the epoch's last
            # batch holding what is left of the dataset (its loader keeps incomplete batches)
            if seen["epoch"] != trainer.epoch:
                seen.update(epoch=trainer.epoch, images=0)
            left = len(trainer.train_loader.dataset) - seen["images"]
            n = min(int(trainer.batch_size), left) if left > 0 else int(trainer.batch_size)
            seen["images"] += n
            clock.tick(n)

        base.default_callbacks["on_train_batch_end"].append(on_batch_end)
        try:
            yield
        finally:
            base.default_callbacks["on_train_batch_end"].remove(on_batch_end)
    elif framework == "detectron2_frcnn":
        from detectron2.engine import DefaultTrainer
        from detectron2.engine.train_loop import TrainerBase

        original = TrainerBase.after_step

        def after_step(self) -> None:
            original(self)
            if isinstance(self, DefaultTrainer):  # the outer loop, not its inner SimpleTrainer
                clock.tick(batch)

        TrainerBase.after_step = after_step
        try:
            yield
        finally:
            TrainerBase.after_step = original
    else:
        from mmengine.runner.loops import EpochBasedTrainLoop

        original = EpochBasedTrainLoop.run_iter

        def run_iter(self, idx, data_batch) -> None:
            original(self, idx, data_batch)
            clock.tick(len(data_batch["inputs"]))

        EpochBasedTrainLoop.run_iter = run_iter
        try:
            yield
        finally:
            EpochBasedTrainLoop.run_iter = original


def gpu_memory_reset() -> None:
    import gc

    import torch

    gc.collect()  # the previous run's model and optimizer are gone before the next peak is measured
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def gpu_memory_peak_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def measured(framework: str, batch: int, skip: int, run) -> dict:
    """Run `run()` under the clock; its steady throughput, wall time and peak GPU memory."""
    clock = IterClock()
    gpu_memory_reset()
    start = time.perf_counter()
    with clocked(framework, clock, batch):
        run()
    wall = time.perf_counter() - start
    return {**clock.steady(skip), "wall_s": round(wall, 1), "peak_gpu_gib": gpu_memory_peak_gib()}


# ---------------------------------------------------------------------------------------------
# Native entry points
# ---------------------------------------------------------------------------------------------
def native_yolov5(spec: TrainSpec, adapter_dir: Path, workdir: Path) -> None:
    from adapters.yolov5 import train_args, ultralytics_offline

    for cache in (adapter_dir / "yolo_data" / "labels").glob("*.cache"):
        cache.unlink()  # the native run builds its own label cache, as the adapter's did
    args = train_args(spec, adapter_dir / "yolo_data" / "data.yaml", workdir)
    with ultralytics_offline(workdir / "ultralytics_config", trust_amp=spec.amp and spec.device != "cpu"):
        from ultralytics import YOLO

        YOLO(f"{spec.variant}.yaml", task="detect").train(**args)


def native_detectron2(spec: TrainSpec, split, workdir: Path) -> None:
    from bench_detectron2 import run_native

    run_native(spec, split, workdir, count_split_training_set(split.train_json, spec.negatives)["images"])


def native_mmdet(spec: TrainSpec, split, workdir: Path) -> None:
    from bench_mmdet import native_config, run_native

    from adapters.mmdet_frcnn import MMDetFasterRCNN, optimizer_cfg, train_pipeline

    cfg = native_config(spec.variant, split, spec.imgsz, spec.batch_size, spec.epochs, workdir)
    cfg.model = MMDetFasterRCNN(spec).model_config().model  # the same architecture as the adapter's
    cfg.train_dataloader.dataset.pipeline = train_pipeline(spec)
    cfg.train_dataloader.update(num_workers=spec.workers, persistent_workers=spec.workers > 0)
    cfg.default_hooks.checkpoint = {"type": "CheckpointHook", "interval": 1}  # mmdet's default, as the adapter
    cfg.default_hooks.logger = {"type": "LoggerHook", "interval": 50}
    cfg.log_processor = {"type": "LogProcessor", "window_size": 50, "by_epoch": True}
    amp = spec.amp and spec.device.startswith("cuda")
    cfg.optim_wrapper = {"type": "AmpOptimWrapper" if amp else "OptimWrapper", "optimizer": optimizer_cfg(spec)}
    cfg.randomness = {"seed": spec.seed}
    run_native(cfg)


# ---------------------------------------------------------------------------------------------
def bench_framework(name: str, size: Size, args, split, out: Path) -> dict:
    from adapters import get_detector

    spec = TrainSpec(variant=size.variant, epochs=size.epochs, batch_size=size.batch, imgsz=size.imgsz,
                     device=args.device, workers=args.workers, amp=True, seed=0,
                     aug=AugSpec(rotate_deg=0.0, hflip=0.5, vflip=0.0), checkpoint_keep=1)
    if name == "mmdet_frcnn":  # no mmengine validation pass after training (the native run has none)
        spec.native = {"val_cfg": None, "val_dataloader": None, "val_evaluator": None,
                       "default_hooks.logger.interval": 50, "log_processor.window_size": 50}
    log.info("%s %s: %d px, batch %d, %d epochs on %s", name, size.variant, size.imgsz, size.batch, size.epochs,
             args.device)
    detector = get_detector(name, spec)
    work = out / name
    result: dict = {"variant": size.variant, "imgsz": size.imgsz, "batch": size.batch, "epochs": size.epochs,
                    "amp": True}
    checkpoint: list[Path] = []
    result["adapter"] = measured(name, size.batch, args.skip,
                                 lambda: checkpoint.append(detector.fit(split, work / "adapter")))
    result["train_images"] = (detector.consumed or {}).get("images")
    native_spec = TrainSpec(**{**spec.to_dict(), "aug": spec.aug})
    if name == "yolov5":
        run = lambda: native_yolov5(native_spec, work / "adapter", work / "native")  # noqa: E731
    elif name == "detectron2_frcnn":
        run = lambda: native_detectron2(native_spec, split, work / "native")  # noqa: E731
    else:
        run = lambda: native_mmdet(native_spec, split, work / "native")  # noqa: E731
    result["native"] = measured(name, size.batch, args.skip, run)
    a, n = result["adapter"]["images_per_s"], result["native"]["images_per_s"]
    result["ratio_adapter_over_native"] = round(a / n, 3) if a and n else None

    images = split.images("val")[: args.predict_images]
    detector.predict(checkpoint[0], images[:2], work / "predict_warmup")
    start = time.perf_counter()
    detections = detector.predict(checkpoint[0], images, work / "predict")
    seconds = time.perf_counter() - start
    result["predict"] = {"images": len(images), "images_per_s": round(len(images) / seconds, 2),
                         "detections": len(detections), "batch": spec.batch_predict}
    if name == "yolov5" and args.yolo_ddp > 1:
        ddp_spec = TrainSpec(**{**spec.to_dict(), "aug": spec.aug, "gpus": args.yolo_ddp,
                                "batch_size": size.batch * args.yolo_ddp})
        ddp = get_detector(name, ddp_spec)
        start = time.perf_counter()
        try:  # ultralytics runs DDP in subprocesses: only whole-call figures are visible from here
            ddp.fit(split, work / f"adapter_ddp{args.yolo_ddp}")
        except Exception as err:  # noqa: BLE001 - keeps the single-GPU figures
            log.exception("yolov5 DDP failed")
            result["adapter_ddp"] = {"gpus": args.yolo_ddp, "error": f"{type(err).__name__}: {err}"}
        else:
            wall = time.perf_counter() - start
            result["adapter_ddp"] = {"gpus": args.yolo_ddp, "batch": ddp_spec.batch_size, "wall_s": round(wall, 1),
                                     "images_per_s_whole_call": round(ddp.consumed["images"] * size.epochs / wall, 1)}
    return result


def markdown(result: dict) -> str:
    lines = [f"GPU: {result['gpu']} · torch {result['torch']} · {result['command']}", "",
             "| framework | model | input | batch | adapter img/s | native img/s | ratio | adapter peak GiB | "
             "native peak GiB | predict img/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["frameworks"].items():
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:80]} | | | | | | | | |")
            continue
        a, n = row["adapter"], row["native"]
        fmt = (lambda v: "—" if v is None else f"{v:.1f}")  # noqa: E731
        lines.append(f"| {name} | {row['variant']} | {row['imgsz']} | {row['batch']} | {fmt(a['images_per_s'])} | "
                     f"{fmt(n['images_per_s'])} | {row['ratio_adapter_over_native']} | {a['peak_gpu_gib']} | "
                     f"{n['peak_gpu_gib']} | {row['predict']['images_per_s']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke settings: small models, 128 px, few iterations")
    ap.add_argument("--device", help="cuda (default) or cpu (default with --tiny)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--images", type=int, help="synthetic dataset size (half train, half val)")
    ap.add_argument("--skip", type=int, help="warm-up iterations left out (default 20; 1 with --tiny)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default 8; 0 with --tiny)")
    ap.add_argument("--predict-images", type=int, help="val images predicted (default 64; 4 with --tiny)")
    ap.add_argument("--yolo-ddp", type=int, default=0, help="also train YOLO with train.gpus=N (CUDA, N GPUs)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "gpu"))
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.skip = args.skip if args.skip is not None else (1 if args.tiny else 20)
    args.predict_images = args.predict_images or (4 if args.tiny else 64)
    args.workers = args.workers if args.workers is not None else (0 if args.tiny else 8)
    images = args.images or (24 if args.tiny else 512)
    sizes = TINY if args.tiny else FULL
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny (CPU) or on a GPU")
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    from harness.split import make_split
    from toy import make_toy_dataset

    size = 128 if args.tiny else 1024
    toy = make_toy_dataset(out / f"data{size}-{images}", n_images=images, size=size, seed=0, k=2)
    split = make_split(toy["labels"], toy["folds"], 0, out / f"split-{uuid.uuid4().hex[:6]}")
    result = {"gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()})",
              "torch": torch.__version__, "python": platform.python_version(), "device": args.device,
              "command": "python experiments/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "skip_iterations": args.skip, "workers": args.workers, "dataset": f"toy {images} images at {size} px",
              "frameworks": {}}
    for name in [f.strip() for f in args.frameworks.split(",") if f.strip()]:
        if name not in FRAMEWORKS:
            raise SystemExit(f"unknown framework {name!r}; known: {', '.join(FRAMEWORKS)}")
        try:
            result["frameworks"][name] = bench_framework(name, sizes[name], args, split, out)
        except Exception as err:  # noqa: BLE001 - one framework failing must not lose the others' figures
            log.exception("%s failed", name)
            result["frameworks"][name] = {"error": f"{type(err).__name__}: {err}"}
        atomic.write_json(out / "bench_gpu.json", result)
    result["total_wall_s"] = round(time.perf_counter() - started, 1)
    atomic.write_json(out / "bench_gpu.json", result)
    atomic.write_text(out / "bench_gpu.md", markdown(result))
    print(markdown(result))
    print(f"total {result['total_wall_s']} s; details in {out / 'bench_gpu.json'}")
    return result


if __name__ == "__main__":
    main()
