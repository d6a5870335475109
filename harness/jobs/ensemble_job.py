"""The ensemble step: per fold, fuse every model's val predictions of a sweep (WBF & co.) and
score the result exactly like a model run, so the ensemble is just more rows of the table.

A sweep whose jobs carry run keys (a multirun over more than models and folds, harness.sweep) gets one
ensemble per key: the models that ran with the same swept values on a fold are fused, written to
`ensemble/<name>/<key>/fold<k>/` (with the key's run_key.json); models of different keys are never fused."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from harness import atomic, supersede
from harness.ensemble import fuse_predictions
from harness.eval import evaluate
from harness.jobs.config import ConfigError, to_plain
from harness.predictions import Predictions
from harness.sweep import KEY_FILE, ModelRun, model_runs

log = logging.getLogger(__name__)

METHODS = ("wbf", "nms", "soft_nms", "nmw")


def image_sizes(coco_json: Path) -> dict[int, tuple[int, int]]:
    coco = json.loads(Path(coco_json).read_text())
    return {img["id"]: (img["width"], img["height"]) for img in coco["images"]}


def key_fold_members(cfg: DictConfig) -> dict[str, dict[int, list[ModelRun]]]:
    """{run key: {fold: finished model runs of the sweep with that key on that fold}} for the models
    `ensemble.models` names (all when null); key "" = runs without a key. Reads no predictions."""
    ens = cfg.ensemble
    if ens.method not in METHODS:
        raise ConfigError(f"ensemble.method={ens.method!r}; choose one of {', '.join(METHODS)}")
    runs = model_runs(cfg.sweep_dir)
    wanted = set(to_plain(ens.models) or [])
    if wanted:
        runs = [run for run in runs if run.model in wanted]
    if not runs:
        raise FileNotFoundError(f"no finished model runs (<model>/fold<k>/metrics.json) under {cfg.sweep_dir}")
    out: dict[str, dict[int, list[ModelRun]]] = {}
    for run in runs:
        out.setdefault(run.key, {}).setdefault(run.fold, []).append(run)
    return {key: dict(sorted(by_fold.items())) for key, by_fold in sorted(out.items())}


def fold_members(cfg: DictConfig) -> dict[int, list[ModelRun]]:
    """{fold: finished model runs of the sweep on that fold} (see key_fold_members) for a sweep without
    run keys; a sweep with several keys is refused (which key's models would be meant is not known)."""
    by_key = key_fold_members(cfg)
    if len(by_key) > 1:
        raise ConfigError(f"the sweep {cfg.sweep_dir} holds runs of {len(by_key)} run keys "
                          f"({', '.join(k or '(none)' for k in by_key)}); tuning an ensemble takes one: "
                          "copy that key's runs into a sweep of their own")
    return next(iter(by_key.values()))


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
    """Fuse and score every fold (of every run key) with two or more finished models."""
    out_dir = Path(out_dir)
    results = []
    for key, by_fold in key_fold_members(cfg).items():
        results += _run_key_ensemble(cfg, by_fold, out_dir / key if key else out_dir)
    return results


def set_aside_other_fusion(fold_dir: Path, fused: Predictions, where: str) -> None:
    """An earlier ensemble result in `fold_dir` is rewritten only when it holds the same fused boxes; else
    its predictions.json and metrics.json move to `<fold_dir>/superseded/<time>/` (never overwritten)."""
    earlier = fold_dir / "predictions.json"
    if not earlier.is_file():
        return
    try:
        same = Predictions.load(earlier).detections == fused.detections
    except Exception:  # noqa: BLE001 - an unreadable earlier file is kept aside, not judged
        same = False
    if same:
        return
    target = supersede.new_target(fold_dir)
    moved = supersede.move_aside(fold_dir, [fold_dir / "predictions.json", fold_dir / "metrics.json"], target)
    log.warning("ensemble %s: the earlier fusion differs; moved %s aside to %s (kept; delete with "
                "`cxr-checkpoints --delete %s`)", where, ", ".join(p.name for p in moved), target, target)


def _run_key_ensemble(cfg: DictConfig, by_fold: dict[int, list[ModelRun]], out_dir: Path) -> list[dict]:
    ens = cfg.ensemble
    results = []
    for fold, members in by_fold.items():
        names = [run.model for run in members]
        run_key = members[0].run_key
        where = f"fold {fold}" + (f" of {run_key.label()}" if run_key.key else "")
        if len(members) < 2:
            log.warning("%s: only %s finished, nothing to fuse", where, names)
            continue
        preds = [Predictions.load(run.predictions) for run in members]
        fused = fuse_members(ens, members, preds, image_sizes(members[0].val_json))
        fused.source = f"ensemble:{ens.name}"
        fold_dir = out_dir / f"fold{fold}"
        set_aside_other_fusion(fold_dir, fused, where)
        if run_key.key:
            atomic.write_json(fold_dir / KEY_FILE, run_key.as_json())
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
        log.info("ensemble %s %s of %s: mAP@0.4 %.4f", ens.name, where, ", ".join(names), metrics["map40"])
        results.append(metrics)
    return results
