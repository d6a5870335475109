"""What every adapter is asked to train and predict: the shared `TrainSpec` and `AugSpec`.

Framework-free (no torch import). The jobs layer builds a `TrainSpec` from the Hydra config
(`harness.jobs.config.train_spec`); each adapter maps it onto its framework and reads back, after
training and when predicting, what the framework really ran (the protocol card shows those values).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.classes import CLASSES

NEGATIVES = ("drop", "keep")
# Faster R-CNN variants that keep the packaged 2fc box head when trained from scratch (both frameworks'
# scratch recipes use a 4conv-1fc GN head, which costs ~8x its FLOPs per RoI on a CPU)
LIGHT_HEAD_VARIANTS = ("R18-FPN",)


@dataclass
class AugSpec:
    """The shared augmentation spec: the original study's three lesion-preserving augmentations.
    Each adapter maps it onto its framework's transforms and documents the mapping."""

    rotate_deg: float = 0.0  # uniform random rotation in [-deg, +deg]
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip

    def as_dict(self) -> dict[str, float]:
        return {"rotate_deg": float(self.rotate_deg), "hflip": float(self.hflip), "vflip": float(self.vflip)}


@dataclass
class TrainSpec:
    """Settings common to all frameworks. `native` passes framework-specific overrides through
    unchanged (e.g. {"mosaic": 0.0} for ultralytics, {"SOLVER.WARMUP_ITERS": 10} for detectron2);
    `reasons` says why (key -> reason): the protocol card shows a native override without a reason
    as an unexplained deviation."""

    variant: str = ""  # model size/architecture within the framework, e.g. "yolov5n", "R18-FPN"
    epochs: int = 1
    batch_size: int = 2
    imgsz: int = 256  # training/inference size (longer side, or square side for YOLO)
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N
    # data-parallel processes inside the job, each framework's own launcher (adapters.ddp); batch_size
    # stays the TOTAL batch over all of them (batch_size / gpus each), so the recipe's lr holds unscaled
    gpus: int = 1
    workers: int = 0
    amp: bool = False
    weights: str | None = None  # LOCAL pretrained checkpoint; never a URL
    weights_name: str | None = None  # the registry name it was resolved from (e.g. "coco"), if any
    channels: int = 3  # 1 = true grayscale model where the framework supports it
    aug: AugSpec = field(default_factory=AugSpec)
    native: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # native key -> why it is overridden
    # the dataset's classes in category-id order (the split's COCO categories must be exactly these)
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    negatives: str = "drop"  # images without findings in the training set: drop (study/Kaggle) | keep
    score_thr: float = 0.001  # inference threshold: low, as mAP needs
    max_det: int = 100  # detections kept per image
    nms_iou: float = 0.5  # class-aware NMS IoU at inference, set in every framework's own NMS
    multi_label: bool = True  # a box may carry several classes (R-CNN heads do; YOLO as its own val does)
    batch_predict: int = 4
    # resumable checkpoints (adapters.resume): how often, how many, and whether a rerun resumes.
    # They do not change what is trained, so they are not part of the job's config hash.
    checkpoint_interval: int = 1  # epochs between resumable checkpoints
    checkpoint_keep: int = 2  # resumable checkpoints kept (the last one, and one to fall back to)
    resume: bool = True  # a rerun of the same job resumes from its last valid checkpoint

    def __post_init__(self) -> None:
        if isinstance(self.aug, dict):
            self.aug = AugSpec(**self.aug)
        self.classes = [str(name) for name in self.classes]
        checks = [
            (self.weights and "://" in str(self.weights), f"weights must be a local file, not a URL: {self.weights}"),
            (self.optimizer not in ("sgd", "adam", "adamw"),
             f"optimizer must be sgd, adam or adamw, not {self.optimizer!r}"),
            (self.negatives not in NEGATIVES, f"negatives must be drop or keep, not {self.negatives!r}"),
            (not 0.0 < self.nms_iou <= 1.0, f"nms_iou must be in (0, 1], not {self.nms_iou}"),
            (self.max_det < 1, f"max_det must be >= 1, not {self.max_det}"),
            (self.gpus < 1, f"gpus must be >= 1, not {self.gpus}"),
            (self.gpus > 1 and self.batch_size % self.gpus,
             f"batch_size {self.batch_size} is the total batch over {self.gpus} GPUs: it must be a multiple of gpus"),
            (self.gpus > 1 and str(self.device).startswith("cuda:"),
             f"device={self.device} with gpus={self.gpus}: use device=cuda (the job uses GPUs 0..{self.gpus - 1} "
             "of CUDA_VISIBLE_DEVICES)"),
            (self.checkpoint_interval < 1 or self.checkpoint_keep < 1,
             f"checkpoint_interval and checkpoint_keep must be >= 1, not {self.checkpoint_interval} and "
             f"{self.checkpoint_keep}"),
            (self.channels not in (1, 3), f"channels must be 1 or 3, not {self.channels}"),
            (not self.classes, "classes must name at least one class"),
        ]
        for failed, message in checks:
            if failed:
                raise ValueError(message)
        if self.weights and not Path(self.weights).is_file():
            raise FileNotFoundError(f"pretrained weights not found: {self.weights}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return asdict(self)
