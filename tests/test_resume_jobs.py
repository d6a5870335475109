"""Long jobs survive a crash: for each framework, a real `cxr-train` job is SIGKILLed after its first
resumable checkpoint and the same command resumes it with the framework's own resume; a truncated
last checkpoint falls back to the previous one; a changed config starts from epoch 0. Plus the
Slurm code path: submitit's local executor requeues a preempted job, which resumes.

Tiny data (the synthetic set at 128 px, 2 folds), 3 epochs, the frameworks' small variants."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.resume import RECORD_SUFFIX
from harness.digest import file_sha256
from harness.sweep import superseded_folders
from harness.report.tables import collect, markdown, summary

ROOT = Path(__file__).resolve().parents[1]
# The Faster R-CNNs: one iteration per epoch (their CPU cost is mostly per iteration), few RoIs
FAST = ["data.size=128", "data.folds=2", "train.imgsz=128", "train.batch_size=4", "train.epochs=3",
        "train.checkpoint_keep=3", "per_model.yolov5.variant=yolov5n",
        "per_model.detectron2_frcnn.variant=R18-FPN", "per_model.detectron2_frcnn.train.imgsz=64",
        "per_model.detectron2_frcnn.train.batch_size=16",
        "++per_model.detectron2_frcnn.native={MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE:32,"
        "MODEL.RPN.POST_NMS_TOPK_TRAIN:200,MODEL.RPN.POST_NMS_TOPK_TEST:100}",
        "per_model.mmdet_frcnn.variant=R18-FPN", "per_model.mmdet_frcnn.train.imgsz=64",
        "per_model.mmdet_frcnn.train.batch_size=16",
        "++per_model.mmdet_frcnn.native={model.train_cfg.rcnn.sampler.num:32,"
        "model.train_cfg.rpn_proposal.max_per_img:200,model.test_cfg.rpn.max_per_img:100,"
        "val_cfg:null,val_dataloader:null,val_evaluator:null}"]
TIMEOUT_S = 400


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A bench root with the synthetic dataset prepared once for every test here."""
    root = tmp_path_factory.mktemp("resume")
    run(["harness.cli.prepare", *FAST], root)
    return root


def env_for(root: Path) -> dict:
    return {**os.environ, "CXR_BENCH_ROOT": str(root)}


def run(args: list[str], root: Path) -> str:
    out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env_for(root), capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}\n{text[-6000:]}"
    return text


def train_args(sweep: str, model: str, *extra: str) -> list[str]:
    return ["harness.cli.train", f"sweep={sweep}", f"model={model}", "data.fold=0", *FAST, *extra]


def records(run_dir: Path) -> list[dict]:
    """The resumable-checkpoint records of a run, newest epoch first, with their checkpoint paths."""
    found = []
    # os.walk, not Path.rglob: the running job creates and removes temporary folders (the adapters' atomic
    # writes) while this polls, and rglob raises when a folder vanishes between listing and scanning it.
    for folder, _, names in os.walk(run_dir / "native"):
        for name in names:
            if not name.endswith(RECORD_SUFFIX):
                continue
            try:
                record = json.loads((Path(folder) / name).read_text())
            except FileNotFoundError:  # replaced by a newer checkpoint's record between listing and reading
                continue
            found.append({**record, "path": Path(folder) / record["checkpoint"]})
    return sorted(found, key=lambda r: r["epoch"], reverse=True)


def kill_after_first_checkpoint(args: list[str], root: Path, run_dir: Path) -> None:
    """Start the job, SIGKILL it as soon as a resumable checkpoint and its progress are on disk."""
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env_for(root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            progress = run_dir / "progress.json"
            if records(run_dir) and progress.is_file() and json.loads(progress.read_text())["epoch"] >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the job ended (exit {proc.returncode}) before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within the time limit"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


# the framework's own evidence that training continued from a checkpoint (printed to the job's log)
RESUMED_LINE = {
    "yolov5": "Resuming training",            # ultralytics' trainer.resume_training
    "detectron2_frcnn": "Starting training from iteration",
    "mmdet_frcnn": "resumed epoch:",          # mmengine's Runner.resume
}
START_KEY = {"yolov5": "framework_start_epoch", "detectron2_frcnn": "framework_start_iter",
             "mmdet_frcnn": "framework_start_epoch"}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["yolov5", "detectron2_frcnn", "mmdet_frcnn"])
def test_killed_job_resumes_falls_back_and_restarts_on_new_config(root, model):
    sweep = f"resume_{model}"
    run_dir = root / "runs" / sweep / model / "fold0"
    args = train_args(sweep, model)

    # 1. killed after its first checkpoint: no metrics, the report shows how far it got
    kill_after_first_checkpoint(args, root, run_dir)
    assert not (run_dir / "metrics.json").exists()
    first = records(run_dir)
    assert first and first[0]["epochs"] == 3 and 1 <= first[0]["epoch"] < 3  # killed before the last epoch
    killed_at, resume_sha = first[0]["epoch"], file_sha256(first[0]["path"])
    results = collect(root / "runs" / sweep)
    assert [(u["model"], u["fold"]) for u in results.unfinished] == [(model, "fold0")]
    assert f"interrupted at epoch {results.unfinished[0]['epoch']} of 3" in markdown(results, summary(results.runs))

    # 2. the same command resumes it with the framework's own resume and finishes it
    log = run(args, root)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    resumed = metrics["resumed"]
    assert resumed is not None and resumed["epoch"] == killed_at, resumed
    assert resumed["sha256"] == resume_sha  # the framework resumed the very file the killed run left
    assert resumed[START_KEY[model]] > 0, resumed  # the framework's own counter continued
    # the resumed run trained on: checkpoints of later epochs, up to the last one, exist now
    assert max(r["epoch"] for r in records(run_dir)) == 3 > killed_at
    assert "resume: resuming from" in log and RESUMED_LINE[model] in log
    if model == "detectron2_frcnn":
        assert "Starting training from iteration 0" not in log
    assert not collect(root / "runs" / sweep).unfinished

    # 3. a truncated last checkpoint: the rerun falls back to the previous one, with a log line
    resumable = [r for r in records(run_dir) if model != "yolov5" or r["epoch"] < 3]  # ultralytics: not a finished one
    assert len(resumable) >= 2, resumable
    latest, previous = resumable[0], resumable[1]
    with open(latest["path"], "r+b") as handle:
        handle.truncate(latest["bytes"] // 2)
    log = run([*args, "skip_finished=false"], root)
    assert "is corrupt, incomplete or unreadable here" in log and "falling back to the previous checkpoint" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed"]["epoch"] == previous["epoch"], metrics["resumed"]

    # 4. another config (1 epoch): the checkpoints of the first are never resumed; training starts at 0
    log = run([*args, "train.epochs=1"], root)
    assert "the config changed" in log and "starting from epoch 0" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed"] is None
    if model == "detectron2_frcnn":
        assert "Starting training from iteration 0" in log
    else:
        assert RESUMED_LINE[model] not in log
    assert {r["epochs"] for r in records(run_dir)} == {1}  # the other config's checkpoints: not in the way
    aside = superseded_folders(run_dir)  # ... but moved aside, not deleted, and named in the log
    assert aside and str(aside[-1]) in log
    kept = [json.loads(p.read_text()) for p in aside[-1].rglob(f"*{RECORD_SUFFIX}")]
    assert kept and {r["epochs"] for r in kept} == {3}
    assert all((p.parent / r["checkpoint"]).is_file() for p, r in zip(aside[-1].rglob(f"*{RECORD_SUFFIX}"), kept))


@pytest.mark.slow
def test_a_rerun_on_other_hardware_resumes_or_skips_and_a_new_config_keeps_the_old_checkpoints(root):
    """`train.workers` (like the device, the GPU count and the prediction batch) is not part of the
    job's key: a rerun with it changed resumes an interrupted job and skips a finished one, and says
    that it resumed under other run settings; `train.epochs` changed is another training, which
    starts from epoch 0 and moves the earlier checkpoints aside (listed by the report)."""
    sweep, model = "hardware", "yolov5"  # the fastest framework here
    run_dir = root / "runs" / sweep / model / "fold0"
    args = train_args(sweep, model)
    kill_after_first_checkpoint(args, root, run_dir)
    killed_at = records(run_dir)[0]["epoch"]

    log = run([*args, "train.workers=1"], root)  # interrupted + other workers: resumed, and noted
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed"] is not None and metrics["resumed"]["epoch"] == killed_at
    assert metrics["run_settings"]["workers"] == 1
    assert metrics["resumed_with_other_run_settings"]["changed"] == ["workers"]
    assert "resumed a checkpoint written with other run settings (workers 0 -> 1)" in log
    finished_hash = metrics["config_hash"]

    log = run([*args, "train.workers=2", "train.batch_predict=8"], root)  # finished + other workers: skipped
    assert "finished earlier with the same config, skipping" in log
    assert json.loads((run_dir / "metrics.json").read_text())["config_hash"] == finished_hash

    before = {r["checkpoint"]: file_sha256(r["path"]) for r in records(run_dir)}
    log = run([*args, "train.epochs=2"], root)  # another training: fresh start, old checkpoints kept aside
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed"] is None and metrics["config_hash"] != finished_hash
    assert {r["epochs"] for r in records(run_dir)} == {2}
    aside = superseded_folders(run_dir)
    assert len(aside) == 1 and str(aside[0]) in log
    kept = {p.name[:-len(RECORD_SUFFIX)]: p for p in aside[0].rglob(f"*{RECORD_SUFFIX}")}
    assert {name: file_sha256(path.with_name(name)) for name, path in kept.items()} == before  # byte for byte
    results = collect(root / "runs" / sweep)
    assert results.superseded == [str(aside[0])]
    assert str(aside[0]) in markdown(results, summary(results.runs))


@pytest.mark.slow
def test_submitit_requeues_a_preempted_job_which_resumes(root):
    """The Slurm code path on submitit's local executor: the job gets submitit's preemption signal
    (USR2, as Slurm sends before preempting) after its first checkpoint; submitit checkpoints the
    Hydra launcher's call and requeues it, and the requeued job resumes from the checkpoint."""
    sweep, model = "requeue", "yolov5"
    run_dir = root / "runs" / sweep / model / "fold0"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli.train", "-m", "launcher=submitit_local",
                             *train_args(sweep, model)[1:]], cwd=ROOT, env=env_for(root), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            progress = run_dir / "progress.json"
            if records(run_dir) and progress.is_file() and json.loads(progress.read_text())["epoch"] >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the job ended before it could be preempted:\n{proc.stdout.read()[-4000:]}"
        task_pid = json.loads((run_dir / "progress.json").read_text())["pid"]
        os.kill(task_pid, signal.SIGUSR2)  # what submitit's Slurm environment handles as a preemption
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-6000:]
    job_logs = "".join(p.read_text() for p in (root / "runs" / sweep / ".submitit").rglob("*_log.*"))
    assert "this job is preempted" in job_logs and "Requeued job" in job_logs, job_logs[-4000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed"] is not None and metrics["resumed"]["epoch"] >= 1, metrics["resumed"]
    assert metrics["resumed"]["framework_start_epoch"] >= 1
