"""ultralytics 8.4 without polars: its trainer's `read_results_csv` read with the standard library.

ultralytics 8.4.190's `BaseTrainer.read_results_csv` imports polars *before* its try/except, and
`save_model` calls it at every epoch end to store the training history (`train_results`) in the
checkpoint, so on a machine without polars (the GPU test machine: polars' ~50 MB wheel cannot travel
with the rest) every YOLO training dies with ModuleNotFoundError after its first epoch. Nothing else
on the adapter's training path needs polars (plots and logger integrations are off).

Where polars cannot be imported, the same dictionary ({column: [values per epoch]}, numbers as int
or float, {} when the file cannot be read, as ultralytics returns) is read with the `csv` module:
  * `offline_patches()`: the class-level replacement, applied by the adapter's offline sandbox
    (`adapters.yolov5.ultralytics_offline`) for everything that trains in this process (the
    adapter's fit and the benchmark's native run);
  * `survive_missing_polars(trainer)`: the same as an ultralytics callback (`on_pretrain_routine_start`),
    which reaches ultralytics' DDP workers (it pickles the callbacks into them by reference: this
    module must be importable there, as the adapter's other callbacks are).
Where polars is importable nothing changes. Framework-free at import.
"""
from __future__ import annotations

import csv
import functools
import importlib
import logging
import types
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def polars_importable() -> bool:
    """Whether `import polars` works in this process (checked once)."""
    try:
        importlib.import_module("polars")
    except ImportError:
        return False
    return True


def _number(text: str) -> Any:
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_results_csv(path: Path) -> dict[str, list]:
    """ultralytics' results.csv as {column: [value per row]} (numbers parsed), {} if unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    if not rows:
        return {}
    header = rows[0]
    return {name: [_number(row[i]) if i < len(row) else None for row in rows[1:]] for i, name in enumerate(header)}


def _trainer_read_results_csv(trainer) -> dict[str, list]:
    """Drop-in for `BaseTrainer.read_results_csv` (a method: `trainer.csv` is the file)."""
    return read_results_csv(Path(trainer.csv))


def offline_patches() -> list[tuple[object, str, Any]]:
    """(object, attribute, replacement) for the offline sandbox to apply and restore: the polars-free
    `BaseTrainer.read_results_csv` when polars cannot be imported, else nothing."""
    if polars_importable():
        return []
    from ultralytics.engine.trainer import BaseTrainer

    log.info("polars is not importable: ultralytics' results.csv is read with the csv module")
    return [(BaseTrainer, "read_results_csv", _trainer_read_results_csv)]


def survive_missing_polars(trainer) -> None:
    """ultralytics callback (on_pretrain_routine_start): in a process without polars (e.g. a DDP
    worker), this trainer reads its results.csv without it."""
    if not polars_importable():
        trainer.read_results_csv = types.MethodType(_trainer_read_results_csv, trainer)
