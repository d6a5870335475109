"""The report's first screen ("At a glance"): the ranking by mAP@0.4 with intervals and the paired
verdicts against the leader, CPM and image AUROC beside it, per-class image and box counts of the
validation images (classes without validation boxes folded into one line), where each model's AP goes
(TIDE), and the caveats that apply (one training seed, one fold, few images).

    markdown(summ, unc, tables, analysis_lines, seed_sweep=False)   # results.md puts it under the title
"""
from __future__ import annotations

import math

import pandas as pd

from harness.report.names import display_name
from harness.report.uncertainty import Uncertainty

HEADING = "At a glance"
#: Fewer validation images than this get a "few images" caveat beside the ranking.
FEW_IMAGES = 200


def _f(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _versus(pairs: pd.DataFrame, a: str, leader: str) -> str:
    """a vs the leader from the paired bootstrap: the verdict and Δ(a − leader) with its interval."""
    if pairs is None or pairs.empty:
        return "–"
    for _, p in pairs.iterrows():
        if {p["a"], p["b"]} != {a, leader}:
            continue
        sign = 1 if p["a"] == a else -1
        low, high = sorted((sign * p["delta_ci_low"], sign * p["delta_ci_high"]))
        delta = sign * p["delta"]
        verdict = "**not distinguishable**" if p["verdict"] == "not distinguishable" else (
            "behind" if high < 0 else "ahead")
        return f"{verdict} (Δ {delta:+.3f} [{low:+.3f}, {high:+.3f}])"
    return "not compared (no shared images)"


def _val_sets(tables: list) -> list:
    """One run per validation set (fold and image ids): several runs, and copies of one val file, share one."""
    return list({(str(t.fold), tuple(t.table.image_ids)): t for t in tables}.values())


def n_images(tables: list) -> int:
    """Validation images over the folds (each val set once)."""
    return sum(len(t.table.image_ids) for t in _val_sets(tables))


def class_counts(tables: list) -> pd.DataFrame:
    """Validation images and boxes per class over the folds (each val set once), from the runs' match tables."""
    rows = []
    for run in _val_sets(tables):
        gt = run.table.gt[~run.table.gt["ignore"]]
        rows.append(gt[["image_id", "category_id"]].assign(val=str(run.fold)))
    if not rows:
        return pd.DataFrame(columns=["category_id", "images", "boxes"])
    gt = pd.concat(rows, ignore_index=True)
    grouped = gt.groupby("category_id")
    return pd.DataFrame({"images": grouped.apply(lambda g: g[["val", "image_id"]].drop_duplicates().shape[0]),
                         "boxes": grouped.size()}).reset_index()


def markdown(summ: pd.DataFrame, unc: Uncertainty, tables: list, classes: tuple[str, ...],
             where_ap_goes: list[str], seed_sweep: bool, n_images: int | None = None) -> str:
    if summ.empty:
        return ""
    level = f"{unc.settings.ci:.0%}"
    ranked = summ.sort_values("map40 mean", ascending=False, kind="mergesort").reset_index(drop=True)
    leader = ranked.loc[0, "name"]
    has_ci = "map40 ci_low" in ranked and ranked["map40 ci_low"].notna().any()
    screen = "cpm" in ranked
    n_folds = int(ranked["n_folds"].max())
    lines = [f"## {HEADING}", "",
             f"Ranking by mAP@0.4 (mean over {n_folds} fold{'s' if n_folds > 1 else ''}"
             + (f"; {level} bootstrap interval over the validation images" if has_ci else "")
             + "). \"vs leader\": the paired bootstrap of the difference on the same images.", "",
             "| # | model | mAP@0.4 | " + (f"{level} interval | " if has_ci else "") + "vs leader | "
             + ("CPM | image AUROC |" if screen else ""),
             "|---|---|---|" + ("---|" if has_ci else "") + "---|" + ("---|---|" if screen else "")]
    for i, row in ranked.iterrows():
        cells = [str(i + 1), display_name(row["name"]), _f(row["map40 mean"])]
        if has_ci:
            cells.append(f"[{_f(row['map40 ci_low'])}, {_f(row['map40 ci_high'])}]")
        cells.append("leader" if row["name"] == leader else _versus(unc.pairs, row["name"], leader))
        if screen:
            cells += [_f(row.get("cpm")), _f(row.get("auroc"))]
        lines.append("| " + " | ".join(cells) + " |")
    caveats = []
    if not seed_sweep:
        caveats.append("**One training seed**: every score is one training draw. The intervals cover the choice of "
                       "validation images only, not the training randomness (a sweep over `train.seed` reports that "
                       "spread).")
    if n_folds == 1:
        caveats.append("**One fold**: one split of the data.")
    if n_images is not None and n_images < FEW_IMAGES:
        caveats.append(f"**{n_images} validation images**: few images; the intervals are wide for that reason.")
    if caveats:
        lines += [""] + [f"- {c}" for c in caveats]
    counts = class_counts(tables)
    if not counts.empty:
        present = counts[counts["boxes"] > 0].sort_values("boxes", ascending=False)
        absent = [classes[c] if c < len(classes) else str(c) for c in range(len(classes))
                  if c not in set(present["category_id"])]
        lines += ["", "Validation data per class (all folds):", "", "| class | images | boxes |", "|---|---|---|"]
        for row in present.itertuples():
            name = classes[row.category_id] if row.category_id < len(classes) else str(row.category_id)
            lines.append(f"| {name} | {int(row.images)} | {int(row.boxes)} |")
        if absent:
            lines += ["", f"No validation boxes (left out of every mAP): {', '.join(absent)}."]
    if where_ap_goes:
        lines += ["", "Where the AP goes (TIDE at IoU 0.4; details below):", ""]
        lines += [f"- {line}" for line in where_ap_goes]
    return "\n".join(lines) + "\n"
