"""The *aligned* comparison of one architecture in two frameworks (framework-free: no framework import).

`experiment=same_arch` runs each architecture twice per framework: with *each framework's defaults*
(the packaged config + the shared scratch recipe: `detectron2_retinanet`, `mmdet_retinanet`, ...)
and *aligned* (`..._aligned`): the same network, initialisation, input normalisation, losses and
their weights, assigners, anchors' border rule and schedule on both sides, each set through the
framework's own config keys (`adapters.detectron2_zoo.aligned`, `adapters.mmdet_zoo.aligned`).
Only the aligned pair's Δ is the framework effect; what still differs is derived from the built
models (`adapters.detectron2_zoo.facts`, `adapters.mmdet_zoo.facts`, compared by
`harness.report.arch_diff`) and printed beside it.

The choices made here, one per item where the frameworks differ (stated on the protocol card as the
native overrides' reasons):
- input normalisation: mmdet's ImageNet std (≈58) on both sides (detectron2's R50 zoo configs keep
  std 1, the convention of its Caffe2-converted weights; from scratch it has no reason to);
- initialisation, FPN: detectron2's (c2_xavier_fill = Kaiming-uniform, a=1, fan_in) on both sides;
- box losses: L1 everywhere (detectron2's SmoothL1 β=0, mmdet's L1Loss);
- schedule: detectron2's 3x zoo schedule (steps at 210k and 250k of 270k iterations, 1000 warmup
  iterations) at the same fractions of the run, by iteration on both sides.
"""
from __future__ import annotations

ALIGNED_SUFFIX = "_aligned"
FAMILY_TAG = " (aligned)"  # appended to the family on the card: the aligned pair groups on its own

# detectron2's 3x zoo schedule: (milestones, length, warmup) in iterations
SCHEDULE_STEPS, SCHEDULE_LENGTH, SCHEDULE_WARMUP = (210000, 250000), 270000, 1000

# mmdet's ImageNet statistics (RGB), which both sides use when aligned
PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)
PIXEL_STD_RGB = (58.395, 57.12, 57.375)

# detectron2's c2_xavier_fill as mmengine's init config (Kaiming-uniform, a=1, fan_in, bias 0)
C2_XAVIER_INIT = {"type": "Kaiming", "layer": "Conv2d", "a": 1, "mode": "fan_in", "nonlinearity": "leaky_relu",
                  "distribution": "uniform", "bias": 0}


def aligned_family(family: str, aligned: bool) -> str:
    return f"{family}{FAMILY_TAG}" if aligned else family


def is_aligned_family(family: str) -> bool:
    return family.endswith(FAMILY_TAG)
