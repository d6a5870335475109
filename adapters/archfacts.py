"""Architecture facts: what a built detector is, in one vocabulary for every framework, so two builds
of one architecture can be compared item by item (harness.report.arch_diff lists the differences).

A framework's extractor (adapters.detectron2_zoo.facts, adapters.mmdet_zoo.facts) builds the model
on CPU from the adapter's own config (initialised, not trained) and reads each fact from the built
modules or the resolved config; this module holds the measurements that are the same for both (no
framework import: they take the built torch modules). Facts are JSON values grouped by category:

    {"network": {...}, "init": {...}, "normalisation": {...}, "loss": {...}, "assignment": {...},
     "sampling": {...}, "schedule": {...}, "data pipeline": {...}}

Module groups (for parameter counts and init): backbone, neck, rpn (two-stage), head (the dense
head, or the R-CNN RoI heads).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

CATEGORIES = ("network", "init", "normalisation", "loss", "assignment", "sampling", "schedule", "data pipeline")
GROUPS = ("backbone", "neck", "rpn", "head")


def empty() -> dict[str, dict[str, Any]]:
    return {category: {} for category in CATEGORIES}


def param_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def trainable_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def norm_kinds(modules: Iterable) -> list[str]:
    """The normalisation layers among `modules` (and their children): e.g. ["GroupNorm(32)"]."""
    kinds = set()
    for module in modules:
        for sub in module.modules():
            name = type(sub).__name__
            if name == "GroupNorm":
                kinds.add(f"GroupNorm({sub.num_groups})")
            elif "Norm" in name and name not in ("LayerNorm",):
                kinds.add("BatchNorm (frozen)" if "Frozen" in name else "BatchNorm")
    return sorted(kinds) or ["none"]


def _weights(module, kinds=("Conv2d", "Linear")) -> list:
    return [sub.weight for sub in module.modules()
            if type(sub).__name__ in kinds and getattr(sub, "weight", None) is not None]


def init_scale(module, kinds=("Conv2d", "Linear")) -> list[float]:
    """[min, max] over the module's conv/linear weights of std × √fan_in at initialisation (a
    Kaiming-normal fan_out init, a Kaiming-uniform a=1, a Xavier init and N(0, 0.01) give different
    values), rounded to 2 decimals; [] when there is none."""
    values = []
    for weight in _weights(module, kinds):
        fan_in = weight[0].numel()
        if weight.numel() > 1:
            values.append(float(weight.detach().float().std()) * math.sqrt(fan_in))
    return [round(min(values), 2), round(max(values), 2)] if values else []


def biases_zero(module, kinds=("Conv2d", "Linear"), skip: Iterable = ()) -> bool:
    skipped = {id(m) for m in skip}
    return all(float(sub.bias.detach().abs().max()) == 0.0 for sub in module.modules()
               if type(sub).__name__ in kinds and getattr(sub, "bias", None) is not None and id(sub) not in skipped)


def zero_weight_share(norms: list) -> float:
    """The share of the given norm layers whose weight is all zero (residual branches zero-initialised)."""
    if not norms:
        return 0.0
    return round(sum(float(n.weight.detach().abs().max()) == 0.0 for n in norms) / len(norms), 3)


def anchor_shapes(boxes) -> list[list[float]]:
    """(width, height) of one level's base anchors (x0, y0, x1, y1), sorted, rounded to 0.1 px."""
    rows = boxes.detach().cpu().tolist()
    return sorted([round(x1 - x0, 1), round(y1 - y0, 1)] for x0, y0, x1, y1 in rows)


def low_quality(rule: str | float | None) -> str:
    """A box's best anchor/proposal made positive: "any IoU", "IoU >= x" or "off"."""
    if rule is None or rule is False:
        return "off"
    if rule is True or rule == 0:
        return "any IoU"
    return f"IoU >= {float(rule):g}"


def box_loss(kind: str, beta: float | None = None) -> str:
    """A box regression loss by name: SmoothL1 with β=0 is L1."""
    kind = kind.lower().replace("_", "").replace("loss", "")
    if kind in ("smoothl1",) and beta is not None and beta < 1e-5:
        return "L1"
    if kind in ("smoothl1",):
        return f"SmoothL1(beta={beta:.4g})"
    if kind == "l1":
        return "L1"
    return {"giou": "GIoU", "diou": "DIoU", "ciou": "CIoU"}.get(kind, kind)


def round_list(values: Iterable[float], digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]
