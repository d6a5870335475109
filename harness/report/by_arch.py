"""results.md's "by architecture" section: the models of a sweep grouped by the architecture they ran
(the family named on their protocol card's architecture row, e.g. "RetinaNet R50-FPN: detectron2 ..."
-> "RetinaNet R50-FPN"), so the same architecture in two frameworks sits on adjacent rows, with
Δ = mAP@0.4 minus the group's first model, its paired-bootstrap interval over the validation images
(harness.report.uncertainty's pairs) and, in a sweep over training seeds, its mean ± sd over seeds
(harness.report.seeds.pair_spread), "not distinguishable" where the interval holds 0.

Two comparisons, named for what they are: a family ending in " (aligned)" (the `*_aligned` presets,
adapters/aligned.py: the same network, init, normalisation, losses, assigners and schedule set in
both frameworks) gives the *framework effect*; any other family gives *each framework's defaults*
(the builds differ in more than the framework). Under each pair, the differences that remain between
the two builds, derived from the facts each run recorded (metrics.json `architecture_facts`;
harness.report.arch_diff), by category.

Models whose card names no family (the Faster R-CNN / YOLOv5 presets) are left out; the section
appears only when some family has more than one model. Reads only the runs' metrics.json and the
uncertainty computed from their predictions."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.report import arch_diff, seeds
from harness.report.uncertainty import Uncertainty

FAMILY_SEPARATOR = ": "
ALIGNED_TAG = " (aligned)"  # adapters.aligned.FAMILY_TAG (tests check they are the same)


def _metrics(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def run_family(run_dir: str | Path) -> str | None:
    """The architecture family on a run's protocol card, or None."""
    for row in _metrics(run_dir).get("protocol") or []:
        value = row.get("value") if isinstance(row, dict) else None
        if row.get("key") == "architecture" and isinstance(value, str) and FAMILY_SEPARATOR in value:
            return value.split(FAMILY_SEPARATOR, 1)[0]
    return None


def _base(runs: pd.DataFrame) -> pd.Series:
    return runs["base"] if "base" in runs else runs["name"]


def families(runs: pd.DataFrame) -> dict[str, str]:
    """model (base name: one per model, whatever its seeds) -> family, from its first run naming one."""
    found: dict[str, str] = {}
    models = runs[runs["kind"] == "model"]
    for base, path in zip(_base(models), models["path"]):
        if base not in found and (family := run_family(path)):
            found[base] = family
    return found


def is_aligned(family: str) -> bool:
    return family.endswith(ALIGNED_TAG)


def _fmt(value: float, digits: int = 4, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _pair(unc: Uncertainty | None, a: str, b: str) -> pd.DataFrame:
    """The paired comparisons of model a vs model b (seed by seed in a seed sweep), oriented a − b."""
    if unc is None or unc.pairs is None or unc.pairs.empty:
        return pd.DataFrame()
    pairs = unc.pairs
    same = pairs[(pairs["a"] == a) & (pairs["b"] == b)]
    flipped = pairs[(pairs["a"] == b) & (pairs["b"] == a)].copy()
    if not flipped.empty:
        flipped = flipped.assign(a=a, b=b, delta=-flipped["delta"], delta_ci_low=-flipped["delta_ci_high"],
                                 delta_ci_high=-flipped["delta_ci_low"])
    return pd.concat([same, flipped], ignore_index=True)


def _verdict(low: float, high: float, a: str, b: str) -> str:
    if low > 0:
        return f"{a} better"
    if high < 0:
        return f"{b} better"
    return "not distinguishable"


def _delta_cells(runs: pd.DataFrame, unc: Uncertainty | None, model: str, first: str, means: dict) -> list[str]:
    """Δ, its paired-bootstrap CI and verdict, the seed spread: for `model` against `first` (base names)."""
    names = runs[_base(runs) == model]["name"].unique().tolist()
    first_names = runs[_base(runs) == first]["name"].unique().tolist()
    if len(names) == 1 and len(first_names) == 1:  # one seed: the pair of the two models
        pair = _pair(unc, names[0], first_names[0])
        delta = means.get(names[0], math.nan) - means.get(first_names[0], math.nan)
        if pair.empty:
            return [_fmt(delta, sign=True), "– (no paired bootstrap)", "–", "one seed"]
        row = pair.iloc[0]
        ci = f"[{_fmt(row['delta_ci_low'], sign=True)}, {_fmt(row['delta_ci_high'], sign=True)}]"
        return [_fmt(float(row["delta"]), sign=True), ci, _verdict(row["delta_ci_low"], row["delta_ci_high"], model, first),
                "one seed"]
    # a seed sweep: seed by seed, then mean ± sd over the seeds
    pairs = pd.concat([_pair(unc, a, b) for a in names for b in first_names], ignore_index=True) \
        if unc is not None else pd.DataFrame()
    if "seed" in pairs and not pairs.empty:
        pairs = pairs.assign(base_a=model, base_b=first)
        runs_map = runs.assign(base=_base(runs))
        table = seeds.pair_spread(runs_map, pairs)
        if not table.empty:
            row = table.iloc[0]
            n = len(row["seeds"])
            verdicts = (f"{row['not_distinguishable']} of {n} seeds not distinguishable, {row['a_better']} {model} "
                        f"better, {row['b_better']} {first} better")
            return [_fmt(row["delta_mean"], sign=True), "per seed (see verdict)", verdicts,
                    f"{_fmt(row['delta_mean'], sign=True)} ± {_fmt(row['delta_sd'])} (sd over {n} seeds)"]
    return ["–", "–", "–", "–"]


def _facts(runs: pd.DataFrame, model: str) -> dict | None:
    for path in runs[_base(runs) == model]["path"]:
        facts = _metrics(path).get("architecture_facts")
        if facts:
            return facts
    return None


def _differences(runs: pd.DataFrame, first: str, other: str) -> str:
    a, b = _facts(runs, first), _facts(runs, other)
    missing = [m for m, f in ((first, a), (other, b)) if not f or "unavailable" in f]
    if missing:
        why = "; ".join(f"{m}: {(f or {}).get('unavailable', 'not recorded')}" for m, f in ((first, a), (other, b))
                        if m in missing)
        return f"Remaining differences of {first} vs {other}: could not be derived ({why}).\n"
    found = arch_diff.differences(a, b)
    level = [d for d in found if d.architecture_level]
    head = (f"Remaining differences of {first} vs {other}, derived from the built models and configs "
            f"({len(found)}; architecture-level (network): {len(level) or 'none'}):")
    return head + "\n\n" + arch_diff.markdown((first, other), found)


def _evidence(runs: pd.DataFrame, names: list[str]) -> str:
    """What the group's numbers rest on: folds, seeds, validation images per fold."""
    group = runs[_base(runs).isin(names)]
    parts = []
    if "fold" in group:
        folds = group["fold"].nunique()
        parts.append(f"{folds} fold{'s' if folds != 1 else ''}")
    seed_count = group["seed"].dropna().nunique() if "seed" in group else 0
    parts.append(f"{max(seed_count, 1)} seed{'s' if seed_count > 1 else ''}")
    images = group["n_images"].dropna() if "n_images" in group else pd.Series(dtype=float)
    if len(images):
        parts.append(f"{int(images.iloc[0])} validation images per fold")
    return ", ".join(parts)


def _groups(runs: pd.DataFrame) -> dict[str, list[str]]:
    """family -> its models (base names, sorted), for the families run by more than one model."""
    groups: dict[str, list[str]] = {}
    if runs.empty:
        return groups
    for model, family in families(runs).items():
        groups.setdefault(family, []).append(model)
    return {family: sorted(names) for family, names in sorted(groups.items()) if len(names) > 1}


def differences_section(runs: pd.DataFrame) -> str | None:
    """protocol.md's section: each same-architecture pair's remaining model-level differences (None: no pair)."""
    groups = _groups(runs)
    if not groups:
        return None
    lines = ["## Model-level differences of each same-architecture pair", "",
             "Derived from the models each run built (metrics.json `architecture_facts`), not typed: network, "
             "init, normalisation, loss, assignment, sampling, schedule, data pipeline.", ""]
    for family, names in groups.items():
        comparison = "framework effect" if is_aligned(family) else "each framework's defaults"
        lines += [f"### {family} ({comparison})", ""]
        lines += [_differences(runs, names[0], name) for name in names[1:]]
    return "\n".join(lines)


def markdown(runs: pd.DataFrame, summ: pd.DataFrame, unc: Uncertainty | None = None) -> str | None:
    """The section, or None when no architecture is run by two models."""
    groups = _groups(runs)
    if not groups:
        return None
    means = dict(zip(summ["name"], summ["map40 mean"]))
    seed_means = runs.assign(base=_base(runs)).groupby("base")["map40"].mean().to_dict() if "map40" in runs else {}
    lines = ["## mAP@0.4 by architecture", "",
             "Models grouped by the architecture their protocol card names; Δ = mAP@0.4 minus the group's first "
             "model (same protocol: see protocol.md), with its paired-bootstrap interval over the validation images "
             "(images only: not training randomness) and, over several seeds, its mean ± sd. **Framework effect**: "
             "only an *(aligned)* pair's Δ (the same network, init, normalisation, losses, assigners and schedule "
             "set in both frameworks); any other pair compares *each framework's defaults*, whose builds differ in "
             "more than the framework (listed under the table).", "",
             "| architecture | comparison | model | mAP@0.4 | Δ | Δ interval | verdict | seeds | evidence |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for family, names in groups.items():
        comparison = "framework effect" if is_aligned(family) else "each framework's defaults"
        first = names[0]
        evidence = _evidence(runs, names)
        for name in names:
            value = means.get(name, seed_means.get(name, math.nan))
            cells = ["–", "–", "–", "–"] if name == first else _delta_cells(runs, unc, name, first, means)
            lines.append(f"| {family} | {comparison} | {name} | {_fmt(value)} | {' | '.join(cells)} | {evidence} |")
        for name in names[1:]:
            notes.append(f"**{family}** ({comparison}). " + _differences(runs, first, name))
    return "\n".join(lines) + "\n\n" + "\n".join(notes)
