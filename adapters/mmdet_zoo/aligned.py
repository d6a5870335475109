"""The aligned variant on mmdet's side (see adapters.aligned for the choices): the overrides, each an
mmdet/mmengine config key with its reason, and the one module mmdet has no key for (an FPN whose extra
convs have no norm, detectron2's LastLevelP6P7). Framework side: mmdet is imported inside functions."""
from __future__ import annotations

import copy
from typing import Any

from adapters.aligned import C2_XAVIER_INIT, SCHEDULE_LENGTH, SCHEDULE_STEPS, SCHEDULE_WARMUP

PLAIN_EXTRA_FPN = "FPNPlainExtraConvs"  # registered by register_modules()

L1 = {"_delete_": True, "type": "L1Loss", "loss_weight": 1.0}  # replaces the packaged loss dict
_WHY_L1 = "aligned: L1 box loss, as detectron2's (SmoothL1 β=0)"
_WHY_NECK_INIT = "aligned: FPN convs initialised as detectron2's (c2_xavier_fill: Kaiming-uniform a=1, fan_in)"


def _rcnn_box_head_init() -> list[dict]:
    """detectron2's box head init where mmdet's differs: the fc layers c2_xavier_fill (mmdet: Xavier),
    with the predictors as both have them, class scores N(0, 0.01) and box deltas N(0, 0.001) (the
    convs are Kaiming-normal fan_out in both: the architecture facts show no difference there)."""
    fc = {key: value for key, value in C2_XAVIER_INIT.items() if key != "layer"}
    return [{"type": "Normal", "std": 0.01, "override": {"name": "fc_cls"}},
            {"type": "Normal", "std": 0.001, "override": {"name": "fc_reg"}},
            {**fc, "override": {"name": "shared_fcs"}}]


def overrides(family: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(native overrides, reasons) aligning mmdet's `family` with detectron2's."""
    if family.startswith("RetinaNet"):
        native = {"model.neck.relu_before_extra_convs": True, "model.neck.type": PLAIN_EXTRA_FPN,
                  "model.neck.init_cfg": copy.deepcopy(C2_XAVIER_INIT)}
        reasons = {"model.neck.relu_before_extra_convs": "aligned: ReLU before P7, as detectron2's LastLevelP6P7",
                   "model.neck.type": "aligned: no norm on the extra convs P6/P7, as detectron2's LastLevelP6P7",
                   "model.neck.init_cfg": _WHY_NECK_INIT}
        return native, reasons
    if family.startswith("Cascade R-CNN"):
        native = {"model.neck.init_cfg": copy.deepcopy(C2_XAVIER_INIT),
                  "model.rpn_head.loss_bbox": dict(L1),
                  "model.roi_head.stage_loss_weights": [1.0, 1.0, 1.0],
                  "model.train_cfg.rpn.allowed_border": -1,
                  "model.train_cfg.rpn.assigner.min_pos_iou": 0.0}
        reasons = {"model.neck.init_cfg": _WHY_NECK_INIT, "model.rpn_head.loss_bbox": _WHY_L1,
                   "model.roi_head.stage_loss_weights": "aligned: every stage's loss weight 1, as detectron2's",
                   "model.train_cfg.rpn.allowed_border": "aligned: anchors crossing the border are trained on, "
                                                         "as detectron2's BOUNDARY_THRESH -1",
                   "model.train_cfg.rpn.assigner.min_pos_iou": "aligned: each box's best anchor is positive at "
                                                               "any IoU, as detectron2's low-quality matches"}
        for stage in range(3):
            key = f"model.roi_head.bbox_head.{stage}"
            native[f"{key}.loss_bbox"] = dict(L1)
            native[f"{key}.init_cfg"] = _rcnn_box_head_init()
            reasons[f"{key}.loss_bbox"] = _WHY_L1
            reasons[f"{key}.init_cfg"] = "aligned: box head fc init as detectron2's (c2_xavier_fill)"
        # stage 3's packaged stds are rounded (0.033, 0.067); detectron2's weights are (30, 30, 15, 15)
        native["model.roi_head.bbox_head.2.bbox_coder.target_stds"] = [1 / 30, 1 / 30, 1 / 15, 1 / 15]
        reasons["model.roi_head.bbox_head.2.bbox_coder.target_stds"] = (
            "aligned: stage 3's box coder 1/(30, 30, 15, 15), detectron2's exact weights (packaged: rounded 0.033/0.067)")
        return native, reasons
    raise ValueError(f"no aligned variant of {family!r} in mmdet (aligned: RetinaNet, Cascade R-CNN)")


def iteration_schedule() -> tuple[tuple[int, ...], int, int]:
    """detectron2's 3x schedule (milestones, length, warmup), applied by iteration."""
    return SCHEDULE_STEPS, SCHEDULE_LENGTH, SCHEDULE_WARMUP


def register_modules() -> None:
    """Register `FPNPlainExtraConvs` in mmdet's MODELS (idempotent)."""
    from mmcv.cnn import ConvModule
    from mmdet.models.necks import FPN
    from mmdet.registry import MODELS

    if PLAIN_EXTRA_FPN in MODELS.module_dict:
        return

    class FPNPlainExtraConvs(FPN):
        """mmdet's FPN with the extra levels' convs (P6, P7) built without a norm layer and with a
        bias, whatever the neck's norm_cfg: detectron2's LastLevelP6P7."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            first = self.backbone_end_level - self.start_level
            for index in range(first, len(self.fpn_convs)):
                conv = self.fpn_convs[index].conv
                self.fpn_convs[index] = ConvModule(conv.in_channels, conv.out_channels, 3, stride=2, padding=1,
                                                   conv_cfg=None, norm_cfg=None, act_cfg=None, inplace=False)

    MODELS.register_module(name=PLAIN_EXTRA_FPN, module=FPNPlainExtraConvs)
