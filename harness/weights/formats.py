"""Which framework wrote a checkpoint file, told from the names pickled in it - without importing
any framework and without unpickling (nothing in the file is executed).

- ultralytics `.pt`: a torch zip archive whose pickle references `ultralytics.*` classes;
- detectron2 `.pkl` (model zoo, numpy arrays) or `.pth` (its Checkpointer): tensor names such as
  `backbone.bottom_up.*`, `proposal_generator.*`, `roi_heads.*` (or Detectron1/Caffe2 names such as
  `res2_0_branch2a_w`, which detectron2 converts);
- mmdet `.pth` (mmengine's save_checkpoint): a `state_dict` with `rpn_head.*` / `roi_head.*` names;
- torchvision ImageNet classification `.pth` (a plain state dict): ResNet names (`layer1.0.conv1.weight`,
  `fc.weight`) or EfficientNet names (`features.0.0.weight`, `classifier.1.weight`).
"""
from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path

FORMATS = ("ultralytics", "detectron2", "mmdet", "torchvision")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING", "GLOBAL", "SHORT_BINBYTES"}
_CAFFE2_NAME = re.compile(r"^(res\d+_\d+_branch|res_conv1_|conv1_w$|fc1000_)")
MAX_PICKLES = 8  # legacy torch.save files hold a few small pickles before the raw tensor bytes


class WrongWeightsFormat(ValueError):
    """A weights file is not in the format the model's framework reads."""


def _strings_of(stream: io.BufferedIOBase | io.BytesIO, limit: int = MAX_PICKLES) -> set[str]:
    found: set[str] = set()
    for _ in range(limit):
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                if opcode.name in _STRING_OPS and isinstance(arg, str):
                    found.add(arg)
                if opcode.name == "STOP":
                    break
            else:
                break
        except Exception:  # raw tensor bytes after the last pickle, or not a pickle at all
            break
    return found


def pickled_names(path: str | Path) -> set[str]:
    """Every string pickled in `path` (module/class names, dict keys), torch zip or plain pickle."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not members:
                return set()
            return _strings_of(io.BytesIO(archive.read(members[0])))
    with open(path, "rb") as handle:
        return _strings_of(handle)


def detect_format(path: str | Path) -> str | None:
    """"ultralytics" | "detectron2" | "mmdet" | "torchvision", or None when the file matches none of them."""
    names = pickled_names(path)
    if any(n.startswith("ultralytics.") or n == "ultralytics" for n in names):
        return "ultralytics"
    if any(n.startswith(("rpn_head.", "roi_head.")) for n in names):
        return "mmdet"
    if any(n.startswith(("backbone.bottom_up.", "proposal_generator.", "roi_heads.")) for n in names) or \
            any(_CAFFE2_NAME.match(n) for n in names):
        return "detectron2"
    if {"layer1.0.conv1.weight", "fc.weight"} <= names or {"features.0.0.weight", "classifier.1.weight"} <= names:
        return "torchvision"
    return None


_FORMAT_FILES = {"ultralytics": "an ultralytics .pt", "detectron2": "a detectron2 model-zoo .pkl or .pth",
                 "mmdet": "an mmdet .pth", "torchvision": "a torchvision ImageNet .pth state dict"}


def check_format(path: str | Path, expected: str, model: str) -> None:
    """Raise WrongWeightsFormat naming the file when it is not a `expected` checkpoint."""
    found = detect_format(path)
    if found != expected:
        what = f"a {found} checkpoint" if found else "not a checkpoint of any supported framework"
        raise WrongWeightsFormat(
            f"weights file {path} is {what}; model {model} needs a {expected} checkpoint "
            f"({_FORMAT_FILES.get(expected, expected)}). "
            "Registry names (e.g. weights=coco) pick the right file for each model: see `cxr-weights --list`.")
