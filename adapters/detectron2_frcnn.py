"""Detectron2 Faster R-CNN behind the cxr-bench `Detector` interface.

Why this module looks the way it does
-------------------------------------
* Training runs through detectron2's own machinery: a `DefaultTrainer` subclass (its hooks, its
  `WarmupMultiStepLR` from `solver.build_lr_scheduler`, its `DetectionCheckpointer`, its metric
  printer/JSON writer). The subclass only swaps in what cxr-bench needs: the optimizer choice, the
  augmentation list, writers that need no tensorboard, and an atomic checkpoint save.
* Variants come from detectron2's model-zoo configs (shipped inside the package, read from disk, never
  downloaded): "R50-FPN" = `COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml` (the original study's model),
  "R101-FPN" = `COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml`, and "R18-FPN" = the R50 config with
  `RESNETS.DEPTH=18, RES2_OUT_CHANNELS=64` for CPU demos. `ROI_HEADS.NUM_CLASSES` = the dataset's class count
  (`spec.classes`: 14 for VinBigData).
* Weights: without `spec.weights` the model trains from scratch, and the default FrozenBN R50 config
  diverges within a few iterations there, so scratch runs use detectron2's own scratch recipe
  (`Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml`): `RESNETS.NORM=GN`, `FPN.NORM=GN`,
  `RESNETS.STRIDE_IN_1X1=False`, `BACKBONE.FREEZE_AT=0`. With `spec.weights` (a LOCAL COCO
  checkpoint) the standard zoo config is used with `MODEL.WEIGHTS` = that file; mismatching class
  heads are skipped by detectron2's checkpointer. `MODEL.WEIGHTS` is never a URL.
* Images are the prepared 8-bit grayscale PNGs. detectron2's own reader (`detection_utils.read_image`
  with `INPUT.FORMAT="BGR"`) converts mode "L" to 3 identical channels, for training and prediction
  alike; `spec.channels` is therefore ignored (a 3-channel model sees a replicated gray image).
  16-bit PNGs would be clipped by that reader, so they are refused with an error naming the file.
* Datasets are registered from the split's COCO files with `load_coco_json` under names unique to the
  job (uuid) and removed from `DatasetCatalog`/`MetadataCatalog` afterwards, so several jobs in one
  process never collide. The COCO category ids 0..13 are checked to be exactly the 14 cxr-bench
  classes, so `load_coco_json`'s sorted-id mapping is the identity (contiguous id == class id).

Mapping of the shared settings
------------------------------
=====================  ======================================================================
TrainSpec              detectron2
=====================  ======================================================================
epochs                 SOLVER.MAX_ITER = ceil(epochs * n_train / batch_size); n_train counts the
                       images the loader keeps (images without boxes only with negatives=keep);
                       what the loader consumed is read back from the dataset list it was built on
                       SOLVER.STEPS scaled from the zoo schedule (3x: 210k/250k of 270k → 78%, 93%)
                       SOLVER.WARMUP_ITERS = min(zoo value 1000, ceil(10% of MAX_ITER))
batch_size             SOLVER.IMS_PER_BATCH
imgsz                  INPUT.MIN_SIZE_TRAIN=(imgsz,), MAX_SIZE_TRAIN=imgsz, MIN/MAX_SIZE_TEST=imgsz
                       (ResizeShortestEdge: the longer side ends at imgsz for non-square images)
optimizer sgd          detectron2's default SGD (BASE_LR, MOMENTUM 0.9, WEIGHT_DECAY)
optimizer adam/adamw   torch.optim.Adam/AdamW over `get_default_optimizer_params` (same per-parameter
                       groups as detectron2's SGD: norm/bias weight decay rules), lr=BASE_LR,
                       weight_decay=WEIGHT_DECAY, with detectron2's gradient clipping wrapper;
                       recorded as SOLVER.OPTIMIZER in the dumped config
lr / weight_decay      SOLVER.BASE_LR / SOLVER.WEIGHT_DECAY
seed                   SEED, plus `seed_all_rng(seed)` before building the model and the loader
                       (weights init, sampler order and augmentation draws are then reproducible)
device                 MODEL.DEVICE
gpus                   N > 1: `detectron2.engine.launch(num_gpus_per_machine=N)` (NCCL; gloo on a
                       CPU-only machine, where DDP gets no device_ids); IMS_PER_BATCH stays the total
workers                DATALOADER.NUM_WORKERS
amp                    SOLVER.AMP.ENABLED (CUDA only: ignored with a warning on CPU)
weights                MODEL.WEIGHTS (local file) else "" with the GN scratch recipe
negatives              DATALOADER.FILTER_EMPTY_ANNOTATIONS (drop -> True, keep -> False)
score_thr / max_det    MODEL.ROI_HEADS.SCORE_THRESH_TEST / TEST.DETECTIONS_PER_IMAGE
nms_iou                MODEL.ROI_HEADS.NMS_THRESH_TEST (per-class NMS, detectron2's default 0.5)
checkpoint_interval    SOLVER.CHECKPOINT_PERIOD = interval x iterations per epoch (resumable checkpoints)
checkpoint_keep        PeriodicCheckpointer(max_to_keep=keep); a rerun resumes with
                       `resume_or_load(resume=True)` from the checkpoint `adapters.resume` picks
native                 {"KEY.PATH": value} merged last with cfg.merge_from_list (wins over all)
=====================  ======================================================================

Augmentation mapping (AugSpec → detectron2 transforms, in this order, via a `DatasetMapper` built
with `augmentations=[...]`; INPUT.RANDOM_FLIP is set to "none" because the list replaces the default):
  1. T.ResizeShortestEdge((imgsz,), max_size=imgsz)                   always
  2. T.RandomFlip(prob=hflip, horizontal=True, vertical=False)        when hflip > 0
  3. T.RandomFlip(prob=vflip, horizontal=False, vertical=True)        when vflip > 0
  4. T.RandomRotation(angle=[-d, d], expand=False)                     when rotate_deg d > 0
     (boxes become the axis-aligned box around the rotated corners, clipped to the image)
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import uuid
import weakref
from pathlib import Path
from typing import Any, Iterator, Sequence

from adapters.base import (AugSpec, Detector, RawDetections, TrainSpec, UnreadableImages, consumed_counts,
                           count_split_training_set, faster_rcnn_native_protocol, protocol_row)
from adapters.resume import prune, records, write_record
from harness import atomic
from harness.classes import CLASSES
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)

# variant -> (model-zoo config, extra config overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "R50-FPN": ("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", {}),
    "R101-FPN": ("COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml", {}),
    "R18-FPN": (
        "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
        {"MODEL.RESNETS.DEPTH": 18, "MODEL.RESNETS.RES2_OUT_CHANNELS": 64},
    ),
}

# detectron2's scratch recipe (Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml on mask_rcnn_R_50_FPN_3x_gn):
# GN backbone and FPN, nothing frozen, and the 4conv-1fc GN box head
SCRATCH_OVERRIDES: dict[str, Any] = {
    "MODEL.RESNETS.NORM": "GN",
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.FPN.NORM": "GN",
    "MODEL.BACKBONE.FREEZE_AT": 0,
}
SCRATCH_BOX_HEAD: dict[str, Any] = {
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
    "MODEL.ROI_BOX_HEAD.NUM_FC": 1,
    "MODEL.ROI_BOX_HEAD.NORM": "GN",
}
# The R18 CPU variant keeps the 2-fc head from scratch too (as the mmdet adapter's R18 does): the
# 4-conv head costs ~8x its FLOPs per RoI on a CPU.
LIGHT_HEAD_VARIANTS = ("R18-FPN",)
# detectron2's defaults and zoo values the protocol card compares with
NATIVE = {"BASE_LR": 0.02, "IMS_PER_BATCH": 16, "WEIGHT_DECAY": 0.0001, "WEIGHT_DECAY_NORM": 0.0,
          "WARMUP_ITERS": 1000}

WARMUP_FRACTION = 0.1
READABLE_MODES = ("L", "RGB")  # PIL modes detectron2's BGR reader converts faithfully


# --------------------------------------------------------------------------- config

def zoo_config_path(config_name: str) -> Path:
    """The model-zoo YAML shipped inside the detectron2 package (read from disk; no pkg_resources,
    no download)."""
    import detectron2

    path = Path(detectron2.__file__).parent / "model_zoo" / "configs" / config_name
    if not path.is_file():
        raise FileNotFoundError(f"detectron2 model-zoo config missing from the installed package: {path}")
    return path


def _flatten(overrides: dict[str, Any]) -> list:
    return [item for key, value in overrides.items() for item in (key, value)]


def merge_native(cfg, native: dict[str, Any]) -> None:
    """Merge `spec.native` ({"KEY.PATH": value}) key by key, so a bad key or value is reported by
    name instead of as yacs' bare AssertionError."""
    for key, value in native.items():
        try:
            cfg.merge_from_list([key, value])
        except (AssertionError, KeyError, ValueError, TypeError) as err:
            raise ValueError(f"detectron2 native override {key}={value!r} rejected: {err}") from err


def build_config(spec: TrainSpec, n_train: int = 0, train_dataset: str | None = None,
                 output_dir: str | Path | None = None):
    """The detectron2 CfgNode for `spec` (see the module docstring for the mapping).
    `n_train` (images per epoch) sets the schedule; 0 leaves the zoo schedule (prediction only)."""
    from detectron2.config import get_cfg

    if spec.variant not in VARIANTS:
        raise ValueError(f"unknown detectron2 variant {spec.variant!r}; known: {', '.join(VARIANTS)}")
    config_name, variant_overrides = VARIANTS[spec.variant]
    cfg = get_cfg()
    cfg.merge_from_file(str(zoo_config_path(config_name)))
    zoo_max_iter, zoo_steps, zoo_warmup = cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS), cfg.SOLVER.WARMUP_ITERS
    cfg.merge_from_list(_flatten(variant_overrides))

    if spec.weights:
        weights = Path(spec.weights)
        if "://" in str(spec.weights) or not weights.is_file():
            raise FileNotFoundError(f"pretrained weights must be a local file: {spec.weights}")
        cfg.MODEL.WEIGHTS = str(weights.resolve())
    else:
        cfg.MODEL.WEIGHTS = ""
        cfg.merge_from_list(_flatten(SCRATCH_OVERRIDES))
        if spec.variant not in LIGHT_HEAD_VARIANTS:
            cfg.merge_from_list(_flatten(SCRATCH_BOX_HEAD))

    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(spec.classes)
    cfg.MODEL.DEVICE = spec.device
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = spec.score_thr
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = spec.nms_iou  # class-aware (per-class batched_nms)
    cfg.TEST.DETECTIONS_PER_IMAGE = max(int(spec.max_det), 1)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = spec.negatives == "drop"
    cfg.TEST.EVAL_PERIOD = 0  # the harness scores; no detectron2 evaluator during training
    cfg.INPUT.FORMAT = "BGR"
    cfg.INPUT.MIN_SIZE_TRAIN = (spec.imgsz,)
    cfg.INPUT.MAX_SIZE_TRAIN = spec.imgsz
    cfg.INPUT.MIN_SIZE_TEST = spec.imgsz
    cfg.INPUT.MAX_SIZE_TEST = spec.imgsz
    cfg.INPUT.RANDOM_FLIP = "none"  # flips come from the AugSpec list (train_augmentations)
    cfg.DATASETS.TRAIN = (train_dataset,) if train_dataset else ()
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = spec.workers
    cfg.SOLVER.IMS_PER_BATCH = spec.batch_size
    cfg.SOLVER.BASE_LR = spec.lr
    cfg.SOLVER.WEIGHT_DECAY = spec.weight_decay
    cfg.SOLVER.OPTIMIZER = spec.optimizer.upper()  # new key: read by _Trainer.build_optimizer
    amp = bool(spec.amp)
    if amp and not spec.device.startswith("cuda"):
        log.warning("detectron2: AMP needs CUDA; training in fp32 on %s", spec.device)
        amp = False
    cfg.SOLVER.AMP.ENABLED = amp
    cfg.SEED = spec.seed
    cfg.OUTPUT_DIR = str(output_dir) if output_dir else ""

    native = dict(spec.native or {})
    merge_native(cfg, native)  # first pass: lets native settings shape the schedule
    if n_train > 0:
        if "SOLVER.MAX_ITER" not in native:
            cfg.SOLVER.MAX_ITER = max(1, math.ceil(spec.epochs * n_train / spec.batch_size))
        max_iter = cfg.SOLVER.MAX_ITER
        if "SOLVER.STEPS" not in native:
            steps = sorted({round(s / zoo_max_iter * max_iter) for s in zoo_steps})
            cfg.SOLVER.STEPS = tuple(s for s in steps if 0 < s < max_iter)
        if "SOLVER.WARMUP_ITERS" not in native:
            cfg.SOLVER.WARMUP_ITERS = min(zoo_warmup, math.ceil(WARMUP_FRACTION * max_iter))
        if "SOLVER.CHECKPOINT_PERIOD" not in native:  # resumable checkpoints every n epochs
            cfg.SOLVER.CHECKPOINT_PERIOD = spec.checkpoint_interval * iters_per_epoch(n_train, spec.batch_size)
    merge_native(cfg, native)  # native always wins
    if cfg.MODEL.WEIGHTS and ("://" in cfg.MODEL.WEIGHTS or not Path(cfg.MODEL.WEIGHTS).is_file()):
        raise ValueError(f"MODEL.WEIGHTS must be empty or a local file, not {cfg.MODEL.WEIGHTS!r}")
    return cfg


def checkpoint_tensors(path: str | Path) -> dict[str, Any]:
    """The tensors of a detectron2 weights file by name: a model-zoo `.pkl` (numpy arrays, read as
    detectron2's checkpointer reads it) or a `.pth` of its Checkpointer."""
    import pickle

    import torch

    if str(path).endswith(".pkl"):
        with open(path, "rb") as handle:
            data = pickle.load(handle, encoding="latin1")
        data = data.get("blobs", data) if "model" not in data else data
    else:
        data = torch.load(path, map_location="cpu", weights_only=False)
    return data.get("model", data)


def iters_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, math.ceil(n_train / batch_size))


def train_augmentations(aug: AugSpec, imgsz: int) -> list:
    """The AugSpec as detectron2 augmentations (order and meaning in the module docstring)."""
    from detectron2.data import transforms as T

    augs: list = [T.ResizeShortestEdge(short_edge_length=(imgsz,), max_size=imgsz, sample_style="choice")]
    if aug.hflip > 0:
        augs.append(T.RandomFlip(prob=float(aug.hflip), horizontal=True, vertical=False))
    if aug.vflip > 0:
        augs.append(T.RandomFlip(prob=float(aug.vflip), horizontal=False, vertical=True))
    if aug.rotate_deg > 0:
        d = float(aug.rotate_deg)
        augs.append(T.RandomRotation(angle=[-d, d], expand=False, sample_style="range"))
    return augs


def predict_resize(imgsz: int):
    """The test-time resize, as DefaultPredictor builds it from MIN/MAX_SIZE_TEST."""
    from detectron2.data import transforms as T

    return T.ResizeShortestEdge([imgsz, imgsz], imgsz)


# --------------------------------------------------------------------------- data

def check_categories(coco_json: Path, classes: Sequence[str] = CLASSES) -> dict:
    """Load a split COCO file and make sure its categories are the job's classes (`spec.classes`) with
    ids 0..N-1 and every annotation uses one of them, so that load_coco_json's id mapping (sorted ids →
    0..N-1) is the identity. Returns the COCO dict."""
    coco = json.loads(Path(coco_json).read_text())
    cats = sorted((c["id"], c["name"]) for c in coco.get("categories", []))
    n = len(classes)
    if cats != list(enumerate(classes)):
        raise ValueError(
            f"{coco_json}: categories must be the job's {n} classes with ids 0..{n - 1} "
            f"(harness.classes, data.label_set); found ids {[c for c, _ in cats]}"
        )
    for ann in coco.get("annotations", []):
        if ann.get("category_id") not in range(n):
            raise ValueError(f"{coco_json}: annotation id {ann.get('id')} has category_id {ann.get('category_id')!r}")
    return coco


def check_images(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(path, reason) for every image that is missing or not an 8-bit gray/RGB picture (PIL reads
    only the header here, so this is cheap even for thousands of files)."""
    from PIL import Image

    failures = []
    for path in paths:
        try:
            with Image.open(path) as img:
                if img.mode not in READABLE_MODES:
                    failures.append((str(path), f"PIL mode {img.mode!r}: only 8-bit gray or RGB PNGs are supported"))
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported, the rest go on
            failures.append((str(path), f"cannot open: {type(err).__name__}: {err}"))
    return failures


@contextlib.contextmanager
def registered_split(split: Split, classes: Sequence[str] = CLASSES) -> Iterator[tuple[str, str]]:
    """Register the split's train/val COCO files with detectron2 under job-unique names; remove
    them again afterwards (also on error)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    job = uuid.uuid4().hex[:12]
    names = (f"cxr_{job}_train", f"cxr_{job}_val")
    try:
        for name, json_file in zip(names, (split.train_json, split.val_json)):
            check_categories(json_file, classes)
            DatasetCatalog.register(
                name, lambda j=str(json_file), n=name: load_coco_json(j, str(split.image_root), n)
            )
            MetadataCatalog.get(name).set(
                thing_classes=list(classes),
                thing_dataset_id_to_contiguous_id={i: i for i in range(len(classes))},
                json_file=str(json_file),
                image_root=str(split.image_root),
                evaluator_type="coco",
            )
        yield names
    finally:
        for name in names:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
            if name in MetadataCatalog.list():
                MetadataCatalog.remove(name)


# --------------------------------------------------------------------------- training

def _trainer_class():
    """DefaultTrainer with cxr-bench's optimizer choice, augmentations, writers and atomic saves
    (built lazily so importing this module does not import detectron2)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
    from detectron2.engine import DefaultTrainer, hooks
    from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    class AtomicCheckpointer(DetectionCheckpointer):
        """DetectionCheckpointer whose files appear whole or not at all (temp file + rename);
        `on_saved(path, iteration)` runs after each save (the adapter records it as resumable).
        Loads its own (trusted) checkpoints with weights_only=False."""

        on_saved = None

        def _torch_load(self, f):
            return torch.load(f, map_location=torch.device("cpu"), weights_only=False)

        def save(self, name: str, **kwargs: Any) -> None:
            if not self.save_dir or not self.save_to_disk:
                return
            data = {"model": self.model.state_dict()}
            for key, obj in self.checkpointables.items():
                data[key] = obj.state_dict()
            data.update(kwargs)
            save_file = os.path.join(self.save_dir, f"{name}.pth")
            self.logger.info("Saving checkpoint to %s", save_file)
            with atomic.atomic_open(save_file, "wb") as handle:
                torch.save(data, handle)
            self.tag_last_checkpoint(f"{name}.pth")
            if self.on_saved is not None:
                self.on_saved(Path(save_file), kwargs.get("iteration"))

    class CxrTrainer(DefaultTrainer):
        augmentations: list = []

        def __init__(self, cfg):
            from detectron2.utils import comm

            if comm.get_world_size() > 1 and cfg.MODEL.DEVICE == "cpu":
                # data-parallel on a CPU-only machine (gloo): DDP of a CPU module takes no device_ids,
                # which detectron2's create_ddp_model sets to the local rank (a GPU index)
                import detectron2.engine.defaults as d2_defaults

                original = d2_defaults.create_ddp_model
                d2_defaults.create_ddp_model = functools.partial(original, device_ids=None)
                try:
                    super().__init__(cfg)
                finally:
                    d2_defaults.create_ddp_model = original
            else:
                super().__init__(cfg)

        @classmethod
        def build_optimizer(cls, cfg, model):
            kind = str(cfg.SOLVER.get("OPTIMIZER", "SGD")).upper()
            if kind == "SGD":
                return super().build_optimizer(cfg, model)
            params = get_default_optimizer_params(
                model,
                base_lr=cfg.SOLVER.BASE_LR,
                weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
                bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
                weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
            )
            optim = {"ADAM": torch.optim.Adam, "ADAMW": torch.optim.AdamW}[kind]
            return maybe_add_gradient_clipping(
                cfg, optim(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
            )

        consumed: dict[str, int] | None = None

        @classmethod
        def build_train_loader(cls, cfg):
            # the same dataset list detectron2's loader would build (filtering by
            # FILTER_EMPTY_ANNOTATIONS), built here so what it consumed can be counted
            dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
            cls.consumed = consumed_counts(
                [sum(1 for ann in record.get("annotations", []) if not ann.get("iscrowd", 0))
                 for record in dataset])
            mapper = DatasetMapper(cfg, is_train=True, augmentations=list(cls.augmentations))
            return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)

        def build_writers(self):
            period_dir = self.cfg.OUTPUT_DIR
            return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(period_dir, "metrics.json"))]

        keep_checkpoints: int | None = None  # PeriodicCheckpointer's max_to_keep

        def build_hooks(self):
            self.checkpointer = AtomicCheckpointer(self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
            built = []
            for hook in super().build_hooks():
                if isinstance(hook, hooks.PeriodicCheckpointer):
                    hook = hooks.PeriodicCheckpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD,
                                                      max_to_keep=self.keep_checkpoints)
                if type(hook).__name__ != "EvalHook":
                    built.append(hook)
            return built

    return CxrTrainer


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint this adapter wrote (trusted: it holds the trainer's state, not only tensors)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Copy detectron2's (and this adapter's) log records into `path` for the job's duration."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s"))
    handler.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [handler]
    loggers = [logging.getLogger("detectron2"), logging.getLogger("fvcore"), log]
    if not logging.getLogger().handlers and not any(lg.handlers for lg in loggers):
        console = logging.StreamHandler(sys.stdout)  # plain script: show progress on the console too
        console.setFormatter(handler.formatter)
        handlers.append(console)
    previous = []
    for logger in loggers:
        previous.append(logger.level)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        for h in handlers:
            logger.addHandler(h)
    try:
        yield
    finally:
        for logger, level in zip(loggers, previous):
            for h in handlers:
                logger.removeHandler(h)
            logger.setLevel(level)
        handler.close()


# --------------------------------------------------------------------------- adapter

DDP_RESULT = "ddp_result.json"  # what rank 0 of a data-parallel fit reports back to the job's process


def _unwrap(model):
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def _ddp_fit(detector: "Detectron2FasterRCNN", split: Split, workdir: Path, n_train: int, resume: bool) -> None:
    """One process of a data-parallel `Detectron2FasterRCNN.fit`, started by detectron2's `launch`;
    rank 0 reports what the framework consumed back to the job's process."""
    from detectron2.utils import comm

    if detector.resumed is not None:
        detector.resumed = dict(detector.resumed)
    detector._train(split, workdir, n_train, resume)
    if comm.is_main_process():
        atomic.write_json(Path(workdir) / DDP_RESULT, {
            "consumed": detector.consumed, "init": detector.init, "parallel": detector.last_parallel,
            "start_iter": (detector.resumed or {}).get("framework_start_iter", 0)})


class Detectron2FasterRCNN(Detector):
    """Faster R-CNN (ResNet-FPN) trained and run by detectron2."""

    name = "detectron2_frcnn"
    framework = "detectron2"
    default_variant = "R50-FPN"
    variants = tuple(VARIANTS)
    native_protocol = faster_rcnn_native_protocol("DATALOADER.FILTER_EMPTY_ANNOTATIONS")
    image_modes = READABLE_MODES  # detectron2's BGR reader clips 16-bit PNGs
    last_cfg = None  # the CfgNode of the last fit (for the protocol card)
    last_parallel: dict | None = None  # processes, DDP wrapper and iterations of the last fit (rank 0's view)

    def fit(self, split: Split, workdir: Path) -> Path:
        """Train on split.train_json; returns `<workdir>/model_final.pth` (model + trainer state).
        Writes config.yaml, log.txt, metrics.json (detectron2's JSON writer) under workdir.
        With spec.gpus > 1, detectron2's own `launch` runs the training in that many processes."""
        from adapters.ddp import check_gpus

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        import torch

        # detectron2's launch picks NCCL whenever it sees a GPU: CPU processes only on a CPU-only machine
        check_gpus(self.spec.gpus, self.spec.device, self.name, cpu_ok=not torch.cuda.is_available())
        train_coco = check_categories(split.train_json, self.spec.classes)
        paths = [split.image_root / img["file_name"] for img in train_coco["images"]]
        failures = check_images(paths)
        if failures:
            raise UnreadableImages(failures)
        keep_empty = not self.spec.native.get("DATALOADER.FILTER_EMPTY_ANNOTATIONS", self.spec.negatives == "drop")
        n_train = count_split_training_set(split.train_json, "keep" if keep_empty else "drop")["images"]
        if n_train == 0:
            raise ValueError(f"{split.train_json}: no training images with boxes")
        point = self.resume_point(split, workdir, _load_checkpoint)
        if point is not None:  # detectron2's own resume reads the `last_checkpoint` file
            atomic.write_text(workdir / "last_checkpoint", point.checkpoint.name)
        if self.spec.gpus > 1:
            from detectron2.engine import launch

            (workdir / DDP_RESULT).unlink(missing_ok=True)
            launch(_ddp_fit, self.spec.gpus, dist_url="auto",
                   args=(self, split, workdir, n_train, point is not None))
            result = json.loads((workdir / DDP_RESULT).read_text())
            self._check_consumed(split, result["consumed"])
            self.init, self.last_parallel = result["init"], result["parallel"]
            if self.resumed is not None:
                self.resumed["framework_start_iter"] = result["start_iter"]
            cfg = build_config(self.spec, n_train=n_train, output_dir=workdir)
        else:
            cfg = self._train(split, workdir, n_train, point is not None)
        self.last_cfg = cfg
        checkpoint = workdir / "model_final.pth"
        if not checkpoint.is_file():
            raise RuntimeError(f"detectron2 finished without writing {checkpoint}")
        return checkpoint

    def _train(self, split: Split, workdir: Path, n_train: int, resume: bool):
        """detectron2's DefaultTrainer in this process (one of the data-parallel ones, or the only
        one); returns the config it trained with."""
        from detectron2.utils import comm
        from detectron2.utils.env import seed_all_rng

        main = comm.is_main_process()
        with registered_split(split, self.spec.classes) as (train_name, _val_name), \
                (_log_to(workdir / "log.txt") if main else contextlib.nullcontext()):
            cfg = build_config(self.spec, n_train=n_train, train_dataset=train_name, output_dir=workdir)
            if main:
                atomic.write_text(workdir / "config.yaml", cfg.dump())
            log.info("detectron2 %s: %d train images, %d iterations of batch %d at %d px on %s%s",
                     self.spec.variant, n_train, cfg.SOLVER.MAX_ITER, cfg.SOLVER.IMS_PER_BATCH,
                     self.spec.imgsz, cfg.MODEL.DEVICE,
                     f" x {comm.get_world_size()} processes" if comm.get_world_size() > 1 else "")
            # model init, sampler order, augmentation draws; each process its own stream, as
            # detectron2's default_setup seeds them (seed + rank)
            seed_all_rng(cfg.SEED + comm.get_rank())
            trainer_cls = _trainer_class()
            trainer_cls.augmentations = train_augmentations(self.spec.aug, self.spec.imgsz)
            trainer_cls.keep_checkpoints = self.spec.checkpoint_keep
            trainer = trainer_cls(cfg)
            self._check_consumed(split, trainer_cls.consumed)
            self._track_checkpoints(trainer, split, workdir, iters_per_epoch(n_train, cfg.SOLVER.IMS_PER_BATCH))
            trainer.resume_or_load(resume=resume)
            if self.resumed is not None:
                self.resumed["framework_start_iter"] = int(trainer.start_iter)
            if self.spec.weights and not resume:
                self._record_init(_unwrap(trainer.model).state_dict(), checkpoint_tensors(self.spec.weights))
            trainer.train()
            self.last_parallel = {"processes": comm.get_world_size(), "model_wrapper": type(trainer.model).__name__,
                                  "iterations": int(trainer.iter) - int(trainer.start_iter)}
            final = "model_final.pth"
            if resume and trainer.start_iter >= trainer.max_iter and (workdir / "last_checkpoint").read_text() != final:
                # resumed after the last iteration (e.g. model_final was corrupt): nothing trained, so
                # detectron2 saved no model_final; save the resumed state as one
                trainer.checkpointer.save("model_final", iteration=trainer.max_iter - 1)
        return cfg

    def _track_checkpoints(self, trainer, split: Split, workdir: Path, per_epoch: int) -> None:
        """Record every checkpoint the trainer saves as resumable, and update the progress file
        at the end of each epoch (detectron2 counts iterations; an epoch is `per_epoch` of them)."""
        from detectron2.engine.hooks import CallbackHook

        key, max_iter, keep = self.training_key(split), trainer.max_iter, self.spec.checkpoint_keep
        epochs = math.ceil(max_iter / per_epoch)

        def epochs_done(iteration: int) -> int:
            return epochs if iteration + 1 >= max_iter else (iteration + 1) // per_epoch

        def on_saved(path: Path, iteration: int | None) -> None:
            if iteration is not None:
                write_record(path, key, epochs_done(iteration), epochs)
                prune(workdir, keep)  # also those of a run before a resume (max_to_keep counts its own only)

        from detectron2.utils import comm

        def after_step(trainer) -> None:
            if not comm.is_main_process():
                return
            if (trainer.iter + 1) % per_epoch == 0 or trainer.iter + 1 >= max_iter:
                saved = records(workdir)
                self.report_progress(workdir, epochs_done(trainer.iter), epochs,
                                     workdir / saved[0][1]["checkpoint"] if saved else None)

        trainer.checkpointer.on_saved = on_saved
        trainer.register_hooks([CallbackHook(after_step=after_step)])

    def build_model(self, checkpoint: Path | None):
        """The eval-mode model: loaded from `checkpoint`, or randomly initialised with spec.seed."""
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model
        from detectron2.utils.env import seed_all_rng

        cfg = build_config(self.spec)
        cfg.MODEL.WEIGHTS = ""
        seed_all_rng(cfg.SEED)
        model = build_model(cfg)
        if checkpoint is not None:
            if not Path(checkpoint).is_file():
                raise FileNotFoundError(f"detectron2 checkpoint not found: {checkpoint}")
            DetectionCheckpointer(model).load(str(checkpoint))
        model.eval()
        return model

    @contextlib.contextmanager
    def prediction_session(self, checkpoint: Path | None, workdir: Path):
        """detectron2's own model forward on batches resized as DefaultPredictor does (test-time
        ResizeShortestEdge, boxes returned in the PNG's pixels via height/width)."""
        import torch
        from detectron2.data.detection_utils import read_image

        model = self.build_model(checkpoint)
        resize = predict_resize(self.spec.imgsz)

        def infer(refs: list[ImageRef]) -> list[RawDetections]:
            inputs = []
            for ref in refs:
                image = read_image(str(ref.path), format="BGR")
                height, width = image.shape[:2]
                resized = resize.get_transform(image).apply_image(image)
                tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
                inputs.append({"image": tensor, "height": height, "width": width})
            raws = []
            for output in model(inputs):
                inst = output["instances"].to("cpu")
                raws.append(RawDetections(inst.pred_boxes.tensor.numpy(), inst.scores.numpy(),
                                          inst.pred_classes.numpy()))
            return raws

        with torch.no_grad():
            yield infer

    # -- the protocol card ---------------------------------------------------------------------
    def recipe(self) -> list[dict]:
        spec = self.spec
        cfg = self.last_cfg or build_config(spec)
        solver = cfg.SOLVER
        scratch = not cfg.MODEL.WEIGHTS
        box = cfg.MODEL.ROI_BOX_HEAD
        optimizer = str(solver.get("OPTIMIZER", "SGD")).upper()
        head = (f"{f'{box.NUM_CONV}conv-' if box.NUM_CONV else ''}{box.NUM_FC}fc"
                f"{' ' + box.NORM if box.NORM and box.NUM_CONV else ''} box head")
        native_head = "4conv-1fc GN box head" if scratch else "2fc box head"
        return [
            protocol_row("architecture", "architecture",
                         f"Faster R-CNN {spec.variant}, {'GN ' if scratch else 'FrozenBN '}backbone+FPN, {head}",
                         f"Faster R-CNN {spec.variant}, {'GN ' if scratch else 'FrozenBN '}backbone+FPN, {native_head}",
                         note="" if head == native_head else "2fc head kept for the R18 CPU variant (the 4conv "
                         "head costs ~8x its FLOPs per RoI)"),
            protocol_row("epochs", "epochs", spec.epochs),
            protocol_row("iterations", "iterations (batches)", int(solver.MAX_ITER),
                         note="epochs x training images / batch"),
            protocol_row("batch_size", "batch", int(solver.IMS_PER_BATCH), NATIVE["IMS_PER_BATCH"],
                         note="zoo value is for 8 GPUs"),
            protocol_row("optimizer", "optimizer",
                         f"SGD(momentum {solver.MOMENTUM})" if optimizer == "SGD" else optimizer, "SGD(momentum 0.9)"),
            protocol_row("lr", "learning rate", float(solver.BASE_LR), NATIVE["BASE_LR"],
                         note="zoo value is for batch 16"),
            protocol_row("schedule", "lr schedule",
                         f"3x shape: x{solver.GAMMA} at iterations {list(solver.STEPS)} of {solver.MAX_ITER}",
                         "3x steps x0.1 at 78% and 93% of training",
                         note="the same fractions of training, scaled to the iterations"),
            protocol_row("warmup", "warmup", f"linear from {solver.WARMUP_FACTOR}, {solver.WARMUP_ITERS} iterations",
                         f"linear from 0.001, {NATIVE['WARMUP_ITERS']} iterations",
                         note="min(1000, 10% of the iterations) for short runs"),
            protocol_row("weight_decay", "weight decay", float(solver.WEIGHT_DECAY), NATIVE["WEIGHT_DECAY"]),
            protocol_row("norm_decay", "weight decay on norm layers", float(solver.WEIGHT_DECAY_NORM),
                         NATIVE["WEIGHT_DECAY_NORM"]),
            protocol_row("grad_clip", "gradient clipping",
                         f"{solver.CLIP_GRADIENTS.CLIP_TYPE} {solver.CLIP_GRADIENTS.CLIP_VALUE}"
                         if solver.CLIP_GRADIENTS.ENABLED else "none", "none"),
            protocol_row("framework_aug", "framework's own augmentation", "none", "none",
                         note="detectron2's default RandomFlip is replaced by the shared augmentation"),
        ]

    def versions(self) -> dict[str, str]:
        import detectron2
        import torch
        import torchvision

        try:
            from detectron2 import _C  # noqa: F401

            compiled = "yes"
        except ImportError:
            compiled = "no (torchvision ROIAlign/NMS)"
        return {
            "detectron2": detectron2.__version__,
            "detectron2._C": compiled,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        }
