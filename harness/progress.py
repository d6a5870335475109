"""A train job's progress file: how far an unfinished job got, for `cxr-report`.

Adapters rewrite `<run dir>/progress.json` (atomically) after every training epoch:
{"model", "epoch" (epochs done), "epochs" (planned), "checkpoint" (the last resumable one or null),
"pid", "host", "updated" (unix time)}. A run with a progress file but no newer metrics.json or
failed.json is unfinished: the report shows it as "running" or "interrupted at epoch k of n".
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from harness import atomic

PROGRESS_FILE = "progress.json"


def write_progress(path: str | os.PathLike, model: str, epoch: int, epochs: int,
                   checkpoint: str | os.PathLike | None = None) -> None:
    atomic.write_json(path, {"model": model, "epoch": int(epoch), "epochs": int(epochs),
                             "checkpoint": str(checkpoint) if checkpoint else None, "pid": os.getpid(),
                             "host": platform.node(), "updated": round(time.time(), 3)})


def read_progress(path: str | os.PathLike) -> dict[str, Any] | None:
    """The progress record, or None when there is none or it cannot be read."""
    try:
        progress = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return progress if isinstance(progress, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_state(progress: dict[str, Any]) -> str:
    """"running" or "interrupted" when the job ran on this host (its process is alive or not);
    "running / interrupted" when it ran elsewhere (e.g. a cluster node) and this cannot be told."""
    pid = progress.get("pid")
    if progress.get("host") == platform.node() and isinstance(pid, int):
        return "running" if _alive(pid) else "interrupted"
    return "running / interrupted"


def describe(progress: dict[str, Any]) -> str:
    """E.g. "interrupted at epoch 2 of 3"."""
    return f"{job_state(progress)} at epoch {progress.get('epoch', '?')} of {progress.get('epochs', '?')}"
