"""One benchmark job: a model x fold. fit -> predict the fold's val images -> score -> metrics.json.

A failing job writes `failed.json` (error + traceback) instead of raising, so a sweep goes on and
the report lists it; `fail_fast=true` re-raises instead. A job killed mid-training resumes when rerun:
the detector gets the config hash (only checkpoints of the same config are resumed) and the
progress file it updates every epoch (`progress.json`: the report's unfinished jobs).
"""
from __future__ import annotations

import contextlib
import json
import logging
import platform
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from adapters import get_detector, is_classifier
from adapters.card import protocol_row
from harness import atomic, runpaths, supersede
from harness.eval import evaluate
from harness.jobs import run_settings
from harness.jobs.classifier_job import run_classifier
from harness.jobs.config import config_hash, job_config, model_settings, train_spec
from harness.jobs.data_step import ensure_prepared
from harness.netguard import no_network
from harness.predictions import Predictions
from harness.progress import PROGRESS_FILE
from harness.split import make_split, split_hash
from harness.sweep import KEY_FILE, RunKey, read_run_key
from harness.tta import predict_with_hflip_tta

log = logging.getLogger(__name__)


def finished(run_dir: Path, cfg_hash: str) -> bool:
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return False
    try:
        return json.loads(metrics.read_text()).get("config_hash") == cfg_hash
    except (OSError, json.JSONDecodeError):
        return False


# what an attempt writes in its run dir (never over an earlier attempt's: moved aside first)
RESULT_FILES = ("metrics.json", "predictions.json", "failed.json", "abnormal.json")


def data_changed(cfg: DictConfig, run_dir: Path) -> str | None:
    """Why a run finished with the same config hash is not the same job any more (its data: the
    config hash leaves the data's location out, the split hash stands for its content), or None."""
    try:
        recorded = json.loads((run_dir / "metrics.json").read_text()).get("split_hash")
        dataset = ensure_prepared(cfg.data)
        now = split_hash(dataset.labels, dataset.folds, int(cfg.data.fold))
    except Exception as err:  # noqa: BLE001 - the run itself reports the error, with failed.json
        return f"its data could not be checked ({type(err).__name__}: {err})"
    return None if now == recorded else f"the data changed (split hash {recorded} -> {now})"


def set_aside_earlier_attempt(run_dir: Path, cfg_hash: str, label: str, changed: str | None = None) -> Path:
    """Before an attempt runs: after a config change (or `changed`: why the data differ) every file
    of the earlier attempt, else the result files this attempt rewrites, move to a new
    `<run>/superseded/<time>/` (returned, also for the adapter's fresh start: one folder per attempt)."""
    target = supersede.new_target(run_dir)
    earlier = supersede.earlier_config_hash(run_dir)
    if changed or (earlier is not None and earlier != cfg_hash):
        moved = supersede.move_aside(run_dir, supersede.earlier_attempt_files(run_dir), target)
        why = changed or f"the config changed (config hash {earlier} -> {cfg_hash})"
    else:
        moved = supersede.move_aside(run_dir, [run_dir / name for name in RESULT_FILES], target)
        why = "this attempt rewrites them"
    if moved:
        log.warning("%s: moved %s of the earlier attempt aside to %s (%s; kept, delete with "
                    "`cxr-checkpoints --delete %s`)", label, ", ".join(p.name for p in moved), target, why, target)
    supersede.record_attempt(run_dir, cfg_hash)
    return target


def record_run_key(run_dir: Path, run_key: RunKey | None) -> None:
    """A keyed job folder records its key and swept values (`run_key.json`, read by harness.sweep);
    an existing record is kept when it is the same and refused when it is not."""
    if run_key is None or not run_key.key:
        return
    path = run_dir / KEY_FILE
    if path.is_file():
        if read_run_key(run_dir).as_json() == run_key.as_json():
            return
        raise FileExistsError(f"{path} records another run key than {run_key.as_json()}; "
                              "this folder belongs to another job: use another sweep=")
    atomic.write_json(path, run_key.as_json())


def architecture_facts(detector) -> dict | None:
    """What the detector's built model is, by category (the general adapters' `architecture_facts`:
    adapters.archfacts), for the report's differences between frameworks; None for adapters that
    have none. A failure to read them is recorded as such (the report says so) and does not fail
    the trained run."""
    read = getattr(detector, "architecture_facts", None)
    if read is None:
        return None
    try:
        return read()
    except Exception as err:  # noqa: BLE001 - a trained run is kept; the report states what is missing
        log.warning("%s: architecture facts not read: %s", detector.name, err)
        return {"unavailable": f"{type(err).__name__}: {err}"}


def run_train_job(cfg: DictConfig, run_dir: str | Path, run_key: RunKey | None = None) -> dict:
    """Run (or skip, when finished with the same config) one model x fold job in `run_dir`; a job of a
    multirun that sweeps more than models and folds records its `run_key` there."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_run_key(run_dir, run_key)
    cfg_hash = config_hash(cfg)
    name, variant, _ = model_settings(cfg)
    fold = int(cfg.data.fold)
    changed = None
    if cfg.skip_finished and finished(run_dir, cfg_hash):
        changed = data_changed(cfg, run_dir)
        if changed is None:
            log.info("%s fold %d: finished earlier with the same config, skipping (same data; %s)", name, fold,
                     run_dir)
            return json.loads((run_dir / "metrics.json").read_text())
        log.warning("%s fold %d: finished earlier with the same config, but %s: running it again", name, fold,
                    changed)
    target = set_aside_earlier_attempt(run_dir, cfg_hash, f"{name} fold {fold}", changed)
    try:
        return _run(cfg, run_dir, cfg_hash, target)
    except Exception as err:
        atomic.write_json(run_dir / "failed.json", {
            "model": name, "variant": variant, "fold": fold, "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(), "config_hash": cfg_hash,
        })
        log.error("%s fold %d FAILED: %s: %s (details in %s)", name, fold, type(err).__name__, err,
                  run_dir / "failed.json")
        if cfg.fail_fast:
            raise
        return {"failed": True, "model": name, "fold": fold, "error": str(err)}


def _run(cfg: DictConfig, run_dir: Path, cfg_hash: str, superseded_to: Path) -> dict:
    if is_classifier(cfg.model.name):  # the "No finding" stage's classifier: P(abnormal), not boxes
        return run_classifier(cfg, run_dir, cfg_hash, superseded_to)
    spec = train_spec(cfg)
    name = cfg.model.name
    fold = int(cfg.data.fold)
    dataset = ensure_prepared(cfg.data)
    split = make_split(dataset.labels, dataset.folds, fold, run_dir)
    val_images = split.images("val")
    log.info("%s (%s) fold %d: %d train / %d val images, split %s", name, spec.variant, fold,
             len(split.images("train")), len(val_images), split.split_hash)
    detector = get_detector(name, spec)
    detector.run_key = cfg_hash  # checkpoints of another config are never resumed
    detector.progress_path = run_dir / PROGRESS_FILE
    detector.superseded_to = superseded_to  # a fresh start's checkpoints beside this attempt's other files
    native = run_dir / "native"
    settings = run_settings.current(cfg)
    previous_settings = run_settings.swap(run_dir, settings)
    guard = no_network() if cfg.offline_guard else contextlib.nullcontext()
    with guard:
        started = time.perf_counter()
        checkpoint = detector.fit(split, native)
        train_time = time.perf_counter() - started
        started = time.perf_counter()
        if cfg.tta_hflip:
            detections = predict_with_hflip_tta(detector, checkpoint, val_images, native / "tta")
        else:
            detections = detector.predict(checkpoint, val_images, native)
        predict_time = time.perf_counter() - started
    source = f"{name}:{spec.variant}"
    preds = Predictions(source, split.split_hash, [img.id for img in val_images], detections)
    preds.validate(run_dir / "predictions.json", len(spec.classes))  # ids of the label set trained on
    preds.save(run_dir / "predictions.json")
    scores = evaluate(split.val_json, preds)
    metrics = {
        "source": source, "model": name, "variant": spec.variant, "fold": fold,
        "split_hash": split.split_hash, "config_hash": cfg_hash,
        "sweep_config_hash": config_hash(cfg, with_fold=False), **scores,
        "train_time_s": round(train_time, 2), "predict_time_s": round(predict_time, 2),
        "checkpoint": runpaths.store(checkpoint, run_dir) if checkpoint else None,  # relative: a moved sweep works
        "device": spec.device, "host": platform.node(), "versions": detector.versions(),
        "train_consumed": detector.consumed,
        "init": detector.init,
        "resumed": detector.resumed,
        "run_settings": settings,
        "resumed_with_other_run_settings": run_settings.resumed_elsewhere(previous_settings, settings,
                                                                          detector.resumed, f"{name} fold {fold}"),
        "failed_images": [{"path": path, "reason": reason} for path, reason in detector.failed_images],
        "protocol": [*detector.protocol(tta=bool(cfg.tta_hflip)),
                     protocol_row("split_hash", "split (fold file + labels hash)", split.split_hash, scope="shared",
                                  source="applied", read_from="the split files the harness wrote (harness.split)")],
        "config": runpaths.store_config(job_config(cfg), run_dir, OmegaConf.select(cfg, "paths.root")),
    }
    facts = architecture_facts(detector)
    if facts is not None:
        metrics["architecture_facts"] = facts
    atomic.write_json(run_dir / "metrics.json", metrics)
    log.info("%s fold %d: mAP@0.4 %.4f (VOC %.4f), train %.0f s, predict %.0f s -> %s", name, fold,
             metrics["map40"], metrics.get("voc_map40", float("nan")), train_time, predict_time, run_dir)
    return metrics

