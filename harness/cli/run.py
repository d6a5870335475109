"""`cxr-run`: the whole benchmark in one command, each step a Hydra app in its own process:

    prepare -> train -m model=<pipeline.models> data.fold=<pipeline.folds> -> ensemble
            [-> ensemble settings tuned per fold on the other folds, pipeline.tune_ensemble=true] -> report

`pipeline.classifier=resnet18` adds the "No finding" classifier to the train step (same folds); the
report then scores every model and ensemble with it under each policy.

    cxr-run experiment=demo                     (the README's main command)
    cxr-run experiment=demo train.epochs=2 pipeline.models=[yolov5,mmdet_frcnn]

Every override given to cxr-run is passed on to each step. A failing train job does not stop the
others; the report lists it. Before the first step, every pretrained weights file the config asks
for must be in the cache: otherwise cxr-run stops with one message and the command that fetches
them all (`cxr-weights <the same overrides>`).
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from adapters import is_classifier
from harness.cli.common import CONF_DIR
from harness.jobs.config import pipeline_jobs

log = logging.getLogger(__name__)


def check_weights(overrides: list[str]) -> None:
    """Before the first job: every registry weights file the config's models ask for is in the cache,
    else stop with one message and the one command that fetches them all (cxr-weights --check)."""
    command = [sys.executable, "-m", "harness.cli.weights", "--check", *overrides]
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    if completed.returncode == 3:
        raise SystemExit(completed.stderr.strip())
    if completed.returncode != 0:
        raise SystemExit(f"checking the pretrained weights failed (exit {completed.returncode}):\n"
                         f"{(completed.stdout + completed.stderr).strip()[-3000:]}")
    log.info("== %s", completed.stdout.strip())


def step(title: str, module: str, args: list[str], tolerated: range = range(0)) -> None:
    """Run one app in its own process; exit codes in `tolerated` are warnings, others stop the run."""
    command = [sys.executable, "-m", module, *args]
    log.info("== %s: %s", title, " ".join(command[2:]))
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    if completed.returncode in tolerated:
        log.warning("== %s: %d input files failed (see the manifest); going on with the rest",
                    title, completed.returncode - 100)
    elif completed.returncode != 0:
        raise SystemExit(f"step '{title}' failed (exit {completed.returncode}): {' '.join(command)}")
    log.info("== %s done in %.0f s", title, time.perf_counter() - started)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="run")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)
    models, extra = pipeline_jobs(cfg, overrides)
    folds = [str(int(f)) for f in cfg.pipeline.folds]
    started = time.perf_counter()
    check_weights(overrides)
    step("prepare", "harness.cli.prepare", overrides, tolerated=range(101, 255))
    step("train", "harness.cli.train",
         ["-m", *overrides, *extra, f"model={','.join(models)}", f"data.fold={','.join(folds)}"])
    if len([m for m in models if not is_classifier(m)]) > 1:
        step("ensemble", "harness.cli.ensemble", overrides)
        if cfg.pipeline.tune_ensemble:
            if len(folds) < 2:
                raise SystemExit("pipeline.tune_ensemble=true needs at least 2 pipeline.folds (settings for a fold "
                                 "are tuned on the others)")
            for fold in folds:
                step(f"tune ensemble for fold {fold}", "harness.cli.ensemble",
                     [*overrides, "hparams_search=wbf_optuna", f"tune.scored_fold={fold}"])
    step("report", "harness.cli.report", overrides)
    report_dir = Path(cfg.sweep_dir) / "report"
    table = report_dir / "results.md"
    if table.is_file():
        print("\n" + table.read_text())
    print(f"Finished in {time.perf_counter() - started:.0f} s. Results: {report_dir}/ "
          "(results.md, results.csv, results.png, per_class.png, overlays/)")


if __name__ == "__main__":
    main()
