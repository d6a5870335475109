"""The report's charts: mAP@0.4 per model/ensemble (the original study's "model results" figure,
regenerated from data) and a per-class AP heatmap.

matplotlib's Agg backend only (no display, no font downloads: its bundled DejaVu Sans is used);
every PNG is written to a temporary name and renamed, so a crash leaves no half image.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness import atomic
from harness.report.tables import class_columns

MODEL_COLOUR = "#4C72B0"
ENSEMBLE_COLOUR = "#DD8452"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 130) -> Path:
    """Save atomically (temp name in the same folder, then os.replace) and close the figure."""
    plt = _pyplot()
    try:
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path


def results_chart(runs: pd.DataFrame, summ: pd.DataFrame, path: str | Path, metric: str = "map40",
                  title: str = "mAP@0.4 per model (mean ± std over folds)", reference: dict | None = None) -> Path:
    """Bars = mean over folds, error bars = the bootstrap CI of that mean where `summ` has one
    ("map40 ci_low/ci_high"), else the std over folds; dots = individual folds, value labels on the
    bars. Ensembles are orange, models blue. The legend sits above the plot area, so no value label
    can run into it however many models there are."""
    return save_figure(results_figure(runs, summ, metric, title, reference), Path(path))


def results_figure(runs: pd.DataFrame, summ: pd.DataFrame, metric: str = "map40",
                   title: str = "mAP@0.4 per model (mean ± std over folds)", reference: dict | None = None):
    """The figure of results_chart (not saved)."""
    plt = _pyplot()
    names = list(summ["name"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names) + 2), 4.6))
    if not names:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    means = summ[f"{metric} mean"].to_numpy(float)
    stds = np.nan_to_num(summ[f"{metric} std"].to_numpy(float))
    lows = summ[f"{metric} ci_low"].to_numpy(float) if f"{metric} ci_low" in summ else np.full(len(names), np.nan)
    highs = summ[f"{metric} ci_high"].to_numpy(float) if f"{metric} ci_high" in summ else np.full(len(names), np.nan)
    has_ci = ~np.isnan(lows) & ~np.isnan(highs)
    below = np.where(has_ci, np.nan_to_num(means) - lows, stds)
    above = np.where(has_ci, highs - np.nan_to_num(means), stds)
    colours = [ENSEMBLE_COLOUR if k == "ensemble" else MODEL_COLOUR for k in summ["kind"]]
    x = np.arange(len(names))
    ax.bar(x, np.nan_to_num(means), width=0.6, color=colours, alpha=0.85, zorder=2)
    ax.errorbar(x, np.nan_to_num(means), yerr=np.clip(np.vstack([below, above]), 0, None), fmt="none", ecolor="black", capsize=5, lw=1.2, zorder=3)
    rng = np.random.default_rng(0)
    top = 0.0
    for i, (kind, name) in enumerate(zip(summ["kind"], names)):
        values = runs[(runs["kind"] == kind) & (runs["name"] == name)][metric].to_numpy(float)
        values = values[~np.isnan(values)]
        jitter = rng.uniform(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(values.size)
        ax.scatter(x[i] + jitter, values, s=22, color="black", alpha=0.7, zorder=4,
                   label="single fold" if i == 0 else None)
        peak = max([means[i] + above[i], *values]) if values.size else means[i]
        top = max(top, 0.0 if math.isnan(peak) else peak)
        label = "–" if math.isnan(means[i]) else f"{means[i]:.3f}"
        if has_ci[i]:
            label += f"\n[{lows[i]:.3f}, {highs[i]:.3f}]"
        elif stds[i] > 0:
            label += f"\n± {stds[i]:.3f}"
        ax.text(x[i], (0 if math.isnan(peak) else peak) + 0.015 * max(top, 0.1), label, ha="center",
                va="bottom", fontsize=9, zorder=5)
    if reference is not None and metric in reference:
        ax.axhline(reference[metric], color="#55A868", ls="--", lw=1.2, zorder=1,
                   label=f"{reference['name']}: {reference[metric]:.3f}")
        top = max(top, reference[metric])
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel("mAP@0.4" if metric == "map40" else metric)
    ax.set_ylim(0, max(0.1, top * 1.25))
    ax.set_title(title, pad=22)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    from matplotlib.patches import Patch

    handles = [Patch(color=MODEL_COLOUR, label="model"), Patch(color=ENSEMBLE_COLOUR, label="ensemble")]
    handles += ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(handles), fontsize=8,
              frameon=False, borderaxespad=0.2)
    return fig


def per_class_heatmap(summ: pd.DataFrame, path: str | Path,
                      title: str = "Per-class AP@0.4 (mean over folds; – = no ground truth)") -> Path:
    """Models/ensembles x the dataset's classes, each cell annotated with its AP."""
    plt = _pyplot()
    names = list(summ["name"])
    classes = class_columns(summ, " mean")
    data = np.array([[row[f"AP {c} mean"] for c in classes] for _, row in summ.iterrows()], float).reshape(
        len(names), len(classes))
    fig, ax = plt.subplots(figsize=(12, 1.6 + 0.55 * max(1, len(names))))
    if not names:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return save_figure(fig, Path(path))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#DDDDDD")
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(len(classes)))
    ax.set_xticklabels(classes, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(np.arange(len(names)))
    ax.set_yticklabels(names, fontsize=9)
    for i in range(len(names)):
        for j in range(len(classes)):
            value = data[i, j]
            text = "–" if math.isnan(value) else f"{value:.2f}"
            colour = "black" if math.isnan(value) or value > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01, label="AP@0.4")
    return save_figure(fig, Path(path))
