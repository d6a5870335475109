"""Paths a run records in its metrics.json, stored so that a moved sweep still works.

The checkpoint is stored relative to the run folder; the dataset's folders (`config.data.raw_dir`,
`config.data.prepared_dir`) relative to the run folder when they lie inside the project (they move
with it), absolute when outside (a shared dataset stays where it is). Every reader resolves them
with `resolve` against the folder the metrics.json is in now (`read_run` does it for a whole run).
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
DATA_PATHS = ("raw_dir", "prepared_dir")  # config.data keys that name folders


def store(path: str | Path | None, run_dir: str | Path, inside: str | Path | None = None) -> str | None:
    """`path` as a metrics.json records it: relative to `run_dir` when it lies inside `inside` (the
    project root; None: always), else absolute."""
    if path is None:
        return None
    absolute = Path(os.path.abspath(path))
    if inside is not None and not absolute.is_relative_to(Path(os.path.abspath(inside))):
        return str(absolute)
    return os.path.relpath(absolute, os.path.abspath(run_dir))


def resolve(stored: str | Path | None, run_dir: str | Path) -> Path | None:
    """A recorded path, absolute: a relative one is taken from `run_dir` (where the metrics.json is now)."""
    if stored is None or stored == "":
        return None
    path = Path(stored)
    return path if path.is_absolute() else Path(os.path.normpath(Path(os.path.abspath(run_dir)) / path))


def store_config(config: dict[str, Any], run_dir: str | Path, root: str | Path | None) -> dict[str, Any]:
    """A copy of a job's recorded config with its data folders stored (see `store`)."""
    config = copy.deepcopy(config)
    data = config.get("data") or {}
    for key in DATA_PATHS:
        if data.get(key):
            data[key] = store(data[key], run_dir, root)
    return config


def resolve_run(metrics: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """A copy of a run's metrics with the checkpoint and data folders absolute (taken from `run_dir`)."""
    metrics = copy.deepcopy(metrics)
    if metrics.get("checkpoint"):
        metrics["checkpoint"] = str(resolve(metrics["checkpoint"], run_dir))
    data = (metrics.get("config") or {}).get("data") or {}
    for key in DATA_PATHS:
        if data.get(key):
            data[key] = str(resolve(data[key], run_dir))
    return metrics


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """A run's metrics.json with its recorded paths resolved against where the run is now."""
    return resolve_run(json.loads((Path(run_dir) / METRICS_FILE).read_text()), run_dir)
