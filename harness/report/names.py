"""Readable names for the report's rows: "WBF ensemble, IoU 0.55" for the config key
`ensemble:wbf-iou0.55`, "YOLOv5" for `yolov5`. The CSV files keep the keys (scripts match on them); the
summary box and the sections written for readers show these names.
"""
from __future__ import annotations

import re

MODELS = {"yolov5": "YOLOv5", "detectron2_frcnn": "Detectron2 Faster R-CNN", "mmdet_frcnn": "MMDetection Faster R-CNN",
          "ultralytics": "Ultralytics", "detectron2": "Detectron2", "mmdet": "MMDetection",
          "classifier": "No-finding classifier"}
METHODS = {"wbf": "WBF", "nms": "NMS", "soft_nms": "Soft-NMS", "nmw": "NMW"}


def _setting(part: str) -> str:
    if part == "tuned":
        return "tuned on the other folds"
    match = re.fullmatch(r"iou([0-9.]+)", part)
    return f"IoU {match.group(1)}" if match else part


def display_name(name: str) -> str:
    """`ensemble:<method>-iou<t>[-...]` -> "<METHOD> ensemble, IoU <t>, ..."; a model's registry name -> its
    framework's name (a variant in parentheses and a " · seed <s>" tag are kept); anything else unchanged."""
    suffix = ""
    seed = re.search(r" · seed \d+$", name)
    if seed:
        name, suffix = name[:seed.start()], seed.group(0)
    if name.startswith("ensemble:"):
        method, *settings = name[len("ensemble:"):].split("-")
        label = f"{METHODS.get(method, method.upper())} ensemble"
        return ", ".join([label, *(_setting(s) for s in settings)]) + suffix
    base, paren, rest = name.partition(" (")
    return MODELS.get(base, base) + (paren + rest if paren else "") + suffix
