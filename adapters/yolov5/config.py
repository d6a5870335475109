"""TrainSpec -> ultralytics arguments (pure functions: no framework import), and ultralytics' own
defaults the protocol card compares with. See the package docstring for the mapping."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from adapters.spec import AugSpec, TrainSpec

VARIANTS = ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")
HEAD = "anchor-free decoupled Detect head (ultralytics YOLOv5u), not the classic anchor-based YOLOv5"

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}

# ultralytics' own augmentation defaults (cfg/default.yaml) that the harness changes: hue and
# saturation jitter do nothing to a gray image replicated into 3 channels, so they are switched off
# (saves the HSV conversion). Everything else - mosaic 1.0 (off for the last close_mosaic=10
# epochs), hsv_v 0.4, translate 0.1, scale 0.5, mixup/cutmix/copy_paste 0 - is ultralytics' recipe.
XRAY_AUG_DEFAULTS: dict[str, float] = {"hsv_h": 0.0, "hsv_s": 0.0}
# ultralytics' own augmentation settings the card records (their native defaults are read from
# ultralytics' DEFAULT_CFG_DICT, as the rest of its recipe: adapters.yolov5.readback.natives)
FRAMEWORK_AUG_KEYS = ("hsv_h", "hsv_s", "hsv_v", "translate", "scale", "shear", "perspective", "mosaic", "close_mosaic",
                      "mixup", "cutmix", "copy_paste")

# native keys that also apply at prediction time (`iou` overrides spec.nms_iou there too, `imgsz` the
# test size) and those that only do (ultralytics' train() rejects them)
PREDICT_KEYS = ("iou", "imgsz", "agnostic_nms", "augment", "half", "multi_label")
PREDICT_ONLY_KEYS = ("multi_label",)
# why the harness's own settings differ from ultralytics' defaults (protocol-card notes, per key)
HARNESS_REASONS = {"hsv_h": "no effect on a gray image", "hsv_s": "no effect on a gray image"}


def yolo_device(device: str) -> str:
    """cxr-bench device string -> ultralytics' ("cpu", "cuda" -> "0", "cuda:N" -> "N")."""
    device = str(device).strip().lower()
    if device in ("", "cpu"):
        return "cpu"
    if device == "cuda":
        return "0"
    if match := re.fullmatch(r"cuda:(\d+)", device):
        return match.group(1)
    raise ValueError(f"device must be cpu, cuda or cuda:N, not {device!r}")


def aug_args(aug: AugSpec) -> dict[str, float]:
    """The shared AugSpec as ultralytics train arguments, on top of the X-ray defaults."""
    if not 0.0 <= aug.hflip <= 1.0 or not 0.0 <= aug.vflip <= 1.0:
        raise ValueError(f"flip probabilities must be in [0, 1]: hflip={aug.hflip}, vflip={aug.vflip}")
    if aug.rotate_deg < 0:
        raise ValueError(f"rotate_deg must be >= 0, not {aug.rotate_deg}")
    return {**XRAY_AUG_DEFAULTS, "degrees": float(aug.rotate_deg), "fliplr": float(aug.hflip),
            "flipud": float(aug.vflip)}


def train_args(spec: TrainSpec, data_yaml: Path, workdir: Path) -> dict[str, Any]:
    """Every keyword `YOLO.train` receives for this spec (spec.native last, overriding)."""
    args: dict[str, Any] = {
        "data": str(Path(data_yaml).resolve()),
        "epochs": int(spec.epochs),
        "batch": int(spec.batch_size),
        "imgsz": int(spec.imgsz),
        "optimizer": OPTIMIZERS[spec.optimizer],
        "lr0": float(spec.lr),
        "weight_decay": float(spec.weight_decay),
        "seed": int(spec.seed),
        "deterministic": True,
        # train.gpus > 1: ultralytics' own DDP over GPUs 0..N-1 (CUDA only; batch is the total)
        "device": yolo_device(spec.device) if spec.gpus == 1 else ",".join(str(i) for i in range(spec.gpus)),
        "workers": int(spec.workers),
        "amp": bool(spec.amp),
        "pretrained": str(Path(spec.weights).resolve()) if spec.weights else False,
        "project": str(Path(workdir).resolve()),
        "name": "train",
        "exist_ok": True,
        "val": False,
        "plots": False,
        "save_period": int(spec.checkpoint_interval),  # epoch{N}.pt: the resumable checkpoints
        **aug_args(spec.aug),
    }
    args.update({k: v for k, v in spec.native.items() if k not in PREDICT_ONLY_KEYS})
    return args


def predict_kwargs(spec: TrainSpec, workdir: Path) -> dict[str, Any]:
    """What `model.predict` receives: the shared post-processing settings, then the native overrides
    that apply to prediction too (iou, imgsz, ...)."""
    native = {k: v for k, v in spec.native.items() if k in PREDICT_KEYS and k not in PREDICT_ONLY_KEYS}
    return {"conf": float(spec.score_thr), "max_det": int(spec.max_det), "iou": float(spec.nms_iou),
            "imgsz": int(spec.imgsz), "device": yolo_device(spec.device), "batch": max(1, int(spec.batch_predict)),
            "verbose": False, "save": False, "project": str(Path(workdir).resolve()), "name": "predict",
            "exist_ok": True, **native}
