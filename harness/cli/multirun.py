"""What a `cxr-train -m` invocation will run, worked out before Hydra's launcher starts any job:
which overrides it sweeps (they name each job's run key, harness.sweep), the folder of every job (two
jobs that would share one are refused), and afterwards which of those jobs failed.

Why before Hydra: a job only sees its own overrides, not which of them took several values in the
command; the command line does. cxr-train adds `swept=[...]` (conf/train.yaml) for the jobs.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness.cli.common import CONF_DIR
from harness.sweep import NOT_KEYED, job_key

MULTIRUN_FLAGS = ("-m", "--multirun")
FAILED_JOBS_EXIT = 3  # cxr-train -m: the multirun ran, and some of its jobs failed (cxr-run goes on to the report)
REFUSED_EXIT = 2  # cxr-train -m: refused before any job ran


class SweepRefused(ValueError):
    """The multirun cannot run as asked; the message says why and what to change."""


@dataclass(frozen=True)
class PlannedJob:
    number: int
    overrides: tuple[str, ...]
    folder: Path
    label: str = ""  # this job's values of the command's swept overrides, e.g. "model=yolov5 train.lr=0.01"


def command_overrides(argv: list[str]) -> list[str]:
    """The `key=value` overrides of a command line (Hydra's own flags and their values left out)."""
    return [a for a in argv if not a.startswith("-") and "=" in a]


def is_multirun(argv: list[str]) -> bool:
    return any(a in MULTIRUN_FLAGS for a in argv)


def _key(override) -> str:
    return override.get_key_element().lstrip("+~")


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys the command sweeps (several values) that name a run key: not sweep/model/data.fold,
    not hydra's own settings."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return sorted({_key(o) for o in parsed if o.is_sweep_override()
                   and _key(o) not in NOT_KEYED and not _key(o).startswith(("hydra.", "hydra/"))})


def planned_jobs(config_name: str, overrides: list[str], swept: list[str]) -> list[PlannedJob]:
    """Every job of the multirun (the basic sweeper's product of the values, in its order) with the folder it will write: the
    config is composed once per job without its fold, for `sweep_dir`, `model.name` and `data.fold`."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices: dict[str, list[str]] = {}  # as Hydra's basic sweeper: the last value of a key wins
    sweeping = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices[key] = [f"{key}={v}" for v in values]
    batches = [list(job) for job in itertools.product(*choices.values())]
    composed: dict[tuple[str, ...], tuple[str, str, int]] = {}
    jobs = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for number, job in enumerate(batches):
            fold_overrides = [o for o in job if o.partition("=")[0].lstrip("+~") == "data.fold"]
            rest = tuple(o for o in job if o not in fold_overrides and not o.startswith(("hydra.", "hydra/")))
            if rest not in composed:
                cfg = compose(config_name=config_name, overrides=list(rest))
                composed[rest] = (str(cfg.sweep_dir), str(cfg.model.name), int(cfg.data.fold))
            sweep_dir, model, fold = composed[rest]
            if fold_overrides:
                fold = int(OverridesParser.create().parse_override(fold_overrides[-1]).value())
            key = job_key(list(job), swept)
            folder = Path(sweep_dir) / model / (key or "") / f"fold{fold}"
            label = " ".join(o for o in job if o.partition("=")[0] in sweeping)
            jobs.append(PlannedJob(number, tuple(job), folder, label))
    return jobs


def check_distinct(jobs: list[PlannedJob]) -> None:
    """Refuse (SweepRefused, one line) two jobs that would write one folder."""
    by_folder: dict[Path, PlannedJob] = {}
    for job in jobs:
        other = by_folder.setdefault(job.folder, job)
        if other is not job:
            raise SweepRefused(
                f"jobs #{other.number} ({other.label}) and #{job.number} ({job.label}) "
                f"would both write {job.folder}; nothing was started: give each job distinct values "
                "(a value listed twice, or two models with one model.name)")


def failed_jobs(jobs: list[PlannedJob], since: float) -> list[dict]:
    """The jobs of this multirun that failed: a failed.json written since `since`, or no metrics.json."""
    failed = []
    for job in jobs:
        marker, metrics = job.folder / "failed.json", job.folder / "metrics.json"
        if marker.is_file() and marker.stat().st_mtime >= since:
            try:
                error = str(json.loads(marker.read_text()).get("error", "")).strip().splitlines()[0]
            except (OSError, ValueError, IndexError):
                error = "(unreadable failed.json)"
            failed.append({"job": job, "error": error, "details": str(marker)})
        elif not metrics.is_file():
            failed.append({"job": job, "error": "no metrics.json (the job did not finish)", "details": str(job.folder)})
    return failed


def failed_table(failed: list[dict]) -> str:
    lines = [f"{len(failed)} job(s) failed:", "", "| # | job | error | details |", "|---|---|---|---|"]
    for item in failed:
        job = item["job"]
        lines.append(f"| {job.number} | {job.label or ' '.join(job.overrides)} | {item['error'].replace('|', '/')} | "
                     f"`{item['details']}` |")
    return "\n".join(lines)


