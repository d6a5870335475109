"""`cxr-eval`'s job: score a detector's predictions made outside the harness on a prepared fold.

The predictions (a COCO results list, or a cxr-bench predictions.json) are checked against the fold's
val images and classes, then scored exactly as a trained run is (`harness.eval.evaluate`), and written
as a run of the sweep, `<sweep>/<name>/fold<k>/` (harness.sweep): `split/`, `predictions.json` and
`metrics.json` with `"external"` (the file, its sha256, its format). The report, the bootstrap, the
error analysis and the ensemble read it like any model run. Every image of the fold's val split is
scored: an image the file has no detection for counts as predicted with none.

Nothing is overwritten: a run folder that already holds a run is reused only when it holds the score
of the same file (same sha256) on the same split, otherwise the job stops and says so.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from adapters.card import protocol_row
from harness import atomic
from harness.digest import file_sha256
from harness.eval import evaluate
from harness.jobs.data_step import ensure_prepared
from harness.netguard import no_network
from harness.predictions import FORMAT, PredictionFileError, Predictions
from harness.provenance import SHARED
from harness.split import Split, make_split
from harness.sweep import RESERVED, model_run_dir

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# what in a run folder shows that a trained (or other) run lives there
OTHER_RUN_FILES = ("predictions.json", "failed.json", "progress.json", "native")


class ExternalResultsError(ValueError):
    """The results file or the requested run cannot be scored; the message says why and what to do."""


@dataclass(frozen=True)
class ExternalResults:
    """A results file read and checked against one fold's val split."""

    path: Path
    sha256: str
    format: str            # "coco-results" | FORMAT
    predictions: Predictions


def check_name(name: object) -> str:
    if name is None or not str(name).strip():
        raise ExternalResultsError("eval.name is not set: give the run a model name, e.g. eval.name=my_detector")
    name = str(name)
    if not NAME.match(name) or name in RESERVED or name.startswith("."):
        raise ExternalResultsError(f"eval.name={name!r} cannot name a run folder (letters, digits, _ . + -; "
                                   f"not one of {', '.join(sorted(RESERVED))})")
    return name


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def coco_results_to_detections(entries: list, val_coco: dict, where: Path, fold: int) -> list[dict]:
    """COCO results entries -> the harness's detections on the fold's val images. `image_id` is a
    val image's COCO id or its image key (the DICOM/PNG stem); `category_id` a class id of the
    dataset's label set."""
    ids = {img["id"] for img in val_coco["images"]}
    by_key = {str(img.get("image_key")): img["id"] for img in val_coco["images"]}
    n_classes = len(val_coco.get("categories", []))
    detections = []
    for i, det in enumerate(entries):
        if not isinstance(det, dict):
            raise ExternalResultsError(f"{where}: entry #{i} is not an object: {det!r}")
        image = det.get("image_id")
        if isinstance(image, str) and image in by_key:
            image = by_key[image]
        if isinstance(image, bool) or image not in ids:
            raise ExternalResultsError(
                f"{where}: entry #{i} has image_id {det.get('image_id')!r}, which is not one of the {len(ids)} val "
                f"images of fold {fold} (their COCO ids or image keys are in split/val.json): were the predictions "
                f"made on another fold or dataset? Set data.fold / data= to the ones they were made on")
        category, bbox, score = det.get("category_id"), det.get("bbox"), det.get("score")
        if not (isinstance(category, int) and not isinstance(category, bool) and 0 <= category < n_classes):
            raise ExternalResultsError(f"{where}: entry #{i} has category_id {category!r}; the dataset's classes "
                                       f"are 0..{n_classes - 1} (split/val.json 'categories'): map your model's "
                                       f"classes to them first")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_number(v) for v in bbox)
                and bbox[2] >= 0 and bbox[3] >= 0):
            raise ExternalResultsError(f"{where}: entry #{i} has bbox {bbox!r}; expected [x, y, width, height] "
                                       f"in the prepared PNG's pixels, width and height >= 0")
        if not _number(score):
            raise ExternalResultsError(f"{where}: entry #{i} has score {score!r}; expected a finite number")
        detections.append({"image_id": int(image), "category_id": category,
                           "bbox": [float(v) for v in bbox], "score": float(score)})
    return detections


def read_results(path: str | Path, split: Split, name: str) -> ExternalResults:
    """Read a COCO results list or a predictions.json and check it against `split`'s val images."""
    path = Path(path)
    if not path.is_file():
        raise ExternalResultsError(f"eval.results={path} is not a file: give the path of a COCO results "
                                   f"JSON or a predictions.json")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExternalResultsError(f"{path}: not readable as JSON ({err})") from err
    val_coco = json.loads(Path(split.val_json).read_text())
    val_ids = [img["id"] for img in val_coco["images"]]
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        try:
            given = Predictions.load(path)
        except PredictionFileError as err:
            raise ExternalResultsError(str(err)) from err
        if given.split_hash is not None and given.split_hash != split.split_hash:
            raise ExternalResultsError(
                f"{path}: made on split {given.split_hash}, but fold {split.fold} of this dataset is split "
                f"{split.split_hash}: set data= / data.fold to the ones the predictions were made on")
        detections = coco_results_to_detections(given.detections, val_coco, path, split.fold)
        kind = FORMAT
    elif isinstance(raw, list):
        detections = coco_results_to_detections(raw, val_coco, path, split.fold)
        kind = "coco-results"
    else:
        raise ExternalResultsError(f"{path}: neither a COCO results list nor a {FORMAT} file")
    preds = Predictions(f"external:{name}", split.split_hash, val_ids, detections)
    preds.validate(path)
    return ExternalResults(path.resolve(), file_sha256(path), kind, preds)


def _existing(run_dir: Path, split_hash: str, sha256: str) -> dict | None:
    """The metrics of this same scoring when `run_dir` holds it; None when the folder is free; an
    error when it holds anything else."""
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError):
            metrics = {}
        external = metrics.get("external") or {}
        if external.get("sha256") == sha256 and metrics.get("split_hash") == split_hash:
            return metrics
        what = (f"the score of another file ({external.get('results')})" if external
                else "a trained model's run")
        raise ExternalResultsError(f"{run_dir} already holds {what}: choose another eval.name (or another sweep=)")
    taken = [name for name in OTHER_RUN_FILES if (run_dir / name).exists()]
    if taken:
        raise ExternalResultsError(f"{run_dir} already holds another run ({', '.join(taken)}): choose another "
                                   f"eval.name (or another sweep=)")
    return None


def run_eval(cfg: DictConfig) -> dict:
    """Score `cfg.eval.results` on fold `cfg.data.fold` of `cfg.data` as the run `cfg.eval.name` of the
    sweep; returns the metrics (written to `<run>/metrics.json`)."""
    name = check_name(cfg.eval.name)
    if cfg.eval.results is None:
        raise ExternalResultsError("eval.results is not set: give the path of a COCO results JSON or a predictions.json")
    results_path = Path(str(cfg.eval.results)).expanduser()
    if not results_path.is_file():
        raise ExternalResultsError(f"eval.results={results_path} is not a file: give the path of a COCO results "
                                   f"JSON or a predictions.json")
    fold = int(cfg.data.fold)
    run_dir = model_run_dir(cfg.sweep_dir, name, fold)
    guard = no_network() if cfg.offline_guard else contextlib.nullcontext()
    with guard:
        dataset = ensure_prepared(cfg.data)
        sha256 = file_sha256(results_path)
        # the split is checked in a scratch folder first, so a refused run leaves the run folder as it was
        with tempfile.TemporaryDirectory(prefix="cxr-eval-") as scratch:
            split = make_split(dataset.labels, dataset.folds, fold, scratch)
            earlier = _existing(run_dir, split.split_hash, sha256)
            if earlier is not None:
                log.info("%s fold %d: %s was scored here earlier (same file, same split), not again (%s)",
                         name, fold, results_path, run_dir)
                return earlier
            results = read_results(results_path, split, name)
        run_dir.mkdir(parents=True, exist_ok=True)
        split = make_split(dataset.labels, dataset.folds, fold, run_dir)
        preds = results.predictions
        scores = evaluate(split.val_json, preds)
    preds.save(run_dir / "predictions.json")
    per_image: dict[int, int] = {}
    for det in preds.detections:
        per_image[det["image_id"]] = per_image.get(det["image_id"], 0) + 1
    described = {"results": str(results.path), "sha256": results.sha256, "format": results.format,
                 "images_with_detections": len(per_image),
                 "max_detections_per_image": max(per_image.values(), default=0),
                 "min_score": min((d["score"] for d in preds.detections), default=None)}
    note = ("scored as given: made outside cxr-bench, so its training images, recipe and post-processing "
            "are not known to the harness and are not read back")
    metrics = {
        "source": preds.source, "model": name, "variant": str(cfg.eval.variant or "external"), "fold": fold,
        "split_hash": split.split_hash, "config_hash": f"external:{results.sha256[:16]}", **scores,
        "train_time_s": None, "predict_time_s": None, "checkpoint": None, "device": "", "versions": {},
        "external": described,
        "protocol": [
            protocol_row("external", "predictions", f"external file ({results.format})", note=note),
            protocol_row("max_det", "max detections per image (in the file)", described["max_detections_per_image"],
                         note="the largest count in the file; nothing was capped", source="applied",
                         read_from="counted by the harness in the results file"),
            protocol_row("split_hash", "split (fold file + labels hash)", split.split_hash, scope=SHARED,
                         source="applied", read_from="the split files the harness wrote (harness.split)"),
        ],
        "config": {"data": OmegaConf.to_container(cfg.data, resolve=True),
                   "eval": OmegaConf.to_container(cfg.eval, resolve=True)},
    }
    atomic.write_json(run_dir / "metrics.json", metrics)
    log.info("%s fold %d (external, %s): mAP@0.4 %.4f on %d images -> %s", name, fold, results.format,
             metrics["map40"], metrics["n_images"], run_dir)
    return metrics
