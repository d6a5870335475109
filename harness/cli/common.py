"""Shared bits of the Hydra apps."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from omegaconf import OmegaConf

from harness.data.labels import LabelError
from harness.jobs.config import ConfigError
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


# errors a user makes (a config value, a label file, a missing input), not bugs: one message, no traceback
USER_ERRORS = (ConfigError, LabelError, FileNotFoundError)


@contextlib.contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Inside a Hydra app: an expected user error (USER_ERRORS) prints `<prog>: <message>` on stderr and
    exits 1, without a traceback; HYDRA_FULL_ERROR=1 lets it through, traceback and all."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(1)


def require_sweep(prog: str, config_name: str, argv: list[str]) -> None:
    """Before a Hydra app that reads a sweep (and would create its output folder inside it) runs: the
    sweep folder the command line names must exist, else one line on stderr and exit 2, nothing created.
    A command line that does not compose is left to Hydra, which reports it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        if any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(overrides)):
            return  # a multirun over sweeps: each job checks its own
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=[o for o in overrides if not o.startswith("hydra")])
        sweep_dir, runs_dir = Path(cfg.sweep_dir), Path(cfg.paths.runs_dir)
    except Exception:  # noqa: BLE001 - Hydra's own error message follows when the app composes it
        return
    if sweep_dir.is_dir():
        return
    known = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    print(f"{prog}: no sweep folder {sweep_dir} (sweep={cfg.sweep}); nothing was created. "
          + (f"Sweeps in {runs_dir}: {', '.join(known)}." if known else
             f"{runs_dir} holds no sweep yet: run cxr-run or cxr-train -m first."), file=sys.stderr)
    sys.exit(2)


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
