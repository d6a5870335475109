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

Sizes (default, for one H100/H200; estimated, not yet measured: 6-7 minutes with 2 rounds): YOLOv5s at
640 px batch 16; Faster R-CNN R50-FPN at 1024 px batch 8 in detectron2 and mmdet; a synthetic 1024 px dataset
(tests/toy.py). `--tiny` runs the same code on CPU in a few minutes (yolov5n, R18-FPN, 128 px).

    python experiments/bench_gpu.py                          # GPU, all three frameworks
    python experiments/bench_gpu.py --tiny                   # CPU smoke run
    python experiments/bench_gpu.py --frameworks yolov5 --yolo-ddp 2   # + ultralytics DDP on 2 GPUs

`--yolo-ddp N` (N GPUs) also trains the adapter with `train.gpus=N` (ultralytics' own DDP, CUDA only)
and reports its throughput. `--coverage ultralytics,detectron2,mmdet,nccl` adds, after the pairs, a
two-iteration smoke of each zoo family (YOLO11 and RT-DETR in ultralytics, RetinaNet and Cascade R-CNN in
detectron2 and mmdet; from the packaged yaml/config, no downloaded weights) and a one-process NCCL group
through adapters.ddp.spawn (the `train.gpus` path; "not available on CPU" there, where the same spawn runs
with gloo); each reports pass/fail with its error.

Nothing finished is lost: every timed run, prediction, smoke and check is appended to
<out>/bench_gpu.jsonl as one JSON line (fsync'd) the moment it finishes; <out>/bench_gpu.json and
bench_gpu.md are rebuilt from those lines alone (atomically, after each framework and by `--summarize`),
so a run cut off in the middle of a framework still reports its finished runs and names what did not
finish. experiments/run_bench_gpu.sh drives a GPU machine without network: it installs the wheelhouse
built by experiments/gpu_wheelhouse.sh, plans the run and makes the data (`--prepare`), gives each
framework a share of the time left weighted by its expected cost (`--part` per framework), then the
coverage items, and summarizes in any case (also after a kill). `--record-error NAME=REASON` records why a
framework or coverage item gave no (or not all) figures.
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


# ---------------------------------------------------------------------------------------------
# The record: one JSON line per finished measurement, appended and fsync'd as it finishes
# ---------------------------------------------------------------------------------------------
RECORDS = "bench_gpu.jsonl"


class Recorder:
    """Appends one JSON object per line to <out>/bench_gpu.jsonl and fsyncs it: whatever stops the
    process afterwards (a timeout, a kill, a crash), what finished is on disk."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / RECORDS

    def __call__(self, type_: str, /, **fields) -> dict:
        import json

        record = {"type": type_, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        line = json.dumps(record, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # mode masked by the umask
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.environ.get("BENCH_GPU_STALL_AFTER") == f"{type_}:{fields.get('framework')}":
            # test hook (tests/test_bench_gpu.py): stall here, as a run that never ends would, until killed
            log.warning("BENCH_GPU_STALL_AFTER=%s: stalling until stopped", os.environ["BENCH_GPU_STALL_AFTER"])
            while True:
                time.sleep(1)
        return record


def read_records(out: Path) -> tuple[list[dict], int]:
    """The records of <out>/bench_gpu.jsonl, and how many lines could not be read (a line cut off by a
    kill in the middle of its write)."""
    import json

    path = Path(out) / RECORDS
    records, bad = [], 0
    if not path.is_file():
        return records, bad
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            bad += 1
    return records, bad


def pair_steps(rounds: int, yolo_ddp: int = 0, framework: str = "") -> list[str]:
    """The measurements one framework's adapter-vs-native call makes, in order."""
    steps = [f"{kind}{r}" for r in range(1, rounds + 1) for kind in ("adapter", "native")] + ["predict"]
    if framework == "yolov5" and yolo_ddp > 1:
        steps.append(f"adapter_ddp{yolo_ddp}")
    return steps


# ---------------------------------------------------------------------------------------------
# Adapter vs native, one framework
# ---------------------------------------------------------------------------------------------
def bench_framework(name: str, size: Size, args, split, out: Path, record: Recorder) -> None:
    """Adapter and native runs alternated (A-B-A-B..., `args.rounds` of each: order bias shows as
    spread), then the adapter's prediction timed; each measurement recorded as it finishes."""
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
    setting = {"framework": name, "variant": size.variant, "imgsz": size.imgsz, "batch": size.batch,
               "epochs": size.epochs, "amp": True}
    first: dict = {}  # the first adapter run's detector and checkpoint (prediction; YOLO's native data)
    for round_ in range(1, args.rounds + 1):
        detector = get_detector(name, spec)
        checkpoint: list[Path] = []
        adapter_dir = work / f"adapter{round_}"
        row = measured(name, size.batch, args.skip, lambda: checkpoint.append(detector.fit(split, adapter_dir)))
        if not first:
            first = {"detector": detector, "checkpoint": checkpoint[0], "dir": adapter_dir}
            train_images = (detector.consumed or {}).get("images")
            extra = {"train_images": train_images}
            if name == "yolov5" and train_images:
                extra["window"] = yolo_window(detector.last_fit.get("args", {}), size.epochs,
                                              math.ceil(train_images / size.batch), args.skip)
        else:
            extra = {}
        record("run", **setting, kind="adapter", round=round_, step=f"adapter{round_}", **row, **extra)
        native_spec = TrainSpec(**{**spec.to_dict(), "aug": spec.aug})
        native_dir = work / f"native{round_}"
        if name == "yolov5":
            run = lambda: native_yolov5(native_spec, first["dir"], native_dir)  # noqa: E731
        elif name == "detectron2_frcnn":
            run = lambda: native_detectron2(native_spec, split, native_dir)  # noqa: E731
        else:
            run = lambda: native_mmdet(native_spec, split, native_dir)  # noqa: E731
        row = measured(name, size.batch, args.skip, run)
        record("run", **setting, kind="native", round=round_, step=f"native{round_}", **row)

    images = split.images("val")[: args.predict_images]
    predict = timed_predict(first["detector"], first["checkpoint"], images, work / "predict")
    record("predict", framework=name, step="predict", **predict)
    if name == "yolov5" and args.yolo_ddp > 1:
        ddp_spec = TrainSpec(**{**spec.to_dict(), "aug": spec.aug, "gpus": args.yolo_ddp,
                                "batch_size": size.batch * args.yolo_ddp})
        ddp = get_detector(name, ddp_spec)
        step = f"adapter_ddp{args.yolo_ddp}"
        start = time.perf_counter()
        try:  # ultralytics runs DDP in subprocesses: only whole-call figures are visible from here
            ddp.fit(split, work / step)
        except Exception as err:  # noqa: BLE001 - keeps the single-GPU figures
            log.exception("yolov5 DDP failed")
            record("ddp", framework=name, step=step, gpus=args.yolo_ddp, error=f"{type(err).__name__}: {err}")
        else:
            wall = time.perf_counter() - start
            record("ddp", framework=name, step=step, gpus=args.yolo_ddp, batch=ddp_spec.batch_size,
                   wall_s=round(wall, 1),
                   images_per_s_whole_call=round(ddp.consumed["images"] * size.epochs / wall, 1))


# ---------------------------------------------------------------------------------------------
# Coverage: a two-iteration smoke of each zoo family, and NCCL through the harness's DDP path
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Smoke:
    framework: str  # adapters registry name (the zoo adapter of the framework)
    family: str
    arch: str  # model.arch on a GPU
    arch_tiny: str  # model.arch with --tiny (CPU)


ZOO_SMOKES = {
    "ultralytics": [Smoke("ultralytics", "YOLO11", "yolo11n", "yolo11n"),
                    Smoke("ultralytics", "RT-DETR", "rtdetr-l", "rtdetr-l")],
    "detectron2": [Smoke("detectron2", "RetinaNet", "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
                         "COCO-Detection/retinanet_R_50_FPN_3x.yaml"),
                   Smoke("detectron2", "Cascade R-CNN", "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
                         "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml")],
    "mmdet": [Smoke("mmdet", "RetinaNet", "retinanet_r50_fpn_1x_coco", "retinanet_r18_fpn_1x_coco"),
              Smoke("mmdet", "Cascade R-CNN", "cascade-rcnn_r50_fpn_1x_coco", "cascade-rcnn_r50_fpn_1x_coco")],
}
COVERAGE = (*ZOO_SMOKES, "nccl")
# which adapter-vs-native framework's import check a coverage item shares (experiments/run_bench_gpu.sh)
COVERAGE_NEEDS = {"ultralytics": "yolov5", "detectron2": "detectron2_frcnn", "mmdet": "mmdet_frcnn", "nccl": ""}
SMOKE_IMAGES = 24  # toy images; fold 0 trains on 6 of them with boxes: 2 iterations at batch 4
# --tiny only: CPU-sized R-CNN settings (the RoI heads dominate CPU time), recorded with the smoke
RCNN_CPU = {"detectron2": {"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64, "MODEL.RPN.POST_NMS_TOPK_TRAIN": 200,
                           "MODEL.RPN.POST_NMS_TOPK_TEST": 100},
            "mmdet": {"model.train_cfg.rpn_proposal.max_per_img": 200, "model.test_cfg.rpn.max_per_img": 100,
                      **{f"model.train_cfg.rcnn.{stage}.sampler.num": 64 for stage in range(3)}}}


def smoke_steps(item: str, tiny: bool) -> list[str]:
    if item == "nccl":
        return ["nccl"]
    return [f"{s.family} ({s.arch_tiny if tiny else s.arch})" for s in ZOO_SMOKES[item]]


def zoo_smoke(item: str, args, split, out: Path, record: Recorder) -> None:
    """Each family of `item`'s framework: a fit of two iterations from its packaged yaml/config (no
    downloaded weights) and a prediction of 2 images; pass/fail with the error, recorded one by one."""
    import traceback

    from adapters import get_detector
    from adapters.base import TrainSpec

    for smoke in ZOO_SMOKES[item]:
        arch = smoke.arch_tiny if args.tiny else smoke.arch
        step = f"{smoke.family} ({arch})"
        spec = TrainSpec(variant=arch, epochs=1, batch_size=4, imgsz=64 if args.tiny else 256, device=args.device,
                         workers=0 if args.tiny else 2, amp=args.device.startswith("cuda"), seed=0, lr=0.001,
                         batch_predict=2, checkpoint_keep=1)
        if args.tiny and smoke.family == "Cascade R-CNN":
            spec.native = dict(RCNN_CPU[item])
            spec.reasons = {key: "CPU rehearsal: fewer RoIs and proposals" for key in spec.native}
        workdir = out / "zoo" / f"{item}-{arch.replace('/', '_')}"
        start = time.perf_counter()
        log.info("zoo smoke %s %s", item, step)
        try:
            detector = get_detector(smoke.framework, spec)
            checkpoint = detector.fit(split, workdir)
            predictions = detector.predict(checkpoint, split.images("val")[:2], workdir / "predict")
        except Exception as err:  # noqa: BLE001 - recorded as a failure with its error; the next one runs
            log.error("zoo smoke %s %s failed:\n%s", item, step, traceback.format_exc())
            record("smoke", item=item, step=step, family=smoke.family, arch=arch, passed=False,
                   error=f"{type(err).__name__}: {err}"[:400], wall_s=round(time.perf_counter() - start, 1))
        else:
            record("smoke", item=item, step=step, family=smoke.family, arch=arch, passed=True,
                   train_images=(detector.consumed or {}).get("images"), imgsz=spec.imgsz, batch=spec.batch_size,
                   predicted_boxes=len(predictions), settings=spec.native,
                   wall_s=round(time.perf_counter() - start, 1))


def _nccl_probe(result_file: str) -> None:
    """One process of adapters.ddp.spawn: the backend it joined, an all_reduce, and one
    DistributedDataParallel step (its parameter broadcast and gradient all-reduce)."""
    import torch
    import torch.distributed as dist

    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    value = torch.ones(4, device=device)
    dist.all_reduce(value)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Linear(8, 2).to(device), device_ids=[device.index] if device.type == "cuda" else None)
    model(torch.randn(16, 8, device=device)).sum().backward()
    grads = all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    atomic.write_json(result_file, {"backend": backend, "world_size": dist.get_world_size(),
                                    "all_reduce": value.tolist(), "ddp_step": grads, "device": str(device)})


def nccl_check(args, out: Path, record: Recorder) -> None:
    """A one-process NCCL group (world size 1) through adapters.ddp.spawn, the path `train.gpus=N`
    takes; on CPU NCCL is not available: the same spawn runs with gloo as a rehearsal of the path."""
    import json

    import torch

    from adapters.ddp import spawn

    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    result_file = out / "nccl" / f"probe-{uuid.uuid4().hex[:6]}.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        if cuda and not (torch.distributed.is_available() and torch.distributed.is_nccl_available()):
            raise RuntimeError("this torch has no NCCL")
        spawn(_nccl_probe, 1, cuda, args=(str(result_file),))
        probe = json.loads(result_file.read_text())
        if probe["all_reduce"] != [1.0] * 4 or not probe["ddp_step"]:
            raise RuntimeError(f"wrong result from the process group: {probe}")
    except Exception as err:  # noqa: BLE001 - recorded with its error
        log.exception("spawn (world size 1) failed")
        status, error, probe = "failed", f"{type(err).__name__}: {err}"[:400], {}
    else:
        status, error = "passed", None
    wall = round(time.perf_counter() - start, 1)
    if cuda:
        record("nccl", step="nccl", status=status, error=error, wall_s=wall, **probe)
    else:
        record("nccl", step="nccl", status="not available on CPU", error=None, wall_s=wall,
               rehearsal=f"adapters.ddp.spawn, world size 1, gloo: {status}" + (f" ({error})" if error else ""),
               **probe)


# ---------------------------------------------------------------------------------------------
# The summary: built from the records alone (also after a cut-off run)
# ---------------------------------------------------------------------------------------------
def aggregate(runs: list[dict]) -> dict:
    """One kind's runs (adapter or native): medians, with the spread across the rounds."""
    def median(values: list[float]) -> float | None:
        values = sorted(v for v in values if v is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    if not runs:
        return {"images_per_s": None, "images_per_s_min": None, "images_per_s_max": None,
                "median_s_per_iter": None, "timed_iterations": 0, "peak_gpu_gib": None, "runs": 0}
    ips = [r["images_per_s"] for r in runs]
    peaks = [r["peak_gpu_gib"] for r in runs if r["peak_gpu_gib"] is not None]
    known = [v for v in ips if v is not None]
    return {"images_per_s": median(ips), "images_per_s_min": min(known) if known else None,
            "images_per_s_max": max(known) if known else None,
            "median_s_per_iter": median([r["median_s_per_iter"] for r in runs]),
            "timed_iterations": min(r["timed_iterations"] for r in runs),
            "peak_gpu_gib": max(peaks) if peaks else None, "runs": len(runs)}


def summarize(records: list[dict], unreadable: int = 0) -> dict:
    """bench_gpu.json's content from the records: per framework the runs that finished, their
    aggregates, and the planned steps that did not finish (with the reason a note gives, if any)."""
    metas = [r for r in records if r["type"] == "meta"]
    known = [m for m in metas if m.get("gpu") not in (None, "unknown")]
    meta = known[0] if known else (metas[0] if metas else {})
    plans = [r for r in records if r["type"] == "plan"]
    plan = plans[-1] if plans else {"frameworks": {}, "coverage": {}}
    notes: dict[str, list[str]] = {}
    for r in records:
        if r["type"] == "note":
            notes.setdefault(r["target"], []).append(r["reason"])
    done = {(r.get("framework") or r.get("item") or r["type"], r["step"]) for r in records if "step" in r}
    result = {key: meta.get(key) for key in ("gpu", "torch", "python", "device", "dataset", "skip_iterations",
                                             "rounds", "workers", "command")}
    result.update(frameworks={}, zoo=[], nccl=None, not_finished=[], unreadable_lines=unreadable)
    names = list(plan["frameworks"]) + [n for n in notes if n not in plan["frameworks"] and n not in COVERAGE]
    names += [r["framework"] for r in records if r["type"] == "run" and r["framework"] not in names]
    for name in dict.fromkeys(names):
        runs = [r for r in records if r["type"] == "run" and r["framework"] == name]
        row: dict = {"runs": [{k: v for k, v in r.items() if k not in ("type", "window", "train_images")}
                              for r in runs]}
        if runs:
            row.update({k: runs[0][k] for k in ("variant", "imgsz", "batch", "epochs", "amp")})
            for r in runs:
                for key in ("train_images", "window"):
                    if key in r:
                        row[key] = r[key]
        for kind in ("adapter", "native"):
            row[kind] = aggregate([r for r in runs if r["kind"] == kind])
        a, n = row["adapter"]["images_per_s"], row["native"]["images_per_s"]
        row["ratio_adapter_over_native"] = round(a / n, 3) if a and n else None
        sa, sn = row["adapter"]["median_s_per_iter"], row["native"]["median_s_per_iter"]
        row["ratio_s_per_iter_adapter_over_native"] = round(sa / sn, 3) if sa and sn else None
        predict = [r for r in records if r["type"] == "predict" and r["framework"] == name]
        row["predict"] = {k: v for k, v in predict[-1].items() if k not in ("type", "framework", "step")} if predict \
            else None
        ddp = [r for r in records if r["type"] == "ddp" and r["framework"] == name]
        if ddp:
            row["adapter_ddp"] = {k: v for k, v in ddp[-1].items() if k not in ("type", "framework")}
        planned = plan["frameworks"].get(name, [])
        row["missing"] = [s for s in planned if (name, s) not in done]
        row["notes"] = notes.get(name, [])
        row["status"] = ("finished" if planned and not row["missing"] else
                         "partly finished" if runs or predict else "no figures")
        result["frameworks"][name] = row
        if row["missing"]:
            why = "; ".join(row["notes"]) or "no record: the run stopped before it"
            result["not_finished"].append(f"{name}: {', '.join(row['missing'])} ({why})")
    for r in records:
        if r["type"] == "smoke":
            result["zoo"].append({k: v for k, v in r.items() if k != "type"})
        elif r["type"] == "nccl":
            result["nccl"] = {k: v for k, v in r.items() if k != "type"}
    for item, steps in plan.get("coverage", {}).items():
        missing = [s for s in steps if (item, s) not in done]
        if missing:
            why = "; ".join(notes.get(item, [])) or "no record: the run stopped before it"
            result["not_finished"].append(f"{item}: {', '.join(missing)} ({why})")
    return result


def markdown(result: dict) -> str:
    def fmt(v, d=None):  # d decimals; without d, images/s to 3 significant digits (CPU figures are < 1)
        if v is None:
            return "—"
        return f"{v:.{d}f}" if d is not None else f"{v:.{max(1, 2 - math.floor(math.log10(abs(v))))}f}" if v else "0"

    lines = [f"GPU: {result['gpu'] or 'unknown'} · torch {result['torch'] or 'unknown'} · Python "
             f"{result.get('python') or '?'} · {result.get('dataset') or 'dataset unknown'}", ""]
    pairs = ["Each framework: adapter and native runs alternated (A-B-A-B), medians of the rounds that finished; "
             "images/s over the iterations after the first --skip; checkpoints written only after the last timed "
             "iteration; prediction timed after model build, checkpoint load and warm-up. One run on one machine: "
             "the ratio is the figure to read, not the absolute speed.", "",
             "| framework | status | model | input | batch | adapter img/s (min–max) | native img/s (min–max) | ratio | "
             "adapter s/iter | native s/iter | s/iter ratio | adapter peak GiB | native peak GiB | predict img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += pairs if result["frameworks"] else ["No adapter-vs-native pair was planned."]
    notes = []
    for name, row in result["frameworks"].items():
        a, n = row["adapter"], row["native"]
        status = row["status"] + (f" ({a['runs']}+{n['runs']} runs)" if row["status"] == "partly finished" else "")
        if not row["runs"]:
            why = "; ".join(row["notes"]) or "no record"
            lines.append(f"| {name} | {status}: {why[:200]} | | | | | | | | | | | | |")
            continue
        predict = row["predict"]["images_per_s"] if row["predict"] else "—"
        lines.append(
            f"| {name} | {status} | {row['variant']} | {row['imgsz']} | {row['batch']} | "
            f"{fmt(a['images_per_s'])} ({fmt(a['images_per_s_min'])}–{fmt(a['images_per_s_max'])}) | "
            f"{fmt(n['images_per_s'])} ({fmt(n['images_per_s_min'])}–{fmt(n['images_per_s_max'])}) | "
            f"{row['ratio_adapter_over_native'] or '—'} | {fmt(a['median_s_per_iter'], 4)} | "
            f"{fmt(n['median_s_per_iter'], 4)} | {row['ratio_s_per_iter_adapter_over_native'] or '—'} | "
            f"{fmt(a['peak_gpu_gib'], 2)} | {fmt(n['peak_gpu_gib'], 2)} | {predict} |")
        if "window" in row:
            notes.append(f"{name}: {row['window']['note']}.")
        order = ", ".join(f"{r['kind'][0].upper()}{r['round']} {fmt(r['images_per_s'])}" for r in row["runs"])
        notes.append(f"{name} runs in order (A = adapter, N = native, img/s): {order}.")
        if "adapter_ddp" in row:
            ddp = row["adapter_ddp"]
            notes.append(f"{name} DDP on {ddp['gpus']} GPUs: " + (f"failed: {ddp['error']}" if "error" in ddp else
                         f"{ddp['images_per_s_whole_call']} img/s over the whole call ({ddp['wall_s']} s)."))
        if row["notes"] and row["runs"]:
            notes.append(f"{name}: {'; '.join(row['notes'])}.")
    lines += [""] + notes
    if result["zoo"]:
        lines += ["", "Zoo smoke (two training iterations from the packaged config, no downloaded weights, then 2 "
                  "images predicted): does each family train and predict here - not a speed or accuracy figure.", "",
                  "| framework | family | model.arch | result | s |", "|---|---|---|---|---|"]
        for z in result["zoo"]:
            verdict = "passed" if z["passed"] else f"failed: {z['error'][:200]}"
            lines.append(f"| {z['item']} | {z['family']} | {z['arch']} | {verdict} | {z['wall_s']} |")
        for z in result["zoo"]:
            if z.get("settings"):
                lines.append(f"{z['item']} {z['family']} ran with {z['settings']} (CPU rehearsal: fewer RoIs).")
    if result["nccl"]:
        c = result["nccl"]
        line = f"NCCL (adapters.ddp.spawn, world size 1, the `train.gpus` path): {c['status']}"
        if c.get("error"):
            line += f": {c['error']}"
        if c.get("rehearsal"):
            line += f" (rehearsal: {c['rehearsal']})"
        lines += ["", line + "."]
    if result["not_finished"]:
        lines += ["", "**Did not finish** (planned, no record):", ""] + [f"- {x}" for x in result["not_finished"]]
    else:
        lines += ["", "Everything planned finished."]
    if result["unreadable_lines"]:
        lines += ["", f"{result['unreadable_lines']} line(s) of {RECORDS} could not be read (cut off mid-write)."]
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> dict:
    records, bad = read_records(out)
    result = summarize(records, bad)
    atomic.write_json(out / "bench_gpu.json", result)
    atomic.write_text(out / "bench_gpu.md", markdown(result))
    return result


# ---------------------------------------------------------------------------------------------
def toy_data(root: Path, images: int, size: int) -> dict:
    """The synthetic dataset, made once per folder (the later calls of one benchmark run reuse it:
    --prepare makes it before any framework's share of the time is set)."""
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


def datasets(out: Path, args) -> dict[str, dict]:
    """The benchmark's data (when frameworks are asked for) and the zoo smoke's (when coverage is:
    small, two training iterations at batch 4)."""
    data = {}
    if args.names:
        size = 128 if args.tiny else 1024
        data["bench"] = toy_data(out / f"data{size}-{args.images}", args.images, size)
    if any(item != "nccl" for item in args.items):
        size = 128 if args.tiny else 256
        data["smoke"] = toy_data(out / f"smoke{size}-{SMOKE_IMAGES}", SMOKE_IMAGES, size)
    return data


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke settings: small models, 128 px, few iterations")
    ap.add_argument("--device", help="cuda (default) or cpu (default with --tiny)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--coverage", default="",
                    help=f"after the pairs: zoo smokes and the NCCL check, comma-separated from {','.join(COVERAGE)}")
    ap.add_argument("--images", type=int, help="synthetic dataset size (half train, half val)")
    ap.add_argument("--skip", type=int, help="warm-up iterations left out (default 20; 1 with --tiny)")
    ap.add_argument("--rounds", type=int, default=2, help="adapter/native pairs, alternated (default 2: A-B-A-B)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default 8; 0 with --tiny)")
    ap.add_argument("--predict-images", type=int, help="val images predicted (default 64; 4 with --tiny)")
    ap.add_argument("--yolo-ddp", type=int, default=0, help="also train YOLO with train.gpus=N (CUDA, N GPUs)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / time.strftime("gpu-%Y%m%d-%H%M%S", time.gmtime())),
                    help="a new folder (default runs/bench/gpu-<UTC time>): records are never mixed with an "
                         "earlier run's")
    ap.add_argument("--prepare", action="store_true",
                    help="start a run in OUT: record the plan (--frameworks, --coverage) and make the data")
    ap.add_argument("--part", action="store_true",
                    help="one part of the run --prepare started in OUT (experiments/run_bench_gpu.sh)")
    ap.add_argument("--summarize", action="store_true", help="only rebuild bench_gpu.json/.md from the records")
    ap.add_argument("--record-error", action="append", default=[], metavar="NAME=REASON",
                    help="record why a framework or coverage item gave no (or not all) figures: skipped, cut off")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.skip = args.skip if args.skip is not None else (1 if args.tiny else 20)
    args.predict_images = args.predict_images or (4 if args.tiny else 64)
    args.workers = args.workers if args.workers is not None else (0 if args.tiny else 8)
    args.images = args.images or (24 if args.tiny else 512)
    args.names = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    args.items = [f.strip() for f in args.coverage.split(",") if f.strip()]
    for name in args.names:
        if name not in FRAMEWORKS:
            raise SystemExit(f"unknown framework {name!r}; known: {', '.join(FRAMEWORKS)}")
    for item in args.items:
        if item not in COVERAGE:
            raise SystemExit(f"unknown coverage item {item!r}; known: {', '.join(COVERAGE)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    record = Recorder(out)
    for entry in args.record_error:
        target, _, reason = entry.partition("=")
        record("note", target=target.strip(), reason=reason.strip() or "no figures")
    if args.summarize or args.record_error:
        return write_summary(out)  # standard library only: stays light and quick

    command = "python experiments/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    planned = any(r["type"] == "plan" for r in read_records(out)[0])
    if args.part and not planned:
        raise SystemExit(f"{out} holds no planned run: start it with --prepare (experiments/run_bench_gpu.sh does)")
    if not args.part:  # a new run: its own plan, in a folder of its own
        if (out / RECORDS).exists():
            raise SystemExit(f"{out / RECORDS} already holds a benchmark run's records: give --out a new folder "
                             "(nothing is appended to, or overwrites, an earlier run)")
        record("plan", frameworks={n: pair_steps(args.rounds, args.yolo_ddp, n) for n in args.names},
               coverage={i: smoke_steps(i, args.tiny) for i in args.items}, command=command)
    data = datasets(out, args)
    if args.prepare:
        write_summary(out)
        return {"data": data}

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny (CPU) or on a GPU")
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    started = time.perf_counter()
    from harness.split import make_split

    size = 128 if args.tiny else 1024
    record("meta", gpu=torch.cuda.get_device_name(0) if args.device.startswith("cuda")
           else f"CPU ({platform.processor() or platform.machine()})", torch=torch.__version__,
           python=platform.python_version(), device=args.device, skip_iterations=args.skip, rounds=args.rounds,
           workers=args.workers, dataset=f"toy {args.images} images at {size} px", command=command)
    sizes = TINY if args.tiny else FULL
    if args.names:
        split = make_split(data["bench"]["labels"], data["bench"]["folds"], 0, out / f"split-{uuid.uuid4().hex[:6]}")
    for name in args.names:
        try:
            bench_framework(name, sizes[name], args, split, out, record)
        except Exception as err:  # noqa: BLE001 - one framework failing must not lose the others' figures
            log.exception("%s failed", name)
            record("note", target=name, reason=f"failed: {type(err).__name__}: {err}"[:400])
        write_summary(out)
    if "smoke" in data:
        smoke_split = make_split(data["smoke"]["labels"], data["smoke"]["folds"], 0,
                                 out / f"smoke-split-{uuid.uuid4().hex[:6]}")
    for item in args.items:
        try:
            if item == "nccl":
                nccl_check(args, out, record)
            else:
                zoo_smoke(item, args, smoke_split, out, record)
        except Exception as err:  # noqa: BLE001
            log.exception("%s failed", item)
            record("note", target=item, reason=f"failed: {type(err).__name__}: {err}"[:400])
        write_summary(out)
    result = write_summary(out)
    print(markdown(result))
    print(f"this call {time.perf_counter() - started:.1f} s; records in {out / RECORDS}")
    return result


if __name__ == "__main__":
    main()
