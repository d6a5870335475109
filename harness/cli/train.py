"""`cxr-train`: one model x fold per job (fit -> predict val -> score), sweeps with -m:

    cxr-train -m model=yolov5,detectron2_frcnn,mmdet_frcnn data.fold=0,1,2,3,4
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.cli.common import CONF_DIR, output_dir, quiet_frameworks
from harness.jobs.gpus import assign_gpu
from harness.jobs.train_job import run_train_job

quiet_frameworks()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    assign_gpu(cfg)  # launcher=gpus: this worker's own GPU, before anything touches CUDA
    result = run_train_job(cfg, output_dir())
    if result.get("failed") and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
