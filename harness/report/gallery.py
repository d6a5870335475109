"""The worst-image gallery: the images where the models make the most errors (missed + false boxes at
the analysis' score threshold, summed over every model and ensemble), each drawn once per model with
its ground truth (harness.report.overlays.draw_overlay), for side-by-side viewing in index.html.

Files: analysis/gallery/<rank>-<image key>/<model>.png and analysis/gallery/gallery.csv (the ranking).
An image that cannot be read is logged and skipped; the rest of the gallery is still drawn.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from harness import atomic, runpaths
from harness.eval.coco_map import load_gt
from harness.report.overlays import draw_overlay, read_gray

log = logging.getLogger(__name__)


def slugify(name: str) -> str:
    """A run's name as a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or "run"


def rank_images(per_image: pd.DataFrame, n: int) -> pd.DataFrame:
    """(fold, image_id, errors, fp, fn) of the `n` images with the most errors over all models; ties by
    fold and image id."""
    if per_image.empty or n <= 0:
        return pd.DataFrame(columns=["fold", "image_id", "errors", "fp", "fn"])
    total = per_image.groupby(["fold", "image_id"], as_index=False)[["errors", "fp", "fn"]].sum()
    total = total[total["errors"] > 0].sort_values(["errors", "fold", "image_id"], ascending=[False, True, True])
    return total.head(n).reset_index(drop=True)


def _image_root(run_dir: Path) -> Path | None:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return runpaths.resolve(metrics["config"]["data"]["prepared_dir"], run_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_gallery(analysis, out_dir: Path) -> dict[str, Path]:
    """Draw the gallery of `analysis` (a harness.report.analysis.SweepAnalysis) into out_dir."""

    ranked = rank_images(analysis.per_image, analysis.settings.gallery)
    if ranked.empty:
        return {}
    thr = analysis.settings.score_thr
    roots = [root for root in (_image_root(r.path) for r in analysis.runs if r.kind == "model") if root is not None]
    written: dict[str, Path] = {}
    rows = []
    gts: dict[str, dict] = {}
    for rank, item in enumerate(ranked.itertuples(), start=1):
        runs = [r for r in analysis.runs if r.fold == item.fold and item.image_id in set(r.table.image_ids)]
        if not runs:
            continue
        gt = gts.setdefault(str(runs[0].gt_path), load_gt(runs[0].gt_path))
        image = next((img for img in gt["images"] if img["id"] == item.image_id), None)
        path = next((root / image["file_name"] for root in roots if image and (root / image["file_name"]).is_file()), None)
        if path is None:
            log.error("gallery: no readable image for image id %s (%s)", item.image_id, image and image["file_name"])
            continue
        pixels = read_gray(path)
        key = str(image.get("image_key", item.image_id))
        folder = out_dir / f"{rank:02d}-{slugify(key)}"
        boxes = [a for a in gt["annotations"] if a["image_id"] == item.image_id]
        for run in runs:
            counts = analysis.per_image[(analysis.per_image["name"] == run.name) & (analysis.per_image["fold"] == run.fold)
                                        & (analysis.per_image["image_id"] == item.image_id)].iloc[0]
            dets = [d for d in run.preds.detections if d["image_id"] == item.image_id and d["score"] >= thr]
            title = f"{run.name}: {counts.tp} TP, {counts.fp} FP, {counts.fn} missed (score ≥ {thr:g})"
            png = draw_overlay(pixels, boxes, dets, title, folder / f"{slugify(run.name)}.png")
            written[f"gallery_{rank}_{slugify(run.name)}"] = png
            rows.append({"rank": rank, "image_key": key, "fold": item.fold, "image_id": item.image_id,
                         "name": run.name, "tp": counts.tp, "fp": counts.fp, "fn": counts.fn,
                         "png": str(png.relative_to(out_dir))})
    if rows:
        path = out_dir / "gallery.csv"
        with atomic.atomic_path(path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        written["gallery_csv"] = path
    return written
