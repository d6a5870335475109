"""The data every training benchmark runs on: fold 0 of given labels/folds, or of the toy set."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.split import Split, make_split  # noqa: E402


def bench_split(labels: str | Path | None, folds: str | Path | None, workdir: Path) -> Split:
    """Fold 0 of `labels`/`folds` when both are given, else of the 24-image toy set of the tests
    (written under `workdir/toy`); the split files go to `workdir/split`."""
    if not (labels and folds):
        sys.path.insert(0, str(ROOT / "tests"))
        from toy import make_toy_dataset

        toy = make_toy_dataset(Path(workdir) / "toy", n_images=24, size=128, seed=0, k=2)
        labels, folds = toy["labels"], toy["folds"]
    return make_split(labels, folds, 0, Path(workdir) / "split")
