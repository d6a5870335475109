"""The report's uncertainty: bootstrap CIs of mAP@0.4 per run and per model, and paired comparisons.

For every run (model or ensemble, one fold) with a predictions.json and its val ground truth, the
per-image match data are computed once (harness.eval.bootstrap) and resampled. A model's row over
several folds gets the CI of its mean over folds (each fold resampled on its own). Two models are
compared on the folds where both ran on the same images: the paired bootstrap of the difference of
their fold means, its CI and P(A > B): the share of resamples in which A scored higher than B.
"not distinguishable" means that CI contains 0. A fold that both ran but on different image sets is
not compared, and says so (a warning in the log and in the report), instead of being dropped
silently.

The draws are the ordinary bootstrap of the val images, or of whole patients where the folds are
grouped by patient (harness.eval.bootstrap); a class without images in a resample drops out of that
resample's mean (the full-set score's rule); the intervals are BCa. Classes on fewer than
FEW_IMAGES val images are named beside the intervals: there they cover less than their nominal level
(docs/benchmarks.md, "Bootstrap coverage"). Runs are paired only when scored on the same split
(equal split_hash). The intervals cover the choice of validation images only: not the training seed
or other randomness of training (harness.report.seeds adds the spread over seeds).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from harness.eval.bootstrap import FEW_IMAGES, Bootstrap, ImageMatches, fold_mean, paired
from harness.predictions import Predictions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = 1000
    seed: int = 0
    ci: float = 0.95
    enabled: bool = True


@dataclass
class Uncertainty:
    settings: BootstrapSettings
    runs: dict[str, Bootstrap] = field(default_factory=dict)        # run path -> bootstrap
    models: dict[tuple[str, str], Bootstrap] = field(default_factory=dict)  # (kind, name) -> fold mean
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    missing: list[str] = field(default_factory=list)                # runs without predictions / GT
    warnings: list[str] = field(default_factory=list)               # pairs not compared on some fold, and why

    @property
    def thin(self) -> dict[str, int]:
        """{class: the fewest val images it has in any bootstrapped run} for classes on fewer than
        FEW_IMAGES images of some run's val set."""
        out: dict[str, int] = {}
        for boot in self.runs.values():
            for name, n in boot.thin:
                out[name] = min(n, out.get(name, n))
        return dict(sorted(out.items()))

    @property
    def clustered(self) -> bool:
        """Whether some run was resampled by patient (grouped folds)."""
        return any(b.clustered for b in self.runs.values())


PAIR_COLUMNS = ["a", "b", "folds", "delta", "delta_ci_low", "delta_ci_high", "p_a_gt_b", "verdict"]


def ground_truth_for(run_dir: Path, metrics: dict, sweep_dir: Path) -> Path | None:
    """The val COCO a run was scored on: its own split/val.json, or (ensembles) the one recorded in
    metrics.json, or a model run of the same fold and split hash."""
    own = run_dir / "split" / "val.json"
    if own.is_file():
        return own
    recorded = metrics.get("val_json")
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    fold = metrics.get("fold")
    for candidate in sorted(sweep_dir.glob(f"*/fold{fold}/metrics.json")):
        try:
            other = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if other.get("split_hash") == metrics.get("split_hash") and (candidate.parent / "split" / "val.json").is_file():
            return candidate.parent / "split" / "val.json"
    return None


def run_bootstrap(run_dir: Path, sweep_dir: Path, settings: BootstrapSettings, table=None) -> Bootstrap | None:
    """`table`: the run's MatchTable when the report already has it (harness.eval.matches: the same matches,
    no second pycocotools pass); else the matches are computed here."""
    preds_path = run_dir / "predictions.json"
    metrics_path = run_dir / "metrics.json"
    if not preds_path.is_file() or not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())
    if table is not None:  # the split hash travels with it: pairing refuses runs scored on other splits
        return table.image_matches().bootstrap(settings.resamples, settings.seed, metrics.get("split_hash"))
    gt = ground_truth_for(run_dir, metrics, sweep_dir)
    if gt is None:
        return None
    matches = ImageMatches.from_coco(gt, Predictions.load(preds_path), metrics.get("max_dets"))
    return matches.bootstrap(settings.resamples, settings.seed, metrics.get("split_hash"))


def verdict(summary: dict, a: str, b: str) -> str:
    if summary["delta_ci_low"] > 0:
        return f"{a} better"
    if summary["delta_ci_high"] < 0:
        return f"{b} better"
    return "not distinguishable"


def compute(runs: pd.DataFrame, sweep_dir: Path, settings: BootstrapSettings, tables: dict | None = None
            ) -> Uncertainty:
    """Bootstraps of every run in `runs` (collect()'s frame), fold means per model, paired pairs.
    `tables`: {run path: MatchTable} the report built once (each run's one pycocotools pass)."""
    result = Uncertainty(settings)
    if not settings.enabled or runs.empty:
        result.pairs = pd.DataFrame(columns=PAIR_COLUMNS)
        return result
    for path in runs["path"]:
        try:
            boot = run_bootstrap(Path(path), Path(sweep_dir), settings, (tables or {}).get(str(path)))
        except (OSError, ValueError) as err:
            log.warning("bootstrap skipped for %s: %s", path, err)
            boot = None
        if boot is None:
            result.missing.append(str(path))
        else:
            result.runs[str(path)] = boot
    by_model: dict[tuple[str, str], dict[str, Bootstrap]] = {}
    for (kind, name), group in runs.groupby(["kind", "name"], sort=False):
        folds = {fold: result.runs[p] for fold, p in zip(group["fold"], group["path"]) if p in result.runs}
        if folds and len(folds) == len(group):  # a mean over some folds only would not be the row's mean
            result.models[(kind, name)] = fold_mean(list(folds.values()))
        by_model[(kind, name)] = folds
    # a sweep over training seeds (harness.report.seeds): models are compared seed by seed
    seeds = {key: group["seed"].iloc[0] for key, group in runs.groupby(["kind", "name"], sort=False)} \
        if "seed" in runs else {}
    per_seed = "seed" in runs and runs["seed"].dropna().nunique() > 1
    rows = []
    for (ka, a), (kb, b) in combinations(by_model, 2):
        if per_seed and (seeds.get((ka, a)) is None or seeds.get((ka, a)) != seeds.get((kb, b))):
            continue
        fa, fb = by_model[(ka, a)], by_model[(kb, b)]
        shared = [f for f in fa if f in fb and fa[f].image_ids == fb[f].image_ids
                  and fa[f].split_hash == fb[f].split_hash]
        for fold in (f for f in fa if f in fb and f not in shared):
            if fa[fold].image_ids == fb[fold].image_ids:
                message = (f"{a} vs {b}, {fold}: scored on different splits (split_hash {fa[fold].split_hash} vs "
                           f"{fb[fold].split_hash}: other fused labels or folds): {fold} is left out of their "
                           "paired comparison")
                log.warning("paired bootstrap: %s", message)
                result.warnings.append(message)
                continue
            only_a = len(set(fa[fold].image_ids) - set(fb[fold].image_ids))
            only_b = len(set(fb[fold].image_ids) - set(fa[fold].image_ids))
            message = (f"{a} vs {b}, {fold}: scored on different image sets ({len(fa[fold].image_ids)} vs "
                       f"{len(fb[fold].image_ids)} images, {only_a} only in {a}, {only_b} only in {b}): "
                       f"{fold} is left out of their paired comparison")
            log.warning("paired bootstrap: %s", message)
            result.warnings.append(message)
        if not shared:
            continue
        summ = paired([fa[f] for f in shared], [fb[f] for f in shared]).summary(settings.ci)
        row = {"a": a, "b": b, "folds": " ".join(shared), "delta": summ["delta"], "delta_ci_low": summ["low"],
               "delta_ci_high": summ["high"], "p_a_gt_b": summ["p_a_gt_b"], "seed": seeds.get((ka, a))}
        row["verdict"] = verdict(row, a, b)
        rows.append(row)
    result.pairs = pd.DataFrame(rows, columns=[*PAIR_COLUMNS, "seed"])
    return result


def add_ci_columns(runs: pd.DataFrame, summ: pd.DataFrame, unc: Uncertainty) -> None:
    """map40 ci_low/ci_high columns on the run rows and on the summary rows (fold mean), in place."""
    level = unc.settings.ci
    lows, highs = [], []
    for path in runs["path"]:
        boot = unc.runs.get(str(path))
        low, high = boot.ci(level) if boot is not None else (np.nan, np.nan)
        lows.append(low)
        highs.append(high)
    runs["map40 ci_low"], runs["map40 ci_high"] = lows, highs
    lows, highs = [], []
    for kind, name in zip(summ["kind"], summ["name"]):
        boot = unc.models.get((kind, name))
        low, high = boot.ci(level) if boot is not None else (np.nan, np.nan)
        lows.append(low)
        highs.append(high)
    summ["map40 ci_low"], summ["map40 ci_high"] = lows, highs


def ci_note(unc: Uncertainty) -> str | None:
    """The report's sentence on what the intervals are and what they cover (None: no bootstrap)."""
    if not unc.runs:
        return None
    settings = unc.settings
    units = "val images (whole patients where the folds are grouped by patient)" if unc.clustered else "val images"
    thin = unc.thin
    few = (f" Classes on fewer than {FEW_IMAGES} val images of a fold ({', '.join(f'{k}: {v}' for k, v in thin.items())}):"
           f" the intervals cover less than {settings.ci:.0%} there (docs/benchmarks.md, bootstrap coverage)."
           if thin else "")
    return (f"CI: {settings.ci:.0%} BCa bootstrap interval of the mean over folds ({settings.resamples} resamples of "
            f"each fold's {units}, seed {settings.seed}); pycocotools' tie rule (IoU ≥ 0.4). A class with no image "
            f"in a resample drops out of that resample's mean, as in the full-set score.{few} The intervals cover "
            f"the choice of validation images only, not the training seed or other randomness of training.")
