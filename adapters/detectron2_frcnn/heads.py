"""The post-processing settings a built detectron2 model predicts with, whatever its head: the R-CNN
box predictor (Cascade R-CNN: its last stage's, which runs the final NMS on the stage-averaged
scores) or a one-stage meta-architecture (RetinaNet holds them itself)."""
from __future__ import annotations

from typing import Any


def postprocess_settings(model) -> dict[str, Any]:
    """score_thr / nms_iou / max_det as the model's inference reads them."""
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is None:  # RetinaNet (and other dense detectors)
        return {"score_thr": float(model.test_score_thresh), "nms_iou": float(model.test_nms_thresh),
                "max_det": int(model.max_detections_per_image)}
    predictor = roi_heads.box_predictor
    if isinstance(predictor, (list, tuple)) or type(predictor).__name__ == "ModuleList":
        predictor = predictor[-1]  # CascadeROIHeads: the last stage's predictor does the inference
    return {"score_thr": float(predictor.test_score_thresh), "nms_iou": float(predictor.test_nms_thresh),
            "max_det": int(predictor.test_topk_per_image)}
