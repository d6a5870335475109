"""The one interface every framework implements, and the logic they share, written once.

`Adapter` is the root of every model kind (detectors and the "No finding" classifier): the spec,
resumable checkpoints (`adapters.resume`: saved / epoch done / where to resume), the progress file,
the data-parallel result round trip, the trusted checkpoint load and `versions()`.

`Detector` adds what the three detector frameworks share: the `fit` template (class list and
training-image checks before the framework runs), prediction with its shared post-processing and
bad-image handling, and the protocol card built once from the settings each framework *read back* from
its own resolved state (`self.ran`, a `readback.ReadBack`), each row naming its source; a setting that
was not read back shows the harness's value marked "asked, not read back", never as confirmed. A
framework package implements `_fit`, `prediction_session` and `recipe`, and records what it ran
(its package's `readback` module) with `record_ran`.
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

from adapters.card import RECIPE_LABELS, init_note, native_reason, protocol_row, read_row, recipe_rows
from adapters.images import UnreadableImages, screen_training_images, unreadable_reason
from adapters.postprocess import RawDetections, postprocess
from adapters.readback import Read, ReadBack, init_report
from adapters.resume import (RUN_SETTINGS, ResumePoint, find_resume_point, prune, records, set_aside_checkpoints,
                             training_key, write_record)
from adapters.spec import AugSpec, TrainSpec
from adapters.trainset import count_split_training_set
from harness import atomic
from harness.compare import same
from harness.progress import PROGRESS_FILE, write_progress
from harness.provenance import APPLIED, ASKED, PARTLY, READ, SHARED
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)

DDP_RESULT = "ddp_result.json"  # what rank 0 of a data-parallel fit reports back to the job's process
# the shared protocol settings a framework reads back (`Detector.ran`), in card order, with their labels
SHARED_LABELS = {"negatives": "images without findings in training",
                 "image_size": "image size (longer side resized to, px; train/test when they differ)",
                 "channels": "input channels the network reads",
                 "augmentation": "shared augmentation (rotation deg, h/v flip prob.)",
                 "score_thr": "inference score threshold", "max_det": "max detections per image",
                 "nms_iou": "class-aware NMS IoU at inference", "multi_label": "several classes per box"}
SHARED_SETTINGS = tuple(SHARED_LABELS)
HARNESS_TTA = "hflip (WBF, re-capped to max_det)"  # what harness.tta adds on top of the framework

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
        self.expected_consumed: dict[str, int] | None = None  # what the protocol asks of that split (fit)
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

    def _check_consumed(self, split: Split, consumed: dict[str, int], source: str = "") -> None:
        """Record what the framework consumed (read from `source`, its built training set); warn when
        it differs from what the protocol asks."""
        self.consumed = dict(consumed)
        expected = self.expected_consumed = count_split_training_set(split.train_json, self.spec.negatives)
        if source and hasattr(self, "record_ran"):
            self.record_ran(consumed=Read(dict(consumed), source))
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

    # setting (a SHARED_LABELS key or a recipe key) -> the framework's `native` keys that change it (a key
    # ending in "." stands for every key under it): their reasons explain a value other than asked
    native_keys: dict[str, tuple[str, ...]] = {}

    def __init__(self, spec: TrainSpec):
        super().__init__(spec)
        self.ran = ReadBack()  # what the framework ran, read back (fit and prediction)
        self.images_scored: dict[str, int] | None = None  # predicted / unreadable (the last predict)

    def record_ran(self, **reads: Any) -> None:
        """Record settings as the framework resolved them (`ReadBack` fields; the card shows these)."""
        self.ran.update(**reads)

    def _ddp_state(self) -> dict[str, Any]:
        return {"ran": self.ran.as_dict()}

    def _ddp_restore(self, result: dict[str, Any]) -> None:
        restored = ReadBack.from_dict(result.get("ran") or {})
        self.ran.update(**{name: value for name, value in vars(restored).items() if value})

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
        self.images_scored = {"predicted": len(images) - len(self.failed_images), "failed": len(self.failed_images)}
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
    def asked(self, tta: bool = False) -> dict[str, Any]:
        """The shared settings as the harness asked for them (the spec; TTA: the job's tta_hflip)."""
        spec = self.spec
        return {"train_consumed": self.expected_consumed, "negatives": spec.negatives, "image_size": spec.imgsz,
                "channels": spec.channels, "augmentation": spec.aug.as_dict(), "score_thr": spec.score_thr,
                "max_det": spec.max_det, "nms_iou": spec.nms_iou, "multi_label": spec.multi_label,
                "tta": HARNESS_TTA if tta else "none", "seed": spec.seed, "gpus": spec.gpus,
                "init_weights": (spec.weights_name or Path(spec.weights).name) if spec.weights else "scratch"}

    def asked_reason(self, key: str) -> str:
        """The reasons given for the `native` overrides that change `key` (`native_keys`)."""
        return native_reason(self.spec, self.native_keys.get(key, ()))

    def shared_rows(self, tta: bool = False) -> list[dict]:
        """The shared protocol settings as rows, each from `self.ran` with its source; one not read
        back shows the harness's value marked "asked"."""
        ran, asked = self.ran, self.asked(tta)
        rows = []
        for key, label in SHARED_LABELS.items():
            native, note = self.native_protocol.get(key, (None, ""))
            common = dict(native=native, scope=SHARED, note=note, asked=asked[key], asked_reason=self.asked_reason(key))
            if key == "image_size":
                rows.append(self._train_test_row(key, label, ran.train_size, ran.test_size, **common))
            elif key == "channels":
                rows.append(self._train_test_row(key, label, ran.train_channels, ran.test_channels, **common))
            elif key in ("score_thr", "max_det"):
                rows.append(self._harness_cut_row(key, label, getattr(ran, key), **common))
            else:
                rows.append(read_row(key, label, getattr(ran, key), **common))
        return rows

    @staticmethod
    def _train_test_row(key: str, label: str, train: Read | None, test: Read | None, **common: Any) -> dict:
        """One value when training and prediction read back the same, else {"train", "test"}; only
        "partly" read back when one of them was not."""
        asked = common["asked"]
        if train is None and test is None:
            return read_row(key, label, None, **common)
        if train is not None and test is not None:
            value = train.value if same(train.value, test.value) else {"train": train.value, "test": test.value}
            return protocol_row(key, label, value, source=READ, read_from=f"train: {train.source}; test: {test.source}",
                                **common)
        known, side, other = (train, "train", "test") if test is None else (test, "test", "train")
        return protocol_row(key, label, known.value, source=PARTLY,
                            read_from=f"{side}: {known.source}; {other}: not read back (asked {asked})", **common)

    def _harness_cut_row(self, key: str, label: str, read: Read | None, **common: Any) -> dict:
        """score_thr / max_det: the framework's own cut (read back), then the harness's (adapters.postprocess,
        applied to every framework's output): the stricter of the two is what the predictions hold."""
        asked = common["asked"]
        if read is None:
            return read_row(key, label, None, **common)
        stricter = max if key == "score_thr" else min
        value = stricter(read.value, asked)
        applied = "keeps scores >= " if key == "score_thr" else "keeps the best "
        return protocol_row(key, label, value, source=APPLIED if same(value, asked) else READ,
                            read_from=f"{read.source} = {read.value}, then the harness {applied}{asked} "
                                      "(adapters.postprocess)", **common)

    def protocol(self, tta: bool = False) -> list[dict]:
        """Every setting that can move this model's score: the shared protocol (scope "shared",
        identical for every framework in a fair sweep) as read back from the framework, then its
        recipe (`recipe()`), each with its source, what the harness asked, the framework's native
        default and, where they differ, why."""
        spec, ran, asked = self.spec, self.ran, self.asked(tta)
        consumed = ran.consumed
        rows = [protocol_row("train_images", "training images consumed", None if consumed is None else
                             consumed.value.get("images"), scope=SHARED, source=ASKED if consumed is None else READ,
                             read_from="" if consumed is None else consumed.source,
                             asked=(asked["train_consumed"] or {}).get("images")),
                protocol_row("train_boxes", "training boxes consumed", None if consumed is None else
                             consumed.value.get("boxes"), scope=SHARED, source=ASKED if consumed is None else READ,
                             read_from="" if consumed is None else consumed.source,
                             asked=(asked["train_consumed"] or {}).get("boxes"))]
        rows += self.shared_rows(tta)
        rows += [self._init_row(asked["init_weights"]),
                 read_row("seed", "seed", ran.seed, asked["seed"], scope=SHARED, asked_reason=self.asked_reason("seed")),
                 self._tta_row(asked["tta"]),
                 protocol_row("images_scored", "validation images predicted / unreadable", self.images_scored,
                              scope=SHARED, source=ASKED if self.images_scored is None else APPLIED,
                              read_from="" if self.images_scored is None else "the harness's predict(): images "
                                        "the framework's reader can open")]
        parallel = read_row(
            "gpus", "data-parallel processes (train.gpus)", ran.processes, spec.gpus, native=1,
            note=f"batch {spec.batch_size} in total = {spec.batch_size // spec.gpus} per process; lr unscaled "
                 "(the total batch is the recipe's)")
        overrides = protocol_row("native_overrides", "framework settings overridden (`native`)",
                                 dict(spec.native or {}), {}, reasons=spec.reasons, source=APPLIED,
                                 read_from="passed to the framework's own settings by the harness")
        return rows + list(self.recipe()) + [parallel, overrides]

    def _init_row(self, asked: str) -> dict:
        """The initial weights: confirmed by comparing the model's tensors with the checkpoint's
        (`self.init`), or, from scratch, by the framework's own record of the weights it was given."""
        label, init, read = "initial weights", self.init, self.ran.init
        if init is not None and init.get("weights"):
            return protocol_row("init_weights", label, asked, scope=SHARED, note=init_note(init), source=READ,
                                read_from="the model's tensors compared with the checkpoint's at the start of training",
                                asked=asked)
        if read is None:
            return read_row("init_weights", label, None, asked, scope=SHARED)
        value = Path(str(read.value)).name if read.value else "scratch"
        if value != "scratch" and asked != "scratch":
            value = asked  # a registry name (weights=coco) for the file it resolved to
        return protocol_row("init_weights", label, value, scope=SHARED, source=READ, read_from=read.source,
                            asked=asked, asked_reason=self.asked_reason("init_weights"))

    def _tta_row(self, asked: str) -> dict:
        """Test-time augmentation: the framework's own (read back from its predictor) and the harness's
        hflip TTA (harness.tta) on top of it."""
        label, read = "test-time augmentation", self.ran.tta
        harness = "" if asked == "none" else asked
        if read is None:
            return protocol_row("tta", label, asked, scope=SHARED, source=ASKED, asked=asked,
                                read_from=f"the harness's: {harness or 'none'}; the framework's own: not read back")
        own = f"the framework's own ({read.value})" if read.value else ""
        value = " + ".join(filter(None, [own, harness])) or "none"
        return protocol_row("tta", label, value, scope=SHARED, source=READ, asked=asked,
                            read_from=f"{read.source}; the harness's: {harness or 'none'}",
                            asked_reason=self.asked_reason("tta"))

    def recipe_rows(self, natives: Mapping[str, Any], notes: Mapping[str, str],
                    reasons: Mapping[str, Mapping[str, str]] | None = None,
                    asked: Mapping[str, Any] | None = None) -> list[dict]:
        """The recipe rows from `self.ran.recipe` (adapters.card.recipe_rows), with the reasons of the
        native keys behind each recipe key (`native_keys`)."""
        return recipe_rows(self.ran.recipe, natives, notes, reasons, asked,
                           {key: self.asked_reason(key) for key in RECIPE_LABELS})

    @abc.abstractmethod
    def recipe(self) -> list[dict]:
        """The framework's training recipe as protocol rows (scope "recipe", `adapters.card.recipe_rows`),
        read back from the framework where it ran: epochs, iterations, batch, optimizer, lr, schedule,
        warmup, weight decay, norm decay, clipping, architecture, framework-only augmentation."""


__all__ = ["Adapter", "Detector", "AugSpec", "TrainSpec", "RawDetections", "UnreadableImages", "DDP_RESULT",
           "trusted_load", "count_split_training_set", "init_report", "protocol_row"]
