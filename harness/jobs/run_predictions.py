"""Trained runs predicting images: each run's detector from its own recorded config and checkpoint,
several runs fused with the `ensemble` settings (used by `cxr-predict` for new images and for an
external dataset)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from omegaconf import DictConfig

from adapters import get_detector
from harness.ensemble import fuse_predictions
from harness.jobs.config import to_plain, train_spec
from harness.netguard import no_network
from harness.predictions import Predictions
from harness.split import ImageRef

log = logging.getLogger(__name__)


def predict_with_runs(cfg: DictConfig, runs: list[tuple[DictConfig, dict]], run_dirs: list[Path],
                      images: list[ImageRef], out_dir: Path) -> Predictions:
    """Every run's checkpoint predicts `images`; several runs are fused with the `ensemble` settings."""
    log.info("predicting %d images with %d run(s)", len(images), len(runs))
    all_preds = []
    for (run_cfg, metrics), run_dir in zip(runs, run_dirs):
        detector = get_detector(run_cfg.model.name, train_spec(run_cfg))
        with no_network() if cfg.offline_guard else contextlib.nullcontext():
            detections = detector.predict(Path(metrics["checkpoint"]), images,
                                          out_dir / "native" / f"{run_dir.parent.name}-{run_dir.name}")
        all_preds.append(Predictions(metrics["source"], None, [img.id for img in images], detections))
    if len(all_preds) == 1:
        return all_preds[0]
    return fuse_runs(cfg, all_preds, {img.id: (img.width, img.height) for img in images},
                     [c.model.name for c, _ in runs], [str(d) for d in run_dirs])


def fuse_runs(cfg: DictConfig, preds: list[Predictions], sizes: dict[int, tuple[int, int]], models: list[str],
              names: list[str]) -> Predictions:
    """Several runs' predictions on the same images fused with the `ensemble` settings (weights by model)."""
    ens = cfg.ensemble
    weights = to_plain(ens.weights) or {}
    fused = fuse_predictions(preds, sizes, method=ens.method, iou_thr=float(ens.iou_thr),
                             skip_box_thr=float(ens.skip_box_thr), weights=[float(weights.get(m, 1.0)) for m in models],
                             conf_type=ens.conf_type, names=names)
    fused.source = f"ensemble:{ens.name}"
    return fused
