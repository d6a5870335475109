"""The one interface every framework implements, and the logic they share, written once.

`Adapter` is the root of every model kind (detectors and the "No finding" classifier): the spec,
resumable checkpoints (`adapters.resume`: saved / epoch done / where to resume), the progress file,
the data-parallel result round trip, the trusted checkpoint load and `versions()`.

`Detector` adds what the three detector frameworks share: the `fit` template (class list and
training-image checks before the framework runs), prediction with its shared post-processing and
bad-image handling, and the protocol card built from the settings each framework *read back* from
its own resolved state (`self.ran`), not from the spec. A framework package implements `_fit`,
`prediction_session` and `recipe`, and records what it ran with `record_ran`.
"""
from __future__ import annotations

import abc
import contextlib
import importlib.metadata as md
import json
import logging
import platform
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from adapters.card import SHARED, init_note, init_report, protocol_row, size_value
from adapters.images import UnreadableImages, screen_training_images, unreadable_reason
from adapters.postprocess import RawDetections, postprocess
from adapters.resume import (RUN_SETTINGS, ResumePoint, find_resume_point, prune, records, set_aside_checkpoints,
                             training_key, write_record)
from adapters.spec import AugSpec, TrainSpec
from adapters.trainset import count_split_training_set
from harness import atomic
from harness.progress import PROGRESS_FILE, write_progress
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)

DDP_RESULT = "ddp_result.json"  # what rank 0 of a data-parallel fit reports back to the job's process
# the shared protocol settings a framework reads back (`Detector.ran`), in card order
SHARED_SETTINGS = ("negatives", "image_size", "channels", "augmentation", "score_thr", "max_det", "nms_iou",
                   "multi_label")


def trusted_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """torch.load of a checkpoint cxr-bench trusts (its own, or the user's local weights file):
    weights_only=False, because the frameworks pickle non-tensor state (config, trainer, meta)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


class Adapter:
    """What every model kind shares: the spec, resuming, progress, provenance."""

    name: str = ""
    framework: str = ""
    default_variant: str = ""
    variants: tuple[str, ...] = ()  # the variants the adapter knows (checked at construction)
    packages: tuple[str, ...] = ()  # the framework's distributions `versions()` reports (besides torch's)

    def __init__(self, spec: TrainSpec):
        self.spec = spec
        if not spec.variant:
            spec.variant = self.default_variant
        if self.variants and spec.variant not in self.variants:
            raise ValueError(f"unknown {self.name} variant {spec.variant!r}; known: {', '.join(self.variants)}")
        self.failed_images: list[tuple[str, str]] = []  # (path, reason) from the last predict()
        self.consumed: dict[str, int] | None = None  # training images/boxes the framework used (fit)
        self.init: dict[str, Any] | None = None  # how spec.weights initialised the model (fit)
        self.last_parallel: dict | None = None  # processes, DDP wrapper and iterations of the last fit
        # set by the job (harness.jobs.train_job): its config hash, which every resumable checkpoint
        # records (a checkpoint of another config is never resumed), and its progress file
        self.run_key: str = ""
        self.progress_path: Path | None = None
        self.resumed: dict[str, Any] | None = None  # where the last fit resumed from (None: fresh start)
        # where a fresh start moves an earlier run's files (`<run>/superseded/<time>/`); the job sets
        # it so its own files and the checkpoints share one folder; None: a new one per fresh start
        self.superseded_to: Path | None = None

    # -- resuming (the shared policy: adapters.resume) ----------------------------------------
    def training_key(self, split_hash: str) -> str:
        """The key every resumable checkpoint of this training records."""
        return training_key(self.spec.to_dict(), split_hash, self.run_key)

    def resume_point(self, split: Split, folder: Path, load: Callable[[Path], Any] = trusted_load,
                     before_epoch: int | None = None) -> ResumePoint | None:
        """Where this fit resumes from: the newest valid checkpoint of the same training in `folder`,
        or None for a fresh start (then checkpoints an earlier run left there are set aside).
        `load(path)` must raise when the framework cannot read a checkpoint file."""
        point = None
        if self.spec.resume:
            point = find_resume_point(folder, self.training_key(split.split_hash), load, name=self.name,
                                      before_epoch=before_epoch)
        else:
            log.info("%s: resume: train.resume is false: starting from epoch 0", self.name)
        # a fresh start moves every earlier checkpoint aside; a resume, the unusable ones (kept, with their
        # records, where the framework's next save of the same epoch cannot overwrite them)
        self.superseded_to = set_aside_checkpoints(folder, self.name, self.superseded_to,
                                                   unusable_only=point is not None) or self.superseded_to
        self.resumed = None if point is None else point.as_dict()
        return point

    def checkpoint_saved(self, checkpoint: Path, key: str, epochs_done: int, epochs: int) -> None:
        """A complete checkpoint file exists: record it as resumable and keep the newest
        spec.checkpoint_keep (also those of a run before a resume)."""
        write_record(checkpoint, key, epochs_done, epochs, self.run_settings())
        prune(Path(checkpoint).parent, self.spec.checkpoint_keep, key)

    def run_settings(self) -> dict[str, Any]:
        """How this fit runs (not in the key, but the numbers can depend on it: docs/run-identity.md),
        stored with each checkpoint record."""
        return {**{key: getattr(self.spec, key) for key in RUN_SETTINGS},
                "amp": self.spec.amp, "host": platform.node()}

    def epoch_done(self, folder: Path, workdir: Path, epoch: int, epochs: int) -> None:
        """Update the job's progress file (the report shows an unfinished job from it), naming the
        newest resumable checkpoint in `folder`."""
        saved = records(folder)
        path = self.progress_path or Path(workdir) / PROGRESS_FILE
        write_progress(path, self.name, epoch, epochs, Path(folder) / saved[0][1]["checkpoint"] if saved else None)

    # -- data-parallel fits: rank 0 reports back to the job's process ---------------------------
    def ddp_report(self, workdir: Path, **extra: Any) -> None:
        """Rank 0 of a data-parallel fit: what the framework consumed, ran and initialised."""
        atomic.write_json(Path(workdir) / DDP_RESULT, {"consumed": self.consumed, "init": self.init,
                                                       "parallel": self.last_parallel, **self._ddp_state(), **extra})

    def ddp_collect(self, split: Split, workdir: Path) -> dict[str, Any]:
        """The job's process after a data-parallel fit: take over rank 0's report."""
        result = json.loads((Path(workdir) / DDP_RESULT).read_text())
        self._check_consumed(split, result["consumed"])
        self.init, self.last_parallel = result["init"], result["parallel"]
        self._ddp_restore(result)
        return result

    def _ddp_state(self) -> dict[str, Any]:
        return {}

    def _ddp_restore(self, result: dict[str, Any]) -> None:
        pass

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

    # -- provenance -----------------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        """Package versions of the framework (`packages`), plus `version_notes()`."""
        out = {}
        for dist in (*self.packages, "torch", "torchvision"):
            try:
                out[dist] = md.version(dist)
            except md.PackageNotFoundError:
                out[dist] = "not installed"
        return {**out, **self.version_notes()}

    def version_notes(self) -> dict[str, str]:
        return {}


class Detector(Adapter, abc.ABC):
    """One framework's detector."""

    # the framework's own defaults for the shared protocol settings: key -> (native value, why the
    # protocol's value may differ); shown on the protocol card
    native_protocol: dict[str, tuple[Any, str]] = {}
    image_modes: tuple[str, ...] | None = None  # PIL modes the framework's reader handles (None: any)

    def __init__(self, spec: TrainSpec):
        super().__init__(spec)
        self.ran: dict[str, Any] = {}  # shared settings read back from the framework (fit and prediction)

    def record_ran(self, **values: Any) -> None:
        """Record settings as the framework resolved them (the protocol card shows these)."""
        self.ran.update(values)

    def _ddp_state(self) -> dict[str, Any]:
        return {"ran": self.ran}

    def _ddp_restore(self, result: dict[str, Any]) -> None:
        self.ran.update(result.get("ran") or {})

    # -- training ---------------------------------------------------------------------------
    def fit(self, split: Split, workdir: Path) -> Path:
        """Train on split.train_json; return the final checkpoint. Everything the framework writes
        goes under `workdir`. Checks first that the split has the spec's classes and that the
        framework can read every training image (naming each one it cannot); then `_fit`."""
        classes = split.classes
        if classes != list(self.spec.classes):
            raise ValueError(f"{split.train_json}: the split's classes {classes} are not the model's "
                             f"{list(self.spec.classes)} (train.classes)")
        coco = json.loads(Path(split.train_json).read_text())
        screen_training_images([Path(split.image_root) / img["file_name"] for img in coco["images"]],
                               self.image_modes)
        return self._fit(split, Path(workdir))

    @abc.abstractmethod
    def _fit(self, split: Split, workdir: Path) -> Path:
        """The framework's training run; sets `self.consumed` (images/boxes read back from the
        framework's own training dataset) and records what it ran (`record_ran`)."""

    # -- prediction -------------------------------------------------------------------------
    @abc.abstractmethod
    def prediction_session(self, checkpoint: Path | None, workdir: Path
                           ) -> contextlib.AbstractContextManager[Callable[[list[ImageRef]], list[RawDetections]]]:
        """A context in which the framework's model (from `checkpoint`, or seeded untrained when
        None) is loaded once; it yields `infer(refs) -> [RawDetections per ref]`, the framework's
        own inference with its class-aware NMS at spec.nms_iou, spec.score_thr and spec.max_det,
        and records the settings the predicting model really uses (`record_ran`)."""

    def predict(self, checkpoint: Path | None, images: Sequence[ImageRef], workdir: Path) -> list[dict]:
        """Detections (COCO results, PNG pixel coords, category id 0..classes-1, score >=
        spec.score_thr, at most spec.max_det per image) for every usable image; checkpoint None =
        untrained model. An unreadable image is named in the log and in `self.failed_images`, and the
        rest are predicted; only when no image at all can be used does it raise UnreadableImages."""
        from tqdm import tqdm

        workdir = Path(workdir)
        self.failed_images = []
        results: list[dict] = []
        usable = []
        for ref in images:
            reason = unreadable_reason(ref.path, self.image_modes)
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
                        results.extend(postprocess(ref, raw, self.spec.score_thr, self.spec.max_det,
                                                   self.spec.num_classes))
        self.record_ran(images_scored={"predicted": len(images) - len(self.failed_images),
                                       "failed": len(self.failed_images)})
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
    def shared_settings(self) -> dict[str, Any]:
        """The shared protocol settings as the framework ran them (`self.ran`); a setting not read
        back (no fit / prediction in this process) falls back to the spec's value."""
        spec, ran = self.spec, self.ran
        asked = {"negatives": spec.negatives, "image_size": spec.imgsz, "channels": spec.channels,
                 "augmentation": spec.aug.as_dict(), "score_thr": spec.score_thr, "max_det": spec.max_det,
                 "nms_iou": spec.nms_iou, "multi_label": spec.multi_label}
        read = {"image_size": size_value(ran.get("train_size"), ran.get("test_size")),
                "channels": size_value(ran.get("train_channels"), ran.get("test_channels"))}
        return {key: read.get(key) if read.get(key) is not None else ran.get(key, asked[key])
                for key in SHARED_SETTINGS}

    def protocol(self, tta: bool = False) -> list[dict]:
        """Every setting that can move this model's score: the shared protocol (scope "shared",
        identical for every framework in a fair sweep) as read back from the framework, then its
        recipe (`recipe()`), each with the framework's native default and, where they differ, why."""
        spec, consumed, values = self.spec, self.consumed or {}, self.shared_settings()
        labels = {"negatives": "images without findings in training",
                  "image_size": "image size (longer side resized to, px; train/test when they differ)",
                  "channels": "input channels the network reads", "augmentation":
                  "shared augmentation (rotation deg, h/v flip prob.)", "score_thr": "inference score threshold",
                  "max_det": "max detections per image", "nms_iou": "class-aware NMS IoU at inference",
                  "multi_label": "several classes per box"}
        rows = [protocol_row("train_images", "training images consumed (read back from the framework)",
                             consumed.get("images"), scope=SHARED),
                protocol_row("train_boxes", "training boxes consumed", consumed.get("boxes"), scope=SHARED)]
        for key in SHARED_SETTINGS:
            native, note = self.native_protocol.get(key, (None, ""))
            rows.append(protocol_row(key, labels[key], values[key], native, scope=SHARED, note=note))
        rows += [
            protocol_row("init_weights", "initial weights",
                         (spec.weights_name or Path(spec.weights).name) if spec.weights else "scratch",
                         scope=SHARED, note=init_note(self.init)),
            protocol_row("seed", "seed", spec.seed, scope=SHARED),
            protocol_row("tta", "test-time augmentation", "hflip (WBF, re-capped to max_det)" if tta else "none",
                         scope=SHARED),
            protocol_row("images_scored", "validation images predicted / unreadable",
                         self.ran.get("images_scored"), scope=SHARED),
        ]
        parallel = protocol_row(
            "gpus", "data-parallel processes (train.gpus)", spec.gpus, 1,
            note=f"batch {spec.batch_size} in total = {spec.batch_size // spec.gpus} per process; lr unscaled "
                 "(the total batch is the recipe's)")
        overrides = protocol_row("native_overrides", "framework settings overridden (`native`)",
                                 dict(spec.native or {}), {}, reasons=spec.reasons)
        return rows + list(self.recipe()) + [parallel, overrides]

    @abc.abstractmethod
    def recipe(self) -> list[dict]:
        """The framework's training recipe as protocol rows (scope "recipe", `adapters.card.recipe_rows`),
        read back from the framework where it ran: epochs, iterations, batch, optimizer, lr, schedule,
        warmup, weight decay, norm decay, clipping, architecture, framework-only augmentation."""


__all__ = ["Adapter", "Detector", "AugSpec", "TrainSpec", "RawDetections", "UnreadableImages", "DDP_RESULT",
           "trusted_load", "count_split_training_set", "init_report", "protocol_row"]
