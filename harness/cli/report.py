"""`cxr-report`: results table (Markdown + CSV, mean +- std over folds, ensemble rows, per-class AP),
results chart, per-class heatmap, prediction overlays and failed jobs of a sweep.

    cxr-report sweep=demo
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.cli.common import CONF_DIR, output_dir, require_sweep, user_errors
from harness.jobs.report_job import run_report


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
def app(cfg: DictConfig) -> dict:
    with user_errors("cxr-report"):
        paths = run_report(cfg, output_dir())
    for kind, path in paths.items():
        print(f"{kind:>12}: {path}")
    return paths


def main() -> None:
    """cxr-report: the sweep must exist before Hydra makes its output folder inside it."""
    if not any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info") for a in sys.argv[1:]):
        require_sweep("cxr-report", "report", sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
