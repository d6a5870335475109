"""The aligned variant on detectron2's side (see adapters.aligned for the choices): the overrides,
each a detectron2 config key with its reason, and the two modules detectron2 has no key for,
registered in its own registries and chosen by config key: a RetinaNet whose focal-loss normaliser is
the batch's positive count (mmdet's) instead of an EMA of it, and a Cascade R-CNN RoI head that does
not scale the gradient into the pooled features by 1/stages (mmdet's). Framework side: detectron2 is
imported inside functions."""
from __future__ import annotations

from typing import Any

from adapters.aligned import PIXEL_STD_RGB

BATCH_NORMALIZER_RETINANET = "RetinaNetBatchNormalizer"
UNSCALED_CASCADE = "CascadeROIHeadsUnscaled"
_WHY_STD = "aligned: mmdet's ImageNet pixel std (BGR order), instead of detectron2's 1"


def overrides(family: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(native overrides, reasons) aligning detectron2's `family` with mmdet's."""
    std_bgr = [float(v) for v in reversed(PIXEL_STD_RGB)]
    # (the box losses are L1 already in both zoo files: RETINANET.SMOOTH_L1_LOSS_BETA 0 in Base-RetinaNet,
    # RPN/ROI_BOX_HEAD.SMOOTH_L1_BETA 0 by default; the architecture facts show it)
    if family.startswith("RetinaNet"):
        return ({"MODEL.PIXEL_STD": std_bgr, "MODEL.META_ARCHITECTURE": BATCH_NORMALIZER_RETINANET},
                {"MODEL.PIXEL_STD": _WHY_STD,
                 "MODEL.META_ARCHITECTURE": "aligned: focal loss normalised by the batch's positives, as mmdet "
                                            "(detectron2's RetinaNet with the EMA momentum 0)"})
    if family.startswith("Cascade R-CNN"):
        return ({"MODEL.PIXEL_STD": std_bgr, "MODEL.ROI_HEADS.NAME": UNSCALED_CASCADE},
                {"MODEL.PIXEL_STD": _WHY_STD,
                 "MODEL.ROI_HEADS.NAME": "aligned: no 1/stages gradient scale into the pooled features, as mmdet "
                                         "(detectron2's CascadeROIHeads otherwise)"})
    raise ValueError(f"no aligned variant of {family!r} in detectron2 (aligned: RetinaNet, Cascade R-CNN)")


def register_modules() -> None:
    """Register the two modules in detectron2's registries (idempotent)."""
    from detectron2.modeling import META_ARCH_REGISTRY, ROI_HEADS_REGISTRY
    from detectron2.modeling.meta_arch.retinanet import RetinaNet
    from detectron2.modeling.roi_heads.cascade_rcnn import CascadeROIHeads, _ScaleGradient

    if BATCH_NORMALIZER_RETINANET not in META_ARCH_REGISTRY:

        class RetinaNetBatchNormalizer(RetinaNet):
            """detectron2's RetinaNet, its loss normaliser the batch's positive anchors (EMA momentum 0)."""

            loss_normalizer_momentum = 0.0

            def _ema_update(self, name, value, initial_value, momentum=0.9):
                return super()._ema_update(name, value, initial_value, momentum=self.loss_normalizer_momentum)

        META_ARCH_REGISTRY._do_register(BATCH_NORMALIZER_RETINANET, RetinaNetBatchNormalizer)

    if UNSCALED_CASCADE not in ROI_HEADS_REGISTRY:

        class CascadeROIHeadsUnscaled(CascadeROIHeads):
            """detectron2's CascadeROIHeads without the 1/stages gradient scale on the pooled features."""

            feature_gradient_scale = 1.0

            def _run_stage(self, features, proposals, stage):
                box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
                if self.training and self.feature_gradient_scale != 1.0:
                    box_features = _ScaleGradient.apply(box_features, self.feature_gradient_scale)
                box_features = self.box_head[stage](box_features)
                return self.box_predictor[stage](box_features)

        ROI_HEADS_REGISTRY._do_register(UNSCALED_CASCADE, CascadeROIHeadsUnscaled)
