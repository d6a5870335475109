"""`cxr-ensemble`: fuse the models of a sweep per fold (default WBF) and score the result.

    cxr-ensemble sweep=demo
    cxr-ensemble -m sweep=demo ensemble.iou_thr=0.25,0.4,0.55 ensemble=wbf,nms
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.cli.common import CONF_DIR, output_dir


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ensemble")
def main(cfg: DictConfig) -> list:
    from harness.jobs.ensemble_job import run_ensemble

    return run_ensemble(cfg, output_dir())


if __name__ == "__main__":
    main()
