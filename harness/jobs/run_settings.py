"""How a job ran (workers, device, GPUs, prediction batch, host): not part of its config hash, so a
rerun on other hardware resumes its checkpoints; when it does, the log and metrics.json say so, and
what the changed settings can change in the numbers (harness.run_effects: AMP only on CUDA, DDP's
per-process batch and BatchNorm statistics, the workers' augmentation draws, ultralytics' padding
with the prediction batch). Each resumable checkpoint's record also stores the settings it was
written under (adapters.resume).

Each attempt of a job writes `run_settings.json` in its run dir before training; the next attempt
reads it first, so a job that resumed knows the settings the checkpoint was written under.
"""
from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from adapters.resume import RUN_SETTINGS
from harness import atomic
from harness.run_effects import effects
from harness.jobs.config import model_settings

log = logging.getLogger(__name__)

RUN_SETTINGS_FILE = "run_settings.json"


def current(cfg: DictConfig) -> dict[str, Any]:
    """This attempt's run settings (after per_model) and host."""
    _, _, train = model_settings(cfg)
    return {**{key: train.get(key) for key in RUN_SETTINGS}, "host": platform.node()}


def swap(run_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """Record `settings` as this attempt's; return the previous attempt's (None: first attempt)."""
    path = Path(run_dir) / RUN_SETTINGS_FILE
    previous = None
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("unreadable %s (%s): the previous attempt's run settings are unknown", path, err)
    atomic.write_json(path, settings)
    return previous


def resumed_elsewhere(previous: dict[str, Any] | None, settings: dict[str, Any], resumed: dict | None,
                      label: str) -> dict[str, Any] | None:
    """When the job resumed a checkpoint written under other run settings: a log line, and what
    changed ({"changed": [...], "before": {...}, "now": {...}}) for metrics.json; else None."""
    if resumed is None or previous is None:
        return None
    changed = sorted(k for k in {*previous, *settings} if previous.get(k) != settings.get(k))
    if not changed:
        return None
    before = {k: previous.get(k) for k in changed}
    now = {k: settings.get(k) for k in changed}
    may_differ = effects(changed)
    log.warning("%s: resumed a checkpoint written with other run settings (%s): the same job (not in the config "
                "hash), but the numbers may differ from an uninterrupted run: %s", label,
                ", ".join(f"{k} {before[k]} -> {now[k]}" for k in changed), "; ".join(may_differ) or "timing only")
    return {"changed": changed, "before": before, "now": now, "may_differ": may_differ}
