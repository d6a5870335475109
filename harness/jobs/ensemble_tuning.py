"""Ensemble settings chosen on out-of-fold predictions, nested (`hparams_search=wbf_optuna`).

    cxr-ensemble hparams_search=wbf_optuna sweep=bench tune.scored_fold=0

For the scored fold k, Hydra's Optuna sweeper runs `hydra.sweeper.n_trials` trials. Each trial is one
cxr-ensemble job (`trial_objective`): it fuses the sweep's model predictions of every fold except k
with the trial's settings (WBF iou_thr, skip_box_thr, per-model weights, ...) and returns their mean
score over those folds (`tune.metric`, default mAP@0.4). Fold k's predictions and ground truth are
never opened while tuning; each trial records the files and image ids it read (`trial.json`).

When the study ends, a Hydra callback (`ApplyTunedSettings`) fuses fold k once with the best trial's
settings and once with the default ones (the config's `ensemble` without the sweeper's params),
scores both on fold k and writes `<sweep>/ensemble/<method>-tuned/fold<k>/` (predictions.json,
metrics.json with a `tuning` record: tuned vs default on fold k). The report lists those rows and a
"tuned vs default" table. Run it once per fold; since every fold's settings come from the other
folds, the gain over the defaults is not fitted to the fold it is measured on.
"""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import atomic, supersede
from harness.ensemble import image_sizes_from_coco
from harness.eval import coco_map, evaluate, voc_map
from harness.eval.coco_map import load_gt
from harness.jobs.config import ConfigError, to_plain
from harness.jobs.ensemble_job import fold_members, fuse_members, member_weights
from harness.predictions import Predictions
from harness.sweep import ModelRun

log = logging.getLogger(__name__)

METRICS = {"map40": "pycocotools mAP@0.4", "voc_map40": "Kaggle VOC mAP@0.4"}
TRIAL_FILE = "trial.json"
RESULTS_FILE = "optimization_results.yaml"  # written by the Optuna sweeper into its sweep dir
TUNED_SUFFIX = "-tuned"

# Files are read once per process (the sweeper's trials run in one process with the basic launcher):
# path -> (mtime_ns, value); every actual read is appended to READS.
_CACHE: dict[Path, tuple[int, Any]] = {}
READS: list[str] = []


def _read(path: Path, loader) -> Any:
    path = Path(path).resolve()
    stamp = path.stat().st_mtime_ns
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    READS.append(str(path))
    value = loader(path)
    _CACHE[path] = (stamp, value)
    return value


def _load_gt(path: Path) -> dict:
    return load_gt(path)


def tuning_folds(folds: list[int], scored_fold: int) -> list[int]:
    """The folds whose predictions tune the settings for `scored_fold`: all others."""
    if scored_fold not in folds:
        raise ConfigError(f"tune.scored_fold={scored_fold}: the sweep has finished model runs on folds {folds} only")
    others = [fold for fold in folds if fold != scored_fold]
    if not others:
        raise ConfigError(f"tune.scored_fold={scored_fold}: nested tuning needs model runs on at least one other "
                          f"fold (found folds {folds})")
    return others


def settings(ens: DictConfig | dict, members: list[ModelRun]) -> dict:
    """The fusion settings that matter, as recorded in trial.json and metrics.json."""
    ens = to_plain(ens) if isinstance(ens, DictConfig) else ens
    return {"method": ens["method"], "iou_thr": float(ens["iou_thr"]), "skip_box_thr": float(ens["skip_box_thr"]),
            "conf_type": ens["conf_type"],
            "weights": dict(zip([run.model for run in members], member_weights(ens, members)))}


def score_fold(ens: DictConfig | dict, members: list[ModelRun], metric: str) -> tuple[float, Predictions, dict]:
    """(score, fused predictions, ground truth) of one fold's members fused with `ens`."""
    preds = [_read(run.predictions, Predictions.load) for run in members]
    gt = _read(members[0].val_json, _load_gt)
    fused = fuse_members(ens, members, preds, image_sizes_from_coco(gt), progress=False)
    value = coco_map(gt, fused)["map40"] if metric == "map40" else voc_map(gt, fused, 0.4)["map"]
    return float(value), fused, gt


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"tune.metric={metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def _fusable(by_fold: dict[int, list[ModelRun]]) -> dict[int, list[ModelRun]]:
    return {fold: members for fold, members in by_fold.items() if len(members) >= 2}


def trial_objective(cfg: DictConfig, out_dir: str | Path) -> float:
    """One Optuna trial: mean `tune.metric` over the folds other than `tune.scored_fold`, each fused
    with this job's ensemble settings. Writes `trial.json` (settings, per-fold scores, the files
    and image ids read) into `out_dir` and returns the mean (what the sweeper maximises)."""
    metric = _check_metric(str(cfg.tune.metric))
    scored = int(cfg.tune.scored_fold)
    by_fold = _fusable(fold_members(cfg))
    folds = tuning_folds(sorted(by_fold), scored)
    reads_before = len(READS)
    scores, image_ids, files = {}, [], []
    for fold in folds:
        members = by_fold[fold]
        scores[fold], fused, _ = score_fold(cfg.ensemble, members, metric)
        image_ids += list(fused.image_ids)
        files += [str(run.predictions.resolve()) for run in members] + [str(members[0].val_json.resolve())]
    value = sum(scores.values()) / len(scores)
    record = {"scored_fold": scored, "tuning_folds": folds, "metric": metric, "objective": value,
              "scores": {str(fold): s for fold, s in scores.items()},
              "settings": settings(cfg.ensemble, by_fold[folds[0]]),
              "files": files, "files_read_now": READS[reads_before:], "image_ids": image_ids}
    atomic.write_json(Path(out_dir) / TRIAL_FILE, record)
    log.info("tuning for fold %d on folds %s: %s %.4f with iou_thr %.3f, skip_box_thr %.4f, weights %s", scored,
             folds, metric, value, record["settings"]["iou_thr"], record["settings"]["skip_box_thr"],
             record["settings"]["weights"])
    return value


def tuned_config(cfg: DictConfig, best_params: dict) -> DictConfig:
    """`cfg` with the study's best params applied (keys as the sweeper names them, e.g. ensemble.iou_thr)."""
    tuned = copy.deepcopy(cfg)
    OmegaConf.set_struct(tuned, False)
    for key, value in best_params.items():
        if not str(key).startswith("ensemble."):
            raise ConfigError(f"hydra.sweeper.params.{key}: only ensemble.* settings can be tuned here")
        OmegaConf.update(tuned, str(key), value, force_add=True)
    return tuned


def apply_tuned(cfg: DictConfig, study_dir: str | Path) -> dict:
    """After the study: score `tune.scored_fold` with the best trial's settings and with the defaults,
    write <sweep>/ensemble/<method>-tuned/fold<k>/ and return its metrics."""
    study_dir = Path(study_dir)
    metric = _check_metric(str(cfg.tune.metric))
    scored = int(cfg.tune.scored_fold)
    results_path = study_dir / RESULTS_FILE
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path}: the Optuna sweeper wrote no results (did the study run?)")
    results = to_plain(OmegaConf.load(results_path))
    best_params = dict(results["best_params"])
    trials = _trials(study_dir)
    by_fold = _fusable(fold_members(cfg))
    folds = tuning_folds(sorted(by_fold), scored)
    members = by_fold[scored]
    default_value, default_fused, _ = score_fold(cfg.ensemble, members, metric)
    tuned = tuned_config(cfg, best_params)
    tuned_value, fused, gt = score_fold(tuned.ensemble, members, metric)
    leaked = set(fused.image_ids) & {i for trial in trials for i in trial["image_ids"]}
    if leaked:  # never expected: the objective only lists the other folds
        raise RuntimeError(f"tuning for fold {scored} read its own images {sorted(leaked)[:5]} ({study_dir})")
    name = f"{cfg.ensemble.method}{TUNED_SUFFIX}"
    fused.source = f"ensemble:{name}"
    out = Path(cfg.sweep_dir) / "ensemble" / name / f"fold{scored}"
    supersede.move_aside(out, [out / "predictions.json", out / "metrics.json"], supersede.new_target(out))
    fused.save(out / "predictions.json")
    scores = evaluate(gt, fused)
    default_scores = evaluate(gt, default_fused)
    record = {
        "scored_fold": scored, "tuned_on_folds": folds, "metric": metric, "n_trials": len(trials),
        "objective": float(results["best_value"]), "best_params": best_params,
        "tuned": {"settings": settings(tuned.ensemble, members), metric: tuned_value,
                  "map40": scores["map40"], "voc_map40": scores["voc_map40"]},
        "default": {"settings": settings(cfg.ensemble, members), metric: default_value,
                    "map40": default_scores["map40"], "voc_map40": default_scores["voc_map40"]},
        "gain": tuned_value - default_value, "study_dir": str(study_dir),
        "tuning_image_ids": len({i for trial in trials for i in trial["image_ids"]}),
    }
    metrics = {
        "source": fused.source, "model": "ensemble", "variant": name, "fold": scored,
        "split_hash": fused.split_hash, "members": [run.model for run in members],
        "val_json": str(members[0].val_json), "weights": member_weights(tuned.ensemble, members), **scores,
        "config": to_plain(tuned.ensemble), "tuning": record,
    }
    atomic.write_json(out / "metrics.json", metrics)
    log.info("fold %d: settings tuned on folds %s (%d trials, %s %.4f there): %s; on fold %d %s %.4f tuned vs "
             "%.4f default (%+.4f) -> %s", scored, folds, len(trials), metric, record["objective"], best_params,
             scored, metric, tuned_value, default_value, record["gain"], out)
    return metrics


def _trials(study_dir: Path) -> list[dict]:
    found = []
    for path in sorted(study_dir.glob(f"*/{TRIAL_FILE}")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: unreadable trial record: {err}") from err
    return found


def gain_summary(records: list[dict]) -> dict:
    """Mean tuned, default and gain over the scored folds' tuning records."""
    n = len(records)
    if not n:
        return {"n_folds": 0, "tuned": math.nan, "default": math.nan, "gain": math.nan}
    metric = records[0]["metric"]
    return {"n_folds": n, "metric": metric,
            "tuned": sum(r["tuned"][metric] for r in records) / n,
            "default": sum(r["default"][metric] for r in records) / n,
            "gain": sum(r["gain"] for r in records) / n}


try:  # the Hydra callback that runs apply_tuned when the Optuna study ends
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a core dependency
    Callback = object  # type: ignore[misc,assignment]


class ApplyTunedSettings(Callback):
    """`hydra.callbacks` entry of conf/hparams_search/wbf_optuna.yaml."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # a new study (in-memory storage): an earlier study's trial records must not be counted, and
        # are kept: everything it left moves to <study>/superseded/<time>/ (deleted only by cxr-checkpoints)
        study_dir = Path(config.hydra.sweep.dir)
        target = supersede.new_target(study_dir)
        moved = supersede.move_aside(study_dir, supersede.earlier_attempt_files(study_dir), target)
        if moved:
            log.warning("ensemble tuning: a new study: moved the earlier study's %d file(s)/folder(s) aside to %s "
                        "(kept; delete with `cxr-checkpoints --delete %s`)", len(moved), target, target)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        apply_tuned(config, config.hydra.sweep.dir)
