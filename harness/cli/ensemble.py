"""`cxr-ensemble`: fuse the models of a sweep per fold (default WBF) and score the result.

    cxr-ensemble sweep=demo
    cxr-ensemble -m sweep=demo ensemble.iou_thr=0.25,0.4,0.55 ensemble=wbf,nms
    cxr-ensemble hparams_search=wbf_optuna sweep=demo tune.scored_fold=0   # settings tuned on the other folds

With `tune.scored_fold` set (by the hparams_search preset, whose Optuna sweeper runs the trials), a
job is one trial: it returns the mean score over the other folds (harness/jobs/ensemble_tuning.py).
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.cli.common import CONF_DIR, output_dir, require_sweep, user_errors
from harness.jobs.ensemble_job import run_ensemble
from harness.jobs.ensemble_tuning import trial_objective


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ensemble")
def app(cfg: DictConfig) -> list | float:
    with user_errors("cxr-ensemble"):
        if cfg.tune.scored_fold is not None:
            return trial_objective(cfg, output_dir())
        return run_ensemble(cfg, output_dir())


def main() -> None:
    """cxr-ensemble: the sweep must exist before Hydra makes its output folder inside it."""
    if not any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info") for a in sys.argv[1:]):
        require_sweep("cxr-ensemble", "ensemble", sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
