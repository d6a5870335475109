"""The human-reader reference row of a sweep's report ("one radiologist vs two").

Found from the runs' own files: the dataset's train.csv (metrics.json -> config.data.raw_dir) and the
val images the sweep scored (each run's split/val.json image keys), so the reference is computed on
the same images as the models. A dataset without several readers per image gets no row.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from harness import runpaths
from harness.data.labels import parse_train_csv
from harness.eval.reader_reference import reader_reference
from harness.sweep import model_runs

log = logging.getLogger(__name__)


def sweep_dataset(sweep_dir: Path) -> tuple[Path | None, set[str]]:
    """(train.csv of the sweep's dataset or None, image keys of every scored val image)."""
    csv_path, keys = None, set()
    for run in model_runs(sweep_dir):
        try:
            metrics = json.loads((run.path / "metrics.json").read_text())
            raw_dir = runpaths.resolve(((metrics.get("config") or {}).get("data") or {}).get("raw_dir"), run.path)
            if raw_dir and csv_path is None and (raw_dir / "train.csv").is_file():
                csv_path = raw_dir / "train.csv"
            if run.val_json.is_file():
                keys |= {img["image_key"] for img in json.loads(run.val_json.read_text())["images"]
                         if "image_key" in img}
        except (OSError, ValueError, KeyError) as err:
            log.warning("reader reference: cannot read %s: %s", run.path, err)
    return csv_path, keys


def sweep_reference(sweep_dir: str | Path) -> dict | None:
    """The reader-reference dict (harness.eval.reader_reference) for the sweep's scored images, or
    None when the dataset has no per-reader labels (or cannot be found)."""
    csv_path, keys = sweep_dataset(Path(sweep_dir))
    if csv_path is None or not keys:
        return None
    rows = parse_train_csv(csv_path, policy="drop-and-report").rows
    rows = rows[rows["image_id"].isin(keys)]
    if rows.empty or rows.groupby("image_id")["rad_id"].nunique().max() < 2:
        return None
    result = reader_reference(rows)
    return result or None
