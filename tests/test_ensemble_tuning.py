"""Ensemble settings tuned on out-of-fold predictions (hparams_search=wbf_optuna): nested, so the
scored fold is never read while tuning, and its tuned-vs-default gain is measured on it alone."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_app
from hydra import compose, initialize_config_dir

from harness import atomic
from harness.classes import coco_categories
from harness.cli.common import CONF_DIR
from harness.ensemble import fuse_files
from harness.eval import evaluate
from harness.jobs.config import ConfigError
from harness.jobs.ensemble_tuning import TRIAL_FILE, trial_objective, tuning_folds
from harness.predictions import Predictions
from harness.report import build_report

MODELS = {"yolov5": 0.05, "mmdet_frcnn": 0.15}  # model -> box jitter (share of the box size)
FOLDS = 3
SIZE = 256


def _jitter(rng, box, scale):
    x, y, w, h = box
    dx, dy = rng.normal(0, scale * w), rng.normal(0, scale * h)
    return [float(np.clip(x + dx, 0, SIZE - 2)), float(np.clip(y + dy, 0, SIZE - 2)),
            float(w * rng.uniform(0.85, 1.15)), float(h * rng.uniform(0.85, 1.15))]


def make_sweep(root: Path, seed: int = 0) -> dict[int, list[int]]:
    """runs/<sweep>/<model>/fold<k>/{split/val.json, predictions.json, metrics.json} for 2 models x 3
    folds of 12 synthetic images each (no training); returns {fold: image ids}."""
    rng = np.random.default_rng(seed)
    ids_by_fold = {}
    for fold in range(FOLDS):
        images, anns = [], []
        ids = [100 * (fold + 1) + i for i in range(12)]
        ids_by_fold[fold] = ids
        for image_id in ids:
            images.append({"id": image_id, "file_name": f"{image_id}.png", "width": SIZE, "height": SIZE})
            for _ in range(0 if image_id % 4 == 3 else int(rng.integers(1, 3))):  # every 4th image is normal
                w, h = rng.uniform(30, 80, 2)
                box = [float(rng.uniform(0, SIZE - w)), float(rng.uniform(0, SIZE - h)), float(w), float(h)]
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.integers(0, 3)),
                             "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        gt = {"images": images, "annotations": anns, "categories": coco_categories()}
        for model, scale in MODELS.items():
            run = root / model / f"fold{fold}"
            atomic.write_json(run / "split" / "val.json", gt)
            dets = []
            for ann in anns:
                if rng.random() < 0.85:
                    dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                                 "bbox": _jitter(rng, ann["bbox"], scale), "score": float(rng.uniform(0.3, 0.95))})
            for image_id in ids:  # false positives
                for _ in range(int(rng.integers(0, 3))):
                    box = [float(rng.uniform(0, 180)), float(rng.uniform(0, 180)), 40.0, 40.0]
                    dets.append({"image_id": image_id, "category_id": int(rng.integers(0, 3)), "bbox": box,
                                 "score": float(rng.uniform(0.01, 0.8))})
            preds = Predictions(f"{model}:toy", f"split{fold}", ids, dets)
            preds.save(run / "predictions.json")
            atomic.write_json(run / "metrics.json", {"model": model, "variant": "toy", "fold": fold,
                                                     "split_hash": f"split{fold}", **evaluate(gt, preds)})
    return ids_by_fold


def test_tuning_folds_are_the_other_folds():
    assert tuning_folds([0, 1, 2], 1) == [0, 2]
    with pytest.raises(ConfigError, match="folds \\[0, 1\\] only"):
        tuning_folds([0, 1], 4)
    with pytest.raises(ConfigError, match="at least one other fold"):
        tuning_folds([3], 3)


def test_nested_optuna_tuning_never_reads_the_scored_fold_and_reports_its_gain(tmp_path):
    sweep = tmp_path / "runs" / "tune"
    ids = make_sweep(sweep)
    scored = 2
    run_app("harness.cli.ensemble", ["hparams_search=wbf_optuna", "sweep=tune", f"tune.scored_fold={scored}",
                                     "tune.n_trials=6", "hydra.sweeper.sampler.n_startup_trials=3"], tmp_path)

    # the study: 6 Optuna trials, each a cxr-ensemble job scoring folds 0 and 1 only
    study = sweep / "ensemble" / ".tune" / "wbf" / f"fold{scored}"
    trials = [json.loads(p.read_text()) for p in sorted(study.glob(f"trial*/{TRIAL_FILE}"))]
    assert len(trials) == 6
    held_out_ids = set(ids[scored])
    held_out_files = {str((sweep / m / f"fold{scored}" / name).resolve())
                      for m in MODELS for name in ("predictions.json", "split/val.json")}
    for trial in trials:
        assert trial["tuning_folds"] == [0, 1] and trial["scored_fold"] == scored
        assert set(trial["image_ids"]) == set(ids[0]) | set(ids[1])
        assert not held_out_ids & set(trial["image_ids"])
        assert not held_out_files & set(trial["files"] + trial["files_read_now"])
    assert len({t["settings"]["iou_thr"] for t in trials}) == 6  # the sampler explored
    best = max(trials, key=lambda t: t["objective"])

    # the best settings applied to the scored fold, compared with the defaults there
    metrics = json.loads((sweep / "ensemble" / "wbf-tuned" / f"fold{scored}" / "metrics.json").read_text())
    record = metrics["tuning"]
    assert record["tuned_on_folds"] == [0, 1] and record["n_trials"] == 6
    assert record["objective"] == pytest.approx(best["objective"])
    tuned = record["tuned"]["settings"]
    assert tuned["iou_thr"] == pytest.approx(best["settings"]["iou_thr"])
    assert tuned["weights"] == pytest.approx(best["settings"]["weights"])
    assert record["default"]["settings"]["iou_thr"] == 0.55  # conf/ensemble/wbf.yaml
    # recomputed here on the scored fold alone, with the plain fusion API
    files = [sweep / m / f"fold{scored}" / "predictions.json" for m in MODELS]
    val = sweep / "yolov5" / f"fold{scored}" / "split" / "val.json"
    tuned_here = evaluate(val, fuse_files(files, val, iou_thr=tuned["iou_thr"], skip_box_thr=tuned["skip_box_thr"],
                                          weights=[tuned["weights"][m] for m in MODELS], progress=False))["map40"]
    default_here = evaluate(val, fuse_files(files, val, iou_thr=0.55, progress=False))["map40"]
    assert record["tuned"]["map40"] == pytest.approx(tuned_here, abs=1e-12) == metrics["map40"]
    assert record["default"]["map40"] == pytest.approx(default_here, abs=1e-12)
    assert record["gain"] == pytest.approx(tuned_here - default_here, abs=1e-12)
    assert set(Predictions.load(study.parents[2] / "wbf-tuned" / f"fold{scored}" / "predictions.json").image_ids) \
        == held_out_ids

    # the objective does not need the scored fold at all: garbage there changes nothing
    for path in held_out_files:
        Path(path).write_text("not json")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="ensemble", overrides=[
            "hparams_search=wbf_optuna", f"paths.root={tmp_path}", "sweep=tune", f"tune.scored_fold={scored}",
            *[f"ensemble.{k}={v}" for k, v in trials[0]["settings"].items() if k in ("iou_thr", "skip_box_thr")],
            *[f"ensemble.weights.{m}={w}" for m, w in trials[0]["settings"]["weights"].items()]])
    assert trial_objective(cfg, tmp_path / "again") == pytest.approx(trials[0]["objective"], abs=1e-12)


def test_a_new_study_does_not_count_an_earlier_studys_trials(tmp_path):
    sweep = tmp_path / "runs" / "tune"
    make_sweep(sweep, seed=2)
    args = ["hparams_search=wbf_optuna", "sweep=tune", "tune.scored_fold=0", "tune.metric=voc_map40"]
    run_app("harness.cli.ensemble", [*args, "tune.n_trials=4"], tmp_path)
    run_app("harness.cli.ensemble", [*args, "tune.n_trials=2"], tmp_path)
    record = json.loads((sweep / "ensemble" / "wbf-tuned" / "fold0" / "metrics.json").read_text())["tuning"]
    assert record["n_trials"] == 2 and record["tuned_on_folds"] == [1, 2] and record["metric"] == "voc_map40"
    assert record["tuned"]["voc_map40"] - record["default"]["voc_map40"] == pytest.approx(record["gain"])


def test_report_shows_tuned_vs_default(tmp_path):
    sweep = tmp_path / "tune"
    make_sweep(sweep, seed=1)
    for fold, gain in ((0, 0.02), (1, -0.01)):
        record = {"scored_fold": fold, "tuned_on_folds": [1 - fold], "metric": "map40", "n_trials": 5,
                  "objective": 0.5, "best_params": {"ensemble.iou_thr": 0.4},
                  "tuned": {"settings": {"method": "wbf", "iou_thr": 0.4, "skip_box_thr": 0.001, "conf_type": "avg",
                                         "weights": {"yolov5": 2.0, "mmdet_frcnn": 1.0}}, "map40": 0.3 + gain},
                  "default": {"settings": {"method": "wbf", "iou_thr": 0.55, "skip_box_thr": 0.0, "conf_type": "avg",
                                           "weights": {"yolov5": 1.0, "mmdet_frcnn": 1.0}}, "map40": 0.3},
                  "gain": gain}
        atomic.write_json(sweep / "ensemble" / "wbf-tuned" / f"fold{fold}" / "metrics.json",
                          {"model": "ensemble", "variant": "wbf-tuned", "fold": fold, "map40": 0.3 + gain,
                           "tuning": record})
    paths = build_report(sweep, reader_reference=False)
    md = paths["results_md"].read_text()
    section = md.split("## Ensemble settings tuned on out-of-fold data (nested)")[1].split("## Failed jobs")[0]
    assert "| ensemble:wbf-tuned | fold0 | 1 | 5 | 0.400 | 0.0010 | yolov5 2.00, mmdet_frcnn 1.00 |" in section
    assert "| 0.3000 | 0.3200 | +0.0200 |" in section
    assert "**mean of 2**" in section and "**+0.0050**" in section
    rows = [r for r in csv.DictReader(open(paths["results_csv"])) if r["kind"] == "tuning"]
    assert [(r["fold"], float(r["delta"])) for r in rows] == [("fold0", 0.02), ("fold1", -0.01), ("mean", 0.005)]
