"""TrainSpec -> detectron2 CfgNode and augmentations (see the package docstring for the mapping)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from adapters.base import trusted_load
from adapters.schedule import scaled_milestones, warmup_length
from adapters.spec import LIGHT_HEAD_VARIANTS, AugSpec, TrainSpec
from adapters.trainset import iterations_per_epoch
from adapters.zoo import UnknownArchitecture, arch

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
READABLE_MODES = ("L", "RGB")  # PIL modes detectron2's BGR reader converts faithfully


def zoo_config_path(config_name: str) -> Path:
    """The model-zoo YAML shipped inside the detectron2 package (read from disk; no pkg_resources,
    no download)."""
    import detectron2

    path = Path(detectron2.__file__).parent / "model_zoo" / "configs" / config_name
    if not path.is_file():
        raise FileNotFoundError(f"detectron2 model-zoo config missing from the installed package: {path}")
    return path


def variant_config(variant: str) -> tuple[str, dict[str, Any]]:
    """(model-zoo config, overrides) of a Faster R-CNN preset variant, or of a zoo architecture by its
    config path (adapters.zoo.DETECTRON2: the zoo file as shipped)."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    try:
        return arch("detectron2", variant).config, {}
    except UnknownArchitecture as err:
        raise UnknownArchitecture(f"unknown detectron2 variant {variant!r}: neither a preset variant "
                                  f"({', '.join(VARIANTS)}) nor an architecture ({err})") from err


def zoo_solver(variant: str):
    """The solver of the variant's model-zoo config as detectron2 ships it (its YAML on detectron2's
    defaults): the native recipe the protocol card compares with (RetinaNet's BASE_LR 0.01, the 3x
    schedule's STEPS of MAX_ITER, WARMUP_ITERS ...)."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(zoo_config_path(variant_config(variant)[0])))
    return cfg.SOLVER


def dense_head_outputs(cfg, spec: TrainSpec) -> None:
    """The class count and shared post-processing for RetinaNet's head (unused by the R-CNNs), and no
    mask head (the zoo's Cascade R-CNN is a Cascade Mask R-CNN; the data has boxes only)."""
    cfg.MODEL.RETINANET.NUM_CLASSES = spec.num_classes
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = spec.score_thr
    cfg.MODEL.RETINANET.NMS_THRESH_TEST = spec.nms_iou  # class-aware (batched_nms)
    cfg.MODEL.MASK_ON = False


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

    config_name, variant_overrides = variant_config(spec.variant)
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

    cfg.MODEL.ROI_HEADS.NUM_CLASSES = spec.num_classes
    cfg.MODEL.DEVICE = spec.device
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = spec.score_thr
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = spec.nms_iou  # class-aware (per-class batched_nms)
    cfg.TEST.DETECTIONS_PER_IMAGE = max(int(spec.max_det), 1)
    dense_head_outputs(cfg, spec)  # the same settings for a one-stage (RetinaNet) head; boxes only
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
            cfg.SOLVER.MAX_ITER = max(1, -(-spec.epochs * n_train // spec.batch_size))
        max_iter = cfg.SOLVER.MAX_ITER
        if "SOLVER.STEPS" not in native:
            cfg.SOLVER.STEPS = tuple(scaled_milestones(zoo_steps, zoo_max_iter, max_iter))
        if "SOLVER.WARMUP_ITERS" not in native:
            cfg.SOLVER.WARMUP_ITERS = warmup_length(zoo_warmup, max_iter)
        if "SOLVER.CHECKPOINT_PERIOD" not in native:  # resumable checkpoints every n epochs
            cfg.SOLVER.CHECKPOINT_PERIOD = spec.checkpoint_interval * iterations_per_epoch(n_train, spec.batch_size)
    merge_native(cfg, native)  # native always wins
    if cfg.MODEL.WEIGHTS and ("://" in cfg.MODEL.WEIGHTS or not Path(cfg.MODEL.WEIGHTS).is_file()):
        raise ValueError(f"MODEL.WEIGHTS must be empty or a local file, not {cfg.MODEL.WEIGHTS!r}")
    return cfg


def checkpoint_tensors(path: str | Path) -> dict[str, Any]:
    """The tensors of a detectron2 weights file by name: a model-zoo `.pkl` (numpy arrays, read as
    detectron2's checkpointer reads it) or a `.pth` of its Checkpointer."""
    import pickle

    if str(path).endswith(".pkl"):
        with open(path, "rb") as handle:
            data = pickle.load(handle, encoding="latin1")
        data = data.get("blobs", data) if "model" not in data else data
    else:
        data = trusted_load(path)
    return data.get("model", data)


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


def predict_resize(cfg):
    """The test-time resize, as DefaultPredictor builds it from the config's MIN/MAX_SIZE_TEST (so a
    native override of either reaches prediction)."""
    from detectron2.data import transforms as T

    return T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
