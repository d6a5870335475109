"""The resume policy, progress files and their report rows, without a framework (fast).
The real kill/resume runs of each framework are in test_resume_jobs.py."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from adapters.base import Detector, TrainSpec
from adapters.resume import (RECORD_SUFFIX, find_resume_point, prune, record_path, records,
                             set_aside_checkpoints, training_key, write_record)
from harness.digest import file_sha256
from harness.sweep import SUPERSEDED_DIR, superseded_folders
from harness.cli import checkpoints as checkpoints_cli
from harness.cli.common import CONF_DIR
from harness.jobs import run_settings
from harness.jobs.config import config_hash
from harness.progress import describe, job_state, write_progress
from harness.report.tables import collect, markdown, summary


def checkpoint(folder: Path, name: str, key: str, epoch: int, epochs: int = 5, data: bytes = b"weights") -> Path:
    path = folder / name
    path.write_bytes(data * 100)
    write_record(path, key, epoch, epochs)
    time.sleep(0.01)  # distinct "written" times
    return path


def loads(path: Path) -> None:
    if not path.read_bytes().endswith(b"weights"):
        raise ValueError("truncated")


def test_newest_valid_checkpoint_of_the_same_config_is_resumed(tmp_path, caplog):
    checkpoint(tmp_path, "e1.pt", "A", 1)
    checkpoint(tmp_path, "e2.pt", "A", 2)
    checkpoint(tmp_path, "e3.pt", "B", 3)  # another config's
    with caplog.at_level(logging.INFO):
        point = find_resume_point(tmp_path, "A", loads, name="m")
    assert (point.checkpoint.name, point.epoch, point.epochs) == ("e2.pt", 2, 5)
    assert "written by another config" in caplog.text and "resuming from" in caplog.text


def test_truncated_last_checkpoint_falls_back_to_the_previous_then_to_a_fresh_start(tmp_path, caplog):
    first = checkpoint(tmp_path, "e1.pt", "A", 1)
    last = checkpoint(tmp_path, "e2.pt", "A", 2)
    with open(last, "r+b") as handle:
        handle.truncate(100)
    with caplog.at_level(logging.INFO):
        point = find_resume_point(tmp_path, "A", loads)
    assert point.checkpoint == first
    assert "e2.pt (epoch 2) is corrupt, incomplete or unreadable here" in caplog.text and "falling back" in caplog.text
    # not tried again, and not lost: the file stays, its record says why it is unusable
    assert last.is_file() and "100 bytes, 700 recorded" in json.loads(record_path(last).read_text())["unusable"]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert find_resume_point(tmp_path, "A", loads) == point
    assert "marked unusable earlier" in caplog.text and "corrupt" not in caplog.text

    # same size but unloadable (e.g. corrupt bytes): the load check catches it
    first.write_bytes(b"x" * first.stat().st_size)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert find_resume_point(tmp_path, "A", loads) is None
    assert "does not load" in caplog.text and "starting from epoch 0" in caplog.text


def test_a_checkpoint_without_record_or_past_the_limit_is_not_resumed(tmp_path):
    (tmp_path / "half_written.pt").write_bytes(b"weights")  # died before its record was written
    checkpoint(tmp_path, "final.pt", "A", 5)
    assert find_resume_point(tmp_path, "A", loads, before_epoch=5) is None
    assert find_resume_point(tmp_path, "A", loads).checkpoint.name == "final.pt"


def test_prune_set_aside_and_orphan_records(tmp_path, caplog):
    for epoch in (1, 2, 3):
        checkpoint(tmp_path, f"e{epoch}.pt", "A", epoch)
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["e2.pt", "e3.pt"]
    (tmp_path / "e2.pt").unlink()  # pruned by a framework
    checkpoint(tmp_path, "e4.pt", "A", 4)  # writing a record drops the orphan
    assert [r["checkpoint"] for _, r in records(tmp_path)] == ["e4.pt", "e3.pt"]
    e4 = (tmp_path / "e4.pt").read_bytes()
    with caplog.at_level(logging.INFO):
        aside = set_aside_checkpoints(tmp_path)
    # moved aside, not deleted: the files and their records, byte for byte, and the log names the folder
    assert aside.parent == tmp_path / SUPERSEDED_DIR and str(aside) in caplog.text
    assert sorted(p.name for p in aside.iterdir()) == sorted(["e3.pt", "e4.pt", "e3.pt" + RECORD_SUFFIX,
                                                              "e4.pt" + RECORD_SUFFIX])
    assert (aside / "e4.pt").read_bytes() == e4
    assert not records(tmp_path) and not list(tmp_path.glob("*.pt"))
    assert set_aside_checkpoints(tmp_path) is None  # nothing left to move
    checkpoint(tmp_path, "e1.pt", "B", 1)
    second = set_aside_checkpoints(tmp_path)  # a second fresh start (same second): its own folder
    assert second != aside and superseded_folders(tmp_path) == sorted([aside, second])


def test_a_job_workdir_sets_aside_into_the_run_dir(tmp_path):
    """A job's framework folder (<run_dir>/native/...) is cleared by some adapters on a fresh start
    (ultralytics' weights dir): the checkpoints go to <run_dir>/superseded/<time>/native/..., and
    cxr-report and `cxr-checkpoints` list them."""
    run_dir = tmp_path / "sweep" / "yolov5" / "fold0"
    weights = run_dir / "native" / "train" / "weights"
    weights.mkdir(parents=True)
    checkpoint(weights, "epoch1.pt", "A", 1)
    aside = set_aside_checkpoints(weights, "yolov5")
    assert aside.parent == run_dir / SUPERSEDED_DIR
    assert (aside / "native" / "train" / "weights" / "epoch1.pt").is_file()
    assert superseded_folders(tmp_path / "sweep") == [aside]
    results = collect(tmp_path / "sweep")
    assert results.superseded == [str(aside)]
    text = markdown(results, summary(results.runs))
    assert "## Superseded checkpoints" in text and f"- `{aside}`" in text


def test_superseded_checkpoints_are_deleted_only_on_request(tmp_path, capsys):
    checkpoint(tmp_path, "e1.pt", "A", 1)
    aside = set_aside_checkpoints(tmp_path)
    assert checkpoints_cli.main([str(tmp_path)]) == 0
    assert str(aside) in capsys.readouterr().out and (aside / "e1.pt").is_file()  # listing deletes nothing
    assert checkpoints_cli.main(["--delete", str(tmp_path)]) == 2  # not a superseded/<time>/ folder
    assert "superseded/<time>/ folders only" in capsys.readouterr().err and (aside / "e1.pt").is_file()
    assert checkpoints_cli.main(["--delete", str(aside)]) == 0
    assert not aside.exists() and f"deleted {aside}" in capsys.readouterr().out


class Dummy(Detector):
    name = "dummy"

    def _fit(self, split, workdir):
        raise NotImplementedError

    def prediction_session(self, checkpoint, workdir):
        return contextlib.nullcontext(lambda refs: [])

    def recipe(self):
        return []

    def versions(self):
        return {}


class FakeSplit:
    split_hash = "s1"


def test_detector_key_depends_on_training_not_on_checkpoint_settings(tmp_path):
    det = Dummy(TrainSpec())
    key = det.training_key(FakeSplit.split_hash)
    assert Dummy(TrainSpec(checkpoint_interval=3, checkpoint_keep=1, resume=False)).training_key(FakeSplit.split_hash) == key
    assert Dummy(TrainSpec(lr=0.5)).training_key(FakeSplit.split_hash) != key
    det.run_key = "another job config"
    assert det.training_key(FakeSplit.split_hash) != key
    assert training_key(TrainSpec().to_dict(), "s2") != key

    # how the job runs (workers, device, GPUs, prediction batch) is not part of the key
    for run_setting in ({"workers": 8}, {"device": "cuda"}, {"gpus": 2}, {"batch_predict": 32}):
        assert Dummy(TrainSpec(**run_setting)).training_key(FakeSplit.split_hash) == key, run_setting

    checkpoint(tmp_path, "e1.pt", key, 1)
    fresh = Dummy(TrainSpec(resume=False))
    assert fresh.resume_point(FakeSplit(), tmp_path, loads) is None and fresh.resumed is None
    assert not list(tmp_path.glob("*.pt"))  # a fresh start moves the earlier run's checkpoints aside
    assert [p.name for p in superseded_folders(tmp_path)[0].glob("*.pt")] == ["e1.pt"]
    path = checkpoint(tmp_path, "e1.pt", key, 1)
    resumed = Dummy(TrainSpec(workers=4))
    assert resumed.resume_point(FakeSplit(), tmp_path, loads).epoch == 1
    assert resumed.resumed == {"checkpoint": str(path), "epoch": 1, "epochs": 5, "sha256": file_sha256(path)}
    with pytest.raises(ValueError, match="checkpoint_interval"):
        TrainSpec(checkpoint_interval=0)


def test_config_hash_ignores_checkpoint_and_run_settings_only():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        base = config_hash(compose(config_name="train"))
        same = config_hash(compose(config_name="train", overrides=[
            "train.checkpoint_interval=2", "train.checkpoint_keep=1", "train.resume=false"]))
        hardware = [config_hash(compose(config_name="train", overrides=[o])) for o in (
            "train.workers=8", "train.device=cuda", "train.gpus=2", "train.batch_predict=32", "data.workers=3",
            "++per_model.yolov5.train.workers=4", "++per_model.yolov5.train.device=cuda:1")]
        other = [config_hash(compose(config_name="train", overrides=[o])) for o in (
            "train.lr=0.02", "train.epochs=3", "train.amp=true", "++per_model.yolov5.train.epochs=3")]
        slurm = compose(config_name="train", overrides=["launcher=slurm"], return_hydra_config=True)
    assert base == same and set(hardware) == {base}
    assert base not in other and len(set(other)) == len(other)
    assert slurm.hydra.launcher.max_num_timeout >= 1 and slurm.hydra.launcher.signal_delay_s > 0


def test_a_resume_under_other_run_settings_is_noted(tmp_path, caplog):
    first = {"workers": 0, "device": "cpu", "gpus": 1, "batch_predict": 4, "host": "a"}
    assert run_settings.swap(tmp_path, first) is None
    second = {**first, "workers": 8, "device": "cuda", "host": "b"}
    previous = run_settings.swap(tmp_path, second)
    assert previous == first
    assert run_settings.resumed_elsewhere(previous, second, None, "job") is None  # a fresh start: nothing to say
    assert run_settings.resumed_elsewhere(previous, previous, {"epoch": 1}, "job") is None
    with caplog.at_level(logging.WARNING):
        note = run_settings.resumed_elsewhere(previous, second, {"epoch": 1}, "yolov5 fold 0")
    may_differ = note.pop("may_differ")
    assert note == {"changed": ["device", "host", "workers"], "before": {"device": "cpu", "host": "a", "workers": 0},
                    "now": {"device": "cuda", "host": "b", "workers": 8}}
    # honest: the settings are not in the job's identity, but the note says what they can change
    assert [line.split(":")[0] for line in may_differ] == ["device", "host", "workers"]
    assert "mixed precision runs only on CUDA" in may_differ[0] and "augmentations" in may_differ[2]
    assert "the numbers may differ" in caplog.text and "does not depend" not in caplog.text
    assert "yolov5 fold 0: resumed a checkpoint written with other run settings" in caplog.text
    assert "workers 0 -> 8" in caplog.text


def test_progress_states():
    mine = {"pid": os.getpid(), "host": platform.node(), "epoch": 2, "epochs": 3}
    assert job_state(mine) == "running"
    assert describe({**mine, "pid": 2 ** 22 + 12345}) == "interrupted at epoch 2 of 3"  # no such process
    assert job_state({**mine, "host": "another-node"}) == "running / interrupted"


def test_report_lists_unfinished_jobs_until_they_finish_or_fail(tmp_path):
    run = tmp_path / "yolov5" / "fold1"
    run.mkdir(parents=True)
    write_progress(run / "progress.json", "yolov5", 2, 30, run / "native" / "epoch1.pt")
    progress = json.loads((run / "progress.json").read_text())
    progress.update(pid=2 ** 22 + 12345)  # the process is gone: interrupted
    (run / "progress.json").write_text(json.dumps(progress))
    results = collect(tmp_path)
    assert [(u["model"], u["fold"], u["status"]) for u in results.unfinished] == [
        ("yolov5", "fold1", "interrupted at epoch 2 of 30")]
    text = markdown(results, summary(results.runs))
    assert "## Unfinished jobs" in text and "| yolov5 | fold1 | interrupted at epoch 2 of 30 |" in text
    time.sleep(0.01)
    (run / "failed.json").write_text(json.dumps({"model": "yolov5", "fold": 1, "error": "CUDA out of memory"}))
    assert not collect(tmp_path).unfinished  # the job's end is known: failed, listed as such
