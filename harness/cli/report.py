"""`cxr-report`: results table (Markdown + CSV, mean +- std over folds, ensemble rows, per-class AP),
results chart, per-class heatmap, prediction overlays and failed jobs of a sweep.

    cxr-report sweep=demo
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.cli.common import CONF_DIR, output_dir
from harness.jobs.report_job import run_report


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
def main(cfg: DictConfig) -> dict:
    paths = run_report(cfg, output_dir())
    for kind, path in paths.items():
        print(f"{kind:>12}: {path}")
    return paths


if __name__ == "__main__":
    main()
