"""What ultralytics ran, read back into the one record (`adapters.readback.ReadBack`): the trainer's
resolved arguments, its built model, optimizer, data loader and warm-up rule after a fit; the
predictor's resolved arguments and image size at prediction. Each value names the object it came from."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from adapters.byarch import NMS_FREE
from adapters.readback import GradClipRecorder, Read, input_channels, optimizer_settings, optimizer_text


def warmup_text(epochs: float, iterations: int) -> str:
    return f"{epochs:g} epochs ({iterations} iterations)"


def warmup_iterations(trainer, warmup_epochs: float, batches: int) -> int | None:
    """The warm-up ultralytics runs for `warmup_epochs` (its trainer's own rule, which leaves at least
    the last epoch out of warm-up), or None where this ultralytics has no such rule to ask."""
    rule = getattr(type(trainer), "_get_warmup_iterations", None)
    if rule is None:
        return None
    return int(rule(SimpleNamespace(args=SimpleNamespace(warmup_epochs=warmup_epochs), epochs=trainer.epochs), batches))


def natives(trainer, aug_keys) -> dict[str, Any]:
    """ultralytics' own recipe for this run, from the framework: its defaults (`DEFAULT_CFG_DICT`), the
    optimizer its `optimizer=auto` rule builds for a run of this length and class count (the trainer's
    own `build_optimizer`, on a throwaway optimizer), and its warm-up rule at the default warm-up."""
    from ultralytics.cfg import DEFAULT_CFG_DICT as default
    from ultralytics.utils import LOGGER

    batches = len(trainer.train_loader)
    # the iteration count ultralytics' auto rule sees, at its default nominal batch size
    iterations = math.ceil(len(trainer.train_loader.dataset) / max(trainer.batch_size, default["nbs"])) * trainer.epochs
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # the auto rule logs its choice: not what this run trained with
    try:
        built = trainer.build_optimizer(model=trainer.model, name=default["optimizer"], lr=default["lr0"],
                                        momentum=default["momentum"], decay=default["weight_decay"],
                                        iterations=iterations)
    finally:
        LOGGER.setLevel(level)
    opt = optimizer_settings(built, trainer.model)
    out = {"nbs": default["nbs"], "batch_size": f"{int(trainer.batch_size)} (nbs {default['nbs']})",
           "optimizer": f"{optimizer_text(opt)} (optimizer={default['optimizer']})", "lr": opt["lr"],
           "schedule": f"{'cosine' if default['cos_lr'] else 'linear'} to lrf={default['lrf']:g}",
           "weight_decay": default["weight_decay"], "norm_decay": opt["norm_decay"],
           "framework_aug": {key: default[key] for key in aug_keys}}
    warmup = warmup_iterations(trainer, float(default["warmup_epochs"]), batches)
    if warmup is not None:
        out["warmup"] = warmup_text(warmup / batches, warmup)
    return out


def training(trainer, aug_keys, clip: GradClipRecorder | None) -> dict[str, Any]:
    """ReadBack fields of a finished fit (`trainer`: ultralytics' DetectionTrainer, at on_train_end);
    `clip`: the recorder active during its training (None: not recorded, e.g. in a DDP worker)."""
    args = trainer.args
    opt = optimizer_settings(trainer.optimizer, trainer.model)
    batches = len(trainer.train_loader)
    pretrained = args.pretrained if isinstance(args.pretrained, str) else ""
    recipe = {
        "epochs": Read(int(trainer.epochs), "trainer.epochs"),
        "iterations": Read(int(trainer.epochs) * batches, "trainer.epochs x len(trainer.train_loader)"),
        "batch_size": Read(f"{int(trainer.batch_size)} (nbs {args.nbs})", "trainer.batch_size, trainer.args.nbs"),
        "optimizer": Read(optimizer_text(opt), "trainer.optimizer"),
        "lr": Read(opt["lr"], "trainer.optimizer param groups (initial lr)"),
        "schedule": Read(f"{'cosine' if args.cos_lr else 'linear'} to lrf={args.lrf:g}", "trainer.args.cos_lr, lrf"),
        "weight_decay": Read(opt["weight_decay"], "trainer.optimizer param groups (weights)"),
        "norm_decay": Read(opt["norm_decay"], "trainer.optimizer param groups (norm layers)"),
        "framework_aug": Read({key: getattr(args, key) for key in aug_keys}, "trainer.args"),
    }
    model = getattr(getattr(trainer.model, "module", trainer.model), "yaml", None) or {}
    yaml_file = Path(str(model.get("yaml_file") or args.model)).name
    recipe["architecture"] = Read(f"{yaml_file} (YOLOv5 backbone/neck, anchor-free YOLOv5u head)",
                                  "trainer.model.yaml['yaml_file']")
    details: dict[str, Any] = {"model_yaml": yaml_file}
    if clip is not None:
        recipe["grad_clip"] = Read(clip.text(), "torch.nn.utils.clip_grad_norm_ calls during training")
    ran_warmup = warmup_iterations(trainer, float(args.warmup_epochs), batches)
    if ran_warmup is not None:
        recipe["warmup"] = Read(warmup_text(ran_warmup / batches, ran_warmup),
                                "trainer._get_warmup_iterations(len(trainer.train_loader))")
    details["natives"] = natives(trainer, aug_keys)
    return {"train_size": Read(int(args.imgsz), "trainer.args.imgsz (checked against the stride)"),
            "train_channels": Read(input_channels(trainer.model), "trainer.model (its first convolution)"),
            "augmentation": Read({"rotate_deg": float(args.degrees), "hflip": float(args.fliplr),
                                  "vflip": float(args.flipud)}, "trainer.args.degrees, fliplr, flipud"),
            "seed": Read(int(args.seed), "trainer.args.seed"),
            "init": Read(pretrained, "trainer.args.pretrained"),
            "processes": Read(max(int(trainer.world_size), 1), "trainer.world_size (0 on CPU: one process)"),
            "recipe": recipe, "details": details}


def prediction(predictor, nms_free: bool = False) -> dict[str, Any]:
    """ReadBack fields of the predictor `model.predict` ran (its resolved args, image size and model)."""
    args, imgsz = predictor.args, predictor.imgsz
    size = int(max(imgsz)) if isinstance(imgsz, (list, tuple)) else int(imgsz)
    out = {"score_thr": Read(float(args.conf), "predictor.args.conf"),
           "max_det": Read(int(args.max_det), "predictor.args.max_det"),
           "test_size": Read(size, "predictor.imgsz (resolved by check_imgsz)"),
           # AutoBackend holds the network in its backend (not a submodule): predictor.model.model
           "test_channels": Read(input_channels(getattr(predictor.model, "model", predictor.model)),
                                 "predictor.model.model (its first convolution)"),
           "tta": Read("ultralytics augment=True" if getattr(args, "augment", False) else "",
                       "predictor.args.augment")}
    if nms_free:
        out.update(nms_iou=Read(NMS_FREE, f"{type(predictor).__name__} (no NMS step)"),
                   multi_label=Read(False, f"{type(predictor).__name__} (one class per query)"))
    else:
        out.update(nms_iou=Read(float(args.iou), "predictor.args.iou"),
                   multi_label=Read(bool(predictor.multi_label), "predictor.multi_label (its NMS's multi_label)"))
    return out
