"""The Hydra layer end to end: config validation, a multirun of all three frameworks over 2 folds
(prepare -> train x6 -> ensemble -> report), a failing job that does not stop the sweep, skipping
finished jobs on a rerun, and the submitit local executor."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from harness.cli.common import CONF_DIR
from harness.jobs.config import ConfigError, train_spec

ROOT = Path(__file__).resolve().parents[1]

# Small, fast settings shared by the end-to-end tests (tiny synthetic data at 128 px, 1-2 epochs).
FAST = [
    "data.size=128", "data.folds=2", "train.imgsz=128", "train.batch_size=4",
    "per_model.yolov5.variant=yolov5n", "per_model.detectron2_frcnn.variant=R18-FPN",
    "per_model.mmdet_frcnn.variant=R18-FPN", "report.overlays=2",
]


def run_app(module: str, args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CXR_BENCH_ROOT": str(root)}
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_typo_in_override_fails_fast_naming_the_key():
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_train(["train.lrr=0.1"])
    with pytest.raises(ConfigCompositionException, match="nonexistent"):
        compose_train(["model=nonexistent"])


def test_bad_values_give_clear_errors():
    with pytest.raises(ConfigError, match="epochs"):
        train_spec(compose_train(["train.epochs=abc"]))
    with pytest.raises(ConfigError, match="device"):
        train_spec(compose_train(["train.device=gpu0"]))
    with pytest.raises(ConfigError, match="URL|url"):
        train_spec(compose_train(["train.weights=https://example.com/model.pt"]))


def test_experiment_presets_compose(tmp_path):
    import torch

    demo = compose_train(["experiment=demo", "model=mmdet_frcnn"])
    assert demo.sweep == "demo" and demo.per_model.mmdet_frcnn.variant == "R18-FPN"
    study = compose_train(["experiment=original_study", "model=mmdet_frcnn", f"pretrained.cache_dir={tmp_path}"])
    # the study starts from COCO weights: offline, a missing cache entry says how to fetch it
    with pytest.raises(ConfigError, match="cxr-weights coco/mmdet_frcnn/R50-FPN"):
        train_spec(study)
    cached = tmp_path / "coco" / "mmdet_frcnn" / "faster_rcnn_r50_fpn_1x_coco_20200130-047c8118.pth"
    cached.parent.mkdir(parents=True)
    torch.save({"meta": {}, "state_dict": {"rpn_head.rpn_conv.weight": torch.zeros(1)}}, cached)
    spec = train_spec(study)
    assert spec.weights == str(cached) and spec.weights_name == "coco"
    assert (spec.optimizer, spec.lr, spec.imgsz, spec.variant) == ("adam", 0.0003, 1024, "R50-FPN")
    assert study.ensemble.iou_thr == 0.25 and study.ensemble.weights.mmdet_frcnn == 3
    assert list(study.ensemble.models) == ["yolov5", "mmdet_frcnn"]  # the study's ensemble
    assert study.data.size == 1024 and study.data.folds == 5


def test_launcher_presets_select_hydra_launchers():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        targets = {
            name: compose(config_name="train", overrides=[f"launcher={name}"], return_hydra_config=True)
            .hydra.launcher._target_
            for name in ("local", "joblib", "slurm", "submitit_local")
        }
    assert targets["local"].endswith("BasicLauncher")
    assert targets["joblib"].endswith("JoblibLauncher")
    assert targets["slurm"].endswith("SlurmLauncher")
    assert targets["submitit_local"].endswith("LocalLauncher")


@pytest.mark.slow
def test_multirun_three_frameworks_two_folds_end_to_end(tmp_path):
    out = run_app("harness.cli.run", ["sweep=e2e", "pipeline.folds=[0,1]", *FAST, "train.epochs=2"], tmp_path)
    sweep = tmp_path / "runs" / "e2e"
    for model in ("yolov5", "detectron2_frcnn", "mmdet_frcnn"):
        for fold in (0, 1):
            metrics = json.loads((sweep / model / f"fold{fold}" / "metrics.json").read_text())
            assert 0.0 <= metrics["map40"] <= 1.0 and metrics["fold"] == fold
            assert (sweep / model / f"fold{fold}" / ".hydra" / "config.yaml").is_file()
    hashes = {json.loads((sweep / m / "fold0" / "metrics.json").read_text())["split_hash"]
              for m in ("yolov5", "detectron2_frcnn", "mmdet_frcnn")}
    assert len(hashes) == 1, "all frameworks must see the identical split"
    ensemble = list((sweep / "ensemble").glob("*/fold*/metrics.json"))
    assert len(ensemble) == 2
    report = sweep / "report"
    rows = list(csv.DictReader(open(report / "results.csv")))
    sources = " ".join(str(row) for row in rows)
    for model in ("yolov5", "detectron2_frcnn", "mmdet_frcnn", "ensemble"):
        assert model in sources
    assert (report / "results.png").stat().st_size > 10_000
    assert "results.md" in out.stdout or "mAP" in out.stdout
    # the protocol card: all three trained on the same images and were post-processed alike
    card = (report / "protocol.md").read_text()
    assert "All models share the same protocol settings" in card and "Shared settings that differ" not in card
    assert "every deviation from a framework default is explained" in card, card
    assert "✓ shared settings agree, every deviation is explained" in (report / "results.md").read_text()
    consumed = {m: json.loads((sweep / m / "fold0" / "metrics.json").read_text())["train_consumed"]
                for m in ("yolov5", "detectron2_frcnn", "mmdet_frcnn")}
    assert len({json.dumps(c, sort_keys=True) for c in consumed.values()}) == 1, consumed


@pytest.mark.slow
def test_failing_job_does_not_stop_the_sweep_and_is_reported(tmp_path):
    run_app("harness.cli.train", ["-m", "sweep=fail", "model=yolov5,mmdet_frcnn", "data.fold=0", *FAST,
                                  "train.epochs=1", "per_model.mmdet_frcnn.variant=R7-FPN"], tmp_path)
    sweep = tmp_path / "runs" / "fail"
    assert (sweep / "yolov5" / "fold0" / "metrics.json").is_file()
    failed = json.loads((sweep / "mmdet_frcnn" / "fold0" / "failed.json").read_text())
    assert "R7-FPN" in failed["error"]
    run_app("harness.cli.report", ["sweep=fail"], tmp_path)
    table = (sweep / "report" / "results.md").read_text()
    assert "mmdet_frcnn" in table and "R7-FPN" in table

    # the trained run predicts the dataset's unlabeled test split: submission in DICOM pixels + overlays
    run_app("harness.cli.predict", ["sweep=fail", *FAST, f"predict.runs=[{sweep / 'yolov5' / 'fold0'}]",
                                    "predict.input=test"], tmp_path)
    rows = list(csv.DictReader(open(sweep / "predict" / "submission.csv")))
    manifest = list(csv.DictReader(open(tmp_path / "data" / "synthetic-tiny" / "manifest.csv")))
    assert {row["image_id"] for row in rows} == {row["image_id"] for row in manifest if row["split"] == "test"}
    assert all(" 0 0 1 1" in row["PredictionString"] for row in rows)  # the "No finding" entry
    assert list((sweep / "predict" / "overlays").glob("*.png"))

    # a rerun skips the finished job (metrics.json untouched) and retries the failed one
    before = (sweep / "yolov5" / "fold0" / "metrics.json").stat().st_mtime_ns
    rerun = run_app("harness.cli.train", ["sweep=fail", "model=yolov5", "data.fold=0", *FAST, "train.epochs=1"],
                    tmp_path)
    assert "skipping" in rerun.stdout + rerun.stderr
    assert (sweep / "yolov5" / "fold0" / "metrics.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_submitit_local_executor_runs_a_job_with_hflip_tta(tmp_path):
    run_app("harness.cli.train", ["-m", "launcher=submitit_local", "sweep=slurm", "model=yolov5", "data.fold=0",
                                  *FAST, "train.epochs=1", "tta_hflip=true"], tmp_path)
    sweep = tmp_path / "runs" / "slurm"
    assert (sweep / "yolov5" / "fold0" / "metrics.json").is_file()
    assert list((sweep / ".submitit").glob("*/*_submitted.pkl")), "the job went through submitit"
    # the job predicted with horizontal-flip TTA: mirrored copies of every val image were made
    val_images = json.loads((sweep / "yolov5" / "fold0" / "split" / "val.json").read_text())["images"]
    flipped = list((sweep / "yolov5" / "fold0" / "native" / "tta" / "hflip_images").glob("*.png"))
    assert len(flipped) == len(val_images) > 0
