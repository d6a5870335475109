"""The architectures each framework ships in its own package, by name (framework-free: no import of a
framework here). `model=<framework> model.arch=<name>` picks one; the framework's packaged config file
is read, the class count and data replaced, everything else as shipped (the adapters say what else
they set and the protocol card shows it).

Each entry: the packaged file (relative to the framework's config folder: ultralytics model YAML,
detectron2 `model_zoo/configs`, mmdet `.mim/configs`), the family (the same family in two frameworks
is the same architecture: `experiment=same_arch` groups by it), and whether the detector is NMS-free.
To add an architecture: add its entry here (and, where it has a COCO checkpoint, one in
conf/pretrained/default.yaml); the adapter of its framework must know its head type (see README).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    config: str  # the framework's packaged file
    family: str  # e.g. "RetinaNet R50-FPN": the architecture, whichever framework runs it
    nms_free: bool = False  # the detector keeps its top queries; no NMS at inference


def _yolo(prefix: str, family: str, yaml_prefix: str = "", suffix: str = "") -> dict[str, Arch]:
    return {f"{prefix}{scale}{suffix}": Arch(f"{yaml_prefix or prefix}{scale}.yaml", f"{family}{scale}")
            for scale in "nsmlx"}


ULTRALYTICS: dict[str, Arch] = {
    # ultralytics builds YOLOv5 from yolov5<scale>.yaml with its anchor-free head: "YOLOv5u"
    **_yolo("yolov5", "YOLOv5u-", suffix="u"),
    **_yolo("yolov8", "YOLOv8-"),
    **_yolo("yolo11", "YOLO11-"),
    "rtdetr-l": Arch("rtdetr-l.yaml", "RT-DETR-l", nms_free=True),
    "rtdetr-x": Arch("rtdetr-x.yaml", "RT-DETR-x", nms_free=True),
    "rtdetr-resnet50": Arch("rtdetr-resnet50.yaml", "RT-DETR R50", nms_free=True),
    "rtdetr-resnet101": Arch("rtdetr-resnet101.yaml", "RT-DETR R101", nms_free=True),
}

DETECTRON2: dict[str, Arch] = {
    "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml": Arch("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
                                                        "Faster R-CNN R50-FPN"),
    "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml": Arch("COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
                                                         "Faster R-CNN R101-FPN"),
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml": Arch("COCO-Detection/retinanet_R_50_FPN_3x.yaml",
                                                      "RetinaNet R50-FPN"),
    "COCO-Detection/retinanet_R_101_FPN_3x.yaml": Arch("COCO-Detection/retinanet_R_101_FPN_3x.yaml",
                                                       "RetinaNet R101-FPN"),
    # detectron2's zoo has Cascade R-CNN only with a mask head: the adapter switches the mask off
    # (MODEL.MASK_ON False: the data has boxes only)
    "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml": Arch("Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
                                                    "Cascade R-CNN R50-FPN"),
}

MMDET: dict[str, Arch] = {
    "faster-rcnn_r50_fpn_1x_coco": Arch("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "Faster R-CNN R50-FPN"),
    "cascade-rcnn_r50_fpn_1x_coco": Arch("cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py", "Cascade R-CNN R50-FPN"),
    "retinanet_r18_fpn_1x_coco": Arch("retinanet/retinanet_r18_fpn_1x_coco.py", "RetinaNet R18-FPN"),
    "retinanet_r50_fpn_1x_coco": Arch("retinanet/retinanet_r50_fpn_1x_coco.py", "RetinaNet R50-FPN"),
    "fcos_r50-caffe_fpn_gn-head_1x_coco": Arch("fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py", "FCOS R50-FPN"),
    "atss_r50_fpn_1x_coco": Arch("atss/atss_r50_fpn_1x_coco.py", "ATSS R50-FPN"),
}

ARCHITECTURES: dict[str, dict[str, Arch]] = {"ultralytics": ULTRALYTICS, "detectron2": DETECTRON2, "mmdet": MMDET}


class UnknownArchitecture(ValueError):
    """`model.arch` names no architecture of the framework; the message lists the ones it has."""


def arch(framework: str, name: str) -> Arch:
    """The catalogue entry of `name`, or UnknownArchitecture listing the framework's names."""
    known = ARCHITECTURES[framework]
    if name not in known:
        raise UnknownArchitecture(f"unknown {framework} architecture {name!r}; available: {', '.join(known)} "
                                  "(list them all: cxr-doctor --models)")
    return known[name]


def family(framework: str, name: str) -> str:
    """The architecture family of a model (for grouping a report); the name itself when not catalogued."""
    entry = ARCHITECTURES.get(framework, {}).get(name)
    return entry.family if entry else name


def listing() -> str:
    """Every architecture by framework, as `cxr-doctor --models` prints it."""
    lines = []
    for framework, known in ARCHITECTURES.items():
        lines.append(f"model={framework} model.arch=<one of>:")
        lines += [f"  {name:<48} {entry.family}{'  (NMS-free)' if entry.nms_free else ''}"
                  for name, entry in known.items()]
    return "\n".join(lines)
