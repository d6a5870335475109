"""Finding what a sweep directory holds: model runs per fold (`<sweep>/<model>/fold<k>/`)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

RESERVED = {"ensemble", "report", "predict", "classifier"}  # not detector runs
CLASSIFIER_DIR = "classifier"  # <sweep>/classifier/fold<k>: the "No finding" stage's classifier runs
FOLD_DIR = re.compile(r"^fold(\d+)$")
# where a fresh start moves an earlier run's checkpoints: `<job folder>/superseded/<time>/`
SUPERSEDED_DIR = "superseded"
# the folder a job gives its adapter as the framework's workdir (harness.jobs.train_job: run_dir/native)
JOB_WORKDIR = "native"


@dataclass(frozen=True)
class ModelRun:
    model: str
    fold: int
    path: Path

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.json"

    @property
    def val_json(self) -> Path:
        return self.path / "split" / "val.json"


def model_run_dir(sweep_dir: str | Path, model: str, fold: int) -> Path:
    """The run folder of one model x fold in a sweep (`<sweep>/<model>/fold<k>/`)."""
    return Path(sweep_dir) / model / f"fold{int(fold)}"


def model_runs(sweep_dir: str | Path, finished_only: bool = True) -> list[ModelRun]:
    """Model runs under the sweep, sorted by (model, fold); finished = has metrics.json."""
    runs = []
    for fold_dir in sorted(Path(sweep_dir).glob("*/fold*")):
        model = fold_dir.parent.name
        match = FOLD_DIR.match(fold_dir.name)
        if not match or model in RESERVED or model.startswith("."):
            continue
        if finished_only and not (fold_dir / "metrics.json").is_file():
            continue
        runs.append(ModelRun(model, int(match.group(1)), fold_dir))
    return runs


def classifier_runs(sweep_dir: str | Path) -> list[ModelRun]:
    """The finished classifier runs of the sweep (`classifier/fold<k>/` with metrics.json and
    abnormal.json), sorted by fold."""
    runs = []
    for fold_dir in sorted(Path(sweep_dir).glob(f"{CLASSIFIER_DIR}/fold*")):
        match = FOLD_DIR.match(fold_dir.name)
        if match and (fold_dir / "metrics.json").is_file() and (fold_dir / "abnormal.json").is_file():
            runs.append(ModelRun(CLASSIFIER_DIR, int(match.group(1)), fold_dir))
    return sorted(runs, key=lambda r: r.fold)


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
