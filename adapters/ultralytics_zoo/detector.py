"""`UltralyticsDetector`: the YOLOv5 adapter made general over ultralytics' packaged model YAMLs."""
from __future__ import annotations

from typing import Any

from adapters.byarch import ByArchitecture, nms_free_protocol, with_architecture
from adapters.yolov5 import readback
from adapters.yolov5.detector import YoloV5Detector
from adapters.zoo import ULTRALYTICS


class UltralyticsDetector(ByArchitecture, YoloV5Detector):
    """Any `adapters.zoo.ULTRALYTICS` architecture (spec.variant = model.arch) via ultralytics."""

    name = "ultralytics"
    zoo_framework = "ultralytics"
    default_variant = "yolov8n"
    variants = tuple(ULTRALYTICS)


    @property
    def native_protocol(self) -> dict[str, tuple[Any, str]]:  # type: ignore[override]
        native = dict(YoloV5Detector.native_protocol)
        return nms_free_protocol(native) if self.arch.nms_free else native

    def arch_yaml(self) -> str:
        return self.arch.config

    def build_yolo(self, source: str):
        if not self.arch.nms_free:
            return super().build_yolo(source)
        from ultralytics import RTDETR

        return RTDETR(source)

    def predictor_class(self):
        # RT-DETR: ultralytics' own RTDETRPredictor (the model's task map), which has no NMS
        return None if self.arch.nms_free else super().predictor_class()

    def predictor_readback(self, predictor) -> dict[str, Any]:
        return readback.prediction(predictor, nms_free=self.arch.nms_free)

    def recipe(self) -> list[dict]:
        built = "RT-DETR decoder, NMS-free" if self.arch.nms_free else "anchor-free Detect head"
        return with_architecture(super().recipe(), "ultralytics", self.arch.config, self.arch.family, built)

    def version_notes(self) -> dict[str, str]:
        return {"architecture": f"ultralytics {self.arch.config} ({self.arch.family})", "licence": "AGPL-3.0"}
