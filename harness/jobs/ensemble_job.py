"""The ensemble step: per fold, fuse every model's val predictions of a sweep (WBF & co.) and
score the result exactly like a model run, so the ensemble is just more rows of the table."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from harness import atomic
from harness.ensemble import fuse_predictions
from harness.eval import evaluate
from harness.jobs.config import ConfigError, to_plain
from harness.predictions import Predictions
from harness.sweep import ModelRun, model_runs

log = logging.getLogger(__name__)

METHODS = ("wbf", "nms", "soft_nms", "nmw")


def image_sizes(coco_json: Path) -> dict[int, tuple[int, int]]:
    coco = json.loads(Path(coco_json).read_text())
    return {img["id"]: (img["width"], img["height"]) for img in coco["images"]}


def fold_members(cfg: DictConfig) -> dict[int, list[ModelRun]]:
    """{fold: finished model runs of the sweep on that fold} for the models `ensemble.models` names
    (all when null). Only lists run folders; reads no predictions."""
    ens = cfg.ensemble
    if ens.method not in METHODS:
        raise ConfigError(f"ensemble.method={ens.method!r}; choose one of {', '.join(METHODS)}")
    runs = model_runs(cfg.sweep_dir)
    wanted = set(to_plain(ens.models) or [])
    if wanted:
        runs = [run for run in runs if run.model in wanted]
    if not runs:
        raise FileNotFoundError(f"no finished model runs (<model>/fold<k>/metrics.json) under {cfg.sweep_dir}")
    return {fold: [run for run in runs if run.fold == fold] for fold in sorted({run.fold for run in runs})}


def member_weights(ens: DictConfig | dict, members: list[ModelRun]) -> list[float]:
    weights_by_model = to_plain(ens["weights"]) or {}
    return [float(weights_by_model.get(run.model, 1.0)) for run in members]


def fuse_members(ens: DictConfig | dict, members: list[ModelRun], preds: list[Predictions],
                 sizes: dict[int, tuple[int, int]], progress: bool = True) -> Predictions:
    """The members' predictions of one fold fused with the `ensemble` settings `ens`."""
    return fuse_predictions(
        preds, sizes, method=ens["method"], iou_thr=float(ens["iou_thr"]), skip_box_thr=float(ens["skip_box_thr"]),
        weights=member_weights(ens, members), conf_type=ens["conf_type"],
        names=[str(run.predictions) for run in members], progress=progress,
    )


def max_per_image(detections: list[dict]) -> int:
    """The most detections any one image has."""
    counts: dict[int, int] = {}
    for det in detections:
        counts[det["image_id"]] = counts.get(det["image_id"], 0) + 1
    return max(counts.values(), default=0)


def run_ensemble(cfg: DictConfig, out_dir: str | Path) -> list[dict]:
    ens = cfg.ensemble
    out_dir = Path(out_dir)
    results = []
    for fold, members in fold_members(cfg).items():
        names = [run.model for run in members]
        if len(members) < 2:
            log.warning("fold %d: only %s finished, nothing to fuse", fold, names)
            continue
        preds = [Predictions.load(run.predictions) for run in members]
        fused = fuse_members(ens, members, preds, image_sizes(members[0].val_json))
        fused.source = f"ensemble:{ens.name}"
        fold_dir = out_dir / f"fold{fold}"
        fused.save(fold_dir / "predictions.json")
        scores = evaluate(members[0].val_json, fused)
        metrics = {
            "source": fused.source, "model": "ensemble", "variant": str(ens.name), "fold": fold,
            "split_hash": fused.split_hash, "members": names, "val_json": str(members[0].val_json),
            "weights": member_weights(ens, members), **scores,
            # fusion is not re-capped: the union of the members' boxes can exceed their max_det
            "max_det_observed": max_per_image(fused.detections),
            "config": to_plain(ens),
        }
        atomic.write_json(fold_dir / "metrics.json", metrics)
        log.info("ensemble %s fold %d of %s: mAP@0.4 %.4f", ens.name, fold, ", ".join(names), metrics["map40"])
        results.append(metrics)
    return results
