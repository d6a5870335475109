"""What mmengine/mmdet ran, read back into the one record (`adapters.readback.ReadBack`): after a fit,
the Runner's train loop (`runner.max_epochs`, `runner.iter`), its built dataset (filter and pipeline),
model, optimizer wrapper and parameter schedulers; at prediction, the built model's test_cfg and the
test pipeline. Each value names the object it came from."""
from __future__ import annotations

from typing import Any

from adapters.mmdet_frcnn.config import TRUSTED_PREFIX
from adapters.mmdet_frcnn.heads import box_head, postprocess_settings
from adapters.readback import Read, input_channels, optimizer_settings, optimizer_text

PIPELINE = "runner.train_dataloader.dataset.pipeline"
# transforms the harness's own pipeline holds (loading, the shared resize/flip/rotation, packing)
HARNESS_TRANSFORMS = ("LoadImageFromFile", "LoadAnnotations", "Resize", "RandomFlip", "Rotate", "PackDetInputs")
# heads whose inference keeps every class above the threshold per box (multiclass NMS / per-class top-k)
MULTI_LABEL_HEADS = ("BBoxHead", "AnchorHead", "AnchorFreeHead")


def pipeline_readback(pipeline) -> tuple[Any, dict[str, float]]:
    """The image size (longer side) and the shared augmentation as a built mmcv/mmdet pipeline holds them."""
    size, aug = None, {"rotate_deg": 0.0, "hflip": 0.0, "vflip": 0.0}
    for transform in getattr(pipeline, "transforms", []):
        kind = type(transform).__name__
        if kind == "Resize":
            scale = getattr(transform, "scale", None)
            size = int(max(scale)) if scale else None
        elif kind == "RandomFlip":
            directions = transform.direction if isinstance(transform.direction, list) else [transform.direction]
            for direction in directions:
                aug["hflip" if direction == "horizontal" else "vflip"] = float(transform.prob)
        elif kind == "Rotate":
            aug["rotate_deg"] = float(transform.max_mag)
    return size, aug


def schedule_readback(schedulers) -> dict[str, Any]:
    """Milestones, gamma and warmup of the parameter schedulers mmengine built."""
    if isinstance(schedulers, dict):  # several optimizers: the first one's
        schedulers = next(iter(schedulers.values()))
    out: dict[str, Any] = {"milestones": [], "gamma": 1.0, "warmup_iters": 0, "warmup_from": 1.0}
    for scheduler in schedulers or []:
        kind = type(scheduler).__name__
        if kind == "MultiStepLR":
            out["milestones"] = sorted(int(m) for m in scheduler.milestones)
            out["gamma"] = float(scheduler.gamma)
        elif kind == "LinearLR":
            out["warmup_iters"] = int(scheduler.end - scheduler.begin)
            out["warmup_from"] = float(scheduler.start_factor)
    return out


def loader_batch(loader) -> int:
    """Images per batch of a built DataLoader (its batch sampler's, when it has one: mmdet's
    AspectRatioBatchSampler leaves the loader's own batch_size None)."""
    return int(loader.batch_size or loader.batch_sampler.batch_size)


def backbone_norm(model) -> str:
    """The backbone's normalisation as the card names it: GN, or BN with its frozen stages."""
    backbone = getattr(getattr(model, "module", model), "backbone", None)
    kinds = {type(m).__name__ for m in backbone.modules()} if backbone is not None else set()
    if "GroupNorm" in kinds:
        return "GN"
    frozen = int(getattr(backbone, "frozen_stages", -1) or -1)
    return f"BN (frozen stage{'s' * (frozen > 1)} {', '.join(str(i) for i in range(1, frozen + 1))})" if frozen > 0 \
        else "BN"


def training(runner, dataset, variant: str, background_images: int | None) -> dict[str, Any]:
    """ReadBack fields of a trained mmengine Runner and its built training dataset."""
    wrapper = runner.optim_wrapper
    clip = getattr(wrapper, "clip_grad_kwargs", None) or {}
    size, aug = pipeline_readback(dataset.pipeline)
    opt = optimizer_settings(wrapper.optimizer, runner.model)
    schedule = schedule_readback(runner.param_schedulers)
    head, norm = box_head(runner.model), backbone_norm(runner.model)
    others = [type(t).__name__ for t in getattr(dataset.pipeline, "transforms", [])
              if type(t).__name__ not in HARNESS_TRANSFORMS]
    max_epochs = int(runner.max_epochs)
    recipe = {
        "architecture": Read(f"Faster R-CNN {variant}, {norm} backbone+FPN, {head}", "runner.model"),
        "epochs": Read(max_epochs, "runner.max_epochs"),
        "iterations": Read(int(runner.iter), "runner.iter (after training)"),
        "batch_size": Read(loader_batch(runner.train_dataloader) * int(runner.world_size),
                           "runner.train_dataloader's batch sampler x runner.world_size"),
        "optimizer": Read(optimizer_text(opt), "runner.optim_wrapper.optimizer"),
        "lr": Read(opt["lr"], "runner.optim_wrapper.optimizer param groups (initial lr)"),
        "schedule": Read(f"x{schedule['gamma']:g} at epochs {schedule['milestones']} of {max_epochs}",
                         "runner.param_schedulers (MultiStepLR), runner.max_epochs"),
        "warmup": Read(f"linear from {schedule['warmup_from']:g}, {schedule['warmup_iters']} iterations",
                       "runner.param_schedulers (LinearLR)"),
        "weight_decay": Read(opt["weight_decay"], "runner.optim_wrapper.optimizer param groups (weights)"),
        "norm_decay": Read(opt["norm_decay"], "runner.optim_wrapper.optimizer param groups (norm layers)"),
        "grad_clip": Read(", ".join(f"{k} {v}" for k, v in clip.items()) or "none",
                          "runner.optim_wrapper.clip_grad_kwargs"),
        "framework_aug": Read(", ".join(others) or "none", PIPELINE),
    }
    if background_images is None:
        filtered = (getattr(dataset, "filter_cfg", None) or {}).get("filter_empty_gt")
        negatives = Read("drop" if filtered else "keep", "the split has no image without findings: keep and drop "
                                                         "train alike")
    else:
        negatives = Read("keep" if background_images else "drop",
                         "runner.train_dataloader.dataset (images without a box, after its filter)")
    load_from = getattr(runner, "_load_from", None)
    out = {"negatives": negatives,
           "train_size": Read(size, f"{PIPELINE} (Resize scale)"),
           "train_channels": Read(input_channels(runner.model), "runner.model (its first convolution)"),
           "augmentation": Read(aug, f"{PIPELINE} (RandomFlip, Rotate)"),
           "seed": Read(int(runner.seed), "runner.seed"),
           "processes": Read(int(runner.world_size), "runner.world_size"),
           "recipe": recipe,
           "details": {"head": head, "milestones": schedule["milestones"], "warmup_iters": schedule["warmup_iters"],
                       "max_epochs": max_epochs, "iterations": int(runner.iter)}}
    if not getattr(runner, "_resume", False):  # resumed: load_from is the checkpoint resumed from
        out["init"] = Read(str(load_from or "").removeprefix(TRUSTED_PREFIX), "runner's load_from")
    return out


def prediction(model, pipeline) -> dict[str, Any]:
    """ReadBack fields of the eval-mode model and the test pipeline `prediction_session` runs."""
    inner = getattr(model, "module", model)
    where = "model.roi_head.test_cfg" if getattr(inner, "roi_head", None) is not None else "model.bbox_head.test_cfg"
    names = {"score_thr": "score_thr", "nms_iou": "nms.iou_threshold", "max_det": "max_per_img"}
    out = {key: Read(value, f"{where}.{names[key]}") for key, value in postprocess_settings(model).items()}
    heads = getattr(getattr(inner, "roi_head", None), "bbox_head", None) or inner.bbox_head
    head = heads[-1] if type(heads).__name__ == "ModuleList" else heads
    if any(base.__name__ in MULTI_LABEL_HEADS for base in type(head).__mro__):
        out["multi_label"] = Read(True, f"{type(head).__name__} inference (every class above the threshold, per box)")
    out.update(test_size=Read(pipeline_readback(pipeline)[0], "the test pipeline's Resize (scale)"),
               test_channels=Read(input_channels(model), "the built model (its first convolution)"),
               tta=Read("", "model.test_step (no TTA model wrapper)"))
    return out
