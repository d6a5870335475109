"""The report's training-seed spread: for a sweep over `train.seed` (several seeds of the same models
on the same folds), per model the mean ± sample standard deviation of mAP@0.4 over the seeds, beside
the bootstrap interval, and the paired comparisons seed by seed.

Why: the bootstrap interval covers the choice of validation images only; how much a score moves when
only the training seed changes is a second, often larger, source of variation for short runs. The
section's interval for a model includes both: a t interval over the seed means,

    mean ± t(n − 1, (1 + level) / 2) · √(sd² / n + v_images)

with sd the sample standard deviation over the n seeds and v_images the bootstrap variance (over the
val images, the same draws for every seed) of the seed mean. With 2-3 seeds t has 1-2 degrees of
freedom, so the interval is wide: that is what few seeds can say. The images-only bootstrap interval
of the seed mean is given beside it. Paired comparisons across seeds get an exact two-sided sign test
on the sign of each seed's Δ (seeds with Δ = 0 left out): "A higher in 3 of 3 seeds" is p = 0.25.

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

from harness.eval.bootstrap import Bootstrap
from harness.report.uncertainty import Uncertainty

SPREAD_COLUMNS = ["kind", "model", "seeds", "per_seed", "mean", "sd", "low", "high", "ci_low", "ci_high", "n_folds"]
PAIR_SPREAD_COLUMNS = ["a", "b", "seeds", "delta_mean", "delta_sd", "a_higher", "b_higher", "sign_p", "a_better",
                       "b_better", "not_distinguishable"]


def t_cdf(x: float, df: int) -> float:
    """Student's t distribution function (df >= 1), by Simpson integration of its density."""
    if x < 0:
        return 1.0 - t_cdf(-x, df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    # substitute t = tan(u) · sqrt(df)-free form: integrate the density on [0, x] in u = atan(t)
    steps = 2000
    top = math.atan(x)
    h = top / steps
    total = 0.0
    for i in range(steps + 1):
        u = i * h
        t = math.tan(u)
        f = math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df)) / math.cos(u) ** 2
        total += f * (1 if i in (0, steps) else 4 if i % 2 else 2)
    return 0.5 + total * h / 3


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on t_cdf)."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def seed_interval(values: list[float], image_var: float | None, level: float) -> tuple[float, float]:
    """mean ± t(n-1) · sqrt(sd²/n + image_var) over the seed values (NaN with one seed); image_var
    None: the seed term only."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = t_quantile((1 + level) / 2, n - 1) * math.sqrt(sd * sd / n + (image_var or 0.0))
    return mean - half, mean + half


def sign_test(higher: int, lower: int) -> float:
    """Exact two-sided sign test p of `higher` positive and `lower` negative signs (ties left out):
    P(a count at least as far from n/2) under a fair coin; 1.0 with no signs."""
    n = higher + lower
    if n == 0:
        return 1.0
    k = max(higher, lower)
    tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def seed_mean(boots: list[Bootstrap]) -> Bootstrap:
    """The mean over seeds scored on the same images with the same draws: the mean of their
    resamples and of their influence values (the same units)."""
    infl = None if any(b.influence is None for b in boots) else np.mean([b.influence for b in boots], axis=0)
    return Bootstrap(float(np.mean([b.point for b in boots])), np.mean([b.samples for b in boots], axis=0),
                     boots[0].image_ids, boots[0].seed, infl, boots[0].thin, boots[0].split_hash, boots[0].clustered)


def is_seed_sweep(runs: pd.DataFrame) -> bool:
    return "seed" in runs and runs["seed"].dropna().nunique() > 1


def spread(runs: pd.DataFrame, summ: pd.DataFrame, unc: Uncertainty) -> pd.DataFrame:
    """One row per model (or ensemble) over its seeds: each seed's mAP@0.4 (mean over its folds),
    their mean and sample sd, the interval over seeds and images (`low`, `high`; see the module doc)
    and the bootstrap interval of the seed mean over images only (`ci_low`, `ci_high`)."""
    rows = []
    seeded = runs[runs["seed"].notna()]
    by_name = summ.set_index(["kind", "name"])
    for (kind, base), group in seeded.groupby(["kind", "base"], sort=False):
        names = group.drop_duplicates("name")[["name", "seed"]].sort_values("seed", key=lambda s: s.astype(int))
        values = [float(by_name.loc[(kind, name), "map40 mean"]) for name in names["name"]]
        folds = {int(by_name.loc[(kind, name), "n_folds"]) for name in names["name"]}
        boots = [unc.models.get((kind, name)) for name in names["name"]]
        low = high = math.nan
        image_var = None
        if boots and all(b is not None for b in boots) and len({(b.image_ids, b.split_hash) for b in boots}) == 1:
            mean_boot = seed_mean(boots)  # same images, same draws: the seed mean's CI (images only)
            low, high = mean_boot.ci(unc.settings.ci)
            image_var = float(np.var(mean_boot.samples, ddof=1)) if len(mean_boot.samples) > 1 else None
        t_low, t_high = seed_interval(values, image_var, unc.settings.ci)
        rows.append({"kind": kind, "model": base, "seeds": [int(s) for s in names["seed"]],
                     "per_seed": values, "mean": float(np.mean(values)),
                     "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                     "low": t_low, "high": t_high, "ci_low": low, "ci_high": high,
                     "n_folds": folds.pop() if len(folds) == 1 else None})
    return pd.DataFrame(rows, columns=SPREAD_COLUMNS)


def pair_spread(runs: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per pair of models: Δ mAP@0.4 mean ± sd over the seeds both ran, in how many seeds A (B) scored
    higher and the exact two-sided sign-test p of that, and in how many seeds the paired bootstrap
    said A better / B better / not distinguishable."""
    if pairs is None or pairs.empty or "seed" not in pairs:
        return pd.DataFrame(columns=PAIR_SPREAD_COLUMNS)
    base = dict(zip(runs["name"], runs["base"]))
    frame = pairs.assign(base_a=pairs["a"].map(base), base_b=pairs["b"].map(base))
    rows = []
    for (a, b), group in frame.groupby(["base_a", "base_b"], sort=False):
        deltas = group["delta"].to_numpy(float)
        a_better = int((group["delta_ci_low"] > 0).sum())
        b_better = int((group["delta_ci_high"] < 0).sum())
        higher, lower = int((deltas > 0).sum()), int((deltas < 0).sum())
        rows.append({"a": a, "b": b, "seeds": [int(s) for s in group["seed"]], "delta_mean": float(deltas.mean()),
                     "delta_sd": float(deltas.std(ddof=1)) if len(deltas) > 1 else math.nan,
                     "a_higher": higher, "b_higher": lower, "sign_p": sign_test(higher, lower),
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
             f"the seeds, the {level:.0%} interval over seeds and images (a t interval over the seed means with "
             "n − 1 degrees of freedom, its variance the seeds' sd²/n plus the bootstrap variance of the seed mean over "
             f"the val images), and beside it the {level:.0%} bootstrap interval of the seed mean, which covers the "
             "choice of validation images only. With few seeds the t interval is wide: that is what few seeds can "
             "say (it rests on these seeds, these folds, one machine).", "",
             "| model | seeds | per seed | mean ± sd over seeds | interval over seeds and images | "
             "bootstrap CI (images only) |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        per_seed = ", ".join(f"{s}: {v:.4f}" for s, v in zip(r["seeds"], r["per_seed"]))
        ci = "–" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        both = "–" if math.isnan(r["low"]) else f"[{r['low']:.3f}, {r['high']:.3f}]"
        label = f"**{r['model']}**" if r["kind"] == "ensemble" else r["model"]
        lines.append(f"| {label} | {len(r['seeds'])} | {per_seed} | {_fmt(r['mean'])} ± {_fmt(r['sd'])} | {both} "
                     f"| {ci} |")
    if not pair_table.empty:
        lines += ["", "Paired comparisons seed by seed (each on the same val images and split, same resamples): Δ = "
                  "mAP@0.4(A) − mAP@0.4(B) mean ± sd over the seeds; in how many seeds A scored higher, with the "
                  "exact two-sided sign-test p of that count (seeds with Δ = 0 left out; with 3 seeds the smallest "
                  "possible p is 0.25, with 5 seeds 0.0625); and in how many seeds the paired bootstrap's CI of Δ "
                  "excluded 0 either way (the per-seed rows are in the paired comparisons table above).", "",
                  "| A | B | seeds | Δ mean ± sd over seeds | A higher (sign test, two-sided p) | A better | B better "
                  "| not distinguishable |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, p in pair_table.iterrows():
            signed = p["a_higher"] + p["b_higher"]
            lines.append(f"| {p['a']} | {p['b']} | {len(p['seeds'])} | {p['delta_mean']:+.4f} ± {_fmt(p['delta_sd'])} "
                         f"| {p['a_higher']} of {signed} (p = {p['sign_p']:.3g}) "
                         f"| {p['a_better']} | {p['b_better']} | {p['not_distinguishable']} |")
    return "\n".join(lines) + "\n"


def frame(table: pd.DataFrame, pair_table: pd.DataFrame) -> pd.DataFrame:
    """report/seeds.csv: one row per model and seed, one per model over seeds, one per pair over seeds."""
    rows = []
    for _, r in table.iterrows():
        for seed, value in zip(r["seeds"], r["per_seed"]):
            rows.append({"kind": r["kind"], "name": r["model"], "seed": seed, "map40": value})
        rows.append({"kind": r["kind"], "name": r["model"], "seed": "mean", "map40": r["mean"], "sd": r["sd"],
                     "low": r["low"], "high": r["high"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    for _, p in pair_table.iterrows():
        rows.append({"kind": "paired", "name": f"{p['a']} vs {p['b']}", "seed": "mean", "delta": p["delta_mean"],
                     "sd": p["delta_sd"], "a_higher": p["a_higher"], "b_higher": p["b_higher"],
                     "sign_p": p["sign_p"], "a_better": p["a_better"], "b_better": p["b_better"],
                     "not_distinguishable": p["not_distinguishable"]})
    return pd.DataFrame(rows, columns=["kind", "name", "seed", "map40", "delta", "sd", "low", "high", "ci_low",
                                       "ci_high", "a_higher", "b_higher", "sign_p", "a_better", "b_better",
                                       "not_distinguishable"])
