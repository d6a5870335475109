"""`Detectron2FasterRCNN`: the shared `Detector` interface over detectron2 (see the package docstring)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from adapters.base import DDP_RESULT, Detector, trusted_load
from adapters.card import faster_rcnn_native_protocol, faster_rcnn_recipe, recipe_rows
from adapters.ddp import check_gpus, free_port
from adapters.detectron2_frcnn.config import (LIGHT_HEAD_VARIANTS, NATIVE, READABLE_MODES, VARIANTS, ZOO_ITERS,
                                              ZOO_STEPS, build_config, checkpoint_tensors, predict_resize,
                                              train_augmentations)
from adapters.detectron2_frcnn.data import registered_split
from adapters.detectron2_frcnn.heads import postprocess_settings
from adapters.detectron2_frcnn.trainer import log_to, trainer_class
from adapters.postprocess import RawDetections
from adapters.readback import input_channels, optimizer_settings, optimizer_text
from adapters.schedule import scaled_milestones, warmup_length
from adapters.trainset import count_split_training_set, iterations_per_epoch
from harness import atomic
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)


def _size(min_sizes, max_size) -> Any:
    """ResizeShortestEdge's target as one number when the short and long side limits agree."""
    sizes = [int(s) for s in (min_sizes if isinstance(min_sizes, (list, tuple)) else [min_sizes])]
    return int(max_size) if set(sizes) == {int(max_size)} else {"short side": sizes, "max size": int(max_size)}


def _box_head(cfg) -> str:
    box = cfg.MODEL.ROI_BOX_HEAD
    return (f"{f'{box.NUM_CONV}conv-' if box.NUM_CONV else ''}{box.NUM_FC}fc"
            f"{' ' + box.NORM if box.NORM and box.NUM_CONV else ''} box head")


def augmentation_readback(augmentations: list) -> dict[str, float]:
    """The shared augmentation as the detectron2 transforms built for training hold it."""
    out = {"rotate_deg": 0.0, "hflip": 0.0, "vflip": 0.0}
    for aug in augmentations:
        kind = type(aug).__name__
        if kind == "RandomFlip":
            out["hflip" if aug.horizontal else "vflip"] = float(aug.prob)
        elif kind == "RandomRotation":
            out["rotate_deg"] = float(max(abs(a) for a in aug.angle))
    return out


def _ddp_fit(detector: "Detectron2FasterRCNN", split: Split, workdir: Path, n_train: int, resume: bool) -> None:
    """One process of a data-parallel fit, started by detectron2's `launch`; rank 0 reports back."""
    from detectron2.utils import comm

    if detector.resumed is not None:
        detector.resumed = dict(detector.resumed)
    detector._train(split, workdir, n_train, resume)
    if comm.is_main_process():
        detector.ddp_report(workdir, start_iter=(detector.resumed or {}).get("framework_start_iter", 0))


class Detectron2FasterRCNN(Detector):
    """Faster R-CNN (ResNet-FPN) trained and run by detectron2."""

    name = "detectron2_frcnn"
    framework = "detectron2"
    default_variant = "R50-FPN"
    variants = tuple(VARIANTS)
    packages = ()  # detectron2 is installed from a wheel of another name: its version is read from the module
    native_protocol = faster_rcnn_native_protocol("DATALOADER.FILTER_EMPTY_ANNOTATIONS")
    image_modes = READABLE_MODES  # detectron2's BGR reader clips 16-bit PNGs
    last_cfg = None  # the CfgNode of the last fit (for the protocol card)

    def _fit(self, split: Split, workdir: Path) -> Path:
        """Train on split.train_json; returns `<workdir>/model_final.pth` (model + trainer state).
        Writes config.yaml, log.txt, metrics.json (detectron2's JSON writer) under workdir.
        With spec.gpus > 1, detectron2's own `launch` runs the training in that many processes."""
        import torch

        workdir.mkdir(parents=True, exist_ok=True)
        # detectron2's launch picks NCCL whenever it sees a GPU: CPU processes only on a CPU-only machine
        check_gpus(self.spec.gpus, self.spec.device, self.name, cpu_ok=not torch.cuda.is_available())
        keep_empty = not self.spec.native.get("DATALOADER.FILTER_EMPTY_ANNOTATIONS", self.spec.negatives == "drop")
        n_train = count_split_training_set(split.train_json, "keep" if keep_empty else "drop")["images"]
        if n_train == 0:
            raise ValueError(f"{split.train_json}: no training images with boxes")
        point = self.resume_point(split, workdir, trusted_load)
        if point is not None:  # detectron2's own resume reads the `last_checkpoint` file
            atomic.write_text(workdir / "last_checkpoint", point.checkpoint.name)
        if self.spec.gpus > 1:
            from detectron2.engine import launch

            (workdir / DDP_RESULT).unlink(missing_ok=True)
            launch(_ddp_fit, self.spec.gpus, dist_url=f"tcp://127.0.0.1:{free_port()}",
                   args=(self, split, workdir, n_train, point is not None))
            result = self.ddp_collect(split, workdir)
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
        with registered_split(split) as (train_name, _val_name), \
                (log_to(workdir / "log.txt") if main else contextlib.nullcontext()):
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
            trainer_cls = trainer_class()
            trainer_cls.augmentations = train_augmentations(self.spec.aug, self.spec.imgsz)
            trainer_cls.keep_checkpoints = self.spec.checkpoint_keep
            trainer = trainer_cls(cfg)
            self._check_consumed(split, trainer_cls.consumed)
            self._track_checkpoints(trainer, split, workdir, iterations_per_epoch(n_train, cfg.SOLVER.IMS_PER_BATCH))
            trainer.resume_or_load(resume=resume)
            if self.resumed is not None:
                self.resumed["framework_start_iter"] = int(trainer.start_iter)
            if self.spec.weights and not resume:
                model = getattr(trainer.model, "module", trainer.model)
                self._record_init(model.state_dict(), checkpoint_tensors(self.spec.weights))
            trainer.train()
            self.last_parallel = {"processes": comm.get_world_size(), "model_wrapper": type(trainer.model).__name__,
                                  "iterations": int(trainer.iter) - int(trainer.start_iter)}
            self._read_back_training(cfg, trainer, trainer_cls.augmentations)
            final = "model_final.pth"
            if resume and trainer.start_iter >= trainer.max_iter and (workdir / "last_checkpoint").read_text() != final:
                # resumed after the last iteration (e.g. model_final was corrupt): nothing trained, so
                # detectron2 saved no model_final; save the resumed state as one
                trainer.checkpointer.save("model_final", iteration=trainer.max_iter - 1)
        return cfg

    def _read_back_training(self, cfg, trainer, augmentations: list) -> None:
        """What detectron2 trained with: the final CfgNode, the transforms, the built model and optimizer."""
        self.record_ran(
            negatives="drop" if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS else "keep",
            train_size=_size(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN),
            train_channels=input_channels(trainer.model), augmentation=augmentation_readback(augmentations),
            recipe={"optimizer": optimizer_settings(trainer.optimizer, trainer.model), "head": _box_head(cfg),
                    "backbone_norm": cfg.MODEL.RESNETS.NORM, **self._schedule_readback(cfg)})

    def _track_checkpoints(self, trainer, split: Split, workdir: Path, per_epoch: int) -> None:
        """Record every checkpoint the trainer saves as resumable, and update the progress file
        at the end of each epoch (detectron2 counts iterations; an epoch is `per_epoch` of them)."""
        from detectron2.engine.hooks import CallbackHook
        from detectron2.utils import comm

        key, max_iter = self.training_key(split.split_hash), trainer.max_iter
        epochs = -(-max_iter // per_epoch)

        def epochs_done(iteration: int) -> int:
            return epochs if iteration + 1 >= max_iter else (iteration + 1) // per_epoch

        def on_saved(path: Path, iteration: int | None) -> None:
            if iteration is not None:
                self.checkpoint_saved(path, key, epochs_done(iteration), epochs)

        def after_step(trainer) -> None:
            if comm.is_main_process() and ((trainer.iter + 1) % per_epoch == 0 or trainer.iter + 1 >= max_iter):
                self.epoch_done(workdir, workdir, epochs_done(trainer.iter), epochs)

        trainer.checkpointer.on_saved = on_saved
        trainer.register_hooks([CallbackHook(after_step=after_step)])

    # -- prediction ------------------------------------------------------------------------------
    def build_model(self, checkpoint: Path | None, cfg=None):
        """The eval-mode model of `cfg` (default: the spec's prediction config): loaded from
        `checkpoint`, or randomly initialised with spec.seed."""
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model
        from detectron2.utils.env import seed_all_rng

        cfg = build_config(self.spec) if cfg is None else cfg
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
        """detectron2's own model forward on batches resized as DefaultPredictor does (the config's
        test-time ResizeShortestEdge, boxes returned in the PNG's pixels via height/width)."""
        import torch
        from detectron2.data.detection_utils import read_image

        cfg = build_config(self.spec)
        model = self.build_model(checkpoint, cfg)
        resize = predict_resize(cfg)
        self.record_ran(**postprocess_settings(model), multi_label=True,  # every class of every box
                        test_size=_size(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST),
                        test_channels=input_channels(model))

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
        ran = self.ran.get("recipe") or self._recipe_from_config(build_config(spec))
        scratch = not spec.weights
        optimizer = ran["optimizer"]
        values = {
            "architecture": f"Faster R-CNN {spec.variant}, {ran['backbone_norm'] or 'FrozenBN'} backbone+FPN, "
                            f"{ran['head']}",
            "epochs": spec.epochs, "iterations": ran["max_iter"], "batch_size": ran["batch"],
            "optimizer": optimizer_text(optimizer), "lr": optimizer["lr"],
            "schedule": f"x{ran['gamma']:g} at iterations {ran['steps']} of {ran['max_iter']}",
            "warmup": ran["warmup"], "weight_decay": optimizer["weight_decay"], "norm_decay": optimizer["norm_decay"],
            "grad_clip": ran["grad_clip"], "framework_aug": "none"}
        natives, notes = faster_rcnn_recipe(
            spec, scratch, spec.variant in LIGHT_HEAD_VARIANTS, NATIVE["BASE_LR"],
            "3x: x0.1 at 78% and 93% of training", f"linear from 0.001, {NATIVE['WARMUP_ITERS']} iterations",
            NATIVE["WEIGHT_DECAY"],
            scaled_schedule=ran["steps"] == scaled_milestones(ZOO_STEPS, ZOO_ITERS, ran["max_iter"]),
            scaled_warmup=ran["warmup_iters"] == warmup_length(NATIVE["WARMUP_ITERS"], ran["max_iter"]),
            keys={"schedule": "SOLVER.STEPS", "warmup": "SOLVER.WARMUP_ITERS", "architecture": "MODEL.ROI_BOX_HEAD",
                  "grad_clip": "SOLVER.CLIP_GRADIENTS.ENABLED"})
        return recipe_rows(values, natives, notes)

    @staticmethod
    def _schedule_readback(cfg) -> dict[str, Any]:
        solver = cfg.SOLVER
        return {"max_iter": int(solver.MAX_ITER), "batch": int(solver.IMS_PER_BATCH), "steps": list(solver.STEPS),
                "gamma": float(solver.GAMMA), "warmup_iters": int(solver.WARMUP_ITERS),
                "warmup": f"linear from {solver.WARMUP_FACTOR:g}, {solver.WARMUP_ITERS} iterations",
                "grad_clip": f"{solver.CLIP_GRADIENTS.CLIP_TYPE} {solver.CLIP_GRADIENTS.CLIP_VALUE:g}"
                if solver.CLIP_GRADIENTS.ENABLED else "none"}

    def _recipe_from_config(self, cfg) -> dict[str, Any]:
        """The recipe as configured, for a card written without a fit in this process."""
        solver = cfg.SOLVER
        return {"optimizer": {"type": str(solver.get("OPTIMIZER", "SGD")).upper(), "momentum": solver.MOMENTUM,
                              "lr": solver.BASE_LR, "weight_decay": solver.WEIGHT_DECAY,
                              "norm_decay": solver.WEIGHT_DECAY_NORM},
                "head": _box_head(cfg), "backbone_norm": cfg.MODEL.RESNETS.NORM, **self._schedule_readback(cfg)}

    def version_notes(self) -> dict[str, str]:
        import detectron2

        try:
            from detectron2 import _C  # noqa: F401

            compiled = "yes"
        except ImportError:
            compiled = "no (torchvision ROIAlign/NMS)"
        return {"detectron2": detectron2.__version__, "detectron2._C": compiled}
