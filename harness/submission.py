"""Kaggle VinBigData submission export: predictions back in original DICOM pixels.

Format: ``image_id,PredictionString`` with ``class score x1 y1 x2 y2`` repeated, space-separated,
integer-rounded original-pixel coordinates. Predictions are in prepared-PNG pixels; the manifest's
``scale_x``/``scale_y`` map original -> PNG (PNG = original x scale), so back-mapping divides. That is
right for both preparations (aspect kept: scale_x == scale_y; stretched square: they differ).

"No finding" (class 14) policy, selectable because it moves the score a lot: the policies of
``harness.nofinding`` (the same code the report scores), with P(abnormal) per image from
``p_abnormal`` (a classifier) or, without one, the detector-only score (the image's highest box score):

* ``append`` (default): every image gets ``14 (1-p) 0 0 1 1`` after its boxes (p from the detector:
  1 - the image's highest box score, 1 for an image with no box);
* ``keep_add_replace``: p < low -> only ``14 1 0 0 1 1``; low <= p < high -> boxes + ``14 (1-p)``
  (``nofinding.scoring=notebook``: ``14 p``, the public 2-class filter notebook's entry);
  p >= high -> boxes only (``nofinding.low/high``);
* ``replace``: p < low -> only ``14 1 0 0 1 1``, else boxes only; ``none``: boxes only;
* ``empty_only``: ``14 1 0 0 1 1`` only for images with no predicted box.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from harness import atomic
from harness.classes import CLASSES, NO_FINDING_ID, require_vinbigdata
from harness.data.manifest import read_manifest
from harness.eval.coco_map import load_gt
from harness.nofinding import DEFAULT_HIGH, DEFAULT_LOW, DEFAULT_SCORING, image_policy, policy_thresholds
from harness.nofinding import POLICIES as STAGE_POLICIES
from harness.predictions import PredictionFileError, Predictions

POLICIES = (*STAGE_POLICIES, "empty_only")


def to_original_xyxy(bbox_xywh, scale_x: float, scale_y: float) -> tuple[float, float, float, float]:
    """PNG [x, y, w, h] -> original-pixel (x1, y1, x2, y2)."""
    x, y, w, h = bbox_xywh
    return x / scale_x, y / scale_y, (x + w) / scale_x, (y + h) / scale_y


def prediction_string(dets: list[dict], scale_x: float, scale_y: float, orig_width: int | None = None,
                      orig_height: int | None = None, no_finding: str = "append", normal_score: float | None = None,
                      score_thr: float = 0.0, p_abnormal: float | None = None, low: float = DEFAULT_LOW,
                      high: float = DEFAULT_HIGH, scoring: str = DEFAULT_SCORING) -> str:
    """One image's PredictionString (boxes by descending score, then the class-14 entry per policy).
    P(abnormal): `p_abnormal`, else 1 - `normal_score`, else the image's highest kept box score."""
    if no_finding not in POLICIES:
        raise ValueError(f"no_finding must be one of {', '.join(POLICIES)}, not {no_finding!r}")
    kept = sorted((d for d in dets if d["score"] >= score_thr), key=lambda d: -d["score"])
    if no_finding == "empty_only":
        entry = None if kept else 1.0
    else:
        if p_abnormal is None:
            p_abnormal = 1.0 - normal_score if normal_score is not None else max((d["score"] for d in kept),
                                                                                 default=0.0)
        lo, hi = policy_thresholds(no_finding, low, high)
        kept, entry = image_policy(kept, float(p_abnormal), lo, hi, scoring)
    parts = []
    for det in kept:
        x1, y1, x2, y2 = to_original_xyxy(det["bbox"], scale_x, scale_y)
        if orig_width is not None:
            x1, x2 = min(max(x1, 0), orig_width), min(max(x2, 0), orig_width)
        if orig_height is not None:
            y1, y2 = min(max(y1, 0), orig_height), min(max(y2, 0), orig_height)
        parts.append(f"{int(det['category_id'])} {float(det['score']):.4f} "
                     f"{round(x1)} {round(y1)} {round(x2)} {round(y2)}")
    if entry is not None:
        parts.append(f"{NO_FINDING_ID} 1 0 0 1 1" if no_finding == "empty_only" else
                     f"{NO_FINDING_ID} {float(entry):.4f} 0 0 1 1")
    return " ".join(parts)


def _manifest_by_coco_id(manifest: pd.DataFrame | str | Path, coco_json: str | Path | dict | None) -> dict[int, dict]:
    """{COCO image id: manifest row}. The manifest either has a `coco_id` column (predict step) or
    the COCO file's images give the id -> `image_key` (VinBigData image_id) link."""
    if not isinstance(manifest, pd.DataFrame):
        manifest = read_manifest(manifest)
    rows = manifest.to_dict("records")
    if "coco_id" in manifest.columns:
        return {int(r["coco_id"]): r for r in rows}
    if coco_json is None:
        raise ValueError("the manifest has no coco_id column: pass coco_json to link COCO ids to image_ids")

    by_key = {str(r["image_id"]): r for r in rows}
    out = {}
    for img in load_gt(coco_json)["images"]:
        key = img.get("image_key")
        if key in by_key:
            out[int(img["id"])] = by_key[key]
    return out


def submission_frame(preds: Predictions, manifest: pd.DataFrame | str | Path, no_finding: str = "append",
                     coco_json: str | Path | dict | None = None, normal_scores: Mapping[int, float] | None = None,
                     score_thr: float = 0.0, p_abnormal: Mapping[int, float] | None = None,
                     low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH,
                     scoring: str = DEFAULT_SCORING, classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """The submission as a DataFrame (image_id, PredictionString), one row per predicted image.
    `p_abnormal` {COCO image id: P(abnormal)} (a classifier) must cover every image when given.
    `classes`: the model's classes; the format is VinBigData-only (NotVinBigData otherwise)."""
    require_vinbigdata(classes, "the Kaggle submission (submission.csv)")
    if p_abnormal is not None:
        missing = [i for i in preds.image_ids if i not in p_abnormal]
        if missing:
            raise PredictionFileError(f"predictions {preds.source!r}: no P(abnormal) for image ids {missing[:10]}")
    rows_by_id = _manifest_by_coco_id(manifest, coco_json)
    missing = [i for i in preds.image_ids if i not in rows_by_id]
    if missing:
        raise PredictionFileError(f"predictions {preds.source!r}: image ids {missing[:10]} have no manifest row "
                                  "(wrong manifest or COCO file?)")
    dets_by_image: dict[int, list[dict]] = defaultdict(list)
    for det in preds.detections:
        dets_by_image[det["image_id"]].append(det)
    out = []
    for image_id in preds.image_ids:
        row = rows_by_id[image_id]
        try:
            scale_x, scale_y = float(row["scale_x"]), float(row["scale_y"])
            if not (scale_x > 0 and scale_y > 0):
                raise ValueError
        except (TypeError, ValueError):
            raise PredictionFileError(f"manifest row {row.get('image_id')!r}: invalid scale_x/scale_y "
                                      f"({row.get('scale_x')!r}, {row.get('scale_y')!r})") from None
        orig_w = int(row["orig_width"]) if pd.notna(row.get("orig_width")) else None
        orig_h = int(row["orig_height"]) if pd.notna(row.get("orig_height")) else None
        normal = None if normal_scores is None else normal_scores.get(image_id)
        p = None if p_abnormal is None else p_abnormal[image_id]
        out.append({"image_id": str(row["image_id"]),
                    "PredictionString": prediction_string(dets_by_image[image_id], scale_x, scale_y, orig_w, orig_h,
                                                          no_finding, normal, score_thr, p, low, high,
                                                          scoring)})
    return pd.DataFrame(out, columns=["image_id", "PredictionString"])


def write_submission(preds: Predictions, manifest: pd.DataFrame | str | Path, out_csv: str | Path,
                     no_finding: str = "append", coco_json: str | Path | dict | None = None,
                     normal_scores: Mapping[int, float] | None = None, score_thr: float = 0.0,
                     p_abnormal: Mapping[int, float] | None = None, low: float = DEFAULT_LOW,
                     high: float = DEFAULT_HIGH, scoring: str = DEFAULT_SCORING,
                     classes: Sequence[str] = CLASSES) -> Path:
    """Write the Kaggle CSV atomically; returns its path. See submission_frame for the arguments."""
    frame = submission_frame(preds, manifest, no_finding, coco_json, normal_scores, score_thr, p_abnormal, low, high,
                             scoring, classes)
    out_csv = Path(out_csv)
    with atomic.atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    return out_csv
