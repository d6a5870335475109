"""`cxr-train`: one model x fold per job (fit -> predict val -> score), sweeps with -m:

    cxr-train -m model=yolov5,detectron2_frcnn,mmdet_frcnn data.fold=0,1,2,3,4
    cxr-train -m model=yolov5 train.lr=0.01,0.02        (jobs in <sweep>/yolov5/train.lr=0.01/fold0, ...)

A multirun's swept overrides other than sweep/model/data.fold name each job's run key (conf/train.yaml);
two jobs that would share a folder are refused before any runs. Exit status: 0 when every job finished;
3 when a multirun ran and any of its jobs failed (after the table of failed jobs; 1 for a single job);
2 when the multirun was refused; 1 on a configuration error.
"""
from __future__ import annotations

import logging
import sys
import time

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.cli.common import CONF_DIR, output_dir, quiet_frameworks
from harness.cli.multirun import (FAILED_JOBS_EXIT, REFUSED_EXIT, SweepRefused, check_distinct, command_overrides, failed_jobs, failed_table,
                                  is_multirun, planned_jobs, swept_keys)
from harness.jobs.gpus import assign_gpu
from harness.jobs.train_job import run_train_job
from harness.sweep import RunKey, job_key, override_key

quiet_frameworks()
log = logging.getLogger(__name__)
# Hydra's flags that only print (help, config, info): no jobs run, nothing to plan
PRINT_ONLY = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--shell-completion", "-sc")


def job_run_key(cfg: DictConfig, overrides: list[str]) -> RunKey:
    """This job's run key: its values of the swept overrides (typed as the config holds them; a config
    group's option name as written)."""
    swept = [str(k) for k in cfg.get("swept") or []]
    key = job_key(overrides, swept)
    if not key:
        return RunKey()
    values = {}
    for name, written in (override_key(o) for o in overrides):
        if name in swept:
            value = OmegaConf.select(cfg, name, default=None)
            values[name] = value if isinstance(value, (int, float, str, bool)) else written
    return RunKey(key, dict(sorted(values.items())))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def app(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    assign_gpu(cfg)  # launcher=gpus: this worker's own GPU, before anything touches CUDA
    run_key = job_run_key(cfg, list(HydraConfig.get().overrides.task))
    result = run_train_job(cfg, output_dir(), run_key=run_key)
    if result.get("failed") and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)
    return result


def main() -> None:
    """cxr-train: a multirun first learns its swept keys and its jobs' folders, then runs, then exits
    non-zero when any of its jobs failed."""
    argv = sys.argv[1:]
    if not is_multirun(argv) or any(a in PRINT_ONLY for a in argv):
        app()
        return
    overrides = command_overrides(argv)
    try:
        swept = swept_keys(overrides)
        if swept and not any(o.partition("=")[0] == "swept" for o in overrides):
            overrides.append(f"swept=[{','.join(swept)}]")
            sys.argv.append(overrides[-1])
        # folders set by hand (hydra.sweep.dir=...) are Hydra's business: not planned here
        jobs = None if any(o.startswith(("hydra.sweep", "hydra.run")) for o in overrides) else \
            planned_jobs("train", overrides, swept)
        if jobs is not None:
            check_distinct(jobs)
    except SweepRefused as err:
        print(f"cxr-train: {err}", file=sys.stderr)
        sys.exit(REFUSED_EXIT)
    except Exception as err:  # noqa: BLE001 - Hydra reports a bad override itself, with its own message
        log.debug("could not plan the multirun: %s", err)
        jobs = None
    started = time.time()
    app()
    if jobs is None:
        print("cxr-train: the jobs of this multirun could not be listed beforehand, so failures are not "
              "counted here; see them with cxr-report", file=sys.stderr)
        return
    failed = failed_jobs(jobs, started - 1)
    if failed:
        print(failed_table(failed), file=sys.stderr)
        print(f"cxr-train: {len(failed)} of {len(jobs)} job(s) failed (each folder's failed.json holds the traceback; "
              "rerun the same command to retry them, finished jobs are skipped)", file=sys.stderr)
        sys.exit(FAILED_JOBS_EXIT)


if __name__ == "__main__":
    main()
