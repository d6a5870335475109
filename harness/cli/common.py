"""Shared bits of the Hydra apps."""
from __future__ import annotations

import os
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def quiet_frameworks() -> None:
    """Offline switches that must be set before any framework is imported in this process."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
