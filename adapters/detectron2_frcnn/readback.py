"""What detectron2 ran, read back into the one record (`adapters.readback.ReadBack`): after a fit, the
trainer's own config (`trainer.cfg`: DefaultTrainer rescales a clone with `auto_scale_workers`, so it
can differ from the config the harness built), its `max_iter`, the built DatasetMapper's augmentations
(which replace the config's INPUT resize and flip), the model and optimizer; at prediction, the built
model's box predictor and the test-time ResizeShortestEdge. Each value names the object it came from."""
from __future__ import annotations

from typing import Any

from adapters.detectron2_frcnn.heads import postprocess_settings
from adapters.readback import Read, input_channels, optimizer_settings, optimizer_text

MAPPER = "the built DatasetMapper's augmentations"
SHARED_AUGS = ("ResizeShortestEdge", "RandomFlip", "RandomRotation")  # what the shared AugSpec builds
# box predictors / dense heads whose inference keeps every class above the score threshold per box
MULTI_LABEL_HEADS = ("FastRCNNOutputLayers", "RetinaNet")


def size(min_sizes, max_size) -> Any:
    """ResizeShortestEdge's target as one number when the short and long side limits agree."""
    sizes = [int(s) for s in (min_sizes if isinstance(min_sizes, (list, tuple)) else [min_sizes])]
    return int(max_size) if set(sizes) == {int(max_size)} else {"short side": sizes, "max size": int(max_size)}


def box_head(cfg) -> str:
    box = cfg.MODEL.ROI_BOX_HEAD
    return (f"{f'{box.NUM_CONV}conv-' if box.NUM_CONV else ''}{box.NUM_FC}fc"
            f"{' ' + box.NORM if box.NORM and box.NUM_CONV else ''} box head")


def mapper_augmentations(mapper) -> list:
    """The augmentations a built DatasetMapper applies (its AugmentationList)."""
    augs = getattr(mapper, "augmentations", None)
    return list(getattr(augs, "augs", augs) or [])


def augmentation(augmentations: list) -> dict[str, float]:
    """The shared augmentation as the built transforms hold it."""
    out = {"rotate_deg": 0.0, "hflip": 0.0, "vflip": 0.0}
    for aug in augmentations:
        kind = type(aug).__name__
        if kind == "RandomFlip":
            out["hflip" if aug.horizontal else "vflip"] = float(aug.prob)
        elif kind == "RandomRotation":
            out["rotate_deg"] = float(max(abs(a) for a in aug.angle))
    return out


def train_size(augmentations: list) -> Any:
    """The training size of the built ResizeShortestEdge (None: the mapper does not resize)."""
    for aug in augmentations:
        if type(aug).__name__ == "ResizeShortestEdge":
            return size(aug.short_edge_length, aug.max_size)
    return None


def training(trainer, mapper, variant: str, consumed_images: int, background_images: int | None,
             world_size: int) -> dict[str, Any]:
    """ReadBack fields of a built (and usually trained) detectron2 DefaultTrainer and its mapper."""
    cfg, solver = trainer.cfg, trainer.cfg.SOLVER
    augs = mapper_augmentations(mapper)
    opt = optimizer_settings(trainer.optimizer, trainer.model)
    max_iter, batch = int(trainer.max_iter), int(solver.IMS_PER_BATCH)
    seen = max_iter * batch  # images drawn in training (detectron2 counts iterations, not epochs)
    epochs: float = (seen - batch) // consumed_images + 1  # the whole epochs whose last batch ends at `seen`
    if epochs * consumed_images > seen:  # not whole epochs to within one batch
        epochs = round(seen / consumed_images, 2)
    clip = solver.CLIP_GRADIENTS
    others = [type(a).__name__ for a in augs if type(a).__name__ not in SHARED_AUGS]
    head, norm = box_head(cfg), cfg.MODEL.RESNETS.NORM or "FrozenBN"
    recipe = {
        "architecture": Read(f"Faster R-CNN {variant}, {norm} backbone+FPN, {head}",
                             "trainer.cfg.MODEL.RESNETS.NORM, ROI_BOX_HEAD"),
        "epochs": Read(epochs, "trainer.max_iter x trainer.cfg.SOLVER.IMS_PER_BATCH / consumed images "
                               "(whole epochs to within one batch)"),
        "iterations": Read(max_iter, "trainer.max_iter"),
        "batch_size": Read(batch, "trainer.cfg.SOLVER.IMS_PER_BATCH"),
        "optimizer": Read(optimizer_text(opt), "trainer.optimizer"),
        "lr": Read(opt["lr"], "trainer.optimizer param groups (initial lr)"),
        "schedule": Read(f"x{solver.GAMMA:g} at iterations {list(solver.STEPS)} of {max_iter}",
                         "trainer.cfg.SOLVER.STEPS, GAMMA; trainer.max_iter"),
        "warmup": Read(f"{solver.WARMUP_METHOD} from {solver.WARMUP_FACTOR:g}, {solver.WARMUP_ITERS} iterations",
                       "trainer.cfg.SOLVER.WARMUP_METHOD, WARMUP_FACTOR, WARMUP_ITERS"),
        "weight_decay": Read(opt["weight_decay"], "trainer.optimizer param groups (weights)"),
        "norm_decay": Read(opt["norm_decay"], "trainer.optimizer param groups (norm layers)"),
        "grad_clip": Read(f"{clip.CLIP_TYPE} {clip.CLIP_VALUE:g}" if clip.ENABLED else "none",
                          "trainer.cfg.SOLVER.CLIP_GRADIENTS"),
        "framework_aug": Read(", ".join(others) or "none", MAPPER),
    }
    if background_images is None:
        negatives = Read("drop" if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS else "keep",
                         "the split has no image without findings: keep and drop train alike")
    else:
        negatives = Read("keep" if background_images else "drop",
                         "the training dataset dicts the loader was built from (images without a box)")
    return {"negatives": negatives,
            "train_size": Read(train_size(augs), f"{MAPPER} (ResizeShortestEdge)"),
            "train_channels": Read(input_channels(trainer.model), "trainer.model (its first convolution)"),
            "augmentation": Read(augmentation(augs), MAPPER),
            "seed": Read(int(cfg.SEED), "trainer.cfg.SEED"),
            "init": Read(str(cfg.MODEL.WEIGHTS), "trainer.cfg.MODEL.WEIGHTS"),
            "processes": Read(int(world_size), "detectron2.utils.comm.get_world_size()"),
            "recipe": recipe,
            "details": {"head": head, "backbone_norm": cfg.MODEL.RESNETS.NORM, "steps": list(solver.STEPS),
                        "max_iter": max_iter, "warmup_iters": int(solver.WARMUP_ITERS)}}


def prediction(model, resize) -> dict[str, Any]:
    """ReadBack fields of the eval-mode model and the test-time resize `prediction_session` runs."""
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is None:
        where, head_obj = "model", model
    else:
        predictor = roi_heads.box_predictor
        last = isinstance(predictor, (list, tuple)) or type(predictor).__name__ == "ModuleList"
        where = "model.roi_heads.box_predictor" + ("[-1]" if last else "")
        head_obj = predictor[-1] if last else predictor
    settings = postprocess_settings(model)
    names = {"score_thr": "test_score_thresh", "nms_iou": "test_nms_thresh",
             "max_det": "test_topk_per_image" if roi_heads is not None else "max_detections_per_image"}
    out = {key: Read(value, f"{where}.{names[key]}") for key, value in settings.items()}
    if any(base.__name__ in MULTI_LABEL_HEADS for base in type(head_obj).__mro__):
        out["multi_label"] = Read(True, f"{type(head_obj).__name__} inference (every class above the threshold, per box)")
    out.update(test_size=Read(size(resize.short_edge_length, resize.max_size),
                              "the test-time ResizeShortestEdge (its short_edge_length, max_size)"),
               test_channels=Read(input_channels(model), "the built model (its first convolution)"),
               tta=Read("", f"{type(model).__name__} forward (no GeneralizedRCNNWithTTA wrapper)"))
    return out
