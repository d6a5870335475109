"""Finding what a sweep directory holds: model runs per fold (`<sweep>/<model>/fold<k>/`)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RESERVED = {"ensemble", "report", "predict"}
FOLD_DIR = re.compile(r"^fold(\d+)$")


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
