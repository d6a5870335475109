"""The Faster R-CNN natives both frameworks (detectron2 and mmdet) share on the protocol card: their
defaults for the shared protocol settings, and the recipe both document (8 GPUs x 2 images, SGD with
momentum 0.9, no clipping, no framework augmentation), with the harness's notes for its deviations."""
from __future__ import annotations

from typing import Any, Mapping


def faster_rcnn_native_protocol(keep_switch: str) -> dict[str, tuple[Any, str]]:
    """The shared protocol settings' defaults in both Faster R-CNN frameworks (detectron2 and mmdet
    agree on them); `keep_switch` names the framework's switch that negatives="keep" turns off."""
    return {
        "negatives": ("drop", f"keep: {keep_switch} off"),
        "score_thr": (0.05, "low, as mAP needs"),
        "max_det": (100, "the protocol's cap for every model"),
        "nms_iou": (0.5, "the protocol's NMS IoU for every model"),
        "multi_label": (True, "the box head scores every class of every proposal"),
    }


def faster_rcnn_recipe(spec, scratch: bool, light_head: bool, native_lr: float, native_schedule: str,
                       native_warmup: str, native_wd: float, scaled_schedule: bool, scaled_warmup: bool,
                       keys: Mapping[str, str], native_batch: int = 16, native_momentum: float = 0.9
                       ) -> tuple[dict, dict]:
    """(natives, notes) of the recipe rows both Faster R-CNN frameworks share: architecture (the
    scratch recipe's 4conv-1fc GN head, or the 2fc head of the pretrained configs), batch 16 (8 GPUs
    x 2), SGD momentum 0.9, no clipping, no framework augmentation. A schedule or warmup note says
    "scaled" only when the run used the harness's scaling (`scaled_*`); otherwise the reason given
    for the framework's own key (`keys`: recipe key -> native key) in `spec.reasons`, if any."""
    norm = "GN" if scratch else "FrozenBN"
    head = "4conv-1fc GN box head" if scratch else "2fc box head"
    natives = {"architecture": f"Faster R-CNN {spec.variant}, {norm} backbone+FPN, {head}", "batch_size": native_batch,
               "optimizer": f"SGD(momentum {native_momentum:g})", "lr": native_lr, "schedule": native_schedule,
               "warmup": native_warmup, "weight_decay": native_wd, "norm_decay": 0.0 if scratch else native_wd,
               "grad_clip": "none", "framework_aug": "none"}
    notes = {key: spec.reasons.get(native_key, "") for key, native_key in keys.items()}
    notes.update({"batch_size": "the native value is for 8 GPUs x 2 images", "lr": "the native value is for batch 16",
                  "iterations": "epochs x ceil(training images / batch)"})
    if light_head:
        notes["architecture"] = "2fc head kept for the R18 CPU variant (the 4conv head costs ~8x its FLOPs per RoI)"
    if scaled_schedule:
        notes["schedule"] = "the native milestones at the same fractions of training, scaled to the run's length"
    if scaled_warmup:
        notes["warmup"] = "the native warmup, at most 10% of the iterations for short runs"
    return natives, notes
