"""Superseded, never deleted or overwritten: an earlier attempt's files move, byte for byte, into
`<run>/superseded/<time>/`; an unloadable checkpoint keeps its file and record; only cxr-checkpoints
deletes, and only the superseded folders of the runs it is given; the report flags a fold of
another config. Unit-level on constructed run folders, plus one real ultralytics fresh start."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from adapters import TrainSpec
from adapters.base import Detector
from adapters.resume import (RECORD_SUFFIX, find_resume_point, prune, record_path, records, set_aside_checkpoints,
                             write_record)
from adapters.yolov5 import YoloV5Detector
from harness import runpaths
from harness.cli import checkpoints as checkpoints_cli
from harness.cli.common import CONF_DIR
from harness.jobs.config import config_hash
from harness.jobs.predict_job import input_images
from harness.jobs.ensemble_tuning import TRIAL_FILE, ApplyTunedSettings
from harness.jobs.train_job import set_aside_earlier_attempt
from harness.report.protocol import collect_protocols, protocol_markdown
from harness.report.tables import collect, markdown, summary
from harness.split import make_split
from harness.supersede import ATTEMPT_FILE, earlier_config_hash
from harness.data.manifest import read_manifest
from harness.sweep import SUPERSEDED_DIR, superseded_folders
from conftest import FAST, run_app


class Dummy(Detector):
    """A detector without a framework: only its resume policy (adapters.base) is used here."""

    name = "dummy"

    def _fit(self, split, workdir):
        raise NotImplementedError

    def prediction_session(self, checkpoint, workdir):
        raise NotImplementedError

    def recipe(self):
        return []


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file below `root` (relative path -> bytes), less the top-level names in `skip`."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in skip}


def earlier_attempt(run_dir: Path, cfg_hash: str) -> None:
    """What a finished job leaves: results, split, run settings, ultralytics' folder with an
    unrecorded last.pt/best.pt and a recorded epoch checkpoint, and Hydra's folder."""
    weights = run_dir / "native" / "train" / "weights"
    weights.mkdir(parents=True)
    for name, data in {"last.pt": b"last", "best.pt": b"best", "epoch1.pt": b"epoch1" * 10}.items():
        (weights / name).write_bytes(data)
    write_record(weights / "epoch1.pt", "key-of-" + cfg_hash, 1, 3)
    (run_dir / "native" / "train" / "results.csv").write_text("epoch,loss\n1,0.5\n")
    (run_dir / "split").mkdir()
    (run_dir / "split" / "val.json").write_text('{"images": []}')
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("train: {lr: 0.01}\n")
    for name in ("metrics.json", "failed.json"):
        (run_dir / name).write_text(json.dumps({"config_hash": cfg_hash, "map40": 0.5}))
    (run_dir / "predictions.json").write_text('{"detections": []}')
    (run_dir / ATTEMPT_FILE).write_text(json.dumps({"config_hash": cfg_hash}))


def test_a_config_change_moves_every_earlier_file_aside_byte_for_byte(tmp_path, caplog):
    run_dir = tmp_path / "sweep" / "yolov5" / "fold0"
    run_dir.mkdir(parents=True)
    earlier_attempt(run_dir, "aaaa")
    before = tree(run_dir, skip=(".hydra",))
    with caplog.at_level(logging.WARNING):
        target = set_aside_earlier_attempt(run_dir, "bbbb", "yolov5 fold 0")
    assert target.parent == run_dir / SUPERSEDED_DIR and str(target) in caplog.text
    assert "config hash aaaa -> bbbb" in caplog.text
    assert tree(target) == before  # every file, at its relative path, byte for byte
    # nothing of the earlier attempt is left in place to be overwritten (Hydra's own folder stays)
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", ATTEMPT_FILE, SUPERSEDED_DIR]
    assert earlier_config_hash(run_dir) == "bbbb"  # this attempt's identity, for the next one
    assert superseded_folders(tmp_path / "sweep") == [target]


def test_a_rerun_of_the_same_config_moves_aside_only_the_results_it_rewrites(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    earlier_attempt(run_dir, "aaaa")
    results = {name: (run_dir / name).read_bytes() for name in ("metrics.json", "failed.json", "predictions.json")}
    target = set_aside_earlier_attempt(run_dir, "aaaa", "job")
    assert {name: (target / name).read_bytes() for name in results} == results
    assert not any((run_dir / name).exists() for name in results)
    # the checkpoints stay for the resume (the adapter decides: resume, or move them aside)
    assert (run_dir / "native" / "train" / "weights" / "epoch1.pt").is_file()
    # nothing to move: no folder is made
    assert not set_aside_earlier_attempt(run_dir, "aaaa", "job").exists()


@pytest.mark.parametrize("error", [ModuleNotFoundError("No module named 'ultralytics.nn.modules.old'"),
                                   MemoryError("cannot allocate 3 GB")])
def test_a_checkpoint_that_fails_to_load_keeps_its_file_and_record(tmp_path, caplog, error):
    older = tmp_path / "e1.pt"
    older.write_bytes(b"one" * 10)
    write_record(older, "A", 1, 3)
    newer = tmp_path / "e2.pt"
    newer.write_bytes(b"two" * 10)
    write_record(newer, "A", 2, 3)

    def load(path: Path) -> None:
        if path == newer:
            raise error

    with caplog.at_level(logging.INFO):
        point = find_resume_point(tmp_path, "A", load)
    assert point.checkpoint == older and type(error).__name__ in caplog.text
    record = json.loads(record_path(newer).read_text())
    assert newer.read_bytes() == b"two" * 10  # still on disk
    assert record["unusable"] == f"does not load: {type(error).__name__}: {error}" and record["epoch"] == 2
    prune(tmp_path, keep=1, key="A")  # the keep rotation counts usable checkpoints of this training only
    assert newer.is_file() and older.is_file()
    # resuming from the older one: the unusable file moves out of the way of the framework's next save
    # of epoch 2 (same name), still with its record
    resumed = Dummy(TrainSpec())
    resumed.training_key = lambda split_hash: "A"
    assert resumed.resume_point(SimpleNamespace(split_hash="s"), tmp_path, load).checkpoint == older
    (moved,) = superseded_folders(tmp_path)
    assert (moved / "e2.pt").read_bytes() == b"two" * 10 and not newer.exists() and older.is_file()
    assert json.loads((moved / ("e2.pt" + RECORD_SUFFIX)).read_text())["unusable"] == record["unusable"]
    for name in ("e2.pt", "e2.pt" + RECORD_SUFFIX):  # back, to check what a fresh start does with it
        (moved / name).rename(tmp_path / name)
    # a fresh start moves it, with its record, aside: never deleted
    target = set_aside_checkpoints(tmp_path)
    assert target != moved and (target / "e2.pt").read_bytes() == b"two" * 10
    assert json.loads((target / ("e2.pt" + RECORD_SUFFIX)).read_text())["unusable"] == record["unusable"]


def test_prune_leaves_another_trainings_checkpoints_alone(tmp_path):
    for name, key, epoch in (("a1.pt", "A", 1), ("a2.pt", "A", 2), ("b3.pt", "B", 3)):
        (tmp_path / name).write_bytes(name.encode())
        write_record(tmp_path / name, key, epoch, 5, {"workers": 2, "device": "cpu"})
    prune(tmp_path, keep=1, key="A")
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["a2.pt", "b3.pt"]
    assert [r["run_settings"] for _, r in records(tmp_path)] == [{"workers": 2, "device": "cpu"}] * 2


def test_a_fresh_start_moves_unrecorded_checkpoints_too(tmp_path):
    folder = tmp_path / "run" / "native"
    folder.mkdir(parents=True)
    (folder / "model_final.pth").write_bytes(b"final")  # never recorded
    (folder / "last_checkpoint").write_text("model_final.pth")
    (folder / "events.out").write_text("log")  # not a checkpoint: stays
    target = set_aside_checkpoints(folder, "d2")
    assert target.parent == tmp_path / "run" / SUPERSEDED_DIR
    assert (target / "native" / "model_final.pth").read_bytes() == b"final"
    assert (target / "native" / "last_checkpoint").is_file() and (folder / "events.out").is_file()


def test_delete_all_deletes_only_the_superseded_folders_of_the_runs_named(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    run_a, run_b = sweep / "yolov5" / "fold0", sweep / "yolov5" / "fold1"
    for run in (run_a, run_b):
        (run / SUPERSEDED_DIR / "20260101-000000").mkdir(parents=True)
        (run / SUPERSEDED_DIR / "20260101-000000" / "last.pt").write_bytes(b"x")
    foreign = sweep / "notes" / "data" / SUPERSEDED_DIR / "mine"  # a user's folder that happens to be named so
    foreign.mkdir(parents=True)
    (foreign / "keep.txt").write_text("mine")
    assert checkpoints_cli.main(["--delete-all", str(run_a)]) == 0
    assert not (run_a / SUPERSEDED_DIR / "20260101-000000").exists()
    assert (run_b / SUPERSEDED_DIR / "20260101-000000" / "last.pt").is_file()
    assert checkpoints_cli.main(["--delete-all", str(sweep)]) == 0
    assert not (run_b / SUPERSEDED_DIR / "20260101-000000").exists()
    assert (foreign / "keep.txt").read_text() == "mine"
    assert f"deleted {run_b / SUPERSEDED_DIR / '20260101-000000'}" in capsys.readouterr().out


def test_a_new_tuning_study_keeps_the_earlier_studys_trials(tmp_path):
    study = tmp_path / "ensemble" / ".tune" / "wbf" / "fold0"
    (study / "trial0").mkdir(parents=True)
    (study / "trial0" / TRIAL_FILE).write_text('{"objective": 0.4}')
    (study / "optimization_results.yaml").write_text("best_value: 0.4\n")
    before = tree(study)
    config = SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(study))))
    ApplyTunedSettings().on_multirun_start(config)
    assert not list(study.glob(f"*/{TRIAL_FILE}"))  # not counted in the new study...
    (aside,) = superseded_folders(study)
    assert tree(aside) == before  # ... and kept, byte for byte


def metrics(run_dir: Path, fold: int, sweep_hash: str, map40: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({
        "model": "yolov5", "variant": "yolov5n", "fold": fold, "map40": map40, "split_hash": f"s{fold}",
        "config_hash": f"{sweep_hash}-{fold}", "sweep_config_hash": sweep_hash}))


def test_the_report_flags_a_fold_of_another_config_and_ignores_superseded_results(tmp_path):
    sweep = tmp_path / "sweep"
    metrics(sweep / "yolov5" / "fold0", 0, "new", 0.5)
    metrics(sweep / "yolov5" / "fold1", 1, "new", 0.6)
    metrics(sweep / "yolov5" / "fold2", 2, "old", 0.9)  # left over from an earlier config
    metrics(sweep / "yolov5" / "fold0" / SUPERSEDED_DIR / "20260101-000000", 0, "old", 0.9)
    results = collect(sweep)
    assert len(results.runs) == 3  # the superseded metrics.json is not a row
    assert [(o["fold"], o["config"], o["common"]) for o in results.other_config] == [("fold2", "old", "new")]
    text = markdown(results, summary(results.runs))
    assert "## Rows of another config" in text
    assert f"| yolov5 | fold2 | old | new | `{sweep / 'yolov5' / 'fold2'}` |" in text
    metrics(sweep / "yolov5" / "fold2", 2, "new", 0.7)  # rerun with the sweep's config: no flag
    assert not collect(sweep).other_config


def test_an_ultralytics_fresh_start_keeps_last_and_best_byte_for_byte(toy_dataset, tmp_path):
    """The real adapter: a second fit that cannot resume (1 epoch: a finished training) moves the first
    one's whole ultralytics folder (last.pt / best.pt that metrics.json names, results, args) aside."""
    run_dir = tmp_path / "sweep" / "yolov5" / "fold0"
    split = make_split(toy_dataset["labels"], toy_dataset["folds"], 0, run_dir)
    spec = dict(epochs=1, batch_size=4, imgsz=64, seed=0, workers=0, batch_predict=4,
                native={"warmup_epochs": 0, "nbs": 4})
    first = YoloV5Detector(TrainSpec(**spec)).fit(split, run_dir / "native")
    save_dir = run_dir / "native" / "train"
    before = tree(save_dir)
    assert {"weights/last.pt", "weights/best.pt"} <= set(before)
    second = YoloV5Detector(TrainSpec(**spec))
    assert second.fit(split, run_dir / "native") == first  # same path, a new file
    (aside,) = superseded_folders(run_dir)
    assert tree(aside / "native" / "train") == before
    assert second.superseded_to == aside


def test_predicting_folder_a_then_b_predicts_b(tmp_path):
    """The staging link follows the folder asked for, and the conversion cache does not serve A's
    PNG for B's file of the same name."""
    data = Path(pydicom.__file__).parent.parent / "data_store" / "data"
    folder_a, folder_b, out = tmp_path / "A", tmp_path / "B", tmp_path / "predict"
    folder_a.mkdir()
    folder_b.mkdir()
    (folder_a / "x.dcm").write_bytes((data / "RG1_UNCR.dcm").read_bytes())
    (folder_a / "only_a.dcm").write_bytes((data / "RG1_UNCR.dcm").read_bytes())
    (folder_b / "x.dcm").write_bytes((data / "RG3_UNCR.dcm").read_bytes())  # same name, another image
    run_cfg = OmegaConf.create({"data": {"size": 64, "square": False, "bits": 8}})
    images_a, manifest_a = input_images(str(folder_a), run_cfg, out)
    assert sorted(manifest_a["image_id"]) == ["only_a", "x"]
    images_b, manifest_b = input_images(str(folder_b), run_cfg, out)
    assert list(manifest_b["image_id"]) == ["x"]  # B's images only
    assert (out / "input" / "test").resolve() == folder_b.resolve()
    row_a, row_b = (m.set_index("image_id").loc["x"] for m in (manifest_a, manifest_b))
    assert (row_b.orig_width, row_b.orig_height) != (row_a.orig_width, row_a.orig_height)  # B's file, converted
    assert (images_b[0].width, images_b[0].height) == (int(row_b.width), int(row_b.height))
    assert input_images(str(folder_a), run_cfg, out)[1]["image_id"].tolist() == ["only_a", "x"]  # and back


def test_the_config_hash_is_content_not_location(tmp_path, monkeypatch):
    """Moving the project (another CXR_BENCH_ROOT, weights and data inside it) keeps every job's
    config hash; new bytes in the weights file at the same path change it."""
    hashes = {}
    for root in ("a", "b"):
        weights = tmp_path / root / "weights" / "init.pt"
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"the same pretrained weights")
        monkeypatch.setenv("CXR_BENCH_ROOT", str(tmp_path / root))
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"train.weights={weights}"])
            assert str(tmp_path / root) in cfg.data.raw_dir  # the data moved with the project
            hashes[root] = (config_hash(cfg), config_hash(cfg, with_fold=False))
            weights.write_bytes(b"other pretrained weights")  # same path, new bytes
            hashes[root + "-new bytes"] = (config_hash(cfg), config_hash(cfg, with_fold=False))
            hashes[root + "-fold1"] = config_hash(compose(config_name="train", overrides=[
                f"train.weights={weights}", "data.fold=1"]), with_fold=False)
    assert hashes["a"] == hashes["b"]
    assert hashes["a-new bytes"] == hashes["b-new bytes"]
    assert hashes["a-new bytes"][0] != hashes["a"][0] and hashes["a-new bytes"][1] != hashes["a"][1]
    assert hashes["a-fold1"] == hashes["a-new bytes"][1]  # one sweep_config_hash for every fold


def test_recorded_paths_follow_a_moved_run(tmp_path):
    root = tmp_path / "project"
    run_dir = root / "runs" / "demo" / "yolov5" / "fold0"
    config = {"data": {"raw_dir": str(root / "data" / "raw"), "prepared_dir": "/datasets/shared/prepared"}}
    stored = runpaths.store_config(config, run_dir, root)
    assert stored["data"]["raw_dir"] == "../../../../data/raw"  # inside the project: moves with it
    assert stored["data"]["prepared_dir"] == "/datasets/shared/prepared"  # outside: stays absolute
    metrics = {"checkpoint": runpaths.store(run_dir / "native" / "train" / "weights" / "last.pt", run_dir),
               "config": stored}
    assert metrics["checkpoint"] == "native/train/weights/last.pt"
    moved = tmp_path / "elsewhere" / "runs" / "demo" / "yolov5" / "fold0"
    read = runpaths.resolve_run(metrics, moved)
    assert read["checkpoint"] == str(moved / "native" / "train" / "weights" / "last.pt")
    assert read["config"]["data"]["raw_dir"] == str(tmp_path / "elsewhere" / "data" / "raw")
    assert read["config"]["data"]["prepared_dir"] == "/datasets/shared/prepared"


@pytest.mark.slow
def test_a_moved_project_predicts_and_skips_its_finished_job(tmp_path):
    """A real cxr-train job, then the whole project folder moved: cxr-predict finds the checkpoint and
    the data from the run's metrics.json, and the same cxr-train command skips the finished job."""
    first, moved = tmp_path / "first", tmp_path / "moved"
    args = ["sweep=moved", "model=yolov5", "data.fold=0", *FAST, "train.epochs=1", "train.imgsz=64"]
    run_app("harness.cli.train", args, first)
    recorded = json.loads((first / "runs" / "moved" / "yolov5" / "fold0" / "metrics.json").read_text())
    assert recorded["checkpoint"] == "native/train/weights/last.pt"
    assert recorded["config"]["data"]["prepared_dir"] == "../../../../data/synthetic-tiny"
    shutil.move(first, moved)
    run_dir = moved / "runs" / "moved" / "yolov5" / "fold0"
    run_app("harness.cli.predict", ["sweep=moved", *FAST, f"predict.runs=[{run_dir}]", "predict.input=test"], moved)
    predictions = json.loads((moved / "runs" / "moved" / "predict" / "predictions.json").read_text())
    manifest = read_manifest(moved / "data" / "synthetic-tiny" / "manifest.csv")
    assert len(predictions["image_ids"]) == int((manifest["split"] == "test").sum()) > 0
    rerun = run_app("harness.cli.train", args, moved)
    assert "yolov5 fold 0: finished earlier with the same config, skipping" in rerun.stdout + rerun.stderr
    assert json.loads((run_dir / "metrics.json").read_text()) == recorded  # not rerun, not rewritten


def test_the_protocol_card_shows_where_each_run_ran_and_what_that_can_change(tmp_path):
    for fold, (device, gpus) in enumerate((("cuda", 2), ("cpu", 1))):
        run = tmp_path / "yolov5" / f"fold{fold}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({
            "model": "yolov5", "variant": "yolov5n", "fold": fold, "map40": 0.5, "device": device,
            "protocol": [{"key": "imgsz", "label": "image size", "value": 64, "native": 640, "scope": "shared"}],
            "run_settings": {"device": device, "gpus": gpus, "workers": 4, "batch_predict": 8, "host": "h"}}))
    card = protocol_markdown(collect_protocols(tmp_path))
    section = card.split("## Run settings")[1]
    assert "| yolov5 | fold0, fold1 | fold0: cuda · fold1: cpu | fold0: 2 · fold1: 1 | 4 | 8 |" in section
    assert "not without effect" in section and "mixed precision runs only on CUDA" in section
    assert "letterbox" in section and "BatchNorm statistics" in section
