"""MMDetection Faster R-CNN behind the shared `Detector` interface (mmdet 3.3 / mmengine 0.10 / mmcv 2.1).

Model variants come from mmdet's *packaged* configs (`mmdet/.mim/configs`), loaded with mmengine's
`Config.fromfile`, so the architecture is the one mmdet ships, not a re-typed copy:

    "R18-FPN"   faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py with ResNet depth 18,
                FPN in_channels [64, 128, 256, 512]  (small, for CPU demos)
    "R50-FPN"   faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py
    "R101-FPN"  faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py

All get `roi_head.bbox_head.num_classes = 14` (the model always has the 14 VinBigData classes).

From scratch (`spec.weights` None, the default) the ImageNet download is switched off
(`backbone.init_cfg=None`; mmdet would otherwise fetch torchvision://resnet50) and the network is
normalised so it trains from random init, as mmdet's `configs/scratch` recipe does: GroupNorm(32) in
backbone and FPN, no frozen stages, and the 4-conv + 1-fc GN box head (R50/R101). The R18 CPU
variant keeps the packaged 2-fc box head: the 4-conv GN head costs ~8x its FLOPs per RoI on CPU.
With `spec.weights` (a LOCAL mmdet detector checkpoint) the packaged BN architecture is kept and the
file becomes mmengine's `load_from`; box-head layers whose shape differs (e.g. 80 COCO classes)
are skipped by mmengine's non-strict loading and start from random init.

Shared augmentation spec -> mmdet train pipeline (after `Resize`, so rotation runs at training size):
    AugSpec.rotate_deg -> `Rotate(prob=1.0, min_mag=0.0, max_mag=deg, reversal_prob=0.5,
                           img_border_value=0)`: angle ~ U[-deg, +deg] (magnitude uniform in
                           [0, deg], sign flipped with p 0.5); boxes are rotated as their 4 corners
                           and replaced by the enclosing box, clipped to the image (mmdet's
                           `HorizontalBoxes.project_`); black border as on an X-ray.
    AugSpec.hflip      -> `RandomFlip(prob=hflip, direction='horizontal')`
    AugSpec.vflip      -> `RandomFlip(prob=vflip, direction='vertical')`
Two separate flips, not one `RandomFlip(prob=[h, v], direction=[...])`: with list probabilities mmcv
picks at most ONE direction (h with p h, v with p v, none with p 1-h-v, and requires h+v <= 1), while
the study's albumentations flips are independent. A zero probability / angle drops the transform.
Images are resized to `spec.imgsz` on the longer side (`Resize(scale=(s, s), keep_ratio=True)`).

Training runs through mmengine's `Runner` with mmdet's own recipe: `EpochBasedTrainLoop(max_epochs=
spec.epochs)`, an `OptimWrapper` (sgd -> SGD(momentum 0.9), adam -> Adam, adamw -> AdamW; spec.lr and
weight_decay; no gradient clipping, as mmdet's Faster R-CNN configs; no decay on norm layers in the
scratch recipe, as configs/scratch; `AmpOptimWrapper` when spec.amp on CUDA), warmup (`LinearLR`,
1/1000 -> 1 over min(500, 10% of the iterations)) then `MultiStepLR` x0.1 at the native schedule's
fractions of training (pretrained: the 1x schedule's 8/12 and 11/12; scratch: the 6x scratch
schedule's 65/73 and 71/73), and `CheckpointHook(interval=spec.checkpoint_interval,
max_keep_ckpts=spec.checkpoint_keep)` (each ~100-300 MB). Resuming (`adapters.resume`): a hook after
the CheckpointHook records each `epoch_<k>.pth` as resumable and updates the progress file; a rerun
sets mmengine's `resume=True` with `load_from` = the chosen checkpoint (model, optimizer, schedulers,
epoch/iteration, seed). Training images without boxes follow the shared protocol's `spec.negatives`
(`filter_empty_gt`: drop -> True, keep -> False); what mmdet consumed is read back from the
runner's built training dataset. Validation keeps every image.
At the end of training (mmengine always validates after the last epoch) mmdet's own `CocoMetric`
scores the val split (logged as `coco/bbox_mAP_50` etc., a cross-check of the harness score; its
`iou_thrs=[0.4]` is unusable: pycocotools' summarize fails on a list under numpy 2). `spec.native`
is merged last into the Config with `Config.merge_from_dict`, e.g. {"val_cfg": None,
"val_dataloader": None, "val_evaluator": None} to skip that evaluation, or
{"model.rpn_head.anchor_generator.scales": [4]}; keys under "model." are merged into the model
config for prediction too, so training and prediction use the same model.

Data-parallel (`spec.gpus` = N > 1): mmengine's Runner with `launcher="pytorch"` in N processes
started as torchrun would (`adapters.ddp.spawn`: RANK/LOCAL_RANK/WORLD_SIZE, process group joined
first, NCCL on GPUs, gloo on CPU), MMDistributedDataParallel and the DefaultSampler's shards; the
dataloader batch is spec.batch_size / N per process, so the total stays spec.batch_size; rank 0
writes the checkpoints and reports back (`ddp_result.json`).

Prediction (the shared protocol): mmdet's test pipeline and `model.test_step`, whose RCNN test
config gets score_thr = spec.score_thr, max_per_img = spec.max_det and a per-class NMS at
spec.nms_iou; then the harness's shared post-processing (`adapters.base.postprocess`).

mmengine keeps process-wide singletons (DefaultScope, MMLogger, MessageHub, Visualizer) keyed by
name; the packaged config names its visualizer "visualizer", so a second job in the same process
would get the first job's visualizer (and its output folder). Each job here gets a unique
experiment and visualizer name, runs inside `DefaultScope.overwrite_default_scope("mmdet")` (the
job's scope is dropped afterwards), and closes its log file handlers when done.

Checkpoints: torch >= 2.6 loads with `weights_only=True` by default and refuses mmengine
checkpoints (they pickle config/meta objects). cxr-bench's own checkpoints and the user's local
`spec.weights` are trusted files: they are loaded with `weights_only=False` explicitly, through a
`cxrbench-trusted://` scheme registered with mmengine's `CheckpointLoader` (additive: mmengine's
own loaders are untouched). Everything mmengine writes goes under `workdir` (its `work_dir`).
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any, Sequence

from adapters.base import (AugSpec, Detector, RawDetections, TrainSpec, consumed_counts, count_split_training_set,
                           faster_rcnn_native_protocol, protocol_row)
from adapters.resume import prune, records, write_record
from harness import atomic
from harness.classes import CLASSES
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)

# variant -> (packaged config relative to mmdet/.mim/configs, ResNet depth, FPN in_channels)
VARIANTS: dict[str, tuple[str, int, list[int]]] = {
    "R18-FPN": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", 18, [64, 128, 256, 512]),
    "R50-FPN": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", 50, [256, 512, 1024, 2048]),
    "R101-FPN": ("faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py", 101, [256, 512, 1024, 2048]),
}
GN = {"type": "GN", "num_groups": 32, "requires_grad": True}
TRUSTED_PREFIX = "cxrbench-trusted://"
# ImageNet statistics of the packaged configs; the 1-channel model uses their mean.
RGB_MEAN, RGB_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
GRAY_MEAN, GRAY_STD = [sum(RGB_MEAN) / 3], [sum(RGB_STD) / 3]


# ---------------------------------------------------------------------------------------------
# Pure config pieces (no framework import): testable and readable on their own.
# ---------------------------------------------------------------------------------------------
def aug_transforms(aug: AugSpec) -> list[dict]:
    """The shared AugSpec as mmdet train-pipeline transforms (see the module docstring)."""
    out: list[dict] = []
    if aug.rotate_deg and aug.rotate_deg > 0:
        if aug.rotate_deg > 180:
            raise ValueError(f"aug.rotate_deg must be within [0, 180], not {aug.rotate_deg}")
        out.append({"type": "Rotate", "prob": 1.0, "min_mag": 0.0, "max_mag": float(aug.rotate_deg),
                    "reversal_prob": 0.5, "img_border_value": 0})
    for p, direction in ((aug.hflip, "horizontal"), (aug.vflip, "vertical")):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"aug {direction} flip probability must be within [0, 1], not {p}")
        if p > 0:
            out.append({"type": "RandomFlip", "prob": float(p), "direction": direction})
    return out


def _load_image(channels: int) -> dict:
    return {"type": "LoadImageFromFile", "color_type": "grayscale" if channels == 1 else "color"}


def train_pipeline(spec: TrainSpec) -> list[dict]:
    return [
        _load_image(spec.channels),
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "scale": (spec.imgsz, spec.imgsz), "keep_ratio": True},
        *aug_transforms(spec.aug),
        {"type": "PackDetInputs"},
    ]


def test_pipeline(spec: TrainSpec, with_annotations: bool = False) -> list[dict]:
    steps = [_load_image(spec.channels), {"type": "Resize", "scale": (spec.imgsz, spec.imgsz), "keep_ratio": True}]
    if with_annotations:
        steps.append({"type": "LoadAnnotations", "with_bbox": True})
    steps.append({"type": "PackDetInputs",
                  "meta_keys": ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")})
    return steps


def optimizer_cfg(spec: TrainSpec) -> dict:
    if spec.optimizer == "sgd":
        return {"type": "SGD", "lr": spec.lr, "momentum": 0.9, "weight_decay": spec.weight_decay}
    if spec.optimizer == "adam":
        return {"type": "Adam", "lr": spec.lr, "weight_decay": spec.weight_decay}
    if spec.optimizer == "adamw":
        return {"type": "AdamW", "lr": spec.lr, "weight_decay": spec.weight_decay}
    raise ValueError(f"optimizer must be sgd, adam or adamw, not {spec.optimizer!r}")


# mmdet's schedules, as (milestone epochs, total epochs): the 1x schedule of the packaged Faster R-CNN
# configs (pretrained) and the 6x one of configs/scratch (faster-rcnn_r50-scratch_fpn_gn-all_6x_coco)
SCHEDULE_1X, SCHEDULE_SCRATCH = ((8, 11), 12), ((65, 71), 73)
WARMUP_ITERS, WARMUP_FRACTION = 500, 0.1  # mmdet's LinearLR warmup; at most 10% of a short run


def schedule_cfg(epochs: int, iters_per_epoch: int, scratch: bool = False) -> list[dict]:
    """mmdet's warmup (LinearLR from 0.001 over 500 iterations, at most 10% of the run) then x0.1
    steps at the native schedule's fractions of training (1x: 8/12, 11/12; scratch 6x: 65/73, 71/73)."""
    total = max(1, epochs * iters_per_epoch)
    warmup = int(min(WARMUP_ITERS, max(1, math.ceil(WARMUP_FRACTION * total))))
    (steps, length) = SCHEDULE_SCRATCH if scratch else SCHEDULE_1X
    milestones = sorted({max(1, round(epochs * step / length)) for step in steps})
    return [
        {"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": warmup},
        {"type": "MultiStepLR", "begin": 0, "end": max(1, epochs), "by_epoch": True,
         "milestones": milestones, "gamma": 0.1},
    ]


def check_categories(coco_path: Path, classes: Sequence[str] = CLASSES) -> dict:
    """Load a split COCO file and check its categories are the job's classes (`spec.classes`), ids
    0..N-1 in the label set's order. mmdet's CocoDataset maps labels by `get_cat_ids(cat_names=classes)`, which returns ids in
    the FILE's category order, so any other order would silently permute the classes."""
    try:
        coco = json.loads(Path(coco_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{coco_path}: cannot read COCO file: {err}") from err
    cats = [(c.get("id"), c.get("name")) for c in coco.get("categories", [])]
    if cats != list(enumerate(classes)):
        raise ValueError(f"{coco_path}: categories must be the job's {len(classes)} classes with ids "
                         f"0-{len(classes) - 1} in their label set's order (harness.classes); found {cats}")
    return coco


def training_set_counts(dataset) -> dict[str, int]:
    """Images and boxes of mmdet's built, filtered training dataset (ignored/crowd boxes excluded)."""
    return consumed_counts([
        sum(1 for inst in dataset.get_data_info(i)["instances"] if not inst.get("ignore_flag", 0))
        for i in range(len(dataset))])


def model_native(native: dict[str, Any]) -> dict[str, Any]:
    """The `native` overrides that change the model (keys under "model."): merged into the model
    config for training AND prediction, so an anchor or NMS setting is the same in both."""
    return {key: value for key, value in native.items() if key == "model" or key.startswith("model.")}


# ---------------------------------------------------------------------------------------------
# Framework side (imports inside functions).
# ---------------------------------------------------------------------------------------------
def packaged_config_dir() -> Path:
    """mmdet's packaged configs, located without importing mmdet (which needs mmcv's ops)."""
    import importlib.util

    found = importlib.util.find_spec("mmdet")
    if found is None or not found.submodule_search_locations:
        raise ImportError("mmdet is not installed")
    path = Path(list(found.submodule_search_locations)[0]) / ".mim" / "configs"
    if not path.is_dir():
        raise FileNotFoundError(f"mmdet's packaged configs are missing: {path} (reinstall mmdet 3.3.0)")
    return path


def _init_recorder(detector: "MMDetFasterRCNN"):
    """An mmengine hook that, once `load_from` is applied (before_train), records which model
    tensors came from spec.weights (Detector._record_init)."""
    from mmengine.hooks import Hook

    class RecordInit(Hook):
        def before_train(self, runner) -> None:
            source = load_trusted_checkpoint(detector.spec.weights)
            model = getattr(runner.model, "module", runner.model)
            detector._record_init(model.state_dict(), source.get("state_dict", source))

    return RecordInit()


def load_trusted_checkpoint(filename: str | Path, map_location: Any = "cpu") -> dict:
    """torch.load of a checkpoint cxr-bench trusts (its own, or the user's local weights file):
    weights_only=False, because mmengine checkpoints pickle non-tensor metadata."""
    import torch

    path = Path(str(filename).removeprefix(TRUSTED_PREFIX))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def load_from_cxrbench_trusted(filename: str, map_location: Any = None) -> dict:
    # mmengine prints `loader.__name__[10:]` as the backend name: "cxrbench_trusted".
    return load_trusted_checkpoint(filename, map_location)


def register_trusted_loader() -> None:
    """Add the `cxrbench-trusted://` scheme to mmengine's CheckpointLoader (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes=TRUSTED_PREFIX, loader=load_from_cxrbench_trusted, force=True)


def _runner_class(device: str):
    """mmengine's Runner, moving the model to `device` (its own wrap_model always picks CUDA when
    present, so `device: cpu` on a GPU machine would otherwise be ignored)."""
    from mmengine.runner import Runner

    class DeviceRunner(Runner):
        def wrap_model(self, model_wrapper_cfg, model):
            model = super().wrap_model(model_wrapper_cfg, model)
            return model.to(device)

    return DeviceRunner


def _close_file_handlers(logger) -> None:
    for handler in list(getattr(logger, "handlers", [])):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)


DDP_RESULT = "ddp_result.json"  # what rank 0 of a data-parallel fit reports back to the job's process


def _ddp_fit(detector: "MMDetFasterRCNN", split: Split, workdir: Path, run_name: str, resume_from: str | None) -> None:
    """One data-parallel process of `MMDetFasterRCNN.fit` (adapters.ddp.spawn): the same Config and
    Runner as a single-process fit, mmengine's launcher=pytorch; rank 0 reports back."""
    from adapters.ddp import is_main_process

    if detector.resumed is not None:
        detector.resumed = dict(detector.resumed)
    cfg = detector._config(split, workdir, run_name)
    start_epoch = detector._train(cfg, split, workdir, resume_from)
    if is_main_process():
        atomic.write_json(Path(workdir) / DDP_RESULT, {"consumed": detector.consumed, "init": detector.init,
                                                       "parallel": detector.last_parallel, "start_epoch": start_epoch})


class MMDetFasterRCNN(Detector):
    """Faster R-CNN (ResNet-FPN) trained and run with MMDetection."""

    name = "mmdet_frcnn"
    framework = "mmdet"
    default_variant = "R50-FPN"
    variants = tuple(VARIANTS)
    native_protocol = faster_rcnn_native_protocol("filter_empty_gt")

    def __init__(self, spec: TrainSpec):
        super().__init__(spec)
        self.last_run_name: str | None = None
        self.last_cfg = None
        self.last_parallel: dict | None = None  # processes, DDP wrapper, iterations of the last fit (rank 0)

    # -- configuration -----------------------------------------------------------------------
    def _device(self) -> str:
        import torch

        from adapters.mmcv_cuda import require_cuda_ops

        dev = self.spec.device
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {dev!r} requested but CUDA is not available")
        require_cuda_ops(dev, self.name)  # a CPU-only mmcv would fail at the first RoIAlign/NMS
        return dev

    def model_config(self):
        """The mmengine Config of the packaged variant, adapted (classes, scratch/pretrained, test_cfg)."""
        from mmengine.config import Config

        rel, depth, in_channels = VARIANTS[self.spec.variant]
        cfg = Config.fromfile(str(packaged_config_dir() / rel))
        model = cfg.model
        backbone = model.backbone
        backbone.depth = depth
        backbone.init_cfg = None  # never fetch torchvision://resnet*; pretrained comes via load_from
        model.neck.in_channels = in_channels
        bbox_head = model.roi_head.bbox_head
        bbox_head.num_classes = len(self.spec.classes)
        if self.spec.weights is None:  # from scratch: GN everywhere, all stages trainable
            backbone.update(frozen_stages=-1, norm_cfg=copy.deepcopy(GN), norm_eval=False, zero_init_residual=False)
            model.neck.norm_cfg = copy.deepcopy(GN)
            if self.spec.variant != "R18-FPN":
                bbox_head.update(type="Shared4Conv1FCBBoxHead", conv_out_channels=256, norm_cfg=copy.deepcopy(GN))
        if self.spec.channels == 1:
            backbone.in_channels = 1
            model.data_preprocessor.update(mean=GRAY_MEAN, std=GRAY_STD, bgr_to_rgb=False)
        model.test_cfg.rcnn.score_thr = float(self.spec.score_thr)
        model.test_cfg.rcnn.max_per_img = int(self.spec.max_det)
        model.test_cfg.rcnn.nms.iou_threshold = float(self.spec.nms_iou)  # multiclass_nms: per class
        if self.spec.max_det > model.test_cfg.rpn.max_per_img:
            model.test_cfg.rpn.max_per_img = int(self.spec.max_det)
        cfg.default_scope = "mmdet"
        overrides = model_native(self.spec.native or {})
        if overrides:
            cfg.merge_from_dict(copy.deepcopy(overrides))
        return cfg

    def build_config(self, split: Split, workdir: Path, run_name: str | None = None):
        """The full training Config for `split`, writing under `workdir`."""
        spec = self.spec
        workdir = Path(workdir).resolve()
        check_categories(split.train_json, spec.classes)
        check_categories(split.val_json, spec.classes)
        n_train = count_split_training_set(split.train_json, spec.negatives)["images"]
        if n_train == 0:
            raise ValueError(f"{split.train_json}: no training image has a box; nothing to train on")
        run_name = run_name or f"mmdet_frcnn-{workdir.name}-{uuid.uuid4().hex[:8]}"
        cfg = self.model_config()
        metainfo = {"classes": tuple(spec.classes)}
        root = str(Path(split.image_root).resolve())
        loader = {
            "num_workers": spec.workers,
            "persistent_workers": spec.workers > 0,
        }
        cfg.train_dataloader = dict(
            batch_size=spec.batch_size, **loader,
            sampler={"type": "DefaultSampler", "shuffle": True},
            batch_sampler={"type": "AspectRatioBatchSampler"},
            dataset={"type": "CocoDataset", "data_root": root, "ann_file": str(Path(split.train_json).resolve()),
                     "data_prefix": {"img": ""}, "metainfo": metainfo,
                     "filter_cfg": {"filter_empty_gt": spec.negatives == "drop", "min_size": 0},
                     "pipeline": train_pipeline(spec), "backend_args": None},
        )
        cfg.val_dataloader = dict(
            batch_size=spec.batch_predict, **loader, drop_last=False,
            sampler={"type": "DefaultSampler", "shuffle": False},
            dataset={"type": "CocoDataset", "data_root": root, "ann_file": str(Path(split.val_json).resolve()),
                     "data_prefix": {"img": ""}, "metainfo": metainfo, "test_mode": True,
                     "pipeline": test_pipeline(spec, with_annotations=True), "backend_args": None},
        )
        cfg.val_evaluator = {"type": "CocoMetric", "ann_file": str(Path(split.val_json).resolve()),
                             "metric": "bbox", "format_only": False,
                             "outfile_prefix": str(workdir / "coco_eval" / "val")}
        cfg.test_dataloader = cfg.val_dataloader
        cfg.test_evaluator = cfg.val_evaluator
        cfg.train_cfg = {"type": "EpochBasedTrainLoop", "max_epochs": spec.epochs, "val_interval": spec.epochs}
        scratch = spec.weights is None
        cfg.param_scheduler = schedule_cfg(spec.epochs, math.ceil(n_train / spec.batch_size), scratch=scratch)
        wrapper = "AmpOptimWrapper" if spec.amp and spec.device.startswith("cuda") else "OptimWrapper"
        if spec.amp and wrapper == "OptimWrapper":
            log.warning("amp requested on %s: mixed precision needs CUDA here, training in fp32", spec.device)
        # as mmdet's own configs: no gradient clipping; no decay on norm layers in the scratch recipe
        cfg.optim_wrapper = {"type": wrapper, "optimizer": optimizer_cfg(spec)}
        if scratch:
            cfg.optim_wrapper["paramwise_cfg"] = {"norm_decay_mult": 0.0}
        cfg.auto_scale_lr = {"enable": False, "base_batch_size": 16}
        cfg.default_hooks.checkpoint = {"type": "CheckpointHook", "interval": spec.checkpoint_interval,
                                        "max_keep_ckpts": spec.checkpoint_keep, "save_last": True}
        cfg.default_hooks.logger = {"type": "LoggerHook", "interval": 10}
        cfg.log_processor = {"type": "LogProcessor", "window_size": 10, "by_epoch": True}
        cfg.visualizer = {"type": "DetLocalVisualizer", "vis_backends": [{"type": "LocalVisBackend"}],
                          "name": f"{run_name}-visualizer"}
        cfg.env_cfg.dist_cfg = {"backend": "gloo"}
        cfg.randomness = {"seed": spec.seed, "deterministic": False}
        cfg.work_dir = str(workdir)
        cfg.experiment_name = run_name
        cfg.launcher = "none"
        cfg.resume = False
        cfg.load_from = f"{TRUSTED_PREFIX}{Path(spec.weights).resolve()}" if spec.weights else None
        if spec.native:
            cfg.merge_from_dict(copy.deepcopy(spec.native))
        return cfg

    # -- training --------------------------------------------------------------------------
    def fit(self, split: Split, workdir: Path) -> Path:
        from adapters.ddp import check_gpus, spawn

        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        device = self._device()
        check_gpus(self.spec.gpus, device, self.name)
        if device.startswith("cuda:"):
            import torch

            torch.cuda.set_device(device)
        cfg = self._config(split, workdir)
        self.last_run_name = cfg.experiment_name
        log.info("mmdet_frcnn %s: training %d epochs on %s -> %s%s", self.spec.variant, self.spec.epochs,
                 split.train_json, workdir, f" ({self.spec.gpus} data-parallel processes)" if self.spec.gpus > 1 else "")
        point = self.resume_point(split, workdir, load_trusted_checkpoint)
        resume_from = None if point is None else str(point.checkpoint)
        if self.spec.gpus > 1:  # mmengine's launcher=pytorch in N processes (adapters.ddp)
            (workdir / DDP_RESULT).unlink(missing_ok=True)
            spawn(_ddp_fit, self.spec.gpus, device.startswith("cuda"),
                  args=(self, split, workdir, cfg.experiment_name, resume_from))
            result = json.loads((workdir / DDP_RESULT).read_text())
            self._check_consumed(split, result["consumed"])
            self.init, self.last_parallel = result["init"], result["parallel"]
            if self.resumed is not None:
                self.resumed["framework_start_epoch"] = result["start_epoch"]
        else:
            self._train(cfg, split, workdir, resume_from)
        self.last_cfg = cfg
        marker = workdir / "last_checkpoint"
        if not marker.is_file():
            raise RuntimeError(f"mmengine finished without writing a checkpoint under {workdir}")
        checkpoint = Path(marker.read_text().strip())
        if not checkpoint.is_file():
            raise RuntimeError(f"{marker} names a missing checkpoint: {checkpoint}")
        return checkpoint

    def _config(self, split: Split, workdir: Path, run_name: str | None = None):
        """The training Config, with mmengine's distributed settings when spec.gpus > 1."""
        from mmdet.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        register_trusted_loader()
        cfg = self.build_config(split, workdir, run_name)
        if self.spec.gpus > 1:
            cuda = self.spec.device.startswith("cuda")
            cfg.launcher = "pytorch"  # the process group is joined before the Runner (adapters.ddp.spawn)
            cfg.env_cfg.dist_cfg = {"backend": "nccl" if cuda else "gloo"}
            cfg.train_dataloader.batch_size = self.spec.batch_size // self.spec.gpus  # per process
            if not cuda:  # DDP of a CPU module takes no device_ids (mmengine passes LOCAL_RANK's)
                cfg.model_wrapper_cfg = {"type": "MMDistributedDataParallel", "device_ids": None,
                                         "broadcast_buffers": False, "find_unused_parameters": False}
        return cfg

    def _train(self, cfg, split: Split, workdir: Path, resume_from: str | None) -> int:
        """mmengine's Runner on `cfg` in this process (one of the data-parallel ones, or the only one);
        returns the epoch it started from."""
        from mmengine.registry import DefaultScope

        if resume_from is not None:  # mmengine's own resume: model, optimizer, schedulers, epoch/iter, seed
            cfg.resume = True
            cfg.load_from = f"{TRUSTED_PREFIX}{resume_from}"
        with DefaultScope.overwrite_default_scope("mmdet"):
            runner = _runner_class(self._device()).from_cfg(cfg)
            if self.spec.weights and resume_from is None:
                runner.register_hook(_init_recorder(self), priority="LOWEST")
            runner.register_hook(self._checkpoint_tracker(split, workdir), priority="LOWEST")
            try:
                runner.train()
                self._check_consumed(split, training_set_counts(runner.train_dataloader.dataset))
                self.last_parallel = {"processes": runner.world_size, "model_wrapper": type(runner.model).__name__,
                                      "iterations": int(runner.iter)}
            finally:
                _close_file_handlers(runner.logger)
        return int((self.resumed or {}).get("framework_start_epoch", 0))

    def _checkpoint_tracker(self, split: Split, workdir: Path):
        """An mmengine hook, run after its CheckpointHook: records each `epoch_<k>.pth` as resumable,
        updates the progress file, and notes the epoch mmengine (re)starts from."""
        from mmengine.hooks import Hook

        from adapters.ddp import is_main_process

        detector, key = self, self.training_key(split)

        class ResumeTracker(Hook):
            def before_train(self, runner) -> None:
                if detector.resumed is not None:
                    detector.resumed["framework_start_epoch"] = int(runner.epoch)

            def after_train_epoch(self, runner) -> None:
                if not is_main_process():  # rank 0 saved the checkpoint; it alone records it
                    return
                done, epochs = runner.epoch + 1, runner.max_epochs
                checkpoint = workdir / f"epoch_{done}.pth"
                if checkpoint.is_file() and (done % detector.spec.checkpoint_interval == 0 or done == epochs):
                    write_record(checkpoint, key, done, epochs)
                    prune(workdir, detector.spec.checkpoint_keep)  # also those from before a resume
                saved = records(workdir)
                detector.report_progress(workdir, done, epochs, workdir / saved[0][1]["checkpoint"] if saved else None)

        return ResumeTracker()

    # -- inference -------------------------------------------------------------------------
    def build_model(self, checkpoint: Path | None):
        """The detector in eval mode: weights from `checkpoint`, or seeded random init when None."""
        import torch
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.registry import DefaultScope
        from mmengine.runner.checkpoint import load_state_dict

        register_all_modules(init_default_scope=False)
        cfg = self.model_config()
        with DefaultScope.overwrite_default_scope("mmdet"):
            torch.manual_seed(self.spec.seed)
            model = MODELS.build(cfg.model)
            if checkpoint is None:
                model.init_weights()
            else:
                state = load_trusted_checkpoint(checkpoint, "cpu")
                state = state.get("state_dict", state)
                try:
                    load_state_dict(model, state, strict=True)
                except RuntimeError as err:
                    raise ValueError(f"{checkpoint}: does not match mmdet_frcnn {self.spec.variant} "
                                     f"(channels={self.spec.channels}, weights={self.spec.weights}): {err}") from err
        return model.to(self._device()).eval()

    @contextlib.contextmanager
    def prediction_session(self, checkpoint: Path | None, workdir: Path):
        """mmdet's test pipeline and `model.test_step` (its multiclass NMS at spec.nms_iou)."""
        import torch
        from mmengine.dataset import Compose, pseudo_collate
        from mmengine.registry import DefaultScope

        model = self.build_model(None if checkpoint is None else Path(checkpoint))
        with DefaultScope.overwrite_default_scope("mmdet"), torch.no_grad():
            pipeline = Compose(test_pipeline(self.spec))

            def infer(refs: list[ImageRef]) -> list[RawDetections]:
                batch = []
                for ref in refs:
                    item = pipeline({"img_path": str(ref.path), "img_id": ref.id})
                    if item is None:
                        raise ValueError(f"{ref.path}: mmdet's test pipeline returned nothing")
                    ori_h, ori_w = item["data_samples"].metainfo["ori_shape"][:2]
                    if (ori_w, ori_h) != (ref.width, ref.height):
                        log.warning("%s: PNG is %dx%d but its record says %dx%d; boxes are in the PNG's pixels",
                                    ref.path, ori_w, ori_h, ref.width, ref.height)
                    batch.append(item)
                raws = []
                for sample in model.test_step(pseudo_collate(batch)):
                    inst = sample.pred_instances
                    raws.append(RawDetections(inst.bboxes.detach().cpu().numpy(), inst.scores.detach().cpu().numpy(),
                                              inst.labels.detach().cpu().numpy()))
                return raws

            yield infer

    # -- the protocol card -------------------------------------------------------------------
    def recipe(self) -> list[dict]:
        spec = self.spec
        scratch = spec.weights is None
        cfg = self.last_cfg
        head = "2fc box head"
        if cfg is not None:
            head = {"Shared2FCBBoxHead": "2fc box head", "Shared4Conv1FCBBoxHead": "4conv-1fc GN box head"}.get(
                cfg.model.roi_head.bbox_head.type, cfg.model.roi_head.bbox_head.type)
        elif scratch and spec.variant != "R18-FPN":
            head = "4conv-1fc GN box head"
        native_head = "4conv-1fc GN box head" if scratch else "2fc box head"
        norm = "GN" if scratch else "BN (frozen stage 1)"
        iters = opt = None
        milestones: list = []
        warmup = None
        if cfg is not None:
            for sched in cfg.param_scheduler:
                if sched["type"] == "MultiStepLR":
                    milestones = list(sched["milestones"])
                if sched["type"] == "LinearLR":
                    warmup = sched["end"]
            opt = cfg.optim_wrapper["optimizer"]
        n_images = (self.consumed or {}).get("images")
        if n_images:
            iters = spec.epochs * math.ceil(n_images / spec.batch_size)
        optimizer = optimizer_cfg(spec) if opt is None else dict(opt)
        opt_text = optimizer["type"] + (f"(momentum {optimizer['momentum']})" if "momentum" in optimizer else "")
        (native_steps, native_len) = SCHEDULE_SCRATCH if scratch else SCHEDULE_1X
        return [
            protocol_row("architecture", "architecture", f"Faster R-CNN {spec.variant}, {norm} backbone+FPN, {head}",
                         f"Faster R-CNN {spec.variant}, {norm} backbone+FPN, {native_head}",
                         note="" if head == native_head else "2fc head kept for the R18 CPU variant (the 4conv "
                         "head costs ~8x its FLOPs per RoI)"),
            protocol_row("epochs", "epochs", spec.epochs),
            protocol_row("iterations", "iterations (batches)", iters, note="epochs x ceil(training images / batch)"),
            protocol_row("batch_size", "batch", spec.batch_size, 16, note="mmdet's configs: 8 GPUs x 2 images"),
            protocol_row("optimizer", "optimizer", opt_text, "SGD(momentum 0.9)"),
            protocol_row("lr", "learning rate", float(spec.lr), 0.02, note="mmdet's value is for batch 16"),
            protocol_row("schedule", "lr schedule", f"x0.1 at epochs {milestones} of {spec.epochs}",
                         f"x0.1 at epochs {list(native_steps)} of {native_len}",
                         note="the same fractions of training, scaled to the epochs"),
            protocol_row("warmup", "warmup", f"linear from 0.001, {warmup} iterations",
                         f"linear from 0.001, {WARMUP_ITERS} iterations",
                         note="min(500, 10% of the iterations) for short runs"),
            protocol_row("weight_decay", "weight decay", float(spec.weight_decay), 0.0001),
            protocol_row("norm_decay", "weight decay on norm layers", 0.0 if scratch else float(spec.weight_decay),
                         0.0 if scratch else 0.0001),
            protocol_row("grad_clip", "gradient clipping", "none", "none"),
            protocol_row("framework_aug", "framework's own augmentation", "none", "none"),
        ]

    def versions(self) -> dict[str, str]:
        import importlib.metadata as md

        out = {}
        for dist in ("mmdet", "mmengine", "mmcv", "torch", "torchvision"):
            try:
                out[dist] = md.version(dist)
            except md.PackageNotFoundError:
                out[dist] = "not installed"
        try:
            import mmcv.ops  # noqa: F401  (compiled ops: RoIAlign, nms)

            out["mmcv_ops"] = "compiled"
        except ImportError as err:
            out["mmcv_ops"] = f"missing ({err})"
        return out
