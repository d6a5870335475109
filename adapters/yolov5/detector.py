"""`YoloV5Detector`: the shared `Detector` interface over ultralytics (see the package docstring)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from adapters.base import DDP_RESULT, Detector, trusted_load
from adapters.ddp import check_gpus
from adapters.images import warn_size_mismatch
from adapters.resume import set_aside_checkpoints
from adapters.postprocess import RawDetections
from adapters.readback import GradClipRecorder, Read, ReadBack
from adapters.spec import TrainSpec
from adapters.trainset import count_split_training_set, iterations_per_epoch
from adapters.yolov5.compat import survive_missing_polars
from adapters.yolov5.config import (FRAMEWORK_AUG_KEYS, HARNESS_REASONS, HEAD, PREDICT_ONLY_KEYS, VARIANTS, aug_args,
                                    predict_kwargs, train_args, yolo_device)
from adapters.yolov5.data import write_yolo_dataset
from adapters.yolov5 import readback
from adapters.yolov5.framework import (background_images, cached_training_set_counts, describe_transforms,
                                       multi_label_predictor, training_set_counts)
from adapters.yolov5.offline import trust_amp_in_this_process, ultralytics_offline
from harness import atomic
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)

# recipe row -> the ultralytics argument whose `reasons` entry explains a deviation from the native default
RECIPE_ARGS = {"batch_size": "nbs", "optimizer": "optimizer", "lr": "lr0", "schedule": "lrf",
               "warmup": "warmup_epochs", "weight_decay": "weight_decay", "epochs": "epochs"}


class YoloV5Detector(Detector):
    """YOLOv5 n/s/m/l/x (anchor-free YOLOv5u head) via ultralytics."""

    name = "yolov5"
    framework = "ultralytics"
    default_variant = "yolov5n"
    variants = tuple(VARIANTS)
    packages = ("ultralytics",)
    native_protocol = {
        "negatives": ("keep", "ultralytics trains on background images when given; the protocol drops them, "
                              "as the study and the public Kaggle pipelines did"),
        "score_thr": (0.001, "ultralytics' val default (predict's is 0.25)"),
        "max_det": (300, "the protocol keeps 100 per image for every model (COCO's maxDets)"),
        "nms_iou": (0.7, "the protocol uses one NMS IoU for every model (the Faster R-CNNs' default 0.5)"),
        "multi_label": (True, "one label per box, as ultralytics' predict (its validation keeps several)"),
    }
    native_keys = {"negatives": (), "image_size": ("imgsz",), "augmentation": ("degrees", "fliplr", "flipud"),
                   "score_thr": ("conf",), "max_det": ("max_det",), "nms_iou": ("iou",), "multi_label": ("multi_label",),
                   "tta": ("augment",), "seed": ("seed",), "init_weights": ("pretrained",), "epochs": ("epochs",),
                   "lr": ("lr0", "optimizer"), "batch_size": ("nbs", "batch")}

    def __init__(self, spec: TrainSpec):
        super().__init__(spec)
        yolo_device(spec.device)  # fail early on a bad device string
        aug_args(spec.aug)
        self.last_fit: dict[str, Any] = {}

    # -- training -------------------------------------------------------------------------------
    def _fit(self, split: Split, workdir: Path) -> Path:
        check_gpus(self.spec.gpus, self.spec.device, self.name, cpu_ok=False)
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        data_yaml = write_yolo_dataset(split, workdir / "yolo_data", self.spec.channels, self.spec.negatives)
        args = train_args(self.spec, data_yaml, workdir)
        weights_dir = workdir / args["name"] / "weights"
        n_train = sum(1 for _ in (workdir / "yolo_data" / "images" / "train").iterdir())
        log.info("yolov5: training %s (%s) on %d images (negatives=%s) for %d epochs -> %s",
                 self.spec.variant, HEAD, n_train, self.spec.negatives, self.spec.epochs, workdir / args["name"])
        trust_amp = bool(self.spec.amp) and args["device"] != "cpu"
        with ultralytics_offline(workdir / "ultralytics_config", trust_amp=trust_amp), GradClipRecorder() as clip:
            # ultralytics cannot resume a finished training: only checkpoints before the last epoch
            point = self.resume_point(split, weights_dir, trusted_load, before_epoch=int(args["epochs"]))
            if point is None:  # no stale file: the rest of ultralytics' run folder (last/best.pt, results) aside
                self.superseded_to = (set_aside_checkpoints(workdir / args["name"], self.name, self.superseded_to,
                                                            everything=True) or self.superseded_to)
                model = self.build_yolo(self.arch_yaml())
                if self.spec.weights:
                    model.add_callback("on_pretrain_routine_end", self._record_yolo_init)
            else:  # ultralytics' own resume: args, optimizer, EMA and epoch from the checkpoint
                model = self.build_yolo(str(point.checkpoint))
                args["resume"] = True
            self._add_checkpoint_callbacks(model, self.training_key(split.split_hash), workdir)
            model.add_callback("on_pretrain_routine_start", survive_missing_polars)  # DDP workers too
            if trust_amp and self.spec.gpus > 1:  # DDP workers are new processes: patch there too
                model.add_callback("on_pretrain_routine_start", trust_amp_in_this_process)
            (workdir / DDP_RESULT).unlink(missing_ok=True)
            model.add_callback("on_train_end", self._training_readback(split, workdir, clip))  # rank 0 in DDP
            start = time.perf_counter()
            model.train(**args)
            seconds = time.perf_counter() - start
            trainer = model.trainer
            if self.resumed is not None:
                self.resumed["framework_start_epoch"] = int(trainer.start_epoch)
            if self.spec.gpus > 1:  # the dataset lived in ultralytics' DDP subprocesses
                transforms = None
                self._check_consumed(split, cached_training_set_counts(workdir / "yolo_data" / "labels" / "train"),
                                     "the label cache of ultralytics' training dataset (DDP workers)")
                self._collect_ddp_readback(workdir)
            else:
                dataset = trainer.train_loader.dataset
                transforms = describe_transforms(getattr(dataset, "transforms", None))
                self._check_consumed(split, training_set_counts(dataset), "trainer.train_loader.dataset.labels")
        checkpoint = Path(trainer.save_dir) / "weights" / "last.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"ultralytics finished but wrote no checkpoint at {checkpoint}")
        epochs, batch = int(args["epochs"]), int(trainer.batch_size)
        self.last_fit = {"seconds": seconds, "train_images": self.consumed["images"], "epochs": epochs,
                         "iterations": epochs * iterations_per_epoch(self.consumed["images"], batch),
                         "accumulate": int(getattr(trainer, "accumulate", 1)),
                         "args": {k: v for k, v in args.items() if k not in ("data", "project", "name", "resume")},
                         "train_images_per_s":
                             self.consumed["images"] * epochs / seconds if seconds > 0 else float("nan"),
                         "save_dir": str(trainer.save_dir), "checkpoint": str(checkpoint),
                         "train_transforms": transforms}
        log.info("yolov5: trained on %d images / %d boxes in %.1f s (%.2f images/s); checkpoint %s",
                 self.consumed["images"], self.consumed["boxes"], seconds, self.last_fit["train_images_per_s"],
                 checkpoint)
        return checkpoint

    def _training_readback(self, split: Split, workdir: Path, clip: GradClipRecorder):
        """An ultralytics `on_train_end` callback reading back what the trainer ran (adapters.yolov5.readback)
        and whether background images were in its dataset (the protocol's negatives). In one process it
        records them; in a DDP fit it runs on rank 0 of ultralytics' worker processes (callbacks travel
        with the pickled trainer) and writes them to `<workdir>/ddp_result.json` for the job's process
        (no gradient clipping there: the recorder is this process's)."""
        has_negatives = (count_split_training_set(split.train_json, "keep")["images"]
                         > count_split_training_set(split.train_json, "drop")["images"])
        detector, spec_negatives = self, self.spec.negatives

        def on_train_end(trainer) -> None:
            RANK = int(os.environ.get("RANK", -1))  # as ultralytics.utils defines it: -1 = not a DDP worker
            if RANK not in (-1, 0):
                return
            dataset = trainer.train_loader.dataset
            source = "trainer.train_loader.dataset.labels (images without a box)"
            negatives = (Read("keep" if background_images(dataset) else "drop", source) if has_negatives else
                         Read(spec_negatives, "the split has no image without findings: keep and drop train alike"))
            reads = readback.training(trainer, FRAMEWORK_AUG_KEYS, clip if RANK == -1 else None)
            if RANK == -1:
                detector.record_ran(negatives=negatives, **reads)
            else:
                atomic.write_json(workdir / DDP_RESULT, {"ran": ReadBack(negatives=negatives, **reads).as_dict()})

        return on_train_end

    def _collect_ddp_readback(self, workdir: Path) -> None:
        """After a DDP fit: rank 0's read-back (`_training_readback`); without one, the training rows stay
        "asked, not read back" on the card."""
        path = workdir / DDP_RESULT
        if not path.is_file():
            log.warning("yolov5: rank 0 of the DDP fit wrote no read-back (%s): the card shows the training "
                        "settings as asked, not read back", path)
            return
        self._ddp_restore(json.loads(path.read_text()))

    def _record_yolo_init(self, trainer) -> None:
        """ultralytics callback: the model about to train vs the checkpoint it was loaded from."""
        from ultralytics.nn.tasks import load_checkpoint

        source, _ = load_checkpoint(self.spec.weights)
        self._record_init(trainer.model.state_dict(), source.float().state_dict())

    def _add_checkpoint_callbacks(self, model, key: str, workdir: Path) -> None:
        """Record each `epoch{N}.pt` ultralytics saves (save_period) as resumable (the shared
        bookkeeping keeps the newest spec.checkpoint_keep; ultralytics keeps all) and update the
        progress file after each epoch."""

        def on_model_save(trainer) -> None:
            checkpoint = Path(trainer.wdir) / f"epoch{trainer.epoch}.pt"  # ultralytics counts epochs from 0
            if trainer.save_period > 0 and trainer.epoch % trainer.save_period == 0 and checkpoint.is_file():
                self.checkpoint_saved(checkpoint, key, trainer.epoch + 1, trainer.epochs)

        def on_fit_epoch_end(trainer) -> None:
            self.epoch_done(Path(trainer.wdir), workdir, trainer.epoch + 1, trainer.epochs)

        model.add_callback("on_model_save", on_model_save)
        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)

    # -- prediction -----------------------------------------------------------------------------
    def _untrained(self):
        """A seeded, randomly initialised model of the variant for the spec's classes and channels."""
        import torch

        yolo = self.build_yolo(self.arch_yaml())
        torch.manual_seed(self.spec.seed)
        model = type(yolo.model)(dict(yolo.model.yaml), ch=self.spec.channels, nc=self.spec.num_classes, verbose=False)
        model.names = dict(enumerate(self.spec.classes))
        model.args, model.task = yolo.model.args, "detect"
        yolo.model = model
        return yolo

    def predict_kwargs(self, workdir: Path) -> dict[str, Any]:
        """What `model.predict` receives (adapters.yolov5.config.predict_kwargs)."""
        return predict_kwargs(self.spec, workdir)

    @contextlib.contextmanager
    def prediction_session(self, checkpoint: Path | None, workdir: Path):
        workdir = Path(workdir).resolve()
        kwargs = self.predict_kwargs(workdir)
        with ultralytics_offline(workdir / "ultralytics_config"):
            if checkpoint is None:
                model = self._untrained()
            else:
                if not Path(checkpoint).is_file():
                    raise FileNotFoundError(f"yolov5 checkpoint not found: {checkpoint}")
                model = self.build_yolo(str(checkpoint))
            predictor = self.predictor_class()

            def infer(refs: list[ImageRef]) -> list[RawDetections]:
                paths = [str(Path(ref.path).resolve()) for ref in refs]
                results = model.predict(paths, predictor=predictor, **kwargs)  # built once, then reused
                self.record_ran(**self.predictor_readback(model.predictor))
                outputs = {str(Path(res.path).resolve()): res for res in results}
                return [self._raw(ref, outputs.get(path)) for ref, path in zip(refs, paths)]

            yield infer

    # hooks the general ultralytics adapter (adapters.ultralytics_zoo) overrides per architecture
    def arch_yaml(self) -> str:
        """The ultralytics model YAML the variant is built from."""
        return f"{self.spec.variant}.yaml"

    def build_yolo(self, source: str):
        """ultralytics' model object for a model YAML or a checkpoint."""
        from ultralytics import YOLO

        return YOLO(source, task="detect")

    def predictor_class(self):
        """The predictor `model.predict` runs: multi-label NMS as ultralytics' validation does."""
        predictor = multi_label_predictor()
        native = {k: v for k, v in self.spec.native.items() if k in PREDICT_ONLY_KEYS}
        predictor.multi_label = bool(native.get("multi_label", self.spec.multi_label))
        return predictor

    def predictor_readback(self, predictor) -> dict[str, Any]:
        """ReadBack fields of the predictor that ran (adapters.yolov5.readback.prediction)."""
        return readback.prediction(predictor)

    @staticmethod
    def _raw(ref: ImageRef, res) -> RawDetections:
        if res is None:
            raise RuntimeError("ultralytics could not decode the image")
        h, w = res.orig_shape[:2]
        warn_size_mismatch(ref, w, h)
        boxes = res.boxes
        return RawDetections(boxes.xyxy.detach().cpu().numpy(), boxes.conf.detach().cpu().numpy(),
                             boxes.cls.detach().cpu().numpy().astype(int))

    # -- the protocol card ----------------------------------------------------------------------
    def recipe(self) -> list[dict]:
        """The recipe rows as ultralytics ran them, against its own defaults for this run (both read back
        after a fit: readback.training and readback.natives; without a fit, no native is known)."""
        spec = self.spec
        natives = dict(self.ran.details.get("natives") or {})
        nbs = natives.pop("nbs", None)
        arch = f"{spec.variant}.yaml (YOLOv5 backbone/neck, anchor-free YOLOv5u head)"
        natives.update(architecture=arch, grad_clip="max norm 10")  # ultralytics' optimizer_step clips at 10
        # what the harness asks ultralytics for (its train arguments; the batch row: with the native nbs)
        asked = {"architecture": arch, "epochs": spec.epochs, "lr": spec.lr,
                 "batch_size": f"{spec.batch_size} (nbs {nbs})" if nbs else None}
        # a deviation is explained by the reason given for the ultralytics argument behind it
        notes = {key: spec.reasons.get(arg, "") for key, arg in RECIPE_ARGS.items()}
        notes["weight_decay"] = notes["weight_decay"] or "ultralytics scales it by batch x accumulate / nbs"
        notes["optimizer"] = notes["optimizer"] or ("the harness passes train.optimizer: ultralytics' optimizer=auto "
                                                    "picks by run length and class count")
        notes["lr"] = notes["lr"] or "the harness passes train.lr as lr0 (optimizer=auto would set its own)"
        return self.recipe_rows(natives, notes, reasons={"framework_aug": {**HARNESS_REASONS, **spec.reasons}},
                                asked=asked)

    # -- provenance -----------------------------------------------------------------------------
    def version_notes(self) -> dict[str, str]:
        return {"architecture": f"ultralytics {self.spec.variant}.yaml (YOLOv5 backbone + PANet neck)",
                "head": HEAD, "licence": "AGPL-3.0"}
