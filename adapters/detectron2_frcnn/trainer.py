"""detectron2's DefaultTrainer with cxr-bench's optimizer choice, augmentations, writers and atomic
checkpoint saves, and a log file per job."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import weakref
from pathlib import Path
from typing import Any, Iterator

from adapters.trainset import consumed_counts
from harness import atomic

log = logging.getLogger("adapters.detectron2_frcnn")


def trainer_class():
    """DefaultTrainer with cxr-bench's optimizer choice, augmentations, writers and atomic saves
    (built lazily so importing this module does not import detectron2)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
    from detectron2.engine import DefaultTrainer, hooks
    from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    class AtomicCheckpointer(DetectionCheckpointer):
        """DetectionCheckpointer whose files appear whole or not at all (temp file + rename);
        `on_saved(path, iteration)` runs after each save (the adapter records it as resumable).
        Loads its own (trusted) checkpoints with weights_only=False."""

        on_saved = None

        def _torch_load(self, f):
            return torch.load(f, map_location=torch.device("cpu"), weights_only=False)

        def save(self, name: str, **kwargs: Any) -> None:
            if not self.save_dir or not self.save_to_disk:
                return
            data = {"model": self.model.state_dict()}
            for key, obj in self.checkpointables.items():
                data[key] = obj.state_dict()
            data.update(kwargs)
            save_file = os.path.join(self.save_dir, f"{name}.pth")
            self.logger.info("Saving checkpoint to %s", save_file)
            with atomic.atomic_open(save_file, "wb") as handle:
                torch.save(data, handle)
            self.tag_last_checkpoint(f"{name}.pth")
            if self.on_saved is not None:
                self.on_saved(Path(save_file), kwargs.get("iteration"))

    class CxrTrainer(DefaultTrainer):
        augmentations: list = []

        def __init__(self, cfg):
            from detectron2.utils import comm

            if comm.get_world_size() > 1 and cfg.MODEL.DEVICE == "cpu":
                # data-parallel on a CPU-only machine (gloo): DDP of a CPU module takes no device_ids,
                # which detectron2's create_ddp_model sets to the local rank (a GPU index)
                import detectron2.engine.defaults as d2_defaults

                original = d2_defaults.create_ddp_model
                d2_defaults.create_ddp_model = functools.partial(original, device_ids=None)
                try:
                    super().__init__(cfg)
                finally:
                    d2_defaults.create_ddp_model = original
            else:
                super().__init__(cfg)

        @classmethod
        def build_optimizer(cls, cfg, model):
            kind = str(cfg.SOLVER.get("OPTIMIZER", "SGD")).upper()
            if kind == "SGD":
                return super().build_optimizer(cfg, model)
            params = get_default_optimizer_params(
                model,
                base_lr=cfg.SOLVER.BASE_LR,
                weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
                bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
                weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
            )
            optim = {"ADAM": torch.optim.Adam, "ADAMW": torch.optim.AdamW}[kind]
            return maybe_add_gradient_clipping(
                cfg, optim(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
            )

        consumed: dict[str, int] | None = None  # images/boxes of the built training set
        background: int | None = None  # its images without a box
        mapper = None  # the DatasetMapper the training loader was built with

        @classmethod
        def build_train_loader(cls, cfg):
            # the same dataset list detectron2's loader would build (filtering by
            # FILTER_EMPTY_ANNOTATIONS), built here so what it consumed can be counted
            dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
            boxes = [sum(1 for ann in record.get("annotations", []) if not ann.get("iscrowd", 0))
                     for record in dataset]
            cls.consumed, cls.background = consumed_counts(boxes), boxes.count(0)
            # the built mapper (read back for the card: its augmentations replace the config's INPUT resize)
            mapper = cls.mapper = DatasetMapper(cfg, is_train=True, augmentations=list(cls.augmentations))
            return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)

        def build_writers(self):
            period_dir = self.cfg.OUTPUT_DIR
            return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(period_dir, "metrics.json"))]

        keep_checkpoints: int | None = None  # PeriodicCheckpointer's max_to_keep

        def build_hooks(self):
            self.checkpointer = AtomicCheckpointer(self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
            built = []
            for hook in super().build_hooks():
                if isinstance(hook, hooks.PeriodicCheckpointer):
                    hook = hooks.PeriodicCheckpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD,
                                                      max_to_keep=self.keep_checkpoints)
                if type(hook).__name__ != "EvalHook":
                    built.append(hook)
            return built

    return CxrTrainer


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Copy detectron2's (and this adapter's) log records into `path` for the job's duration."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s"))
    handler.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [handler]
    loggers = [logging.getLogger("detectron2"), logging.getLogger("fvcore"), log]
    if not logging.getLogger().handlers and not any(lg.handlers for lg in loggers):
        console = logging.StreamHandler(sys.stdout)  # plain script: show progress on the console too
        console.setFormatter(handler.formatter)
        handlers.append(console)
    previous = []
    for logger in loggers:
        previous.append(logger.level)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        for h in handlers:
            logger.addHandler(h)
    try:
        yield
    finally:
        for logger, level in zip(loggers, previous):
            for h in handlers:
                logger.removeHandler(h)
            logger.setLevel(level)
        handler.close()
