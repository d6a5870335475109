"""Superseded, never deleted: moving an earlier attempt's files aside into `<run>/superseded/<time>/`.

A job never overwrites or deletes what an earlier attempt made: before a run rewrites a file
(metrics.json, predictions.json, failed.json, a checkpoint), the file is moved, byte for byte, to
the same relative path under a new `<run>/superseded/<time>/` folder. After a config change every
file of the earlier attempt goes there (`earlier_attempt_files`). Only `cxr-checkpoints --delete`
removes such a folder.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable

from harness import atomic
from harness.sweep import SUPERSEDED_DIR

# a job's record of which config its last attempt ran (the earlier attempt's identity on a rerun)
ATTEMPT_FILE = "attempt.json"
# Hydra rewrites `.hydra/` before a job starts (the earlier config is kept in metrics.json["config"])
KEPT_IN_PLACE = (SUPERSEDED_DIR, ".hydra")


def new_target(run_dir: str | Path) -> Path:
    """A new `<run_dir>/superseded/<time>/` folder name (not created until something moves there)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(run_dir) / SUPERSEDED_DIR
    target, n = root / stamp, 1
    while target.exists():  # two fresh starts within a second
        n += 1
        target = root / f"{stamp}-{n}"
    return target


def move(path: Path, dest: Path) -> None:
    """Move one file or folder to `dest`; never onto something that exists."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"cannot set {path} aside: {dest} exists")
    os.replace(path, dest)


def move_aside(run_dir: str | Path, paths: Iterable[Path], target: Path) -> list[Path]:
    """Move each existing path (below `run_dir`) to the same relative path under `target`;
    returns the paths moved."""
    run_dir = Path(run_dir)
    moved = []
    for path in paths:
        path = Path(path)
        if path.exists() or path.is_symlink():
            move(path, target / path.relative_to(run_dir))
            moved.append(path)
    return moved


def earlier_attempt_files(run_dir: str | Path) -> list[Path]:
    """Everything in `run_dir` an earlier attempt left (all but superseded/ and .hydra/)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.name not in KEPT_IN_PLACE)


def earlier_config_hash(run_dir: str | Path, files: Iterable[str] = ("metrics.json", "failed.json")) -> str | None:
    """The config hash the run dir's last attempt ran (attempt.json, else a metrics.json or
    failed.json that names one); None when nothing says."""
    for name in (ATTEMPT_FILE, *files):
        path = Path(run_dir) / name
        if path.is_file():
            try:
                value = json.loads(path.read_text()).get("config_hash")
            except (OSError, ValueError, AttributeError):
                continue
            if value:
                return str(value)
    return None


def record_attempt(run_dir: str | Path, cfg_hash: str) -> None:
    atomic.write_json(Path(run_dir) / ATTEMPT_FILE, {"config_hash": cfg_hash, "started": time.time()})
