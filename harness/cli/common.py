"""Shared bits of the Hydra apps."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from harness.jobs.gpus import gpu_pool_resolver
from harness.sweep import job_key

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# `${cwd:}` in conf/paths: the launch directory, resolvable before Hydra's runtime config exists
# (a multirun resolves its sweep dir first), absolute so that run records stay valid elsewhere.
if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)


def _gpu_pool() -> list[str]:
    return gpu_pool_resolver()


# launcher=gpus (conf/launcher/gpus.yaml): `${cxr_gpus:}` = this machine's GPUs, `${cxr_count:${x}}` = len(x)
if not OmegaConf.has_resolver("cxr_gpus"):
    OmegaConf.register_new_resolver("cxr_gpus", _gpu_pool)
if not OmegaConf.has_resolver("cxr_count"):
    OmegaConf.register_new_resolver("cxr_count", lambda items: len(items))


def _run_key(*, _root_) -> str:
    """`${cxr_run_key:}` in conf/train.yaml's run folders: "<key>/" of this job (its values of the
    overrides listed in `swept`, harness.sweep.job_key), "" when nothing but model/fold is swept."""
    swept = [str(k) for k in (_root_.get("swept") or [])]
    overrides = [str(o) for o in _root_.hydra.overrides.task] if swept else []
    key = job_key(overrides, swept)
    return f"{key}/" if key else ""


if not OmegaConf.has_resolver("cxr_run_key"):
    OmegaConf.register_new_resolver("cxr_run_key", _run_key)


def quiet_frameworks() -> None:
    """Offline switches that must be set before any framework is imported in this process."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
