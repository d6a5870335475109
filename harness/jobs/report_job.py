"""The report step: tables, charts and overlays for a whole sweep (models, folds, ensembles)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from harness import runpaths
from harness.jobs.settings import analysis_settings, bootstrap_settings, froc_settings, nofinding_settings
from harness.predictions import Predictions
from harness.report import build_report, write_overlays
from harness.sweep import model_runs

log = logging.getLogger(__name__)


def _overlay_sources(sweep_dir: Path) -> list[tuple[str, Path, Path, Path]]:
    """(name, predictions, val COCO, dataset root) for the first fold of each model and ensemble (of
    each run key: a keyed run's overlay folder is `<model>-<key>-fold<k>`)."""
    sources = []
    runs = model_runs(sweep_dir)
    if not runs:
        return sources
    first_fold = min(run.fold for run in runs)
    for run in runs:
        if run.fold == first_fold:
            sources.append((_overlay_name(run.model, run.key, first_fold), run.predictions, run.val_json, run.path))
    for key in sorted({run.key for run in runs}):
        member = next((r for r in runs if r.fold == first_fold and r.key == key), None)
        pattern = f"*/{key}/fold{first_fold}" if key else f"*/fold{first_fold}"
        for ens_dir in sorted((sweep_dir / "ensemble").glob(pattern)):
            name = ens_dir.parent.parent.name if key else ens_dir.parent.name
            if member and (ens_dir / "predictions.json").is_file():
                sources.append((_overlay_name(f"ensemble-{name}", key, first_fold), ens_dir / "predictions.json",
                                member.val_json, member.path))
    return sources


def _overlay_name(name: str, key: str, fold: int) -> str:
    return f"{name}-{key}-fold{fold}" if key else f"{name}-fold{fold}"


def run_report(cfg: DictConfig, out_dir: str | Path) -> dict:
    sweep_dir, out_dir = Path(cfg.sweep_dir), Path(out_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist (sweep={cfg.sweep})")
    paths = build_report(sweep_dir, out_dir, bootstrap=bootstrap_settings(cfg.report.get("bootstrap")),
                         reader_reference=bool(cfg.report.get("reader_reference", True)),
                         nofinding=nofinding_settings(cfg.get("nofinding")),
                         analysis=analysis_settings(cfg.report.get("analysis")),
                         froc=froc_settings(cfg.report.get("froc")))
    if cfg.report.overlays:
        for name, preds_path, val_json, run_dir in _overlay_sources(sweep_dir):
            write_overlays(Predictions.load(preds_path), val_json, _image_root(run_dir), out_dir / "overlays" / name,
                           n=int(cfg.report.overlays), score_thr=float(cfg.report.overlay_score_thr))
        paths["overlays"] = out_dir / "overlays"
    if cfg.get("logger") and cfg.logger.get("name") == "mlflow":
        from harness.tracking import log_sweep

        paths["mlflow"] = log_sweep(sweep_dir, out_dir, cfg.logger.get("tracking_uri"), cfg.logger.get("experiment"))
    return paths


def _image_root(run_dir: Path) -> Path:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return runpaths.resolve(metrics["config"]["data"]["prepared_dir"], run_dir)
