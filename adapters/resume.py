"""Resumable checkpoints: the one policy every adapter follows (framework-free).

Each adapter saves checkpoints through its framework's own mechanism (ultralytics `save_period`,
detectron2's `PeriodicCheckpointer`, mmengine's `CheckpointHook`) and, once a checkpoint file is
complete, writes a record next to it, atomically: `<checkpoint>.resume.json` with the training key
(a hash of the job's config hash, the TrainSpec and the split), the epochs it has done, the epochs
planned and its size in bytes. A checkpoint without a record (half-written when the job died) is
never considered.

A rerun of the job asks `find_resume_point` for the newest record whose key is its own, whose file
has the recorded size and loads; a checkpoint of another config is skipped, a corrupt one is
skipped and the previous one tried, and when none is left training starts from epoch 0. Every
case has a log line. The adapter then resumes with its framework's own resume (optimizer,
scheduler, iteration/epoch counters, and RNG where the framework restores it).

The key holds what the job computes, not how it runs: the worker count, device, number of GPUs and
prediction batch (`RUN_SETTINGS`) are left out, so a rerun on other hardware (more workers, two GPUs
instead of one) resumes; the job notes that in its log and metrics.json (harness.jobs.train_job).
These settings can still change the numbers (AMP only on CUDA, the per-process batch and BatchNorm
statistics under DDP, the workers' augmentation draws, the prediction batch's letterbox padding:
docs/run-identity.md), so each record stores the run settings its checkpoint was written under.

Nothing here deletes a checkpoint: a fresh start moves every checkpoint file of an earlier run
(recorded or not) and the records aside into `<job>/superseded/<time>/` (`set_aside_checkpoints`,
named in the log, listed by cxr-report); a checkpoint that fails to load keeps its file and its record,
marked `"unusable"` with the error; they are deleted only on request (`cxr-checkpoints --delete`).
The one exception is `prune`, the `checkpoint_keep` rotation among this same training's checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import atomic, supersede
from harness.digest import file_sha256, file_sha256_cached
from harness.sweep import JOB_WORKDIR

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".resume.json"
# files a fresh start moves aside even without a record: checkpoints a framework wrote but nobody
# recorded (ultralytics' last.pt / best.pt, a file being written when the job died) and detectron2's
# pointer to its newest checkpoint
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
CHECKPOINT_NAMES = ("last_checkpoint",)
# TrainSpec fields that say how to checkpoint, not what to train: not part of the training key
RESUME_SETTINGS = ("checkpoint_interval", "checkpoint_keep", "resume")
# TrainSpec fields that say how the job runs (hardware, parallelism), not what it computes: not part of
# the training key or the job's config hash, so a rerun on other hardware resumes and skips finished jobs
RUN_SETTINGS = ("workers", "device", "gpus", "batch_predict")
NOT_IN_KEY = RESUME_SETTINGS + RUN_SETTINGS + ("reasons",)  # reasons explain settings, change nothing

@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a rerun resumes from: it holds `epoch` finished epochs of `epochs`; `sha256`
    is the file's digest when it was chosen (metrics.json: which exact file the framework resumed)."""

    checkpoint: Path
    epoch: int
    epochs: int
    sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "epoch": self.epoch, "epochs": self.epochs,
                "sha256": self.sha256}


def training_key(spec_settings: dict[str, Any], split_hash: str, run_key: str = "") -> str:
    """What a checkpoint must have been trained with to be resumed: the job's config hash
    (`run_key`), the TrainSpec (less the checkpoint and run settings) and the split."""
    settings = {k: v for k, v in spec_settings.items() if k not in NOT_IN_KEY}
    if settings.get("weights") and Path(settings["weights"]).is_file():  # by content, not path: a moved project resumes
        settings["weights"] = {"sha256": file_sha256_cached(settings["weights"])}
    payload = json.dumps({"job": run_key, "spec": settings, "split": split_hash}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def record_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + RECORD_SUFFIX)


def write_record(checkpoint: str | Path, key: str, epoch: int, epochs: int,
                 run_settings: dict[str, Any] | None = None) -> Path:
    """Record a complete checkpoint file as resumable (call only after the file is fully written),
    with the run settings it was written under (`RUN_SETTINGS` and host: not in the key)."""
    checkpoint = Path(checkpoint)
    path = record_path(checkpoint)
    atomic.write_json(path, {"checkpoint": checkpoint.name, "key": key, "epoch": int(epoch), "epochs": int(epochs),
                             "bytes": checkpoint.stat().st_size, "written": time.time(),
                             "run_settings": run_settings})
    drop_orphan_records(checkpoint.parent)
    return path


def records(folder: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(record path, record) for every readable record in `folder`, newest epoch first."""
    found = []
    for path in Path(folder).glob(f"*{RECORD_SUFFIX}"):
        try:
            record = json.loads(path.read_text())
            int(record["epoch"]), str(record["checkpoint"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("resume: unreadable checkpoint record %s (%s): ignored", path, err)
            continue
        found.append((path, record))
    return sorted(found, key=lambda item: (int(item[1]["epoch"]), float(item[1].get("written", 0))), reverse=True)


def drop_orphan_records(folder: str | Path) -> None:
    """Remove records whose checkpoint a framework has pruned."""
    for path, record in records(folder):
        if not (path.parent / record["checkpoint"]).exists():
            path.unlink(missing_ok=True)


def _problem(checkpoint: Path, record: dict[str, Any], load: Callable[[Path], Any]) -> str | None:
    """Why the recorded checkpoint cannot be resumed from (missing, truncated, unloadable), or None."""
    if not checkpoint.is_file():
        return "file missing"
    size = checkpoint.stat().st_size
    if size != record.get("bytes"):
        return f"{size} bytes, {record.get('bytes')} recorded"
    try:
        load(checkpoint)
    except Exception as err:  # noqa: BLE001 - any load failure means: not resumable
        return f"does not load: {type(err).__name__}: {err}"
    return None


def find_resume_point(folder: str | Path, key: str, load: Callable[[Path], Any], name: str = "",
                      before_epoch: int | None = None) -> ResumePoint | None:
    """The newest valid checkpoint of this training (`key`) in `folder`, or None (start from epoch 0).
    `load` raises when a checkpoint file cannot be used; `before_epoch` skips checkpoints at or past
    that epoch (for a framework that cannot resume a finished training)."""
    folder = Path(folder)
    prefix = f"{name}: " if name else ""
    for path, record in records(folder):
        checkpoint, epoch = folder / record["checkpoint"], int(record["epoch"])
        if record.get("key") != key:
            log.info("%sresume: not resuming %s (epoch %d): written by another config (key %s, this job %s)",
                     prefix, checkpoint, epoch, record.get("key"), key)
            continue
        if record.get("unusable"):
            log.info("%sresume: not resuming %s (epoch %d): marked unusable earlier (%s)", prefix, checkpoint,
                     epoch, record["unusable"])
            continue
        if before_epoch is not None and epoch >= before_epoch:
            log.info("%sresume: %s ends the training (epoch %d): not resumable", prefix, checkpoint, epoch)
            continue
        problem = _problem(checkpoint, record, load)
        if problem:
            log.warning("%sresume: checkpoint %s (epoch %d) is corrupt, incomplete or unreadable here (%s): "
                        "falling back to the previous checkpoint; the file and its record stay, marked unusable",
                        prefix, checkpoint, epoch, problem)
            mark_unusable(path, record, problem)  # not tried again; moved aside (never deleted) by a fresh start
            continue
        log.info("%sresume: resuming from %s (epoch %d of %d)", prefix, checkpoint, epoch, int(record["epochs"]))
        return ResumePoint(checkpoint, epoch, int(record["epochs"]), file_sha256(checkpoint))
    log.info("%sresume: no valid checkpoint of this config in %s: starting from epoch 0", prefix, folder)
    return None


def mark_unusable(path: Path, record: dict[str, Any], problem: str) -> None:
    """Keep a checkpoint's record, marked unusable with the reason (a missing module after an
    upgrade, too little memory, a truncated file): the file is kept, and the record says why."""
    atomic.write_json(path, {**record, "unusable": problem, "unusable_since": time.time()})


def superseded_root(folder: str | Path) -> tuple[Path, Path]:
    """(the job folder whose `superseded/` receives `folder`'s checkpoints, `folder` relative to it).
    For a job's framework workdir (`<run_dir>/native/...`) that is the run dir, outside anything the
    framework or adapter clears on a fresh start; for any other folder, the folder itself."""
    folder = Path(folder).resolve()
    parts = folder.parts
    if JOB_WORKDIR in parts:
        at = len(parts) - 1 - parts[::-1].index(JOB_WORKDIR)
        return Path(*parts[:at]), Path(*parts[at:])
    return folder, Path(".")


def set_aside_checkpoints(folder: str | Path, name: str = "", target: Path | None = None,
                          everything: bool = False, unusable_only: bool = False) -> Path | None:
    """A fresh start: move the checkpoints an earlier run left in `folder` (recorded or not:
    another config's, unusable ones, ultralytics' last.pt/best.pt) and their records into
    `<target>/<folder relative to the job>` (target: a new `<job>/superseded/<time>/`), so none of
    them is mistaken for this run's and none is lost; with `everything`, every file below `folder`
    (a framework's own run folder). Returns the target (None: nothing to move). Deleting them is a
    separate, explicit step (`cxr-checkpoints --delete`). With `unusable_only` (a resume), only the
    checkpoints marked unusable and their records move (the framework would write over them)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = records(folder)
    if unusable_only:
        found = [(path, record) for path, record in found if record.get("unusable")]
    files = {path for path, _ in found} | {path.parent / record["checkpoint"] for path, record in found}
    if everything and not unusable_only:
        files |= {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    elif not unusable_only:
        files |= {p for p in folder.iterdir() if p.is_file() and (p.suffix in CHECKPOINT_SUFFIXES
                                                                 or p.name in CHECKPOINT_NAMES)}
    files = sorted(p for p in files if p.exists() or p.is_symlink())
    if not files:
        return None
    _, relative = superseded_root(folder)
    target = target or supersede.new_target(superseded_root(folder)[0])
    for path in files:
        supersede.move(path, target / relative / path.relative_to(folder))
    what = "unusable checkpoint(s) kept out of the resumed training's way" if unusable_only else "fresh start"
    log.warning("%sresume: %s: moved %d file(s) of an earlier run (%d checkpoint record(s)) from %s aside to %s "
                "(kept; delete with `cxr-checkpoints --delete %s`)", f"{name}: " if name else "", what, len(files),
                len(found), folder, target, target)
    return target


def prune(folder: str | Path, keep: int, key: str | None = None) -> None:
    """Keep the newest `keep` usable recorded checkpoints of training `key` in `folder` (for
    frameworks that keep them all); another training's and unusable checkpoints are left alone."""
    mine = [(path, record) for path, record in records(folder)
            if not record.get("unusable") and (key is None or record.get("key") == key)]
    for path, record in mine[keep:]:
        (path.parent / record["checkpoint"]).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
