"""`Detectron2FasterRCNN`: the shared `Detector` interface over detectron2 (see the package docstring)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from adapters.base import DDP_RESULT, Detector, trusted_load
from adapters.frcnn_natives import faster_rcnn_native_protocol, faster_rcnn_recipe
from adapters.ddp import check_gpus, free_port
from adapters.detectron2_frcnn import readback
from adapters.detectron2_frcnn.config import (READABLE_MODES, VARIANTS, build_config, checkpoint_tensors,
                                              predict_resize, train_augmentations, zoo_solver)
from adapters.detectron2_frcnn.data import registered_split
from adapters.detectron2_frcnn.trainer import log_to, trainer_class
from adapters.postprocess import RawDetections
from adapters.schedule import scaled_milestones, warmup_length
from adapters.spec import LIGHT_HEAD_VARIANTS
from adapters.trainset import count_split_training_set, iterations_per_epoch
from harness import atomic
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)


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
    native_keys = {"negatives": ("DATALOADER.FILTER_EMPTY_ANNOTATIONS",),
                   "image_size": ("INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST"),
                   "score_thr": ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "MODEL.RETINANET.SCORE_THRESH_TEST"),
                   "max_det": ("TEST.DETECTIONS_PER_IMAGE",),
                   "nms_iou": ("MODEL.ROI_HEADS.NMS_THRESH_TEST", "MODEL.RETINANET.NMS_THRESH_TEST"),
                   "seed": ("SEED",), "init_weights": ("MODEL.WEIGHTS",),
                   "epochs": ("SOLVER.MAX_ITER", "SOLVER.REFERENCE_WORLD_SIZE", "SOLVER.IMS_PER_BATCH"),
                   "batch_size": ("SOLVER.IMS_PER_BATCH", "SOLVER.REFERENCE_WORLD_SIZE"),
                   "lr": ("SOLVER.BASE_LR", "SOLVER.REFERENCE_WORLD_SIZE")}

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
        else:
            self._train(split, workdir, n_train, point is not None)
        checkpoint = workdir / "model_final.pth"
        if not checkpoint.is_file():
            raise RuntimeError(f"detectron2 finished without writing {checkpoint}")
        return checkpoint

    def _train(self, split: Split, workdir: Path, n_train: int, resume: bool) -> None:
        """detectron2's DefaultTrainer in this process (one of the data-parallel ones, or the only one)."""
        from detectron2.utils import comm

        main = comm.is_main_process()
        with registered_split(split) as (train_name, _val_name), \
                (log_to(workdir / "log.txt") if main else contextlib.nullcontext()):
            trainer, trainer_cls = self.build_trainer(train_name, workdir, n_train)
            cfg = trainer.cfg  # what it trains with: DefaultTrainer's auto_scale_workers may rescale the solver
            if main:
                atomic.write_text(workdir / "config.yaml", cfg.dump())
            log.info("detectron2 %s: %d train images, %d iterations of batch %d at %d px on %s%s",
                     self.spec.variant, n_train, trainer.max_iter, cfg.SOLVER.IMS_PER_BATCH,
                     self.spec.imgsz, cfg.MODEL.DEVICE,
                     f" x {comm.get_world_size()} processes" if comm.get_world_size() > 1 else "")
            self._check_consumed(split, trainer_cls.consumed, "the dataset dicts DefaultTrainer's loader was built from")
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
            self._read_back_training(split, trainer, trainer_cls)
            final = "model_final.pth"
            if resume and trainer.start_iter >= trainer.max_iter and (workdir / "last_checkpoint").read_text() != final:
                # resumed after the last iteration (e.g. model_final was corrupt): nothing trained, so
                # detectron2 saved no model_final; save the resumed state as one
                trainer.checkpointer.save("model_final", iteration=trainer.max_iter - 1)

    def build_trainer(self, train_dataset: str, workdir: Path, n_train: int):
        """cxr-bench's DefaultTrainer for the registered `train_dataset`, built (model, optimizer, data
        loader with the shared augmentations, hooks) but not trained; returns (trainer, its class, which
        holds what the loader was built from: consumed counts and the mapper)."""
        from detectron2.utils import comm
        from detectron2.utils.env import seed_all_rng

        cfg = build_config(self.spec, n_train=n_train, train_dataset=train_dataset, output_dir=workdir)
        # model init, sampler order, augmentation draws; each process its own stream, as
        # detectron2's default_setup seeds them (seed + rank)
        seed_all_rng(cfg.SEED + comm.get_rank())
        trainer_cls = trainer_class()
        trainer_cls.augmentations = train_augmentations(self.spec.aug, self.spec.imgsz)
        trainer_cls.keep_checkpoints = self.spec.checkpoint_keep
        return trainer_cls(cfg), trainer_cls

    def _read_back_training(self, split: Split, trainer, trainer_cls) -> None:
        """What detectron2 trained with (adapters.detectron2_frcnn.readback): `trainer.cfg`, its
        max_iter, the built mapper, model and optimizer."""
        from detectron2.utils import comm

        has_negatives = (count_split_training_set(split.train_json, "keep")["images"]
                         > count_split_training_set(split.train_json, "drop")["images"])
        self.record_ran(**readback.training(trainer, trainer_cls.mapper, self.spec.variant, trainer_cls.consumed["images"],
                                            trainer_cls.background if has_negatives else None, comm.get_world_size()))

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
        self.record_ran(**readback.prediction(model, resize))

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
        """The recipe rows as detectron2 trained (read back after a fit; see readback.training)."""
        spec, details = self.spec, self.ran.details
        max_iter = details.get("max_iter")
        zoo = zoo_solver(spec.variant)  # the natives: the zoo config as shipped
        steps, zoo_iters = tuple(zoo.STEPS), int(zoo.MAX_ITER)
        at = " and ".join(f"{step / zoo_iters:.0%}" for step in steps)
        natives, notes = faster_rcnn_recipe(
            spec, not spec.weights, spec.variant in LIGHT_HEAD_VARIANTS, float(zoo.BASE_LR),
            f"x{zoo.GAMMA:g} at {at} of {zoo_iters} iterations",
            f"{zoo.WARMUP_METHOD} from {zoo.WARMUP_FACTOR:g}, {zoo.WARMUP_ITERS} iterations", float(zoo.WEIGHT_DECAY),
            scaled_schedule=max_iter is not None and details["steps"] == scaled_milestones(steps, zoo_iters, max_iter),
            scaled_warmup=max_iter is not None and details["warmup_iters"] == warmup_length(int(zoo.WARMUP_ITERS),
                                                                                              max_iter),
            keys={"schedule": "SOLVER.STEPS", "warmup": "SOLVER.WARMUP_ITERS", "architecture": "MODEL.ROI_BOX_HEAD",
                  "grad_clip": "SOLVER.CLIP_GRADIENTS.ENABLED"},
            native_batch=int(zoo.IMS_PER_BATCH), native_momentum=float(zoo.MOMENTUM))
        if zoo.CLIP_GRADIENTS.ENABLED:
            natives["grad_clip"] = f"{zoo.CLIP_GRADIENTS.CLIP_TYPE} {zoo.CLIP_GRADIENTS.CLIP_VALUE:g}"
        return self.recipe_rows(natives, notes, asked={"epochs": spec.epochs, "batch_size": spec.batch_size,
                                                       "lr": spec.lr})

    def version_notes(self) -> dict[str, str]:
        import detectron2

        try:
            from detectron2 import _C  # noqa: F401

            compiled = "yes"
        except ImportError:
            compiled = "no (torchvision ROIAlign/NMS)"
        return {"detectron2": detectron2.__version__, "detectron2._C": compiled}
