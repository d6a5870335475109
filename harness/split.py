"""A train/val split of the shared fused COCO labels, as every adapter receives it.

Every framework reads the same two COCO files, written once per job into the run directory from the
dataset's fused labels (`labels/<fusion>.json`) and fold file (`folds/<name>.json`). The split hash
is the fold file's content hash plus the labels' hash: it is recorded in predictions and metrics, the
proof that all frameworks saw identical train/val images and boxes.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from harness import atomic
from harness.data.folds import folds_hash
from harness.digest import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRef:
    """One prepared image: COCO id, absolute PNG path and its pixel size."""

    id: int
    path: Path
    width: int
    height: int


@dataclass(frozen=True)
class Split:
    """Train and val COCO files (PNG pixel coordinates, category id = VinBigData class id).

    `image_root` is the dataset folder: COCO `file_name`s are relative to it.
    """

    train_json: Path
    val_json: Path
    image_root: Path
    fold: int
    split_hash: str

    @property
    def classes(self) -> list[str]:
        """The class names in category-id order (make_split checked ids are 0..n-1)."""
        coco = json.loads(Path(self.train_json).read_text())
        return [c["name"] for c in coco.get("categories", [])]

    def images(self, which: str = "val") -> list[ImageRef]:
        coco = json.loads(Path(self.train_json if which == "train" else self.val_json).read_text())
        return [
            ImageRef(img["id"], self.image_root / img["file_name"], img["width"], img["height"])
            for img in coco["images"]
        ]


def subset_coco(coco: dict, image_keys: set[str]) -> dict:
    """The COCO dict restricted to images whose `image_key` (VinBigData image_id) is in the set."""
    images = [img for img in coco["images"] if img["image_key"] in image_keys]
    ids = {img["id"] for img in images}
    return {
        **{k: v for k, v in coco.items() if k not in ("images", "annotations")},
        "images": images,
        "annotations": [ann for ann in coco["annotations"] if ann["image_id"] in ids],
    }


def check_categories(coco: dict, source: str | Path) -> list[str]:
    """The one category rule every framework relies on: categories are listed with ids 0..n-1 in
    that order (detectron2 maps sorted ids to label indices, mmdet the file's order: both are then
    the identity) and every annotation names one of them. Returns the class names in id order;
    ValueError naming `source` and the offending entry."""
    cats = [(c.get("id"), c.get("name")) for c in coco.get("categories", [])]
    if not cats or [cid for cid, _ in cats] != list(range(len(cats))):
        raise ValueError(f"{source}: categories must be listed with ids 0..n-1 in order (the dataset's classes, "
                         f"e.g. harness.classes.coco_categories()); found ids {[cid for cid, _ in cats]}")
    for ann in coco.get("annotations", []):
        if ann.get("category_id") not in range(len(cats)):
            raise ValueError(f"{source}: annotation id {ann.get('id')} (image id {ann.get('image_id')}) has "
                             f"category_id {ann.get('category_id')!r}; expected 0..{len(cats) - 1}")
    return [name for _, name in cats]


def _split_hash(folds_content_hash: str, labels_json: Path, fold: int) -> str:
    return hashlib.sha256(f"{folds_content_hash}:{file_sha256(labels_json)}:{fold}".encode()).hexdigest()[:16]


def split_hash(labels_json: str | Path, folds_json: str | Path, fold: int) -> str:
    """The split hash `make_split` would give, without writing anything (a job's data identity)."""
    folds = json.loads(Path(folds_json).read_text())
    return _split_hash(folds_hash(folds["folds"]), Path(labels_json), fold)


def make_split(labels_json: str | Path, folds_json: str | Path, fold: int, workdir: str | Path) -> Split:
    """Write `<workdir>/split/{train,val}.json` for fold `fold` (val = that fold, train = the rest)."""
    labels_json, folds_json, workdir = Path(labels_json), Path(folds_json), Path(workdir)
    coco = json.loads(labels_json.read_text())
    check_categories(coco, labels_json)
    folds = json.loads(folds_json.read_text())
    k = len(folds["folds"])
    if not 0 <= fold < k:
        raise ValueError(f"fold {fold} out of range: {folds_json} has {k} folds (0..{k - 1})")
    val_keys = set(folds["folds"][fold])
    train_keys = {key for i, keys in enumerate(folds["folds"]) if i != fold for key in keys}
    known = {img["image_key"] for img in coco["images"]}
    missing = (val_keys | train_keys) - known
    if missing:
        raise ValueError(
            f"{folds_json} names {len(missing)} images absent from {labels_json}, e.g. {sorted(missing)[:3]}"
        )
    # the hash of the folds as read, never the one stored in the file (which an edit leaves stale)
    content_hash = folds_hash(folds["folds"])
    if folds.get("hash") not in (None, content_hash):
        log.warning("%s: stored hash %s does not match its folds (edited?); using the recomputed %s",
                    folds_json, str(folds.get("hash"))[:12], content_hash[:12])
    split_hash = _split_hash(content_hash, labels_json, fold)
    out = workdir / "split"
    if folds.get("group_by"):  # grouped folds (patients): the bootstrap resamples whole groups of these images
        coco = {**coco, "info": {**(coco.get("info") or {}), "group_by": folds["group_by"]}}
    atomic.write_json(out / "train.json", subset_coco(coco, train_keys), indent=None)
    atomic.write_json(out / "val.json", subset_coco(coco, val_keys), indent=None)
    return Split(out / "train.json", out / "val.json", labels_json.parent.parent, fold, split_hash)
