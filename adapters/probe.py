"""Environment probes for `cxr-doctor`: which frameworks import, their versions, compiled ops.

Kept in `adapters/` because probing means importing the frameworks; each probe imports lazily and
turns any failure into a verdict line instead of an exception.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass, field


@dataclass
class Probe:
    name: str
    ok: bool
    verdict: str
    details: dict[str, str] = field(default_factory=dict)


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def probe_torch() -> Probe:
    try:
        import torch
        import torchvision
    except Exception as err:  # noqa: BLE001 - a probe reports, it does not raise
        return Probe("torch", False, f"torch does not import: {err}")
    details = {"torch": torch.__version__, "torchvision": torchvision.__version__,
               "cuda available": str(torch.cuda.is_available()), "cuda build": str(torch.version.cuda)}
    if torch.cuda.is_available():
        details["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    device = "CUDA" if torch.cuda.is_available() else "CPU only"
    return Probe("torch", True, f"usable ({device})", details)


def probe_ultralytics() -> Probe:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    try:
        import ultralytics
    except Exception as err:  # noqa: BLE001
        return Probe("ultralytics", False, f"does not import: {err}")
    return Probe("ultralytics", True, "usable: YOLOv5n-x from yolov5*.yaml (anchor-free YOLOv5u head); AGPL-3.0",
                 {"ultralytics": ultralytics.__version__})


def probe_detectron2() -> Probe:
    try:
        import detectron2
        from detectron2.modeling import build_model  # noqa: F401
    except Exception as err:  # noqa: BLE001
        return Probe("detectron2", False, f"does not import: {err}")
    try:
        importlib.import_module("detectron2._C")
        compiled = "compiled"
    except Exception:  # noqa: BLE001
        compiled = "not compiled (Faster R-CNN uses torchvision ROIAlign/NMS; no deformable conv / rotated boxes)"
    details = {"detectron2": detectron2.__version__, "_C ops": compiled,
               "location": os.path.dirname(detectron2.__file__), "sal-detectron2": _version("sal-detectron2")}
    return Probe("detectron2", True, f"usable (Faster R-CNN); _C {compiled.split(' (')[0]}", details)


def probe_mmdet() -> Probe:
    try:
        import mmcv
        import mmengine
    except Exception as err:  # noqa: BLE001
        return Probe("mmdet", False, f"mmcv/mmengine do not import: {err}")
    details = {"mmengine": mmengine.__version__, "mmcv": mmcv.__version__}
    try:
        from mmcv.ops import get_compiler_version, get_compiling_cuda_version, nms  # noqa: F401

        details["mmcv ops"] = f"compiled ({get_compiler_version()}, CUDA ops: {get_compiling_cuda_version()})"
    except Exception as err:  # noqa: BLE001
        return Probe("mmdet", False, f"mmcv has no compiled ops (mmcv-lite?): {err}", details)
    try:
        import mmdet
    except Exception as err:  # noqa: BLE001
        return Probe("mmdet", False, f"mmdet does not import: {err}", details)
    details["mmdet"] = mmdet.__version__
    import torch

    if torch.cuda.is_available():  # a GPU is here: mmdet must be able to train on it
        from adapters.mmcv_cuda import cuda_ops_problem

        problem = cuda_ops_problem("cuda")
        if problem:
            details["mmcv CUDA ops"] = "FAIL"
            return Probe("mmdet", False, f"not usable on this GPU: {problem}", details)
        details["mmcv CUDA ops"] = "nms + RoIAlign ran on cuda:0 with the expected values"
        return Probe("mmdet", True, "usable on CPU and CUDA (Faster R-CNN, mmcv CPU+CUDA ops checked)", details)
    return Probe("mmdet", True, "usable (Faster R-CNN, mmcv ops compiled)", details)


def probe_dicom() -> Probe:
    try:
        import pydicom
    except Exception as err:  # noqa: BLE001
        return Probe("pydicom", False, f"does not import: {err}")
    plugins = {name: _version(name) for name in ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle")}
    missing = [name for name, ver in plugins.items() if ver == "not installed"]
    verdict = "usable, all compressed syntaxes" if not missing else f"usable; missing decoders: {', '.join(missing)}"
    return Probe("pydicom", True, verdict, {"pydicom": pydicom.__version__, **plugins})


PROBES = (probe_torch, probe_ultralytics, probe_detectron2, probe_mmdet, probe_dicom)


def run_all() -> list[Probe]:
    return [probe() for probe in PROBES]
