"""Any detector ultralytics ships as a model YAML (`model=ultralytics model.arch=<name>`: YOLOv5u
n-x, YOLOv8 n-x, YOLO11 n-x, RT-DETR l/x/resnet50/resnet101; `adapters.zoo.ULTRALYTICS`) behind the
shared `Detector`, with everything the YOLOv5 adapter does (adapters.yolov5: data folder, offline
sandbox, training, resume, read-back, card).

Per architecture: the model is built from ultralytics' packaged YAML (`YOLO(<yaml>)`, or
`RTDETR(<yaml>)` for RT-DETR, which brings ultralytics' RT-DETR trainer, dataset and predictor), with
the dataset's class count. YOLO models predict through the multi-label NMS predictor of the YOLOv5
adapter. RT-DETR is NMS-free: ultralytics' RTDETRPredictor keeps the queries above `conf` (one class
each), up to `max_det`; the card reads "none (NMS-free)" for the NMS IoU and `multi_label` False, and
its native defaults say the same, so nothing is pretended.
"""
from adapters.ultralytics_zoo.detector import UltralyticsDetector

__all__ = ["UltralyticsDetector"]
