"""Detector adapters: one module per framework behind `adapters.base.Detector`, and the "No finding"
stage's normal/abnormal classifier (`adapters.classifier`, kind "classifier"), which runs in the same
jobs but predicts P(abnormal) per image instead of boxes.

`get_detector("yolov5")` imports the adapter module (and so its framework) only when asked.
"""
from __future__ import annotations

import importlib

from adapters.base import AugSpec, Detector, TrainSpec

# registry name -> (module, class, pip package that must be installed)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "yolov5": ("adapters.yolov5", "YoloV5Detector", "ultralytics"),
    "detectron2_frcnn": ("adapters.detectron2_frcnn", "Detectron2FasterRCNN", "detectron2"),
    "mmdet_frcnn": ("adapters.mmdet_frcnn", "MMDetFasterRCNN", "mmdet"),
    "classifier": ("adapters.classifier", "TorchvisionClassifier", "torchvision"),
    # any packaged architecture by name (model.arch; adapters.zoo lists them)
    "ultralytics": ("adapters.ultralytics_zoo", "UltralyticsDetector", "ultralytics"),
    "detectron2": ("adapters.detectron2_zoo", "Detectron2Detector", "detectron2"),
    "mmdet": ("adapters.mmdet_zoo", "MMDetDetector", "mmdet"),
    # presets of one architecture each, so one sweep can hold several per framework (experiment=same_arch)
    "detectron2_retinanet": ("adapters.detectron2_zoo", "Detectron2RetinaNet", "detectron2"),
    "detectron2_cascade": ("adapters.detectron2_zoo", "Detectron2Cascade", "detectron2"),
    "mmdet_retinanet": ("adapters.mmdet_zoo", "MMDetRetinaNet", "mmdet"),
    "mmdet_cascade": ("adapters.mmdet_zoo", "MMDetCascade", "mmdet"),
    # the same presets aligned across the two frameworks (adapters.aligned): the framework effect
    "detectron2_retinanet_aligned": ("adapters.detectron2_zoo", "Detectron2RetinaNetAligned", "detectron2"),
    "detectron2_cascade_aligned": ("adapters.detectron2_zoo", "Detectron2CascadeAligned", "detectron2"),
    "mmdet_retinanet_aligned": ("adapters.mmdet_zoo", "MMDetRetinaNetAligned", "mmdet"),
    "mmdet_cascade_aligned": ("adapters.mmdet_zoo", "MMDetCascadeAligned", "mmdet"),
}

# models that are image classifiers (P(abnormal) per image), not detectors
CLASSIFIERS = frozenset({"classifier"})

# the checkpoint format each model reads (harness.weights.formats tells them apart): the registry's
# framework package, which names the format
WEIGHTS_FORMATS: dict[str, str] = {name: package for name, (_, _, package) in REGISTRY.items()}


def is_classifier(name: str) -> bool:
    return name in CLASSIFIERS


class FrameworkMissing(ImportError):
    pass


def get_detector_class(name: str) -> type[Detector]:
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    module_name, class_name, package = REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise FrameworkMissing(
            f"model {name!r} needs the {package} framework, which failed to import: {err}. "
            "Run scripts/setup_env.sh (or `cxr-doctor` to see what is missing)."
        ) from err
    return getattr(module, class_name)


def get_detector(name: str, spec: TrainSpec) -> Detector:
    return get_detector_class(name)(spec)


__all__ = ["AugSpec", "Detector", "TrainSpec", "REGISTRY", "WEIGHTS_FORMATS", "CLASSIFIERS", "is_classifier", "get_detector", "get_detector_class", "FrameworkMissing"]
