"""The one interface every detector framework implements.

An adapter turns the shared inputs (a `harness.split.Split` of fused COCO labels, a `TrainSpec`) into
its framework's native training run, and its framework's outputs back into the shared prediction
format (`harness.predictions`). Only an adapter module imports its framework, and only inside its
methods, so `import adapters` stays fast and framework-free.
"""
from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from adapters.resume import ResumePoint, discard_checkpoints, find_resume_point, training_key
from harness.classes import CLASSES, NUM_CLASSES
from harness.predictions import detection
from harness.progress import PROGRESS_FILE, write_progress
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)

NEGATIVES = ("drop", "keep")


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
    # the dataset's class names, index = category id (harness.classes: data.label_set); sizes the heads
    classes: list[str] = field(default_factory=lambda: list(CLASSES))

    def __post_init__(self) -> None:
        if isinstance(self.aug, dict):
            self.aug = AugSpec(**self.aug)
        if self.weights and "://" in str(self.weights):
            raise ValueError(f"weights must be a local file, not a URL: {self.weights}")
        if self.weights and not Path(self.weights).is_file():
            raise FileNotFoundError(f"pretrained weights not found: {self.weights}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be sgd, adam or adamw, not {self.optimizer!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be drop or keep, not {self.negatives!r}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], not {self.nms_iou}")
        if self.max_det < 1:
            raise ValueError(f"max_det must be >= 1, not {self.max_det}")
        if self.gpus < 1:
            raise ValueError(f"gpus must be >= 1, not {self.gpus}")
        if self.gpus > 1 and self.batch_size % self.gpus:
            raise ValueError(f"batch_size {self.batch_size} is the total batch over {self.gpus} GPUs: it must be "
                             f"a multiple of gpus")
        if self.gpus > 1 and str(self.device).startswith("cuda:"):
            raise ValueError(f"device={self.device} with gpus={self.gpus}: use device=cuda (the job uses GPUs "
                             f"0..{self.gpus - 1} of CUDA_VISIBLE_DEVICES)")
        if self.checkpoint_interval < 1 or self.checkpoint_keep < 1:
            raise ValueError(f"checkpoint_interval and checkpoint_keep must be >= 1, not "
                             f"{self.checkpoint_interval} and {self.checkpoint_keep}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# The shared post-processing: one implementation for every framework
# ---------------------------------------------------------------------------------------------

@dataclass
class RawDetections:
    """One image's detections as a framework returned them, after its own class-aware NMS:
    boxes x1,y1,x2,y2 in the image's PNG pixels, scores, class indices 0-13."""

    boxes: Any
    scores: Any
    labels: Any


def postprocess(ref: ImageRef, raw: RawDetections, score_thr: float, max_det: int) -> list[dict]:
    """The harness's post-processing, identical for every framework: drop non-finite boxes and
    unknown classes, clip boxes to the image, drop boxes with no area left, keep scores >= score_thr,
    sort by score (ties keep the framework's order), keep the best `max_det`; COCO results."""
    boxes = np.asarray(raw.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(raw.scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(raw.labels).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"{ref.path}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    ok = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & (scores >= score_thr)
    ok &= (labels >= 0) & (labels < NUM_CLASSES) & (labels == np.round(labels))
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, ref.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, ref.height)
    ok &= (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    keep = np.flatnonzero(ok)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_det]
    return [detection(ref.id, int(labels[k]), boxes[k].tolist(), float(scores[k])) for k in keep]


def unreadable_reason(ref: ImageRef, modes: Sequence[str] | None = None) -> str | None:
    """Why an image cannot be predicted on (missing, not an image, truncated, a PIL mode outside
    `modes` when given), or None. PIL reads the header and checks the file's integrity without
    decoding the pixels."""
    from PIL import Image

    path = Path(ref.path)
    if not path.is_file():
        return "file not found"
    try:
        with Image.open(path) as img:
            mode = img.mode
            img.verify()
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported, the rest go on
        return f"cannot read: {type(err).__name__}: {err}"
    if modes is not None and mode not in modes:
        return f"PIL mode {mode!r}: only {', '.join(modes)} images are supported"
    return None


class UnreadableImages(RuntimeError):
    """None of the images given to `predict` could be used; carries the per-file reasons."""

    def __init__(self, failures: list[tuple[str, str]]):
        self.failures = failures
        lines = "\n".join(f"  {path}: {reason}" for path, reason in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(f"{len(failures)} image(s) could not be used:\n{lines}{more}")


def faster_rcnn_native_protocol(keep_switch: str) -> dict[str, tuple[Any, str]]:
    """The shared protocol settings' defaults in both Faster R-CNN frameworks (detectron2 and mmdet
    agree on them); `keep_switch` names the framework's switch that negatives="keep" turns off."""
    return {
        "negatives": ("drop", f"keep: {keep_switch} off"),
        "score_thr": (0.05, "low, as mAP needs"),
        "max_det": (100, ""),
        "nms_iou": (0.5, ""),
        "multi_label": (True, "the box head scores every class of every proposal"),
    }


def protocol_row(key: str, label: str, value: Any, native: Any = None, scope: str = "recipe",
                 note: str = "") -> dict:
    """One line of the protocol card (see `Detector.protocol`)."""
    return {"key": key, "label": label, "value": value, "native": native, "scope": scope, "note": note}


def consumed_counts(boxes_per_image: Sequence[int]) -> dict[str, int]:
    """{"images", "boxes"} from the per-image box counts of a framework's training dataset."""
    counts = [int(n) for n in boxes_per_image]
    return {"images": len(counts), "boxes": int(sum(counts))}


def count_split_training_set(train_json: Path, negatives: str) -> dict[str, int]:
    """The training images/boxes the protocol asks for: every image of the split's train file, or
    only those with at least one box when negatives == "drop". Adapters check what their
    framework really consumed against this."""
    coco = json.loads(Path(train_json).read_text())
    per_image = {img["id"]: 0 for img in coco["images"]}
    for ann in coco["annotations"]:
        if ann["image_id"] in per_image and not ann.get("iscrowd", 0):
            per_image[ann["image_id"]] += 1
    if negatives == "drop":
        return consumed_counts([n for n in per_image.values() if n > 0])
    return consumed_counts(per_image.values())


class Detector(abc.ABC):
    """One framework's detector. Subclasses set `name` and `framework` and implement `fit`,
    `prediction_session`, `recipe` and `versions`; prediction, its post-processing and the handling
    of unreadable images are shared (`predict`)."""

    name: str = ""
    framework: str = ""
    default_variant: str = ""
    variants: tuple[str, ...] = ()  # the variants the adapter knows (checked at construction)
    # the framework's own defaults for the shared protocol settings: key -> (native value, why the
    # protocol's value may differ); shown on the protocol card
    native_protocol: dict[str, tuple[Any, str]] = {}
    image_modes: tuple[str, ...] | None = None  # PIL modes the framework's reader handles (None: any)

    def __init__(self, spec: TrainSpec):
        self.spec = spec
        if not spec.variant:
            spec.variant = self.default_variant
        if self.variants and spec.variant not in self.variants:
            raise ValueError(f"unknown {self.name} variant {spec.variant!r}; known: {', '.join(self.variants)}")
        if spec.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {spec.channels}")
        self.failed_images: list[tuple[str, str]] = []  # (path, reason) from the last predict()
        self.consumed: dict[str, int] | None = None  # training images/boxes the framework used (fit)
        self.init: dict[str, Any] | None = None  # how spec.weights initialised the model (fit)
        # set by the job (harness.jobs.train_job): its config hash, which every resumable checkpoint
        # records (a checkpoint of another config is never resumed), and its progress file
        self.run_key: str = ""
        self.progress_path: Path | None = None
        self.resumed: dict[str, Any] | None = None  # where the last fit resumed from (None: fresh start)

    # -- training ---------------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, split: Split, workdir: Path) -> Path:
        """Train on split.train_json (validating on split.val_json); return the final checkpoint.
        Everything the framework writes goes under `workdir`. Sets `self.consumed` to the
        images/boxes read back from the framework's own training dataset."""

    # -- resuming (the shared policy: adapters.resume) ----------------------------------------
    def training_key(self, split: Split) -> str:
        """The key every resumable checkpoint of this training records."""
        return training_key(self.spec.to_dict(), split.split_hash, self.run_key)

    def resume_point(self, split: Split, folder: Path, load: Callable[[Path], Any],
                     before_epoch: int | None = None) -> ResumePoint | None:
        """Where this fit resumes from: the newest valid checkpoint of the same training in `folder`,
        or None for a fresh start (then checkpoints an earlier run left there are removed).
        `load(path)` must raise when the framework cannot read a checkpoint file."""
        point = None
        if self.spec.resume:
            point = find_resume_point(folder, self.training_key(split), load, name=self.name,
                                      before_epoch=before_epoch)
        else:
            log.info("%s: resume: train.resume is false: starting from epoch 0", self.name)
        if point is None:
            discard_checkpoints(folder, self.name)
        self.resumed = None if point is None else point.as_dict()
        return point

    def report_progress(self, workdir: Path, epoch: int, epochs: int, checkpoint: Path | None = None) -> None:
        """Update the job's progress file (the report shows an unfinished job from it)."""
        path = self.progress_path or Path(workdir) / PROGRESS_FILE
        write_progress(path, self.name, epoch, epochs, checkpoint)

    def _check_consumed(self, split: Split, consumed: dict[str, int]) -> None:
        """Record what the framework consumed; warn when it differs from what the protocol asks."""
        self.consumed = dict(consumed)
        expected = count_split_training_set(split.train_json, self.spec.negatives)
        if consumed != expected:
            log.warning("%s: the framework consumed %s training images/boxes, the protocol (negatives=%s) "
                        "asks for %s", self.name, consumed, self.spec.negatives, expected)

    def _record_init(self, model_state: Mapping[str, Any], checkpoint_state: Mapping[str, Any] | None) -> None:
        """Record, at the start of training, which of the model's tensors hold the pretrained
        checkpoint's values and which the framework (re)initialised (e.g. the 80-class COCO head)."""
        self.init = init_report(model_state, checkpoint_state, self.spec.weights)
        if checkpoint_state is not None:
            log.info("%s: %d of %d model tensors from %s; re-initialised: %s", self.name, self.init["loaded"],
                     self.init["total"], Path(str(self.spec.weights)).name, ", ".join(self.init["reinitialised"][:8])
                     + (" ..." if len(self.init["reinitialised"]) > 8 else ""))

    # -- prediction -------------------------------------------------------------------------
    @abc.abstractmethod
    def prediction_session(self, checkpoint: Path | None, workdir: Path
                           ) -> contextlib.AbstractContextManager[Callable[[list[ImageRef]], list[RawDetections]]]:
        """A context in which the framework's model (from `checkpoint`, or seeded untrained when
        None) is loaded once; it yields `infer(refs) -> [RawDetections per ref]`, the framework's
        own inference with its class-aware NMS at spec.nms_iou, spec.score_thr and spec.max_det."""

    def predict(self, checkpoint: Path | None, images: Sequence[ImageRef], workdir: Path) -> list[dict]:
        """Detections (COCO results, PNG pixel coords, category id 0-13, score >= spec.score_thr,
        at most spec.max_det per image) for every usable image; checkpoint None = untrained model.
        An unreadable image is named in the log and in `self.failed_images`, and the rest are
        predicted; only when no image at all can be used does it raise UnreadableImages."""
        from tqdm import tqdm

        workdir = Path(workdir)
        self.failed_images = []
        results: list[dict] = []
        usable = []
        for ref in images:
            reason = unreadable_reason(ref, self.image_modes)
            if reason:
                self._fail(ref, reason)
            else:
                usable.append(ref)
        bs = max(1, int(self.spec.batch_predict))
        with self.prediction_session(checkpoint, workdir) as infer:
            for start in tqdm(range(0, len(usable), bs), desc=f"{self.name} predict", unit="batch"):
                batch = usable[start:start + bs]
                for ref, raw in zip(batch, self._infer_batch(infer, batch)):
                    if raw is not None:
                        results.extend(postprocess(ref, raw, self.spec.score_thr, self.spec.max_det))
        if images and len(self.failed_images) == len(images):
            raise UnreadableImages(self.failed_images)
        return results

    def _infer_batch(self, infer, batch: list[ImageRef]) -> list[RawDetections | None]:
        """One batch; if the framework fails on it, image by image, so one bad file loses only itself."""
        try:
            raws = list(infer(batch))
            if len(raws) != len(batch):
                raise RuntimeError(f"{len(raws)} results for {len(batch)} images")
            return raws
        except Exception as err:  # noqa: BLE001 - one bad file must not lose the batch
            if len(batch) == 1:
                self._fail(batch[0], f"{type(err).__name__}: {err}")
                return [None]
            log.error("%s: batch starting at %s failed (%s); retrying image by image", self.name, batch[0].path, err)
            return [raw for ref in batch for raw in self._infer_batch(infer, [ref])]

    def _fail(self, ref: ImageRef, reason: str) -> None:
        log.error("%s: cannot predict image %s (id %s): %s", self.name, ref.path, ref.id, reason)
        self.failed_images.append((str(ref.path), reason))

    # -- the protocol card ------------------------------------------------------------------
    def protocol(self, tta: bool = False) -> list[dict]:
        """Every setting that can move this model's score: the shared protocol (scope "shared",
        identical for every framework in a fair sweep) then the framework's recipe (`recipe()`),
        each with its value, the framework's native default and why they differ."""
        spec, consumed = self.spec, self.consumed or {}
        aug = spec.aug
        rows = [
            protocol_row("train_images", "training images consumed (read back from the framework)",
                         consumed.get("images"), scope="shared"),
            protocol_row("train_boxes", "training boxes consumed", consumed.get("boxes"), scope="shared"),
            protocol_row("negatives", "images without findings in training", spec.negatives,
                         scope="shared", note="drop = the original study and the public Kaggle pipelines"),
            protocol_row("image_size", "image size (longer side resized to, px)", spec.imgsz, scope="shared"),
            protocol_row("channels", "input channels", spec.channels, scope="shared"),
            protocol_row("augmentation", "shared augmentation (rotation deg, h/v flip prob.)",
                         {"rotate_deg": aug.rotate_deg, "hflip": aug.hflip, "vflip": aug.vflip}, scope="shared"),
            protocol_row("init_weights", "initial weights",
                         (spec.weights_name or Path(spec.weights).name) if spec.weights else "scratch",
                         scope="shared", note=init_note(self.init)),
            protocol_row("seed", "seed", spec.seed, scope="shared"),
            protocol_row("score_thr", "inference score threshold", spec.score_thr, scope="shared"),
            protocol_row("max_det", "max detections per image", spec.max_det, scope="shared"),
            protocol_row("nms_iou", "class-aware NMS IoU at inference", spec.nms_iou, scope="shared"),
            protocol_row("multi_label", "several classes per box", spec.multi_label, scope="shared"),
            protocol_row("tta", "test-time augmentation", "hflip (WBF)" if tta else "none", scope="shared"),
        ]
        for row in rows:
            if row["key"] in self.native_protocol:
                native, note = self.native_protocol[row["key"]]
                row["native"] = native
                if not same(row["value"], native):
                    row["note"] = note or row["note"]
        parallel = protocol_row(
            "gpus", "data-parallel processes (train.gpus)", spec.gpus, 1,
            note=f"batch {spec.batch_size} in total = {spec.batch_size // spec.gpus} per process; lr unscaled "
                 "(the total batch is the recipe's)" if spec.gpus > 1 else "")
        overrides = protocol_row("native_overrides", "framework settings overridden (`native`)",
                                 dict(spec.native or {}), {},
                                 note="set in the experiment/model config; each key is the framework's own")
        return rows + list(self.recipe()) + [parallel, overrides]

    @abc.abstractmethod
    def recipe(self) -> list[dict]:
        """The framework's training recipe as protocol rows (scope "recipe"): epochs, iterations,
        batch, optimizer, lr, schedule, warmup, weight decay, norm decay, clipping, architecture,
        framework-only augmentation; each with the native default and a note where they differ."""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework package versions (and e.g. whether compiled ops are present)."""


def init_note(init: dict[str, Any] | None) -> str:
    """The protocol card's note on how the pretrained weights initialised the model."""
    if not init or not init.get("weights"):
        return ""
    head = ", ".join(init["reinitialised"][:4]) + (" ..." if len(init["reinitialised"]) > 4 else "")
    return (f"{init['weights']}: {init['loaded']}/{init['total']} tensors from the checkpoint; "
            f"re-initialised: {head or 'none'}")


def init_report(model_state: Mapping[str, Any], checkpoint_state: Mapping[str, Any] | None,
                weights: str | None) -> dict[str, Any]:
    """Which tensors of a model about to train equal the checkpoint's tensor of the same name and
    shape (`loaded`), and which do not (`reinitialised`: absent, other shape, or other values)."""
    import torch

    if checkpoint_state is None:
        return {"weights": None, "loaded": 0, "total": len(model_state), "reinitialised": [], "checkpoint_unused": []}
    loaded, reinitialised = [], []
    for key, value in model_state.items():
        source = checkpoint_state.get(key)
        if source is not None and not isinstance(source, torch.Tensor):
            source = torch.as_tensor(np.asarray(source))
        same_tensor = (source is not None and tuple(source.shape) == tuple(value.shape)
                       and torch.equal(value.detach().cpu().float(), source.detach().cpu().float()))
        (loaded if same_tensor else reinitialised).append(key)
    return {"weights": Path(str(weights)).name if weights else None, "loaded": len(loaded),
            "total": len(model_state), "reinitialised": reinitialised,
            "checkpoint_unused": sorted(set(checkpoint_state) - set(model_state))}


def same(value: Any, native: Any) -> bool:
    """Whether a protocol value equals the native default (numbers with a relative tolerance)."""
    if isinstance(value, (int, float)) and isinstance(native, (int, float)) and not isinstance(value, bool):
        return math.isclose(float(value), float(native), rel_tol=1e-9, abs_tol=1e-12)
    return json.dumps(value, sort_keys=True, default=str) == json.dumps(native, sort_keys=True, default=str)
