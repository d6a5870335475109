"""`MMDetFasterRCNN`: the shared `Detector` interface over MMDetection (see the package docstring)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from adapters.base import DDP_RESULT, Detector
from adapters.frcnn_natives import faster_rcnn_native_protocol, faster_rcnn_recipe
from adapters.ddp import check_gpus, is_main_process, spawn
from adapters.images import warn_size_mismatch
from adapters.mmcv_cuda import require_cuda_ops
from adapters.mmdet_frcnn import readback
from adapters.mmdet_frcnn.config import (TRUSTED_PREFIX, VARIANTS, WARMUP_ITERS, model_config, native_schedule,
                                         test_pipeline, train_config)
from adapters.mmdet_frcnn.runner import (close_file_handlers, init_recorder, load_trusted_checkpoint,
                                         register_trusted_loader, runner_class, training_set_counts)
from adapters.postprocess import RawDetections
from adapters.schedule import scaled_milestones, warmup_length
from adapters.spec import LIGHT_HEAD_VARIANTS, TrainSpec
from adapters.trainset import count_split_training_set
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)


def _ddp_fit(detector: "MMDetFasterRCNN", split: Split, workdir: Path, run_name: str, resume_from: str | None) -> None:
    """One data-parallel process of a fit (adapters.ddp.spawn): the same Config and Runner as a
    single-process fit, mmengine's launcher=pytorch; rank 0 reports back."""
    if detector.resumed is not None:
        detector.resumed = dict(detector.resumed)
    cfg = detector._config(split, workdir, run_name)
    start_epoch = detector._train(cfg, split, workdir, resume_from)
    if is_main_process():
        detector.ddp_report(workdir, start_epoch=start_epoch)


class MMDetFasterRCNN(Detector):
    """Faster R-CNN (ResNet-FPN) trained and run with MMDetection."""

    name = "mmdet_frcnn"
    framework = "mmdet"
    default_variant = "R50-FPN"
    variants = tuple(VARIANTS)
    packages = ("mmdet", "mmengine", "mmcv")
    native_protocol = faster_rcnn_native_protocol("filter_empty_gt")
    native_keys = {"negatives": ("train_dataloader.dataset.filter_cfg.", "train_dataloader."),
                   "score_thr": ("model.test_cfg.rcnn.score_thr", "model.test_cfg.score_thr"),
                   "max_det": ("model.test_cfg.rcnn.max_per_img", "model.test_cfg.max_per_img"),
                   "nms_iou": ("model.test_cfg.rcnn.nms.", "model.test_cfg.nms."),
                   "seed": ("randomness.",), "init_weights": ("load_from",),
                   "epochs": ("train_cfg.", "train_cfg"), "batch_size": ("train_dataloader.batch_size",),
                   "lr": ("optim_wrapper.optimizer.lr", "optim_wrapper.", "auto_scale_lr.")}

    def __init__(self, spec: TrainSpec):
        super().__init__(spec)
        self.last_run_name: str | None = None

    # -- configuration -----------------------------------------------------------------------
    def _device(self) -> str:
        import torch

        dev = self.spec.device
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {dev!r} requested but CUDA is not available")
        require_cuda_ops(dev, self.name)  # a CPU-only mmcv would fail at the first RoIAlign/NMS
        return dev

    def model_config(self):
        """The mmengine Config of the packaged variant, adapted (adapters.mmdet_frcnn.config.model_config)."""
        return model_config(self.spec)

    def build_config(self, split: Split, workdir: Path, run_name: str | None = None):
        """The full training Config for `split`, writing under `workdir`."""
        return train_config(self.spec, split, workdir, run_name, self.model_config())

    # -- training --------------------------------------------------------------------------
    def _fit(self, split: Split, workdir: Path) -> Path:
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        device = self._device()
        check_gpus(self.spec.gpus, device, self.name)
        if device.startswith("cuda:"):
            import torch

            torch.cuda.set_device(device)
        cfg = self._config(split, workdir)
        self.last_run_name = cfg.experiment_name
        log.info("mmdet_frcnn %s: training %d epochs on %s -> %s%s", self.spec.variant, self.spec.epochs,
                 split.train_json, workdir, f" ({self.spec.gpus} data-parallel processes)" if self.spec.gpus > 1 else "")
        point = self.resume_point(split, workdir, load_trusted_checkpoint)
        resume_from = None if point is None else str(point.checkpoint)
        if self.spec.gpus > 1:  # mmengine's launcher=pytorch in N processes (adapters.ddp)
            (workdir / DDP_RESULT).unlink(missing_ok=True)
            spawn(_ddp_fit, self.spec.gpus, device.startswith("cuda"),
                  args=(self, split, workdir, cfg.experiment_name, resume_from))
            result = self.ddp_collect(split, workdir)
            if self.resumed is not None:
                self.resumed["framework_start_epoch"] = result["start_epoch"]
        else:
            self._train(cfg, split, workdir, resume_from)
        marker = workdir / "last_checkpoint"
        if not marker.is_file():
            raise RuntimeError(f"mmengine finished without writing a checkpoint under {workdir}")
        checkpoint = Path(marker.read_text().strip())
        if not checkpoint.is_file():
            raise RuntimeError(f"{marker} names a missing checkpoint: {checkpoint}")
        return checkpoint

    def _config(self, split: Split, workdir: Path, run_name: str | None = None):
        """The training Config, with mmengine's distributed settings when spec.gpus > 1."""
        from mmdet.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        register_trusted_loader()
        cfg = self.build_config(split, workdir, run_name)
        if self.spec.gpus > 1:
            cuda = self.spec.device.startswith("cuda")
            cfg.launcher = "pytorch"  # the process group is joined before the Runner (adapters.ddp.spawn)
            cfg.env_cfg.dist_cfg = {"backend": "nccl" if cuda else "gloo"}
            cfg.train_dataloader.batch_size = self.spec.batch_size // self.spec.gpus  # per process
            if not cuda:  # DDP of a CPU module takes no device_ids (mmengine passes LOCAL_RANK's)
                cfg.model_wrapper_cfg = {"type": "MMDistributedDataParallel", "device_ids": None,
                                         "broadcast_buffers": False, "find_unused_parameters": False}
        return cfg

    def _train(self, cfg, split: Split, workdir: Path, resume_from: str | None) -> int:
        """mmengine's Runner on `cfg` in this process (one of the data-parallel ones, or the only one);
        returns the epoch it started from."""
        from mmengine.registry import DefaultScope

        if resume_from is not None:  # mmengine's own resume: model, optimizer, schedulers, epoch/iter, seed
            cfg.resume = True
            cfg.load_from = f"{TRUSTED_PREFIX}{resume_from}"
        with DefaultScope.overwrite_default_scope("mmdet"):
            runner = runner_class(self._device()).from_cfg(cfg)
            if self.spec.weights and resume_from is None:
                runner.register_hook(init_recorder(self), priority="LOWEST")
            runner.register_hook(self._checkpoint_tracker(split, workdir), priority="LOWEST")
            try:
                runner.train()
                dataset = runner.train_dataloader.dataset
                self._check_consumed(split, training_set_counts(dataset),
                                     "runner.train_dataloader.dataset (after its filter)")
                self.last_parallel = {"processes": runner.world_size, "model_wrapper": type(runner.model).__name__,
                                      "iterations": int(runner.iter)}
                self._read_back_training(split, runner, dataset)
            finally:
                close_file_handlers(runner.logger)
        return int((self.resumed or {}).get("framework_start_epoch", 0))

    def _read_back_training(self, split: Split, runner, dataset) -> None:
        """What mmengine trained with (adapters.mmdet_frcnn.readback): the train loop, the built
        dataset's filter and pipeline, the model, the optimizer wrapper and the parameter schedulers."""
        has_negatives = (count_split_training_set(split.train_json, "keep")["images"]
                         > count_split_training_set(split.train_json, "drop")["images"])
        background = (sum(1 for i in range(len(dataset)) if not dataset.get_data_info(i)["instances"])
                      if has_negatives else None)
        self.record_ran(**readback.training(runner, dataset, self.spec.variant, background))

    def _checkpoint_tracker(self, split: Split, workdir: Path):
        """An mmengine hook, run after its CheckpointHook: records each `epoch_<k>.pth` as resumable,
        updates the progress file, and notes the epoch mmengine (re)starts from."""
        from mmengine.hooks import Hook

        detector, key = self, self.training_key(split.split_hash)

        class ResumeTracker(Hook):
            def before_train(self, runner) -> None:
                if detector.resumed is not None:
                    detector.resumed["framework_start_epoch"] = int(runner.epoch)

            def after_train_epoch(self, runner) -> None:
                if not is_main_process():  # rank 0 saved the checkpoint; it alone records it
                    return
                done, epochs = runner.epoch + 1, runner.max_epochs
                checkpoint = workdir / f"epoch_{done}.pth"
                if checkpoint.is_file() and (done % detector.spec.checkpoint_interval == 0 or done == epochs):
                    detector.checkpoint_saved(checkpoint, key, done, epochs)
                detector.epoch_done(workdir, workdir, done, epochs)

        return ResumeTracker()

    # -- inference -------------------------------------------------------------------------
    def build_model(self, checkpoint: Path | None):
        """The detector in eval mode: weights from `checkpoint`, or seeded random init when None."""
        import torch
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.registry import DefaultScope
        from mmengine.runner.checkpoint import load_state_dict

        register_all_modules(init_default_scope=False)
        cfg = self.model_config()
        with DefaultScope.overwrite_default_scope("mmdet"):
            torch.manual_seed(self.spec.seed)
            model = MODELS.build(cfg.model)
            if checkpoint is None:
                model.init_weights()
            else:
                state = load_trusted_checkpoint(checkpoint, "cpu")
                state = state.get("state_dict", state)
                try:
                    load_state_dict(model, state, strict=True)
                except RuntimeError as err:
                    raise ValueError(f"{checkpoint}: does not match mmdet_frcnn {self.spec.variant} "
                                     f"(channels={self.spec.channels}, weights={self.spec.weights}): {err}") from err
        return model.to(self._device()).eval()

    @contextlib.contextmanager
    def prediction_session(self, checkpoint: Path | None, workdir: Path):
        """mmdet's test pipeline and `model.test_step` (its multiclass NMS at spec.nms_iou)."""
        import torch
        from mmengine.dataset import Compose, pseudo_collate
        from mmengine.registry import DefaultScope

        model = self.build_model(None if checkpoint is None else Path(checkpoint))
        with DefaultScope.overwrite_default_scope("mmdet"), torch.no_grad():
            pipeline = Compose(test_pipeline(self.spec))
            self.record_ran(**readback.prediction(model, pipeline))

            def infer(refs: list[ImageRef]) -> list[RawDetections]:
                batch = []
                for ref in refs:
                    item = pipeline({"img_path": str(ref.path), "img_id": ref.id})
                    if item is None:
                        raise ValueError(f"{ref.path}: mmdet's test pipeline returned nothing")
                    ori_h, ori_w = item["data_samples"].metainfo["ori_shape"][:2]
                    warn_size_mismatch(ref, ori_w, ori_h)
                    batch.append(item)
                raws = []
                for sample in model.test_step(pseudo_collate(batch)):
                    inst = sample.pred_instances
                    raws.append(RawDetections(inst.bboxes.detach().cpu().numpy(), inst.scores.detach().cpu().numpy(),
                                              inst.labels.detach().cpu().numpy()))
                return raws

            yield infer

    # -- the protocol card -------------------------------------------------------------------
    def recipe(self) -> list[dict]:
        """The recipe rows as mmengine trained (read back after a fit; see readback.training)."""
        spec, details = self.spec, self.ran.details
        scratch = spec.weights is None
        steps, length = native_schedule(scratch)
        epochs, iterations = details.get("max_epochs"), details.get("iterations")
        natives, notes = faster_rcnn_recipe(
            spec, scratch, spec.variant in LIGHT_HEAD_VARIANTS, 0.02, f"x0.1 at epochs {list(steps)} of {length}",
            f"linear from 0.001, {WARMUP_ITERS} iterations", 0.0001,
            scaled_schedule=epochs is not None and details["milestones"] == scaled_milestones(steps, length, epochs),
            scaled_warmup=bool(iterations) and details["warmup_iters"] == warmup_length(WARMUP_ITERS, iterations),
            keys={"schedule": "param_scheduler", "warmup": "param_scheduler", "architecture": "model.roi_head.bbox_head",
                  "grad_clip": "optim_wrapper.clip_grad", "optimizer": "optim_wrapper.optimizer"})
        norm = "GN" if scratch else "BN (frozen stage 1)"
        natives["architecture"] = natives["architecture"].replace("FrozenBN", norm)
        return self.recipe_rows(natives, notes, asked={"epochs": spec.epochs, "batch_size": spec.batch_size,
                                                       "lr": spec.lr})

    def version_notes(self) -> dict[str, str]:
        try:
            import mmcv.ops  # noqa: F401  (compiled ops: RoIAlign, nms)

            return {"mmcv_ops": "compiled"}
        except ImportError as err:
            return {"mmcv_ops": f"missing ({err})"}

