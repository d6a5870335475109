"""Run identity in sweeps: every job of a multirun keeps its own folder `<sweep>/<model>/[<key>/]fold<k>/`
(the key names the swept values other than sweep/model/fold), the ensemble fuses per key, the report
shows the swept values as columns, and two jobs that would share a folder are refused before any runs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import FAST, run_app
from hydra import compose, initialize_config_dir
from test_ensemble_tuning import MODELS, make_sweep

from harness.cli.common import CONF_DIR
from harness.cli.multirun import SweepRefused, check_distinct, planned_jobs, swept_keys
from harness.jobs.ensemble_job import fold_members, run_ensemble
from harness.jobs.config import ConfigError
from harness.report.tables import collect, markdown, summary
from harness.sweep import KEY_MAX, RunKey, job_key, key_name, model_runs


def test_key_names_are_readable_sorted_and_distinct_when_sanitised_or_long():
    assert key_name([]) == ""
    assert key_name([("train.lr", "0.01")]) == "train.lr=0.01"
    assert key_name([("train.epochs", "3"), ("aug", "hflip")]) == "aug=hflip,train.epochs=3"
    # a path value: unsafe characters replaced, and a hash keeps a/b and a_b apart
    slashed, underscored = key_name([("train.weights", "a/b.pt")]), key_name([("train.weights", "a_b.pt")])
    assert "/" not in slashed and slashed.startswith("train.weights=a_b.pt-") and underscored == "train.weights=a_b.pt"
    long_a, long_b = key_name([("x", "y" * 100 + "a")]), key_name([("x", "y" * 100 + "b")])
    assert len(long_a) <= KEY_MAX and long_a != long_b
    # only swept keys count, never sweep/model/data.fold; the +prefix of a new key is not part of it
    job = ["model=yolov5", "data.fold=1", "sweep=s", "experiment=demo", "train.lr=0.02", "+per_model.x=1"]
    assert job_key(job, ["train.lr", "model", "data.fold"]) == "train.lr=0.02"
    assert job_key(job, ["per_model.x", "train.lr"]) == "per_model.x=1,train.lr=0.02"
    assert job_key(job, []) == ""


def test_swept_keys_are_the_overrides_with_several_values():
    assert swept_keys(["model=yolov5,mmdet_frcnn", "data.fold=0,1", "experiment=demo", "sweep=a"]) == []
    assert swept_keys(["model=yolov5", "train.lr=0.01,0.02", "aug=hflip,none", "train.epochs=2",
                       "hydra.launcher.n_jobs=1,2"]) == ["aug", "train.lr"]
    assert swept_keys(["train.epochs=range(1,3)"]) == ["train.epochs"]


def test_planned_folders_keep_the_demo_layout_and_key_the_swept_values(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_BENCH_ROOT", str(tmp_path))
    demo = planned_jobs("train", ["experiment=demo", "model=yolov5,mmdet_frcnn", "data.fold=0"], [])
    assert [j.folder for j in demo] == [tmp_path / "runs" / "demo" / "yolov5" / "fold0",
                                        tmp_path / "runs" / "demo" / "mmdet_frcnn" / "fold0"]
    lr = planned_jobs("train", ["sweep=s", "model=yolov5", "train.lr=0.01,0.02", "swept=[train.lr]"], ["train.lr"])
    assert [j.folder.relative_to(tmp_path / "runs" / "s") for j in lr] == \
        [Path("yolov5/train.lr=0.01/fold0"), Path("yolov5/train.lr=0.02/fold0")]
    check_distinct(lr)
    twice = planned_jobs("train", ["sweep=s", "model=yolov5", "data.fold=0,0"], [])
    with pytest.raises(SweepRefused, match="would both write .*yolov5/fold0"):
        check_distinct(twice)


def _keyed_sweep(tmp_path: Path) -> Path:
    """Two models x 3 folds, trained (toy predictions) at two learning rates, in the keyed layout."""
    sweep = tmp_path / "runs" / "lr"
    for lr, seed in (("0.01", 0), ("0.02", 1)):
        flat = tmp_path / f"flat{lr}"
        make_sweep(flat, seed=seed)
        key = RunKey(f"train.lr={lr}", {"train.lr": float(lr)})
        for model in MODELS:
            for fold_dir in sorted((flat / model).glob("fold*")):
                target = sweep / model / key.key / fold_dir.name
                shutil.copytree(fold_dir, target)
                (target / "run_key.json").write_text(json.dumps(key.as_json()))
    return sweep


def _ensemble_cfg(tmp_path: Path, *extra: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="ensemble", overrides=[f"paths.runs_dir={tmp_path / 'runs'}", "sweep=lr", *extra])


def test_a_keyed_sweep_is_listed_fused_per_key_and_reported_with_its_swept_column(tmp_path):
    sweep = _keyed_sweep(tmp_path)
    runs = model_runs(sweep)
    assert len(runs) == 2 * len(MODELS) * 3
    assert {(r.key, dict(r.swept)["train.lr"]) for r in runs} == {("train.lr=0.01", 0.01), ("train.lr=0.02", 0.02)}

    cfg = _ensemble_cfg(tmp_path)
    name = cfg.ensemble.name
    results = run_ensemble(cfg, sweep / "ensemble" / name)
    assert len(results) == 2 * 3  # one ensemble per key and fold
    for lr in ("0.01", "0.02"):
        for fold in range(3):
            fused = json.loads((sweep / "ensemble" / name / f"train.lr={lr}" / f"fold{fold}" / "metrics.json")
                               .read_text())
            assert sorted(fused["members"]) == sorted(MODELS)
            # fused from this key's runs only: their val file, not the other learning rate's
            assert Path(fused["val_json"]).parts[-4] == f"train.lr={lr}"
    # tuning takes one key: a sweep with two is refused with a message, not mixed
    with pytest.raises(ConfigError, match="2 run keys"):
        fold_members(cfg)

    found = collect(sweep)
    summ = summary(found.runs)
    names = set(summ["name"])
    assert {f"{m} · train.lr={lr}" for m in MODELS for lr in ("0.01", "0.02")} <= names
    assert {f"ensemble:{name} · train.lr={lr}" for lr in ("0.01", "0.02")} <= names
    assert set(summ["n_folds"]) == {3}  # never averaged across the two learning rates
    table = markdown(found, summ)
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert header.startswith("| model | variant | train.lr | fold0 |")
    row = next(line for line in table.splitlines() if line.startswith(f"| {next(iter(MODELS))} · train.lr=0.02 |"))
    assert row.split("|")[3].strip() == "0.02"


def test_an_ensemble_with_other_settings_sets_the_earlier_fusion_aside(tmp_path):
    sweep = _keyed_sweep(tmp_path)
    cfg = _ensemble_cfg(tmp_path)
    fold_dir = sweep / "ensemble" / cfg.ensemble.name / "train.lr=0.01" / "fold0"
    run_ensemble(cfg, fold_dir.parents[1])
    first = {n: (fold_dir / n).read_bytes() for n in ("predictions.json", "metrics.json")}
    run_ensemble(cfg, fold_dir.parents[1])  # the same fusion again: rewritten in place, nothing set aside
    assert not (fold_dir / "superseded").exists()
    # other fusion settings into the same folder: the earlier files are kept, byte for byte
    other = _ensemble_cfg(tmp_path, "ensemble.iou_thr=0.3", f"ensemble.name={cfg.ensemble.name}")
    run_ensemble(other, fold_dir.parents[1])
    kept = list((fold_dir / "superseded").iterdir())
    assert len(kept) == 1 and {n: (kept[0] / n).read_bytes() for n in first} == first
    assert json.loads((fold_dir / "metrics.json").read_text())["config"]["iou_thr"] == 0.3


@pytest.mark.slow
def test_multirun_over_lr_keeps_both_jobs_and_the_report_lists_both(tmp_path):
    """A real cxr-train multirun over train.lr (one tiny YOLO job per value), then cxr-report."""
    run_app("harness.cli.train", ["-m", "sweep=lr", "model=yolov5", "data.fold=0", "train.lr=0.01,0.02", *FAST,
                                  "train.epochs=1"], tmp_path)
    sweep = tmp_path / "runs" / "lr"
    for lr in (0.01, 0.02):
        job = sweep / "yolov5" / f"train.lr={lr}" / "fold0"
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["config"]["train"]["lr"] == lr  # each folder holds the job of its own value
        assert json.loads((job / "run_key.json").read_text()) == {"key": f"train.lr={lr}", "swept": {"train.lr": lr}}
    assert not (sweep / "yolov5" / "fold0").exists()
    run_app("harness.cli.report", ["sweep=lr", "report.overlays=0", "report.analysis.enabled=false"], tmp_path)
    rows = [r for r in csv.DictReader(open(sweep / "report" / "results.csv"))
            if r["kind"] == "model" and r["fold"] == "fold0"]
    assert sorted((r["name"], r["swept train.lr"]) for r in rows) == [
        ("yolov5 · train.lr=0.01", "0.01"), ("yolov5 · train.lr=0.02", "0.02")]
    assert "| model | variant | train.lr |" in (sweep / "report" / "results.md").read_text()


def test_two_jobs_claiming_one_folder_are_refused_before_anything_runs(tmp_path):
    out = run_app("harness.cli.train", ["-m", "sweep=twice", "model=yolov5", "train.lr=0.01,0.01", *FAST],
                  tmp_path, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    message = out.stderr.strip().splitlines()[-1]
    assert message.startswith("cxr-train: jobs #0") and "would both write" in message
    assert not (tmp_path / "runs" / "twice").exists() and not (tmp_path / "data").exists()
