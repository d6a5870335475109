"""The shared COCO split as a YOLO dataset folder (links to the prepared PNGs, normalised label
files, data.yaml), built in a temporary folder and renamed into place."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from harness import atomic
from harness.split import Split

log = logging.getLogger(__name__)


def _yolo_label_lines(image: dict, anns: list[dict], source: Path) -> list[str]:
    """`class cx cy w h` lines (normalised) for one image; boxes are clipped to the image, and a
    box with no area left is skipped with a warning naming it."""
    width, height = float(image["width"]), float(image["height"])
    lines = []
    for ann in anns:  # category ids were checked where the split was made (harness.split)
        cat = int(ann["category_id"])
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(width, x + w), min(height, y + h)
        if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
            log.warning("%s: annotation id %s (image %s) has no area inside the image, skipped: bbox %s",
                        source, ann.get("id"), image["file_name"], ann["bbox"])
            continue
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{cat} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return lines


def _link_or_copy(target: Path, link: Path) -> None:
    try:
        os.symlink(target, link)
    except OSError:
        shutil.copy2(target, link)


def _write_subset(coco_json: Path, image_root: Path, out: Path, subset: str,
                  drop_negatives: bool = False) -> tuple[int, list[str]]:
    """Write images/<subset> links and labels/<subset> txt files; return (images written, problems).
    `drop_negatives` leaves out images without any box (the protocol's negatives="drop")."""
    from PIL import Image

    coco = json.loads(Path(coco_json).read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):  # an ignore region (e.g. NIH's unboxed findings): YOLO has none, so background
            continue
        by_image.setdefault(ann["image_id"], []).append(ann)
    img_dir, lbl_dir = out / "images" / subset, out / "labels" / subset
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    problems: list[str] = []
    written = 0
    for image in coco["images"]:
        src = (image_root / image["file_name"]).resolve()
        try:
            with Image.open(src) as im:
                size = im.size
        except (OSError, ValueError) as err:
            problems.append(f"{coco_json}: image id {image['id']} ({src}) cannot be read: {err}")
            log.error(problems[-1])
            continue
        if size != (image["width"], image["height"]):
            problems.append(f"{coco_json}: image id {image['id']} ({src}) is {size[0]}x{size[1]} px but its "
                            f"record says {image['width']}x{image['height']}; skipped")
            log.error(problems[-1])
            continue
        lines = _yolo_label_lines(image, by_image.get(image["id"], []), coco_json)
        if drop_negatives and not lines:
            continue
        stem = src.stem if src.stem not in used else f"{src.stem}__id{image['id']}"
        used.add(stem)
        _link_or_copy(src, img_dir / f"{stem}{src.suffix}")
        (lbl_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        written += 1
    return written, problems


def write_yolo_dataset(split: Split, root: Path, channels: int = 3, negatives: str = "keep") -> Path:
    """Convert the split's train/val COCO files into a YOLO dataset at `root`; return its data YAML.

    Built in a temporary sibling folder and renamed into place, so `root` is either the old or the
    complete new dataset. Unreadable images or size mismatches are skipped with an error naming the
    file; if a subset ends up empty, ValueError. negatives="drop" leaves images without boxes out of
    the train subset (the val subset always has every image).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    root = Path(root).resolve()
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    try:
        for subset, coco_json in (("train", split.train_json), ("val", split.val_json)):
            counts[subset], _ = _write_subset(Path(coco_json), Path(split.image_root), tmp, subset,
                                              drop_negatives=subset == "train" and negatives == "drop")
            if counts[subset] == 0:
                raise ValueError(f"{coco_json}: no usable {subset} images (see errors above)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    classes = split.classes
    names = "\n".join(f"  {i}: {name!r}" for i, name in enumerate(classes))
    data_yaml = root / "data.yaml"
    atomic.write_text(
        data_yaml,
        f"# written by cxr-bench adapters.yolov5 from {split.train_json} and {split.val_json}\n"
        f"# split hash {split.split_hash}; {counts['train']} train (negatives={negatives}) / {counts['val']} val images\n"
        f"path: {root}\ntrain: images/train\nval: images/val\nchannels: {channels}\n"
        f"nc: {len(classes)}\nnames:\n{names}\n",
    )
    return data_yaml
