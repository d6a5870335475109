"""What a built mmdet detector predicts with and which box head it has, whatever its kind: a two-stage
R-CNN (`roi_head`: Faster R-CNN's one box head, Cascade R-CNN's list of stage heads) or a one-stage
detector (`bbox_head`: RetinaNet, FCOS, ATSS, whose `test_cfg` holds the post-processing)."""
from __future__ import annotations

from typing import Any

BOX_HEADS = {"Shared2FCBBoxHead": "2fc box head", "Shared4Conv1FCBBoxHead": "4conv-1fc GN box head"}


def postprocess_settings(model) -> dict[str, Any]:
    """score_thr / nms_iou / max_det from the built model's test_cfg (multiclass NMS: per class)."""
    model = getattr(model, "module", model)
    roi_head = getattr(model, "roi_head", None)
    test_cfg = roi_head.test_cfg if roi_head is not None else model.bbox_head.test_cfg
    return {"score_thr": float(test_cfg.score_thr), "nms_iou": float(test_cfg.nms.iou_threshold),
            "max_det": int(test_cfg.max_per_img)}


def box_head(model) -> str:
    """The box head as the card names it (Cascade R-CNN: its stages' heads)."""
    model = getattr(model, "module", model)
    roi_head = getattr(model, "roi_head", None)
    if roi_head is None:
        return type(model.bbox_head).__name__
    heads = roi_head.bbox_head
    names = [type(head).__name__ for head in (heads if type(heads).__name__ == "ModuleList" else [heads])]
    text = BOX_HEADS.get(names[0], names[0])
    return text if len(names) == 1 else f"{len(names)} stages x {text}"
