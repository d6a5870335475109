"""Horizontal-flip test-time augmentation for any detector, merged by WBF.

Why generic: every adapter already implements `predict(checkpoint, images, workdir)`, so flipping
the *images* (not the framework's pipeline) gives all three frameworks the same TTA with no
framework code. Chest X-rays are close to left-right symmetric in appearance, the winning Kaggle
solutions used exactly this TTA (hflip merged by WBF).

Steps: predict the originals; write mirrored PNGs (bit depth kept, atomically) into the workdir;
predict them; map their boxes back (x' = W - x - w, y and size unchanged); fuse both passes with
`harness.ensemble.fuse_predictions` (WBF by default, "avg" scores: a box found in only one pass
keeps half its score), then at most `max_det` per image again (the highest scores).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from harness import atomic
from harness.ensemble import fuse_predictions
from harness.predictions import Predictions, cap_per_image
from harness.split import ImageRef


def flip_image(src: str | Path, dst: str | Path) -> Path:
    """Write the left-right mirror of the image `src` as PNG `dst` (same bit depth), atomically."""
    import cv2

    src, dst = Path(src), Path(dst)
    pixels = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise FileNotFoundError(f"hflip TTA: cannot read image {src}")
    with atomic.atomic_path(dst) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(pixels[:, ::-1])):
            raise OSError(f"hflip TTA: cannot write {dst}")
    return dst


def unflip_detections(detections: Sequence[dict], widths: dict[int, int]) -> list[dict]:
    """Boxes predicted on mirrored images, mapped back onto the originals: x' = W - x - w."""
    out = []
    for det in detections:
        x, y, w, h = det["bbox"]
        out.append({**det, "bbox": [widths[det["image_id"]] - x - w, y, w, h]})
    return out


def predict_with_hflip_tta(detector, checkpoint, images: Sequence[ImageRef], workdir: str | Path,
                           iou_thr: float = 0.55, skip_box_thr: float = 0.0, method: str = "wbf",
                           conf_type: str = "avg") -> list[dict]:
    """Detections on `images` from the original and the mirrored pass, fused (see module doc).
    `detector` is anything with adapters.base.Detector's predict()."""
    workdir = Path(workdir)
    images = list(images)
    plain = detector.predict(checkpoint, images, workdir / "orig")
    flipped_refs = []
    for img in tqdm(images, desc="hflip TTA: mirror images", unit="img", leave=False):
        dst = flip_image(img.path, workdir / "hflip_images" / f"{img.id}.png")
        flipped_refs.append(ImageRef(img.id, dst, img.width, img.height))
    mirrored = detector.predict(checkpoint, flipped_refs, workdir / "hflip")
    widths = {img.id: img.width for img in images}
    ids = [img.id for img in images]
    passes = [Predictions("tta:orig", None, ids, list(plain)),
              Predictions("tta:hflip", None, ids, unflip_detections(mirrored, widths))]
    fused = fuse_predictions(passes, {img.id: (img.width, img.height) for img in images}, method=method,
                             iou_thr=iou_thr, skip_box_thr=skip_box_thr, conf_type=conf_type,
                             names=["original pass", "hflip pass"])
    # the fused passes can hold up to twice the detections per image: back to the protocol's cap
    return cap_per_image(fused.detections, int(detector.spec.max_det))
