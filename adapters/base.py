"""The one interface every detector framework implements.

An adapter turns the shared inputs (a `harness.split.Split` of fused COCO labels, a `TrainSpec`) into
its framework's native training run, and its framework's outputs back into the shared prediction
format (`harness.predictions`). Only an adapter module imports its framework, and only inside its
methods, so `import adapters` stays fast and framework-free.
"""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.split import ImageRef, Split


@dataclass
class AugSpec:
    """The shared augmentation spec: the original study's three lesion-preserving augmentations.
    Each adapter maps it onto its framework's transforms and documents the mapping."""

    rotate_deg: float = 0.0  # uniform random rotation in [-deg, +deg]
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip


@dataclass
class TrainSpec:
    """Settings common to all frameworks. `native` passes framework-specific overrides through
    unchanged (e.g. {"mosaic": 0.0} for ultralytics, {"SOLVER.WARMUP_ITERS": 10} for detectron2)."""

    variant: str = ""  # model size/architecture within the framework, e.g. "yolov5n", "R18-FPN"
    epochs: int = 1
    batch_size: int = 2
    imgsz: int = 256  # training/inference size (longer side, or square side for YOLO)
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N
    workers: int = 0
    amp: bool = False
    weights: str | None = None  # LOCAL pretrained checkpoint; never a URL
    channels: int = 3  # 1 = true grayscale model where the framework supports it
    aug: AugSpec = field(default_factory=AugSpec)
    native: dict[str, Any] = field(default_factory=dict)
    score_thr: float = 0.001  # inference threshold: low, as mAP needs
    max_det: int = 100  # detections kept per image
    batch_predict: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.aug, dict):
            self.aug = AugSpec(**self.aug)
        if self.weights and "://" in str(self.weights):
            raise ValueError(f"weights must be a local file, not a URL: {self.weights}")
        if self.weights and not Path(self.weights).is_file():
            raise FileNotFoundError(f"pretrained weights not found: {self.weights}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be sgd, adam or adamw, not {self.optimizer!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class Detector(abc.ABC):
    """One framework's detector. Subclasses set `name` and `framework` and implement fit/predict."""

    name: str = ""
    framework: str = ""
    default_variant: str = ""
    variants: tuple[str, ...] = ()  # the variants the adapter knows (checked at construction)

    def __init__(self, spec: TrainSpec):
        self.spec = spec
        if not spec.variant:
            spec.variant = self.default_variant
        if self.variants and spec.variant not in self.variants:
            raise ValueError(f"unknown {self.name} variant {spec.variant!r}; known: {', '.join(self.variants)}")
        if spec.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {spec.channels}")

    @abc.abstractmethod
    def fit(self, split: Split, workdir: Path) -> Path:
        """Train on split.train_json (validating on split.val_json); return the final checkpoint.
        Everything the framework writes goes under `workdir`."""

    @abc.abstractmethod
    def predict(self, checkpoint: Path | None, images: Sequence[ImageRef], workdir: Path) -> list[dict]:
        """Detections (COCO results, PNG pixel coords, category id 0-13, score >= spec.score_thr,
        at most spec.max_det per image) for every image. checkpoint None = untrained model."""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework package versions (and e.g. whether compiled ops are present)."""
