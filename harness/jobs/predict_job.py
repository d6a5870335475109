"""The predict step: trained runs -> detections on new images -> predictions.json, overlays and a
Kaggle submission (boxes mapped back to original DICOM pixels through the manifest). With
`predict.classifier=<classifier run>`, its P(abnormal) per image feeds the "No finding" policy
`predict.no_finding` (thresholds `nofinding.low/high`), the same code the report scores.

Input: `test` (the prepared dataset's test split), or a folder of DICOMs (converted here exactly as
`prepare` converts, with the run's data settings) or PNGs (used as they are, scale 1), or `external`:
the labelled images of another dataset (`data=...`) scored through a class mapping (`mapping=...`),
harness.jobs.external_job.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from adapters import get_detector, is_classifier
from harness import runpaths, supersede
from harness.data.manifest import read_manifest
from harness.data.prepare import ConvertSettings, convert_folders
from harness.jobs.config import ConfigError, data_label_set, to_plain, train_spec
from harness.jobs.data_step import ensure_prepared
from harness.jobs.external_job import run_external
from harness.jobs.run_predictions import predict_with_runs
from harness.jobs.settings import nofinding_settings
from harness.netguard import no_network
from harness.nofinding import AbnormalScores
from harness.report import write_overlays
from harness.split import ImageRef
from harness.submission import write_submission

log = logging.getLogger(__name__)

PREDICT_OUTPUTS = ("predictions.json", "submission.csv", "abnormal.json", "overlays")


def load_run(run_dir: Path) -> tuple[DictConfig, dict]:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run (no metrics.json)")
    metrics = runpaths.read_run(run_dir)  # recorded paths resolved against where the run is now
    if not metrics.get("checkpoint") or not Path(metrics["checkpoint"]).exists():
        raise FileNotFoundError(f"{run_dir}: checkpoint {metrics.get('checkpoint')} is missing")
    return OmegaConf.create(metrics["config"]), metrics


def stage_input(folder: Path, staging: Path) -> Path:
    """`<staging>/test` -> `folder`, always the folder asked for now (an earlier predict's link is
    replaced; it is only a link): the DICOM conversion reads `<staging>/test`, and its PNG cache is
    keyed by each source file's resolved path, size and mtime, so another folder's files are never
    reused. Returns `staging`."""
    staging.mkdir(parents=True, exist_ok=True)
    link, target = staging / "test", folder.resolve()
    if link.is_symlink() and link.resolve() == target:
        return staging
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} is not a link cxr-predict made: move it away, or give another "
                              "predict.out_dir")
    fresh = staging / f".test.{os.getpid()}"
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target, target_is_directory=True)
    os.replace(fresh, link)  # a link to a link's place: atomic, nothing else is touched
    log.info("predict: staging %s as %s", target, link)
    return staging


def input_images(cfg_input: str, run_cfg: DictConfig, out_dir: Path) -> tuple[list[ImageRef], pd.DataFrame]:
    """ImageRefs (ids 1..N) and the manifest rows that map their PNG pixels to original pixels."""
    if cfg_input == "test":
        summary = ensure_prepared(run_cfg.data)
        root = summary.out_dir
        manifest = read_manifest(summary.manifest)
        manifest = manifest[manifest["split"] == "test"]
    else:
        folder = Path(cfg_input)
        if not folder.is_dir():
            raise FileNotFoundError(f"predict.input={cfg_input}: not a folder (or use predict.input=test)")
        dicoms = [p for p in folder.iterdir() if p.suffix.lower() in (".dicom", ".dcm")]
        pngs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
        if dicoms:
            staging = stage_input(folder, out_dir / "input")
            data = run_cfg.data
            conv = convert_folders(staging, out_dir, ConvertSettings(
                size=data.size, square=bool(data.square), bits=int(data.bits), exact=bool(data.get("exact", False)),
                png_compression=int(data.get("png_compression", ConvertSettings.png_compression)),
                png_strategy=str(data.get("png_strategy", ConvertSettings.png_strategy))))
            root, manifest = out_dir, read_manifest(conv.manifest)
        elif pngs:
            from PIL import Image

            rows = []
            for png in pngs:
                with Image.open(png) as img:
                    width, height = img.size
                rows.append({"image_id": png.stem, "split": "test", "orig_height": height, "orig_width": width,
                             "height": height, "width": width, "scale_x": 1.0, "scale_y": 1.0, "status": "ok",
                             "reason": "", "png": str(png.resolve())})
            root, manifest = Path("/"), pd.DataFrame(rows)
        else:
            raise FileNotFoundError(f"predict.input={folder} holds no .dicom/.dcm/.png files")
    failed = manifest[manifest["status"] != "ok"]
    for row in failed.itertuples():
        log.warning("predict: %s could not be read: %s", row.image_id, row.reason)
    manifest = manifest[manifest["status"] == "ok"].sort_values("image_id").reset_index(drop=True)
    if manifest.empty:
        raise FileNotFoundError(f"predict.input={cfg_input}: no readable images")
    images = [ImageRef(i + 1, Path(root) / row.png, int(row.width), int(row.height))
              for i, row in enumerate(manifest.itertuples())]
    manifest = manifest.assign(coco_id=[img.id for img in images])
    return images, manifest


def classifier_p_abnormal(cfg: DictConfig, images: list[ImageRef], out_dir: Path) -> dict[int, float] | None:
    """P(abnormal) of the images from the classifier run `predict.classifier` (None when unset);
    written to <out_dir>/abnormal.json."""
    if not cfg.predict.get("classifier"):
        return None
    run_dir = Path(str(cfg.predict.classifier))
    run_cfg, metrics = load_run(run_dir)
    if not is_classifier(run_cfg.model.name):
        raise ConfigError(f"predict.classifier={run_dir} is a {run_cfg.model.name} run, not a classifier run")
    classifier = get_detector(run_cfg.model.name, train_spec(run_cfg))
    with no_network() if cfg.offline_guard else contextlib.nullcontext():
        p = classifier.predict(Path(metrics["checkpoint"]), images, out_dir / "native" / "classifier")
    missing = [img for img in images if img.id not in p]
    if missing:
        raise RuntimeError(f"the classifier could not read {len(missing)} image(s), e.g. {missing[0].path}: "
                           "no P(abnormal) for them")
    AbnormalScores(metrics["source"], None, p).save(out_dir / "abnormal.json")
    return p


def run_predict(cfg: DictConfig, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    run_dirs = [Path(p) for p in to_plain(cfg.predict.runs) or []]
    if not run_dirs:
        raise ConfigError("predict.runs is empty: name run folders, e.g. predict.runs=[runs/demo/yolov5/fold0]")
    runs = [load_run(run_dir) for run_dir in run_dirs]
    for (run_cfg, _), run_dir in zip(runs, run_dirs):
        if is_classifier(run_cfg.model.name):
            raise ConfigError(f"predict.runs: {run_dir} is a classifier run; give it as predict.classifier={run_dir}")
    labels = {data_label_set(run_cfg.data) for run_cfg, _ in runs}
    if len(labels) > 1:
        raise ConfigError(f"predict.runs: the runs were trained on different label sets ({sorted(s.name for s in labels)})")
    (labels,) = labels
    if cfg.predict.get("classifier") and not labels.has_no_finding:
        raise ConfigError(f"predict.classifier: the 'No finding' stage is VinBigData-only; these runs' label set is "
                          f"{labels.name}")
    if str(cfg.predict.input) == "external":
        return run_external(cfg, runs, run_dirs, labels, out_dir)
    images, manifest = input_images(str(cfg.predict.input), runs[0][0], out_dir)
    target = supersede.new_target(out_dir)  # an earlier predict's results: kept, never overwritten
    moved = supersede.move_aside(out_dir, [out_dir / name for name in PREDICT_OUTPUTS], target)
    if moved:
        log.warning("predict: moved the earlier predict's %s aside to %s (kept; delete with "
                    "`cxr-checkpoints --delete %s`)", ", ".join(p.name for p in moved), target, target)
    preds = predict_with_runs(cfg, runs, run_dirs, images, out_dir)
    preds.save(out_dir / "predictions.json")
    submission = None
    if labels.has_no_finding:
        p_abnormal = classifier_p_abnormal(cfg, images, out_dir)
        stage = nofinding_settings(cfg.get("nofinding"))
        submission = write_submission(preds, manifest, out_dir / "submission.csv", no_finding=cfg.predict.no_finding,
                                      p_abnormal=p_abnormal, low=stage.low, high=stage.high, scoring=stage.scoring,
                                      classes=labels.classes)
    else:
        log.info("no submission.csv: the Kaggle submission format is VinBigData-only (label set %s)", labels.name)
    write_overlays(preds, None, None, out_dir / "overlays", n=int(cfg.report.overlays),
                   score_thr=float(cfg.report.overlay_score_thr), images=images, classes=labels.classes)
    log.info("predictions: %s, submission: %s, overlays: %s", out_dir / "predictions.json", submission,
             out_dir / "overlays")
    return {"predictions": out_dir / "predictions.json", "submission": submission, "overlays": out_dir / "overlays"}
