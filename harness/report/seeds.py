"""The report's training-seed spread: for a sweep over `train.seed` (several seeds of the same models
on the same folds), per model the mean ± sample standard deviation of mAP@0.4 over the seeds, beside
the bootstrap interval, and the paired comparisons seed by seed.

Why: the bootstrap interval covers the choice of validation images only; how much a score moves when
only the training seed changes is a second, often larger, source of variation for short runs. The
two are reported side by side, not combined.

A seed sweep is several sweeps, one per seed, under one folder, reported together:

    for seed in 0 1 2; do cxr-run experiment=demo train.seed=$seed sweep=demo_seeds/seed$seed; done
    cxr-report sweep=demo_seeds

harness.report.tables.collect reads each run's seed from its metrics.json (per_model.<m>.train.seed
over train.seed; an ensemble takes the one seed of its sweep's models) and, when there are several,
names the runs "<model> · seed <s>" so that seeds are never averaged as if they were folds.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.eval.bootstrap import fold_mean
from harness.report.uncertainty import Uncertainty

SPREAD_COLUMNS = ["kind", "model", "seeds", "per_seed", "mean", "sd", "ci_low", "ci_high", "n_folds"]
PAIR_SPREAD_COLUMNS = ["a", "b", "seeds", "delta_mean", "delta_sd", "a_better", "b_better", "not_distinguishable"]


def is_seed_sweep(runs: pd.DataFrame) -> bool:
    return "seed" in runs and runs["seed"].dropna().nunique() > 1


def spread(runs: pd.DataFrame, summ: pd.DataFrame, unc: Uncertainty) -> pd.DataFrame:
    """One row per model (or ensemble) over its seeds: each seed's mAP@0.4 (mean over its folds),
    their mean and sample sd, and the bootstrap interval of the seed mean (images only)."""
    rows = []
    seeded = runs[runs["seed"].notna()]
    by_name = summ.set_index(["kind", "name"])
    for (kind, base), group in seeded.groupby(["kind", "base"], sort=False):
        names = group.drop_duplicates("name")[["name", "seed"]].sort_values("seed", key=lambda s: s.astype(int))
        values = [float(by_name.loc[(kind, name), "map40 mean"]) for name in names["name"]]
        folds = {int(by_name.loc[(kind, name), "n_folds"]) for name in names["name"]}
        boots = [unc.models.get((kind, name)) for name in names["name"]]
        low = high = math.nan
        if boots and all(b is not None for b in boots) and len({b.image_ids for b in boots}) == 1:
            low, high = fold_mean(boots).ci(unc.settings.ci)  # same images, same draws: the seed mean's CI
        rows.append({"kind": kind, "model": base, "seeds": [int(s) for s in names["seed"]],
                     "per_seed": values, "mean": float(np.mean(values)),
                     "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                     "ci_low": low, "ci_high": high, "n_folds": folds.pop() if len(folds) == 1 else None})
    return pd.DataFrame(rows, columns=SPREAD_COLUMNS)


def pair_spread(runs: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per pair of models: Δ mAP@0.4 mean ± sd over the seeds both ran, and in how many seeds the
    paired bootstrap said A better / B better / not distinguishable."""
    if pairs is None or pairs.empty or "seed" not in pairs:
        return pd.DataFrame(columns=PAIR_SPREAD_COLUMNS)
    base = dict(zip(runs["name"], runs["base"]))
    frame = pairs.assign(base_a=pairs["a"].map(base), base_b=pairs["b"].map(base))
    rows = []
    for (a, b), group in frame.groupby(["base_a", "base_b"], sort=False):
        deltas = group["delta"].to_numpy(float)
        a_better = int((group["delta_ci_low"] > 0).sum())
        b_better = int((group["delta_ci_high"] < 0).sum())
        rows.append({"a": a, "b": b, "seeds": [int(s) for s in group["seed"]], "delta_mean": float(deltas.mean()),
                     "delta_sd": float(deltas.std(ddof=1)) if len(deltas) > 1 else math.nan,
                     "a_better": a_better, "b_better": b_better,
                     "not_distinguishable": len(group) - a_better - b_better})
    return pd.DataFrame(rows, columns=PAIR_SPREAD_COLUMNS)


def _fmt(value: float, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(table: pd.DataFrame, pair_table: pd.DataFrame, level: float) -> str:
    """The results.md section."""
    seeds = sorted({s for row in table["seeds"] for s in row})
    lines = [f"## Training-seed spread (train.seed = {', '.join(map(str, seeds))})", "",
             "mAP@0.4 per model: each seed's value (its mean over folds), the mean ± sample standard deviation over "
             f"the seeds, and beside it the {level:.0%} bootstrap interval of the seed mean, which covers the choice of "
             "validation images only — the seed-to-seed spread is the variation that interval does not show.", "",
             "| model | seeds | per seed | mean ± sd over seeds | bootstrap CI (images only) |", "|---|---|---|---|---|"]
    for _, r in table.iterrows():
        per_seed = ", ".join(f"{s}: {v:.4f}" for s, v in zip(r["seeds"], r["per_seed"]))
        ci = "–" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        label = f"**{r['model']}**" if r["kind"] == "ensemble" else r["model"]
        lines.append(f"| {label} | {len(r['seeds'])} | {per_seed} | {_fmt(r['mean'])} ± {_fmt(r['sd'])} | {ci} |")
    if not pair_table.empty:
        lines += ["", "Paired comparisons seed by seed (each on the same val images, same resamples): Δ = "
                  "mAP@0.4(A) − mAP@0.4(B) mean ± sd over the seeds, and in how many seeds the paired bootstrap's "
                  "CI of Δ excluded 0 either way (the per-seed rows are in the paired comparisons table above).", "",
                  "| A | B | seeds | Δ mean ± sd over seeds | A better | B better | not distinguishable |",
                  "|---|---|---|---|---|---|---|"]
        for _, p in pair_table.iterrows():
            lines.append(f"| {p['a']} | {p['b']} | {len(p['seeds'])} | {p['delta_mean']:+.4f} ± {_fmt(p['delta_sd'])} "
                         f"| {p['a_better']} | {p['b_better']} | {p['not_distinguishable']} |")
    return "\n".join(lines) + "\n"


def frame(table: pd.DataFrame, pair_table: pd.DataFrame) -> pd.DataFrame:
    """report/seeds.csv: one row per model and seed, one per model over seeds, one per pair over seeds."""
    rows = []
    for _, r in table.iterrows():
        for seed, value in zip(r["seeds"], r["per_seed"]):
            rows.append({"kind": r["kind"], "name": r["model"], "seed": seed, "map40": value})
        rows.append({"kind": r["kind"], "name": r["model"], "seed": "mean", "map40": r["mean"], "sd": r["sd"],
                     "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    for _, p in pair_table.iterrows():
        rows.append({"kind": "paired", "name": f"{p['a']} vs {p['b']}", "seed": "mean", "delta": p["delta_mean"],
                     "sd": p["delta_sd"], "a_better": p["a_better"], "b_better": p["b_better"],
                     "not_distinguishable": p["not_distinguishable"]})
    return pd.DataFrame(rows, columns=["kind", "name", "seed", "map40", "delta", "sd", "ci_low", "ci_high",
                                       "a_better", "b_better", "not_distinguishable"])
