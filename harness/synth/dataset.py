"""The synthetic dataset writer: presets and `generate`.

`generate(out_dir, preset, seed)` writes exactly the real layout — `train/<id>.dicom`,
`test/<id>.dicom` (unlabeled), `train.csv` with the real columns, 32-hex image ids — so every part
of the pipeline runs on it unchanged. Deterministic from the seed: same seed, same bytes.
Rerunning with the same preset and seed reuses the existing output (a `synth.json` stamp).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from harness import atomic
from harness.classes import CLASSES, NO_FINDING_ID, NO_FINDING_NAME
from harness.synth import anatomy, dicomio, lesions
from harness.synth.readers import make_readers

log = logging.getLogger(__name__)
VERSION = 1


@dataclass(frozen=True)
class Preset:
    train: int
    test: int
    min_side: int  # original sizes: longer side drawn from [min_side, max_side]
    max_side: int
    abnormal: float  # share of images with findings (real data: 0.29)
    classes: frozenset[int] | None  # restrict findings to these classes (None: all 14)
    syntaxes: tuple[float, float, float] = dicomio.SYNTAX_MIX  # shares of uncompressed / JPEG 2000 / RLE files
    render_scale: float = 1.0  # < 1: draw at this scale, upsample, then add full-resolution noise (faster)


# tiny (CI) and demo favour large, frequent, learnable classes so a few CPU minutes learn something;
# demo has enough images that half of them (a 2-fold val set) make a score worth reading
PRESETS = {
    "tiny": Preset(40, 8, 256, 512, 0.7, frozenset({0, 3, 10, 11})),
    "demo": Preset(100, 8, 256, 512, 0.7, frozenset({0, 3, 10, 11})),
    "small": Preset(200, 40, 384, 768, 0.5, None),
    "medium": Preset(1000, 200, 512, 1024, 0.4, None),
    "large": Preset(4000, 800, 512, 1024, 0.35, None),
    # real-size files for the prepare benchmark: 2000-3000 px, 12-16 bits, ~15 MB, mostly uncompressed
    "realsize": Preset(20, 4, 2000, 3000, 0.3, None, syntaxes=(0.8, 0.1, 0.1), render_scale=0.5),
}


def _image_size(p: Preset, rng: np.random.Generator) -> tuple[int, int]:
    longer = int(rng.integers(p.min_side, p.max_side + 1))
    aspect = rng.uniform(0.8, 1.0)  # shorter / longer
    shorter = int(round(longer * aspect))
    return (longer, shorter) if rng.random() < 0.7 else (shorter, longer)  # (h, w): mostly portrait


def _pixel_box(box, h: int, w: int) -> tuple[float, float, float, float]:
    """Normalised box → integer-valued pixel box inside the image, at least 1 px wide/high."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = np.clip(np.rint([x1 * w, x2 * w]), 0, w)
    y1, y2 = np.clip(np.rint([y1 * h, y2 * h]), 0, h)
    if x2 <= x1:
        x1, x2 = (x1 - 1, x1) if x1 >= w else (x1, x1 + 1)
    if y2 <= y1:
        y1, y2 = (y1 - 1, y1) if y1 >= h else (y1, y1 + 1)
    return float(x1), float(y1), float(x2), float(y2)


def _render(plan, h: int, w: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    dh, dw = (h, w) if scale == 1.0 else (max(1, round(h * scale)), max(1, round(w * scale)))
    chest = anatomy.chest(dh, dw, rng)
    for finding in plan.findings:
        lesions.draw(chest, finding.class_id, _pixel_box(finding.box, dh, dw), rng)
    image = chest.image if (dh, dw) == (h, w) else cv2.resize(chest.image, (w, h), interpolation=cv2.INTER_LINEAR)
    return anatomy.finish(image, rng)


def generate(out_dir: str | os.PathLike, preset: str | Preset = "tiny", seed: int = 0,
             real_templates: bool | None = None, progress: bool = True) -> Path:
    """Write the synthetic dataset to `out_dir` and return it.

    `preset`: a name in PRESETS or a custom `Preset`. `real_templates`: None = use the real
    train.csv's reader boxes when installed, True = require it, False = built-in statistics only.
    """
    if isinstance(preset, Preset):
        p, preset = preset, "custom"
    elif preset in PRESETS:
        p = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    out = Path(out_dir)
    readers = make_readers(set(p.classes) if p.classes else None, real_templates)
    stamp_doc = {"version": VERSION, "preset": preset, "seed": seed, "templates": readers.source,
                 "settings": [p.train, p.test, p.min_side, p.max_side, p.abnormal, sorted(p.classes or [])]}
    if (p.syntaxes, p.render_scale) != (dicomio.SYNTAX_MIX, 1.0):  # only then: older stamps stay valid
        stamp_doc["settings"] += [list(p.syntaxes), p.render_scale]
    stamp = out / "synth.json"
    if stamp.is_file() and (out / "train.csv").is_file():
        try:
            if {k: v for k, v in json.loads(stamp.read_text()).items() if k in stamp_doc} == stamp_doc:
                return out
        except json.JSONDecodeError:
            pass
    rng = np.random.default_rng(seed)
    ids = []
    while len(ids) < p.train + p.test:  # 32-hex ids like the real ones, unique
        new = rng.bytes(16).hex()
        if new not in ids:
            ids.append(new)
    lines = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"]
    variety = {"MONOCHROME1": 0, "MONOCHROME2": 0, "raw": 0, "j2k": 0, "rle": 0}
    for n, image_id in enumerate(tqdm(ids, desc=f"synth ({preset})", unit="img", disable=not progress)):
        split = "train" if n < p.train else "test"
        img_rng = np.random.default_rng([seed, n])  # per image: stable if presets grow
        h, w = _image_size(p, img_rng)
        plan = readers.abnormal(img_rng) if img_rng.random() < p.abnormal else readers.normal(img_rng)
        pixels = _render(plan, h, w, img_rng, p.render_scale)
        v = dicomio.write(out / split / f"{image_id}.dicom", pixels, image_id, img_rng, p.syntaxes)
        variety[v["photometric"]] += 1
        variety[v["syntax"]] += 1
        if split == "train":
            for rad, cid, box in plan.rows:
                if cid == NO_FINDING_ID:
                    lines.append(f"{image_id},{NO_FINDING_NAME},{cid},{rad},,,,")
                else:
                    x1, y1, x2, y2 = _pixel_box(box, h, w)
                    lines.append(f"{image_id},{CLASSES[cid]},{cid},{rad},{x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f}")
    atomic.write_text(out / "train.csv", "\n".join(lines) + "\n")
    atomic.write_json(stamp, stamp_doc | {"variety": variety})
    log.info("synth: %s preset, %d train + %d test images in %s (templates: %s)", preset, p.train, p.test, out,
             readers.source)
    return out
