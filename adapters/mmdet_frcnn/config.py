"""TrainSpec -> mmengine/mmdet config pieces (see the package docstring for the mapping). The pure
pieces import nothing from the framework; `model_config` and `train_config` read mmdet's packaged
config file with mmengine's Config."""
from __future__ import annotations

import copy
import logging
import uuid
from pathlib import Path
from typing import Any

from adapters.schedule import scaled_milestones, warmup_length
from adapters.spec import LIGHT_HEAD_VARIANTS, AugSpec, TrainSpec
from adapters.trainset import count_split_training_set, iterations_per_epoch
from harness.split import Split

log = logging.getLogger(__name__)

TRUSTED_PREFIX = "cxrbench-trusted://"  # mmengine's CheckpointLoader scheme for trusted files (runner.py)

# variant -> (packaged config relative to mmdet/.mim/configs, ResNet depth, FPN in_channels)
VARIANTS: dict[str, tuple[str, int, list[int]]] = {
    "R18-FPN": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", 18, [64, 128, 256, 512]),
    "R50-FPN": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", 50, [256, 512, 1024, 2048]),
    "R101-FPN": ("faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py", 101, [256, 512, 1024, 2048]),
}
GN = {"type": "GN", "num_groups": 32, "requires_grad": True}
# ImageNet statistics of the packaged configs; the 1-channel model uses their mean.
RGB_MEAN, RGB_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
GRAY_MEAN, GRAY_STD = [sum(RGB_MEAN) / 3], [sum(RGB_STD) / 3]


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
TRAIN_BATCH_SAMPLER = {"type": "AspectRatioBatchSampler"}  # batches of one aspect-ratio group
SCRATCH_PARAMWISE = {"norm_decay_mult": 0.0}  # the scratch recipe: no weight decay on norm layers
WARMUP_ITERS = 500  # mmdet's LinearLR warmup (at most 10% of a short run: adapters.schedule)


def native_schedule(scratch: bool) -> tuple[tuple[int, ...], int]:
    return SCHEDULE_SCRATCH if scratch else SCHEDULE_1X


def schedule_cfg(epochs: int, iters_per_epoch: int, scratch: bool = False) -> list[dict]:
    """mmdet's warmup (LinearLR from 0.001 over 500 iterations, at most 10% of the run) then x0.1
    steps at the native schedule's fractions of training (1x: 8/12, 11/12; scratch 6x: 65/73, 71/73),
    scaled by the shared rule (adapters.schedule); a milestone at or after the last epoch would never
    apply and is left out."""
    total = max(1, epochs * iters_per_epoch)
    warmup = warmup_length(WARMUP_ITERS, total)
    milestones = scaled_milestones(*native_schedule(scratch), max(1, epochs))
    return [
        {"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": warmup},
        {"type": "MultiStepLR", "begin": 0, "end": max(1, epochs), "by_epoch": True,
         "milestones": milestones, "gamma": 0.1},
    ]


def iteration_schedule_cfg(total: int, steps: tuple[int, ...], length: int, warmup: int) -> list[dict]:
    """Another framework's schedule by iteration: LinearLR warmup from 0.001 (the native one capped at
    10% of the run) then x0.1 at the native milestones' fractions of the run's `total` iterations."""
    total = max(1, total)
    return [
        {"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": warmup_length(warmup, total)},
        {"type": "MultiStepLR", "begin": 0, "end": total, "by_epoch": False,
         "milestones": scaled_milestones(steps, length, total), "gamma": 0.1},
    ]


def param_scheduler(spec: TrainSpec, n_train: int, iteration_schedule: tuple[tuple[int, ...], int, int] | None = None
                    ) -> list[dict]:
    """The parameter schedulers of a run on `n_train` images: mmdet's epoch schedule (schedule_cfg),
    or `iteration_schedule` by iteration (iteration_schedule_cfg)."""
    per_epoch = iterations_per_epoch(n_train, spec.batch_size)
    if iteration_schedule is None:
        return schedule_cfg(spec.epochs, per_epoch, scratch=spec.weights is None)
    return iteration_schedule_cfg(spec.epochs * per_epoch, *iteration_schedule)


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


def box_heads(model) -> list:
    """The model config's box heads: a one-stage `bbox_head`, or the R-CNN stage heads (Cascade: a list)."""
    if "roi_head" in model:
        heads = model.roi_head.bbox_head
        return list(heads) if isinstance(heads, (list, tuple)) else [heads]
    return [model.bbox_head]


def scratch_recipe(model, light_head: bool = False) -> None:
    """mmdet's own from-scratch recipe (configs/scratch/faster-rcnn_r50-scratch_fpn_gn-all_6x_coco), on
    the model config in place, the one builder of the Faster R-CNN preset and of every packaged
    architecture (adapters.mmdet_zoo): GN in backbone and neck, all stages trainable, no zero-init of
    the residual branches' last norm (`zero_init_residual=False`, as that config sets), and for an
    R-CNN the 4conv-1fc GN box head on every stage (`light_head`: keep the packaged 2-fc head, the
    R18 CPU variant)."""
    model.backbone.update(frozen_stages=-1, norm_cfg=copy.deepcopy(GN), norm_eval=False, zero_init_residual=False)
    model.neck.norm_cfg = copy.deepcopy(GN)
    if "roi_head" in model and not light_head:
        for head in box_heads(model):
            head.update(type="Shared4Conv1FCBBoxHead", conv_out_channels=256, norm_cfg=copy.deepcopy(GN))


def model_config(spec: TrainSpec):
    """The mmengine Config of the packaged variant, adapted (classes, scratch/pretrained, test_cfg)."""
    from mmengine.config import Config

    rel, depth, in_channels = VARIANTS[spec.variant]
    cfg = Config.fromfile(str(packaged_config_dir() / rel))
    model = cfg.model
    backbone = model.backbone
    backbone.depth = depth
    backbone.init_cfg = None  # never fetch torchvision://resnet*; pretrained comes via load_from
    model.neck.in_channels = in_channels
    bbox_head = model.roi_head.bbox_head
    bbox_head.num_classes = spec.num_classes
    if spec.weights is None:
        scratch_recipe(model, light_head=spec.variant in LIGHT_HEAD_VARIANTS)
    if spec.channels == 1:
        backbone.in_channels = 1
        model.data_preprocessor.update(mean=GRAY_MEAN, std=GRAY_STD, bgr_to_rgb=False)
    model.test_cfg.rcnn.score_thr = float(spec.score_thr)
    model.test_cfg.rcnn.max_per_img = int(spec.max_det)
    model.test_cfg.rcnn.nms.iou_threshold = float(spec.nms_iou)  # multiclass_nms: per class
    if spec.max_det > model.test_cfg.rpn.max_per_img:
        model.test_cfg.rpn.max_per_img = int(spec.max_det)
    cfg.default_scope = "mmdet"
    overrides = model_native(spec.native or {})
    if overrides:
        cfg.merge_from_dict(copy.deepcopy(overrides))
    return cfg


def train_config(spec: TrainSpec, split: Split, workdir: Path, run_name: str | None = None, model_cfg=None,
                 iteration_schedule: tuple[tuple[int, ...], int, int] | None = None):
    """The full training Config for `split`, writing under `workdir` (around `model_cfg`, default the
    variant's `model_config`); `iteration_schedule` (milestones, length, warmup in iterations) replaces
    mmdet's epoch schedule (the aligned variant: detectron2's, adapters.aligned)."""
    workdir = Path(workdir).resolve()
    n_train = count_split_training_set(split.train_json, spec.negatives)["images"]
    if n_train == 0:
        raise ValueError(f"{split.train_json}: no training image has a box; nothing to train on")
    run_name = run_name or f"mmdet_frcnn-{workdir.name}-{uuid.uuid4().hex[:8]}"
    cfg = model_config(spec) if model_cfg is None else model_cfg
    metainfo = {"classes": tuple(spec.classes)}  # the split's categories, ids 0..n-1 in order
    root = str(Path(split.image_root).resolve())
    loader = {
        "num_workers": spec.workers,
        "persistent_workers": spec.workers > 0,
    }
    cfg.train_dataloader = dict(
        batch_size=spec.batch_size, **loader,
        sampler={"type": "DefaultSampler", "shuffle": True},
        batch_sampler=dict(TRAIN_BATCH_SAMPLER),
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
    cfg.param_scheduler = param_scheduler(spec, n_train, iteration_schedule)
    wrapper = "AmpOptimWrapper" if spec.amp and spec.device.startswith("cuda") else "OptimWrapper"
    if spec.amp and wrapper == "OptimWrapper":
        log.warning("amp requested on %s: mixed precision needs CUDA here, training in fp32", spec.device)
    # as mmdet's own configs: no gradient clipping; no decay on norm layers in the scratch recipe
    cfg.optim_wrapper = {"type": wrapper, "optimizer": optimizer_cfg(spec)}
    if scratch:
        cfg.optim_wrapper["paramwise_cfg"] = dict(SCRATCH_PARAMWISE)
    cfg.auto_scale_lr = {"enable": False, "base_batch_size": 16}
    cfg.default_hooks.checkpoint = {"type": "CheckpointHook", "interval": spec.checkpoint_interval,
                                    "max_keep_ckpts": spec.checkpoint_keep, "save_last": True}
    cfg.default_hooks.logger = {"type": "LoggerHook", "interval": 10}
    cfg.log_processor = {"type": "LogProcessor", "window_size": 10, "by_epoch": True}
    cfg.visualizer = {"type": "DetLocalVisualizer", "vis_backends": [{"type": "LocalVisBackend"}],
                      "name": f"{run_name}-visualizer"}
    cfg.env_cfg.dist_cfg = {"backend": "nccl" if spec.device.startswith("cuda") else "gloo"}  # as adapters.ddp.spawn
    cfg.randomness = {"seed": spec.seed, "deterministic": False}
    cfg.work_dir = str(workdir)
    cfg.experiment_name = run_name
    cfg.launcher = "none"
    cfg.resume = False
    cfg.load_from = f"{TRUSTED_PREFIX}{Path(spec.weights).resolve()}" if spec.weights else None
    if spec.native:
        cfg.merge_from_dict(copy.deepcopy(spec.native))
    return cfg
