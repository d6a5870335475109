"""The Hydra layer end to end: config validation, a multirun of all three frameworks over 2 folds
(prepare -> train x6 -> ensemble -> report), a failing job that does not stop the sweep, skipping
finished jobs on a rerun, and the submitit local executor."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import FAST, run_app  # test_classifier imports them from here too
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from harness.cli.common import CONF_DIR
from harness.jobs.config import ConfigError, train_spec


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


def native_overrides(model: str, settings: dict[str, tuple[object, str]]) -> list[str]:
    """Hydra overrides setting `per_model.<model>.native` keys, each with its reason for the protocol card:
    `settings` maps a framework config key to (value, reason)."""
    values = ",".join(f"{key}:{value}" for key, (value, _) in settings.items())
    reasons = ",".join(f"{key}:'{why}'" for key, (_, why) in settings.items())
    return [f"++per_model.{model}.native={{{values}}}", f"++per_model.{model}.reasons={{{reasons}}}"]


# The Faster R-CNNs' CPU time is mostly the RoI head (512 sampled RoIs per image, ~5 s per iteration even
# at 128 px): the same, stated cut in both frameworks, as the CPU presets (experiment=demo) make.
_ROIS = (64, "end-to-end test: 64 RoIs (native 512)")
_TRAIN_PROPOSALS = (200, "end-to-end test: 200 proposals (native 2000)")
_TEST_PROPOSALS = (100, "end-to-end test: 100 proposals (native 1000)")
ROI_CUTS = [
    *native_overrides("detectron2_frcnn", {"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": _ROIS,
                                           "MODEL.RPN.POST_NMS_TOPK_TRAIN": _TRAIN_PROPOSALS,
                                           "MODEL.RPN.POST_NMS_TOPK_TEST": _TEST_PROPOSALS}),
    *native_overrides("mmdet_frcnn", {"model.train_cfg.rcnn.sampler.num": _ROIS,
                                      "model.train_cfg.rpn_proposal.max_per_img": _TRAIN_PROPOSALS,
                                      "model.test_cfg.rpn.max_per_img": _TEST_PROPOSALS}),
]


@pytest.mark.slow
def test_multirun_three_frameworks_two_folds_end_to_end(tmp_path):
    out = run_app("harness.cli.run", ["sweep=e2e", "pipeline.folds=[0,1]", *FAST, "train.epochs=1", *ROI_CUTS,
                                      "pipeline.tune_ensemble=true", "tune.n_trials=3"], tmp_path)
    sweep = tmp_path / "runs" / "e2e"
    for model in ("yolov5", "detectron2_frcnn", "mmdet_frcnn"):
        for fold in (0, 1):
            metrics = json.loads((sweep / model / f"fold{fold}" / "metrics.json").read_text())
            assert metrics["fold"] == fold  # (1 epoch: a model may still detect nothing at all)
            assert (sweep / model / f"fold{fold}" / ".hydra" / "config.yaml").is_file()
    hashes = {json.loads((sweep / m / "fold0" / "metrics.json").read_text())["split_hash"]
              for m in ("yolov5", "detectron2_frcnn", "mmdet_frcnn")}
    assert len(hashes) == 1, "all frameworks must see the identical split"
    ensemble = list((sweep / "ensemble").glob("*/fold*/metrics.json"))
    assert len(ensemble) == 4  # the default WBF and the one tuned per fold on the other fold
    for fold in (0, 1):
        tuning = json.loads((sweep / "ensemble" / "wbf-tuned" / f"fold{fold}" / "metrics.json").read_text())["tuning"]
        assert tuning["tuned_on_folds"] == [1 - fold] and tuning["n_trials"] == 3
    report = sweep / "report"
    rows = list(csv.DictReader(open(report / "results.csv")))
    assert check_scores_reproduce(sweep, rows, (report / "results.md").read_text()) == 3 * 2 + 2 * 2
    sources = " ".join(str(row) for row in rows)
    for model in ("yolov5", "detectron2_frcnn", "mmdet_frcnn", "ensemble", "ensemble:wbf-tuned vs default"):
        assert model in sources
    assert (report / "results.png").stat().st_size > 10_000
    assert "results.md" in out.stdout or "mAP" in out.stdout
    # the protocol card: all three trained on the same images and were post-processed alike
    card = (report / "protocol.md").read_text()
    assert "All models share the same protocol settings" in card and "Shared settings that differ" not in card
    assert "every deviation from a framework default is explained" in card, card
    assert "✓ shared settings agree, every deviation is explained" in (report / "results.md").read_text()
    assert "end-to-end test: 64 RoIs (native 512)" in card, card  # the cuts are on the card, with their reasons
    consumed = {m: json.loads((sweep / m / "fold0" / "metrics.json").read_text())["train_consumed"]
                for m in ("yolov5", "detectron2_frcnn", "mmdet_frcnn")}
    assert len({json.dumps(c, sort_keys=True) for c in consumed.values()}) == 1, consumed


@pytest.mark.slow
def test_failing_job_does_not_stop_the_sweep_is_reported_and_is_retried_on_rerun(tmp_path):
    sweep = tmp_path / "runs" / "fail"
    command = ["-m", "sweep=fail", "model=yolov5", "data.fold=0,1", *FAST, "train.epochs=1"]
    # fold 1 fails inside ultralytics' training: a folder stands where the trainer writes its args.yaml
    # (a transient fault, like a full disk; the job's config is the same on the rerun; an empty folder
    # is not a file of an earlier run, so the fresh start leaves it in place)
    blocker = sweep / "yolov5" / "fold1" / "native" / "train" / "args.yaml"
    blocker.mkdir(parents=True)
    first = run_app("harness.cli.train", command, tmp_path, check=False)
    # a failed job makes the multirun exit non-zero, after the table of its failed jobs
    assert first.returncode == 3, first.stderr[-3000:]
    assert "1 job(s) failed" in first.stderr and "| data.fold=1 |" in first.stderr
    assert (sweep / "yolov5" / "fold0" / "metrics.json").is_file()
    assert not (sweep / "yolov5" / "fold1" / "metrics.json").exists()
    failed = json.loads((sweep / "yolov5" / "fold1" / "failed.json").read_text())
    assert failed["fold"] == 1 and "args.yaml" in failed["error"]
    # it raised inside the adapter's fit, from the framework's own trainer (not before training)
    assert "in fit" in failed["traceback"] and "ultralytics/engine/trainer.py" in failed["traceback"]
    run_app("harness.cli.report", ["sweep=fail"], tmp_path)
    table = (sweep / "report" / "results.md").read_text()
    failed_section = table.split("## Failed jobs")[1]
    assert "| yolov5 | fold1 |" in failed_section and "args.yaml" in failed_section

    # the trained run predicts the dataset's unlabeled test split: submission in DICOM pixels + overlays
    run_app("harness.cli.predict", ["sweep=fail", *FAST, f"predict.runs=[{sweep / 'yolov5' / 'fold0'}]",
                                    "predict.input=test"], tmp_path)
    rows = list(csv.DictReader(open(sweep / "predict" / "submission.csv")))
    manifest = list(csv.DictReader(open(tmp_path / "data" / "synthetic-tiny" / "manifest.csv")))
    assert {row["image_id"] for row in rows} == {row["image_id"] for row in manifest if row["split"] == "test"}
    assert all(" 0 0 1 1" in row["PredictionString"] for row in rows)  # the "No finding" entry
    assert list((sweep / "predict" / "overlays").glob("*.png"))

    # the fault is gone; the same command again skips the finished job (metrics.json untouched) and
    # retries the failed one, which now succeeds
    blocker.rmdir()
    before = (sweep / "yolov5" / "fold0" / "metrics.json").stat().st_mtime_ns
    rerun = run_app("harness.cli.train", command, tmp_path)
    log = rerun.stdout + rerun.stderr
    assert "yolov5 fold 0: finished earlier with the same config, skipping" in log
    assert "yolov5 fold 1: finished earlier" not in log
    assert (sweep / "yolov5" / "fold0" / "metrics.json").stat().st_mtime_ns == before
    retried = json.loads((sweep / "yolov5" / "fold1" / "metrics.json").read_text())
    assert retried["fold"] == 1 and retried["config_hash"] == failed["config_hash"]  # the same job
    assert not (sweep / "yolov5" / "fold1" / "failed.json").exists()
    run_app("harness.cli.report", ["sweep=fail"], tmp_path)
    assert "## Failed jobs\n\nNone." in (sweep / "report" / "results.md").read_text()


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


def check_scores_reproduce(sweep: Path, csv_rows: list[dict], results_md: str) -> int:
    """Every run's and ensemble's predictions.json, re-scored by the project's evaluator, gives exactly
    the metrics.json numbers and the report's; the Kaggle VOC metric equals map-boxes' on them.
    Returns how many runs were checked."""
    from harness.eval import evaluate
    from harness.eval.crosscheck import map_boxes_map
    from harness.predictions import Predictions

    runs = sorted(sweep.glob("*/fold*/metrics.json")) + sorted(sweep.glob("ensemble/*/fold*/metrics.json"))
    nonzero = detections = 0
    for path in runs:
        metrics = json.loads(path.read_text())
        val_json = metrics.get("val_json") or path.parent / "split" / "val.json"
        preds = Predictions.load(path.parent / "predictions.json")
        again = evaluate(val_json, preds)
        for key in ("map40", "voc_map40", "voc_map40_15", "ap50", "ap50_95", "per_class", "voc_per_class"):
            same = json.dumps(again[key], sort_keys=True) == json.dumps(metrics[key], sort_keys=True)  # NaN-safe
            assert same, (path, key, again[key], metrics[key])
        name = "ensemble:" + metrics["variant"] if metrics["model"] == "ensemble" else metrics["model"]
        row = next(r for r in csv_rows if r["name"] == name and r["fold"] == f"fold{metrics['fold']}")
        assert float(row["map40"]) == float(f"{metrics['map40']:.6g}"), (name, row["map40"], metrics["map40"])
        assert float(row["voc_map40"]) == float(f"{metrics['voc_map40']:.6g}")
        md_row = next(line for line in results_md.splitlines()
                      if line.startswith(f"| {name} |") or line.startswith(f"| **{name}** |"))
        assert f" {metrics['map40']:.4f} " in md_row, (name, md_row, metrics["map40"])
        # the third evaluator on real predictions (14 classes, and 15 with "No finding"); equal scores
        # (common for briefly trained models) go to map-boxes in the harness's order, since its own
        # unstable sort has none (harness/eval/crosscheck.py)
        theirs, _ = map_boxes_map(val_json, preds, 0.4, strict_order=True)
        assert metrics["voc_map40"] == pytest.approx(theirs, abs=1e-6), (path, metrics["voc_map40"], theirs)
        theirs15, _ = map_boxes_map(val_json, preds, 0.4, with_no_finding=True, strict_order=True)
        assert metrics["voc_map40_15"] == pytest.approx(theirs15, abs=1e-6), (path, metrics["voc_map40_15"], theirs15)
        nonzero += metrics["voc_map40_15"] > 0
        detections += metrics["n_detections"]
    assert nonzero and detections, "no detections or every VOC value 0: the checks compared nothing"
    return len(runs)
