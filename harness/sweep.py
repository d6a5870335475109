"""Finding what a sweep directory holds: model runs per fold and run key.

Layout: `<sweep>/<model>/[<key>/]fold<k>/`, where `<key>` (harness.sweep.key_name) names the values of
the overrides a multirun sweeps other than `sweep`, `model` and `data.fold`, e.g. `train.lr=0.01`; a
keyed job folder holds `run_key.json` (the key and its swept values). Plain runs and sweeps over models
and folds only have no key.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

RESERVED = {"ensemble", "report", "predict", "classifier"}  # not detector runs
CLASSIFIER_DIR = "classifier"  # <sweep>/classifier/[<key>/]fold<k>: the "No finding" stage's classifier runs
FOLD_DIR = re.compile(r"^fold(\d+)$")
# where a fresh start moves an earlier run's checkpoints: `<job folder>/superseded/<time>/`
SUPERSEDED_DIR = "superseded"
# the folder a job gives its adapter as the framework's workdir (harness.jobs.train_job: run_dir/native)
JOB_WORKDIR = "native"
# overrides that never name a run key: they already name the sweep folder, the model folder, the fold folder
NOT_KEYED = ("sweep", "model", "data.fold")
KEY_FILE = "run_key.json"  # in a keyed job folder: {"key": <folder name>, "swept": {override key: value}}
KEY_MAX = 60  # longer keys keep their first characters and end in a hash of the whole
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@-]")


@dataclass(frozen=True)
class RunKey:
    """What distinguishes a job within its multirun: the swept overrides' values (typed, from the job's
    config) and the folder name made of them ("" = no key)."""

    key: str = ""
    swept: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def label(self) -> str:
        """`train.lr=0.01, aug=hflip`: the swept values as a reader sees them ("" without)."""
        return ", ".join(f"{k}={v}" for k, v in self.swept.items())

    def as_json(self) -> dict:
        return {"key": self.key, "swept": dict(self.swept)}


def key_name(items: list[tuple[str, str]]) -> str:
    """The folder name of a job's swept overrides (key, value as written), like Hydra's override_dirname:
    `aug=hflip,train.epochs=3`, sorted by key. Characters unsafe in a path become `_`; then, or when the
    name is longer than KEY_MAX, `-<8 hex digits>` of the full text is appended so that two different
    keys never share a folder. No items: ""."""
    if not items:
        return ""
    text = ",".join(f"{k}={v}" for k, v in sorted(items))
    safe = _UNSAFE.sub("_", text)
    if safe == text and len(text) <= KEY_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{safe[:KEY_MAX - 9]}-{digest}"


def override_key(override: str) -> tuple[str, str]:
    """(key without +/++/~ prefix, value as written) of a `key=value` override string."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def job_key(overrides: list[str], swept: list[str]) -> str:
    """The key folder name of a job from its own overrides (`key=value` strings) and the swept keys."""
    wanted = [k.lstrip("+~") for k in swept if k.lstrip("+~") not in NOT_KEYED]
    pairs = [override_key(o) for o in overrides]
    return key_name([(k, v) for k, v in pairs if k in wanted])


def read_run_key(job_dir: str | Path) -> RunKey:
    """The run key recorded in a job folder (`run_key.json`); no key when there is none or it is unreadable."""
    try:
        data = json.loads((Path(job_dir) / KEY_FILE).read_text())
        return RunKey(str(data.get("key") or ""), dict(data.get("swept") or {}))
    except (OSError, ValueError, AttributeError):
        return RunKey()


@dataclass(frozen=True)
class ModelRun:
    model: str
    fold: int
    path: Path
    run_key: RunKey = field(default_factory=RunKey)

    @property
    def key(self) -> str:
        return self.run_key.key

    @property
    def swept(self) -> Mapping[str, Any]:
        return self.run_key.swept

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.json"

    @property
    def val_json(self) -> Path:
        return self.path / "split" / "val.json"


def model_run_dir(sweep_dir: str | Path, model: str, fold: int) -> Path:
    """The run folder of one model x fold in a sweep (`<sweep>/<model>/fold<k>/`)."""
    return Path(sweep_dir) / model / f"fold{int(fold)}"


def _job_folders(parent: Path) -> list[tuple[int, Path, RunKey]]:
    """(fold, folder, key) of the job folders of one model folder: `fold<k>/` and `<key>/fold<k>/`."""
    found = []
    for child in sorted(parent.iterdir()) if parent.is_dir() else []:
        if not child.is_dir() or child.name.startswith("."):
            continue
        match = FOLD_DIR.match(child.name)
        if match:
            found.append((int(match.group(1)), child, RunKey()))
            continue
        for fold_dir in sorted(child.glob("fold*")):
            match = FOLD_DIR.match(fold_dir.name)
            if match and (fold_dir / KEY_FILE).is_file():
                found.append((int(match.group(1)), fold_dir, read_run_key(fold_dir)))
    return found


def model_runs(sweep_dir: str | Path, finished_only: bool = True) -> list[ModelRun]:
    """Model runs under the sweep, sorted by (model, key, fold); finished = has metrics.json."""
    runs = []
    for model_dir in sorted(Path(sweep_dir).iterdir()) if Path(sweep_dir).is_dir() else []:
        model = model_dir.name
        if model in RESERVED or model.startswith("."):
            continue
        for fold, fold_dir, run_key in _job_folders(model_dir):
            if finished_only and not (fold_dir / "metrics.json").is_file():
                continue
            runs.append(ModelRun(model, fold, fold_dir, run_key))
    return sorted(runs, key=lambda r: (r.model, r.key, r.fold))


def classifier_runs(sweep_dir: str | Path) -> list[ModelRun]:
    """The finished classifier runs of the sweep (`classifier/[<key>/]fold<k>/` with metrics.json and
    abnormal.json), sorted by (key, fold)."""
    runs = []
    for fold, fold_dir, run_key in _job_folders(Path(sweep_dir) / CLASSIFIER_DIR):
        if (fold_dir / "metrics.json").is_file() and (fold_dir / "abnormal.json").is_file():
            runs.append(ModelRun(CLASSIFIER_DIR, fold, fold_dir, run_key))
    return sorted(runs, key=lambda r: (r.key, r.fold))


def superseded_folders(root: str | Path) -> list[Path]:
    """Every `superseded/<time>/` folder under `root` (a run dir or a whole sweep), oldest first
    (frameworks' workdirs are not searched: a job's superseded folder sits beside them)."""
    found = []
    for folder, dirs, _ in os.walk(root):
        if Path(folder).name == SUPERSEDED_DIR:
            found += [Path(folder) / d for d in dirs]
            dirs[:] = []
        dirs[:] = [d for d in dirs if d != JOB_WORKDIR]
    return sorted(found)
