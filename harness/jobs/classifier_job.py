"""The classifier kind of job (a `model=classifier` x fold): fit the normal/abnormal classifier on
the fold's train images -> P(abnormal) for its val images -> `abnormal.json` and `metrics.json`
(AUC, accuracy, sensitivity/specificity at 0.5 and at `nofinding.low/high`).

It runs inside `run_train_job`, so skipping finished jobs, `failed.json`, the offline guard and
resuming are the detectors' own. The val images' P(abnormal) over all folds of a sweep are the
out-of-fold predictions the report's policies and threshold sweep use.
"""
from __future__ import annotations

import contextlib
import json
import logging
import platform
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from adapters import get_detector
from harness import atomic, runpaths
from harness.jobs import run_settings
from harness.jobs.config import ConfigError, data_label_set, job_config, train_spec
from harness.jobs.data_step import ensure_prepared
from harness.jobs.settings import nofinding_settings
from harness.netguard import no_network
from harness.nofinding import AbnormalScores, abnormal_labels, classifier_metrics
from harness.progress import PROGRESS_FILE
from harness.split import make_split

log = logging.getLogger(__name__)

SCORES_FILE = "abnormal.json"


def run_classifier(cfg: DictConfig, run_dir: Path, cfg_hash: str, superseded_to: Path | None = None) -> dict:
    labels = data_label_set(cfg.data)
    if not labels.has_no_finding:
        raise ConfigError(f"model=classifier: the 'No finding' classifier stage is VinBigData-only; data={cfg.data.name} "
                          f"(label set {labels.name}) has no 'No finding' class")
    spec = train_spec(cfg)
    name, fold = cfg.model.name, int(cfg.data.fold)
    stage = nofinding_settings(cfg.get("nofinding"))
    dataset = ensure_prepared(cfg.data)
    split = make_split(dataset.labels, dataset.folds, fold, run_dir)
    val_images = split.images("val")
    classifier = get_detector(name, spec)
    classifier.run_key = cfg_hash
    classifier.progress_path = run_dir / PROGRESS_FILE
    classifier.superseded_to = superseded_to
    log.info("classifier (%s) fold %d: %d train / %d val images, split %s", spec.variant, fold,
             len(split.images("train")), len(val_images), split.split_hash)
    settings = run_settings.current(cfg)
    previous_settings = run_settings.swap(run_dir, settings)
    guard = no_network() if cfg.offline_guard else contextlib.nullcontext()
    with guard:
        started = time.perf_counter()
        checkpoint = classifier.fit(split, run_dir / "native")
        train_time = time.perf_counter() - started
        started = time.perf_counter()
        p_abnormal = classifier.predict(checkpoint, val_images, run_dir / "native")
        predict_time = time.perf_counter() - started
    source = f"{name}:{spec.variant}"
    AbnormalScores(source, split.split_hash, p_abnormal).save(run_dir / SCORES_FILE)
    labels = abnormal_labels(json.loads(Path(split.val_json).read_text()))
    metrics = {
        "kind": "classifier", "source": source, "model": name, "variant": spec.variant, "fold": fold,
        "split_hash": split.split_hash, "config_hash": cfg_hash,
        **classifier_metrics(labels, p_abnormal, stage.low, stage.high),
        "train_time_s": round(train_time, 2), "predict_time_s": round(predict_time, 2),
        "checkpoint": runpaths.store(checkpoint, run_dir), "scores": SCORES_FILE,
        "device": spec.device, "host": platform.node(), "versions": classifier.versions(),
        "train_consumed": classifier.consumed, "init": classifier.init, "resumed": classifier.resumed,
        "run_settings": settings, "resumed_with_other_run_settings": run_settings.resumed_elsewhere(
            previous_settings, settings, classifier.resumed, f"classifier fold {fold}"),
        "recipe": classifier.recipe, "weights": spec.weights_name or spec.weights or "scratch",
        "failed_images": [{"path": path, "reason": reason} for path, reason in classifier.failed_images],
        "config": runpaths.store_config(job_config(cfg), run_dir, OmegaConf.select(cfg, "paths.root")),
    }
    atomic.write_json(run_dir / "metrics.json", metrics)
    auc = metrics["auc"]
    log.info("classifier %s fold %d: AUC %s, accuracy %.3f, train %.0f s -> %s", spec.variant, fold,
             "n/a" if auc is None else f"{auc:.3f}", metrics["accuracy"] or 0.0, train_time, run_dir)
    return metrics
