"""`cxr-run`: the whole benchmark in one command, each step a Hydra app in its own process:

    prepare -> train -m model=<pipeline.models> data.fold=<pipeline.folds> -> ensemble
            [-> ensemble settings tuned per fold on the other folds, pipeline.tune_ensemble=true] -> report

`pipeline.classifier=resnet18` adds the "No finding" classifier to the train step (same folds); the
report then scores every model and ensemble with it under each policy.

    cxr-run experiment=demo                     (the README's main command)
    cxr-run experiment=demo train.epochs=2 pipeline.models=[yolov5,mmdet_frcnn]

Every override given to cxr-run is passed on to each step. A failing train job does not stop the
others: the ensemble fuses the models that finished (skipped when fewer than two did on every fold),
the report lists the failed jobs, and cxr-run then prints them and exits 3. Before the first step, every pretrained weights file the config asks
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
from omegaconf import DictConfig, OmegaConf

from adapters import is_classifier
from harness.cli.common import CONF_DIR, user_errors
from harness.cli.multirun import FAILED_JOBS_EXIT
from harness.jobs.config import ConfigError, pipeline_jobs
from harness.jobs.data_step import check_data_config
from harness.report.tables import collect
from harness.sweep import model_runs

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


def step(title: str, module: str, args: list[str], tolerated: range | tuple = range(0), note: str = "") -> int:
    """Run one app in its own process; exit codes in `tolerated` are warnings (returned), others stop the run."""
    command = [sys.executable, "-m", module, *args]
    log.info("== %s: %s", title, " ".join(command[2:]))
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    if completed.returncode in tolerated:
        log.warning("== %s: %s; going on", title, note.format(code=completed.returncode) or
                    f"exit {completed.returncode}")
    elif completed.returncode != 0:
        raise SystemExit(f"cxr-run: step '{title}' failed (exit {completed.returncode}; its message is above): "
                         f"{' '.join(['cxr-' + module.rsplit('.', 1)[-1], *args])}")
    log.info("== %s done in %.0f s", title, time.perf_counter() - started)
    return completed.returncode


def fusable(sweep_dir: Path) -> bool:
    """Whether at least two detector models finished on one fold (with one run key): something to fuse."""
    groups: dict[tuple[str, int], int] = {}
    for run in model_runs(sweep_dir):
        if not is_classifier(run.model):
            groups[(run.key, run.fold)] = groups.get((run.key, run.fold), 0) + 1
    return any(count >= 2 for count in groups.values())


def failed_jobs_message(sweep_dir: Path) -> str:
    """The sweep's failed jobs (as the report lists them), one line each."""
    failed = collect(sweep_dir).failed if sweep_dir.is_dir() else []
    lines = [f"  {f['model']} {f['fold']}: {f['error']}  ({f['path']})" for f in failed]
    return "\n".join([f"{len(failed)} failed job(s):", *lines]) if failed else ""


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="run")
def main(cfg: DictConfig) -> None:
    with user_errors("cxr-run"):
        run_pipeline(cfg)


def run_pipeline(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)
    models, extra = pipeline_jobs(cfg, overrides)
    folds = [str(f) for f in cfg.pipeline.folds]
    try:  # the settings, before anything is prepared or trained
        check_data_config(cfg.data)
        for fold in cfg.pipeline.folds:
            check_data_config(OmegaConf.merge(cfg.data, {"fold": fold}))
    except ConfigError as err:
        raise SystemExit(f"cxr-run: {str(err).replace('data.fold=', 'pipeline.folds: ', 1)}") from None
    started = time.perf_counter()
    check_weights(overrides)
    step("prepare", "harness.cli.prepare", overrides, tolerated=range(101, 255),
         note="exit {code}: input files failed (see the manifest)")
    trained = step("train", "harness.cli.train",
                   ["-m", *overrides, *extra, f"model={','.join(models)}", f"data.fold={','.join(folds)}"],
                   tolerated=(FAILED_JOBS_EXIT,), note="some jobs failed (the table above)")
    sweep_dir = Path(cfg.sweep_dir)
    if len([m for m in models if not is_classifier(m)]) > 1 and not fusable(sweep_dir):
        log.warning("== ensemble skipped: fewer than two models finished on any fold (the report lists the failures)")
    elif len([m for m in models if not is_classifier(m)]) > 1:
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
    if trained == FAILED_JOBS_EXIT:
        print(failed_jobs_message(sweep_dir) or "some train jobs failed (see the train step's table above)",
              file=sys.stderr)
        print("cxr-run: train jobs failed (listed above and in the report); fix the cause and rerun the same command: "
              "finished jobs are skipped", file=sys.stderr)
        sys.exit(FAILED_JOBS_EXIT)


if __name__ == "__main__":
    main()
