"""GPU benchmark: each adapter's fit against its framework's native training entry point, on one GPU.

For each framework, in one call and on the same data: the adapter's `fit` and the framework's own
entry point with the same model and settings, AMP on, alternated (adapter, native, adapter, native:
--rounds 2 by default, so an order effect - caches, clocks, allocator - shows as spread between the
rounds instead of favouring one side); then the adapter's prediction on held-out images.
What is measured is the adapter's overhead only, so both runs are kept identical:
  * checkpoints: an interval beyond the run length in both (spec.checkpoint_interval = epochs + 1,
    mmengine's CheckpointHook the same, ultralytics save=False), so the one checkpoint write comes
    after the last timed iteration;
  * MMDetection: the native run gets the adapter's whole `optim_wrapper` (AMP, optimizer and its
    paramwise_cfg: no weight decay on norm layers), so the recipes match;
Figures per run, and per framework the median over the rounds with the min-max spread:
  * steady-state training images/s, measured as detectron2's published comparison does: a clock
    records the end of every training iteration (the same instrumentation in both runs: ultralytics'
    `on_train_batch_end` callback, detectron2's `TrainerBase.after_step` (before its hooks, so the
    final checkpoint write is not timed), mmengine's `EpochBasedTrainLoop.run_iter`); the first
    --skip iterations (warm-up: cudnn autotuning, loader start) are left out and the images of the
    remaining iterations are divided by their time; beside it the median seconds per iteration
    (robust to the epoch boundaries' loader restarts);
  * peak GPU memory (`torch.cuda.max_memory_allocated`, reset before each run);
  * prediction images/s of the adapter's prediction path (framework inference + the shared
    post-processing, as `Detector.predict` batches it), timed after the model is built, its
    checkpoint loaded and 2 images predicted - not building and loading;
  * YOLO: whether ultralytics' mosaic and its warm-up (lr/momentum ramp while gradient accumulation
    ramps up) fall inside the timed iterations (`window` in the JSON, a note under the table).
The ratio adapter / native images/s is the figure to read (the target: within 3 %); absolute numbers
depend on the GPU, its clocks and the data loader's CPU.

The native runs:
  * ultralytics: `YOLO("<variant>.yaml").train(**kwargs)` with the keyword arguments the adapter
    passes (`adapters.yolov5.train_args`: same data.yaml, augmentation, optimizer, AMP), so the
    difference is the adapter's wrapping (dataset conversion happens before training and is not timed);
  * detectron2: the stock `DefaultTrainer` on `register_coco_instances` data with the adapter's
    config (`adapters.detectron2_frcnn.build_config`) and detectron2's default RandomFlip;
  * mmdet: a plain mmengine `Runner.from_cfg(cfg).train()` on mmdet's packaged Faster R-CNN config
    with the adapter's model, train pipeline, optimizer wrapper (`AmpOptimWrapper`, optimizer,
    paramwise_cfg) and lr schedule, data paths and batch (experiments/bench_mmdet.py's offline edits
    otherwise).

Sizes (default, for one H100/H200; about 6-7 minutes in total with 2 rounds): YOLOv5s at 640 px batch 16;
Faster R-CNN R50-FPN at 1024 px batch 8 in detectron2 and mmdet; a synthetic 1024 px dataset
(tests/toy.py). `--tiny` runs the same code on CPU in a few minutes (yolov5n, R18-FPN, 128 px).

    python experiments/bench_gpu.py                          # GPU, all three frameworks
    python experiments/bench_gpu.py --tiny                   # CPU smoke run
    python experiments/bench_gpu.py --frameworks yolov5 --yolo-ddp 2   # + ultralytics DDP on 2 GPUs

`--yolo-ddp N` (N GPUs) also trains the adapter with `train.gpus=N` (ultralytics' own DDP, CUDA only)
and reports its throughput. On the GPU test machine (no network) run it through
experiments/run_bench_gpu.sh, which installs the missing packages from the wheelhouse built by
experiments/gpu_wheelhouse.sh, one framework per call (--append merges them; --record-error names a
framework that gave no figures). Result: <out>/bench_gpu.json and <out>/bench_gpu.md (written
atomically after each framework).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

from harness import atomic  # noqa: E402  (standard library only: --record-error stays light)

if TYPE_CHECKING:
    from adapters.base import TrainSpec

log = logging.getLogger("bench_gpu")
FRAMEWORKS = ("yolov5", "detectron2_frcnn", "mmdet_frcnn")


@dataclass
class Size:
    variant: str
    imgsz: int
    batch: int
    epochs: int


FULL = {"yolov5": Size("yolov5s", 640, 16, 9), "detectron2_frcnn": Size("R50-FPN", 1024, 8, 3),
        "mmdet_frcnn": Size("R50-FPN", 1024, 8, 3)}
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
            return {"iterations": n, "timed_iterations": 0, "images_per_s": None, "s_per_iter": None,
                    "median_s_per_iter": None}
        seconds = self.ends[-1] - self.ends[skip]
        images = sum(self.images[skip + 1:])
        steps = sorted(b - a for a, b in zip(self.ends[skip:], self.ends[skip + 1:]))
        mid = len(steps) // 2
        median = steps[mid] if len(steps) % 2 else (steps[mid - 1] + steps[mid]) / 2
        return {"iterations": n, "timed_iterations": n - skip - 1, "images_per_s": images / seconds,
                "s_per_iter": seconds / (n - skip - 1), "median_s_per_iter": median}


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
            if isinstance(self, DefaultTrainer):  # the outer loop, not its inner SimpleTrainer
                clock.tick(batch)  # before the hooks: the last iteration's checkpoint write is outside
            original(self)

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

    from adapters.base import count_split_training_set

    run_native(spec, split, workdir, count_split_training_set(split.train_json, spec.negatives)["images"])


def native_mmdet(spec: TrainSpec, split, workdir: Path) -> None:
    import copy

    from bench_mmdet import native_config, run_native

    from adapters.mmdet_frcnn import MMDetFasterRCNN, train_pipeline

    adapter = MMDetFasterRCNN(spec)
    cfg = native_config(spec.variant, split, spec.imgsz, spec.batch_size, spec.epochs, workdir)
    cfg.model = adapter.model_config().model  # the same architecture as the adapter's
    cfg.train_dataloader.dataset.pipeline = train_pipeline(spec)
    cfg.train_dataloader.update(num_workers=spec.workers, persistent_workers=spec.workers > 0)
    # the adapter's checkpoint setting (an interval beyond the run: one write after the last iteration)
    cfg.default_hooks.checkpoint = {"type": "CheckpointHook", "interval": spec.checkpoint_interval,
                                    "max_keep_ckpts": 1, "save_last": True}
    cfg.default_hooks.logger = {"type": "LoggerHook", "interval": 50}
    cfg.log_processor = {"type": "LogProcessor", "window_size": 50, "by_epoch": True}
    # the adapter's optimizer wrapper as a whole (AMP, optimizer and its paramwise_cfg: no decay on norms)
    # and its lr schedule (warm-up and steps scaled to the run; the packaged 500-iteration warm-up gave
    # the native run other learning rates in the CPU rehearsal)
    adapter_cfg = adapter.build_config(split, workdir / "adapter_cfg")
    cfg.optim_wrapper = copy.deepcopy(adapter_cfg.optim_wrapper)
    cfg.param_scheduler = copy.deepcopy(adapter_cfg.param_scheduler)
    cfg.randomness = {"seed": spec.seed}
    run_native(cfg)


# ---------------------------------------------------------------------------------------------
def sync_device() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_predict(detector, checkpoint: Path, images: list, workdir: Path, warmup: int = 2) -> dict:
    """The adapter's prediction path (framework inference + the shared post-processing, batch by
    batch as `Detector.predict`), timed after the model is built, its checkpoint loaded and `warmup`
    images predicted: images/s of steady prediction, not of building and loading the model."""
    from adapters.postprocess import postprocess

    spec = detector.spec
    bs = max(1, int(spec.batch_predict))
    detector.failed_images = []
    with detector.prediction_session(checkpoint, Path(workdir)) as infer:
        detector._infer_batch(infer, images[:warmup])
        sync_device()
        start = time.perf_counter()
        detections = 0
        for first in range(0, len(images), bs):
            batch = images[first:first + bs]
            for ref, raw in zip(batch, detector._infer_batch(infer, batch)):
                if raw is not None:
                    detections += len(postprocess(ref, raw, spec.score_thr, spec.max_det, spec.num_classes))
        sync_device()
        seconds = time.perf_counter() - start
    return {"images": len(images), "images_per_s": round(len(images) / seconds, 2), "detections": detections,
            "batch": bs, "warmup_images": min(warmup, len(images)), "failed": len(detector.failed_images),
            "timed": "inference + post-processing after model build, checkpoint load and warm-up"}


def yolo_window(args: dict, epochs: int, batches_per_epoch: int, skip: int) -> dict:
    """Whether ultralytics' mosaic and its warm-up fall inside the timed iterations (1-based
    iterations skip+2 .. epochs*batches): mosaic runs in the epochs before the last close_mosaic
    ones; the warm-up (lr/momentum ramp, and more frequent optimizer steps while gradient
    accumulation ramps up) covers iterations 0..nw, nw = round(min(warmup_epochs, epochs-1) * batches)."""
    close = int(args.get("close_mosaic", 10))
    mosaic_iters = max(0, epochs - close) * batches_per_epoch if float(args.get("mosaic", 1.0)) > 0 else 0
    warm = float(args.get("warmup_epochs", 3.0))
    nw = round(min(warm, max(epochs - 1, 0)) * batches_per_epoch) if warm > 0 else 0
    first_timed = skip + 1  # 0-based index of the first timed iteration
    total = epochs * batches_per_epoch
    timed = max(0, total - first_timed)
    mosaic_timed = max(0, mosaic_iters - first_timed)
    warm_timed = max(0, min(nw + 1, total) - first_timed) if nw else 0

    def share(n: int) -> str:
        return "out" if n == 0 else ("in" if n == timed else f"partly in ({n} of {timed} timed iterations)")

    return {"timed_iterations": timed, "mosaic_timed_iterations": mosaic_timed,
            "warmup_timed_iterations": warm_timed,
            "mosaic": share(mosaic_timed), "warmup": share(warm_timed),
            "note": f"mosaic {share(mosaic_timed)} (close_mosaic={close}, {epochs} epochs); ultralytics warm-up "
                    f"{share(warm_timed)} (iterations 0..{nw}); first {skip + 1} iterations untimed"}


def aggregate(runs: list[dict]) -> dict:
    """One kind's runs (adapter or native): medians, with the spread across the rounds."""
    def median(values: list[float]) -> float | None:
        values = sorted(v for v in values if v is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    ips = [r["images_per_s"] for r in runs]
    peaks = [r["peak_gpu_gib"] for r in runs if r["peak_gpu_gib"] is not None]
    known = [v for v in ips if v is not None]
    return {"images_per_s": median(ips), "images_per_s_min": min(known) if known else None,
            "images_per_s_max": max(known) if known else None,
            "median_s_per_iter": median([r["median_s_per_iter"] for r in runs]),
            "timed_iterations": min(r["timed_iterations"] for r in runs),
            "peak_gpu_gib": max(peaks) if peaks else None, "runs": len(runs)}


def bench_framework(name: str, size: Size, args, split, out: Path) -> dict:
    """Adapter and native runs alternated (A-B-A-B..., `args.rounds` of each: order bias shows as
    spread), then the adapter's prediction timed."""
    from adapters import get_detector
    from adapters.base import AugSpec, TrainSpec

    # checkpoint_interval beyond the run: no checkpoint is written inside the timed window, only once
    # after the last iteration (in both runs; ultralytics: save=False writes last.pt at the end only)
    spec = TrainSpec(variant=size.variant, epochs=size.epochs, batch_size=size.batch, imgsz=size.imgsz,
                     device=args.device, workers=args.workers, amp=True, seed=0,
                     aug=AugSpec(rotate_deg=0.0, hflip=0.5, vflip=0.0), checkpoint_keep=1,
                     checkpoint_interval=size.epochs + 1)
    if name == "mmdet_frcnn":  # no mmengine validation pass after training (the native run has none)
        spec.native = {"val_cfg": None, "val_dataloader": None, "val_evaluator": None,
                       "default_hooks.logger.interval": 50, "log_processor.window_size": 50}
    elif name == "yolov5":
        spec.native = {"save": False}
    log.info("%s %s: %d px, batch %d, %d epochs on %s, %d rounds adapter/native", name, size.variant, size.imgsz,
             size.batch, size.epochs, args.device, args.rounds)
    work = out / name
    result: dict = {"variant": size.variant, "imgsz": size.imgsz, "batch": size.batch, "epochs": size.epochs,
                    "amp": True, "order": "adapter, native alternated", "runs": []}
    first: dict = {}  # the first adapter run's detector and checkpoint (prediction; YOLO's native data)
    for round_ in range(1, args.rounds + 1):
        detector = get_detector(name, spec)
        checkpoint: list[Path] = []
        adapter_dir = work / f"adapter{round_}"
        row = measured(name, size.batch, args.skip, lambda: checkpoint.append(detector.fit(split, adapter_dir)))
        result["runs"].append({"kind": "adapter", "round": round_, **row})
        first = first or {"detector": detector, "checkpoint": checkpoint[0], "dir": adapter_dir}
        native_spec = TrainSpec(**{**spec.to_dict(), "aug": spec.aug})
        native_dir = work / f"native{round_}"
        if name == "yolov5":
            run = lambda: native_yolov5(native_spec, first["dir"], native_dir)  # noqa: E731
        elif name == "detectron2_frcnn":
            run = lambda: native_detectron2(native_spec, split, native_dir)  # noqa: E731
        else:
            run = lambda: native_mmdet(native_spec, split, native_dir)  # noqa: E731
        result["runs"].append({"kind": "native", "round": round_, **measured(name, size.batch, args.skip, run)})
    detector = first["detector"]
    result["train_images"] = (detector.consumed or {}).get("images")
    for kind in ("adapter", "native"):
        result[kind] = aggregate([r for r in result["runs"] if r["kind"] == kind])
    a, n = result["adapter"]["images_per_s"], result["native"]["images_per_s"]
    result["ratio_adapter_over_native"] = round(a / n, 3) if a and n else None
    sa, sn = result["adapter"]["median_s_per_iter"], result["native"]["median_s_per_iter"]
    result["ratio_s_per_iter_adapter_over_native"] = round(sa / sn, 3) if sa and sn else None
    if name == "yolov5" and result["train_images"]:
        result["window"] = yolo_window(first["detector"].last_fit.get("args", {}), size.epochs,
                                       math.ceil(result["train_images"] / size.batch), args.skip)

    images = split.images("val")[: args.predict_images]
    result["predict"] = timed_predict(detector, first["checkpoint"], images, work / "predict")
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
    fmt = (lambda v, d=1: "—" if v is None else f"{v:.{d}f}")  # noqa: E731
    lines = [f"GPU: {result['gpu']} · torch {result['torch']} · Python {result.get('python', '?')} · "
             f"{result['command']}", "",
             "Each framework: adapter and native runs alternated (A-B-A-B), medians of the rounds; images/s over "
             "the iterations after the first --skip; checkpoints written only after the last timed iteration; "
             "prediction timed after model build, checkpoint load and warm-up.", "",
             "| framework | model | input | batch | adapter img/s (min–max) | native img/s (min–max) | ratio | "
             "adapter s/iter | native s/iter | s/iter ratio | adapter peak GiB | native peak GiB | predict img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, row in result["frameworks"].items():
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:160]} | | | | | | | | | | | |")
            continue
        a, n = row["adapter"], row["native"]
        lines.append(
            f"| {name} | {row['variant']} | {row['imgsz']} | {row['batch']} | "
            f"{fmt(a['images_per_s'])} ({fmt(a['images_per_s_min'])}–{fmt(a['images_per_s_max'])}) | "
            f"{fmt(n['images_per_s'])} ({fmt(n['images_per_s_min'])}–{fmt(n['images_per_s_max'])}) | "
            f"{row['ratio_adapter_over_native']} | {fmt(a['median_s_per_iter'], 4)} | {fmt(n['median_s_per_iter'], 4)} | "
            f"{row['ratio_s_per_iter_adapter_over_native']} | {a['peak_gpu_gib']} | {n['peak_gpu_gib']} | "
            f"{row['predict']['images_per_s']} |")
        if "window" in row:
            notes.append(f"{name}: {row['window']['note']}.")
        order = ", ".join(f"{r['kind'][0].upper()}{r['round']} {fmt(r['images_per_s'])}" for r in row["runs"])
        notes.append(f"{name} runs in order (A = adapter, N = native, img/s): {order}.")
    return "\n".join(lines + [""] + notes) + "\n"


def merge_previous(out: Path, result: dict) -> None:
    """--append: keep the frameworks an earlier call recorded in out/bench_gpu.json (one call per
    framework, experiments/run_bench_gpu.sh)."""
    import json

    previous = out / "bench_gpu.json"
    if previous.is_file():
        try:
            old = json.loads(previous.read_text())
        except ValueError:
            return
        result["frameworks"] = {**old.get("frameworks", {}), **result["frameworks"]}
        for key, value in old.items():
            if key != "frameworks" and result.get(key) in (None, "unknown"):
                result[key] = value


def write_results(out: Path, result: dict) -> None:
    atomic.write_json(out / "bench_gpu.json", result)
    atomic.write_text(out / "bench_gpu.md", markdown(result))


def toy_data(root: Path, images: int, size: int) -> dict:
    """The synthetic dataset, made once per folder (a later call for another framework reuses it)."""
    from toy import make_toy_dataset

    labels, folds = root / "labels" / "toy.json", root / "folds" / "toy-k2.json"
    if labels.is_file() and folds.is_file():
        return {"labels": labels, "folds": folds, "root": root}
    import shutil

    tmp = root.with_name(f"{root.name}.{os.getpid()}.tmp")
    made = make_toy_dataset(tmp, n_images=images, size=size, seed=0, k=2)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)  # a cut-off call leaves no half-made dataset behind
    return {key: Path(str(value).replace(str(tmp), str(root))) for key, value in made.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke settings: small models, 128 px, few iterations")
    ap.add_argument("--device", help="cuda (default) or cpu (default with --tiny)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--images", type=int, help="synthetic dataset size (half train, half val)")
    ap.add_argument("--skip", type=int, help="warm-up iterations left out (default 20; 1 with --tiny)")
    ap.add_argument("--rounds", type=int, default=2, help="adapter/native pairs, alternated (default 2: A-B-A-B)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default 8; 0 with --tiny)")
    ap.add_argument("--predict-images", type=int, help="val images predicted (default 64; 4 with --tiny)")
    ap.add_argument("--yolo-ddp", type=int, default=0, help="also train YOLO with train.gpus=N (CUDA, N GPUs)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "gpu"))
    ap.add_argument("--append", action="store_true", help="add to the frameworks already in OUT/bench_gpu.json")
    ap.add_argument("--record-error", action="append", default=[], metavar="FRAMEWORK=REASON",
                    help="record a framework that gave no figures (skipped, cut off), with why")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.skip = args.skip if args.skip is not None else (1 if args.tiny else 20)
    args.predict_images = args.predict_images or (4 if args.tiny else 64)
    args.workers = args.workers if args.workers is not None else (0 if args.tiny else 8)
    images = args.images or (24 if args.tiny else 512)
    sizes = TINY if args.tiny else FULL
    names = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    for name in names:
        if name not in FRAMEWORKS:
            raise SystemExit(f"unknown framework {name!r}; known: {', '.join(FRAMEWORKS)}")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = "python experiments/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result: dict = {"gpu": "unknown", "torch": "unknown", "python": platform.python_version(), "command": command,
                    "frameworks": {}}
    for entry in args.record_error:
        name, _, reason = entry.partition("=")
        result["frameworks"][name.strip()] = {"error": reason.strip() or "no figures"}
    if not names:  # only recording
        result["command"] = "unknown"  # the benchmark's own command stays the header's
        if args.append:
            merge_previous(out, result)
        write_results(out, result)
        return result

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny (CPU) or on a GPU")
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    started = time.perf_counter()
    from harness.split import make_split

    size = 128 if args.tiny else 1024
    toy = toy_data(out / f"data{size}-{images}", images, size)
    split = make_split(toy["labels"], toy["folds"], 0, out / f"split-{uuid.uuid4().hex[:6]}")
    result.update(gpu=torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                  else f"CPU ({platform.processor() or platform.machine()})",
                  torch=torch.__version__, device=args.device, skip_iterations=args.skip, rounds=args.rounds,
                  workers=args.workers, dataset=f"toy {images} images at {size} px")
    if args.append:
        merge_previous(out, result)
    for name in names:
        try:
            row = bench_framework(name, sizes[name], args, split, out)
        except Exception as err:  # noqa: BLE001 - one framework failing must not lose the others' figures
            log.exception("%s failed", name)
            row = {"error": f"{type(err).__name__}: {err}"}
        result["frameworks"][name] = {**row, "command": command}
        write_results(out, result)
    result["total_wall_s"] = round(time.perf_counter() - started, 1)
    write_results(out, result)
    print(markdown(result))
    print(f"total {result['total_wall_s']} s; details in {out / 'bench_gpu.json'}")
    return result


if __name__ == "__main__":
    main()
