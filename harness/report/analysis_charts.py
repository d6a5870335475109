"""Charts of the error analysis (harness.report.analysis): dAP per error type, confusion matrices,
per-class precision-recall curves (one figure per class, every model on it, and a small-multiples
overview), AP by box size. matplotlib Agg, written atomically (harness.report.charts.save_figure)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.classes import CLASSES
from harness.eval.bootstrap import ap101
from harness.eval.confusion import normalised
from harness.eval.errors import ERROR_NAMES, ERROR_TYPES
from harness.eval.matches import MatchTable, pr_curve
from harness.eval.sizes import BAND_NAMES, SizeBands
from harness.report.charts import _pyplot, save_figure


def _model_colours(names: list[str]) -> dict[str, tuple]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def errors_chart(errors: pd.DataFrame, path: Path) -> Path:
    """Grouped horizontal bars: per error type, the dAP of every model (AP points), counts as labels."""
    plt = _pyplot()
    names = list(dict.fromkeys(errors["name"]))
    colours = _model_colours(names)
    fig, ax = plt.subplots(figsize=(8.5, 1.2 + 0.42 * len(ERROR_TYPES) * max(1, len(names)) ** 0.7 + 0.6))
    height = 0.8 / max(1, len(names))
    y = np.arange(len(ERROR_TYPES))
    top = 0.0
    for i, name in enumerate(names):
        rows = errors[errors["name"] == name].set_index("type")
        values = [rows.loc[k, "dap"] * 100 for k in ERROR_TYPES]
        top = max(top, *values)
        pos = y - 0.4 + height * (i + 0.5)
        ax.barh(pos, values, height=height * 0.92, color=colours[name], label=name)
        for p, v, k in zip(pos, values, ERROR_TYPES):
            count = int(rows.loc[k, "count"])
            if v > 0 or count:
                ax.text(v, p, f" {v:.1f} ({count})", va="center", fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels([ERROR_NAMES[k] for k in ERROR_TYPES])
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, top) * 1.3)
    ax.set_xlabel("dAP: mAP@0.4 points gained by fixing only this error type (label: dAP (count))")
    ax.set_title("Where the AP goes (TIDE error types at IoU 0.4)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(4, len(names)), fontsize=8, frameon=False)
    return save_figure(fig, path)


def confusion_chart(counts: pd.DataFrame, path: Path, title: str) -> Path:
    """Counts and row-normalised side by side; classes with neither boxes nor predictions are left out."""
    plt = _pyplot()
    keep = [label for label in counts.index
            if counts.loc[label].sum() > 0 or counts[label].sum() > 0 or label == counts.index[-1]]
    counts = counts.loc[keep, keep]
    norm = normalised(counts)
    n = len(keep)
    side = 2.2 + 0.42 * n
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.0, side))
    for ax, data, fmt, label in ((axes[0], counts.to_numpy(float), "{:.0f}", "count"),
                                 (axes[1], norm.to_numpy(float), "{:.2f}", "share of the row (true class)")):
        image = ax.imshow(data, cmap="Blues", vmin=0, vmax=max(1e-9, data.max()))
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels(keep, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(np.arange(n))
        ax.set_yticklabels(keep if ax is axes[0] else [], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true" if ax is axes[0] else "")
        ax.set_title(label, fontsize=9)
        for i in range(n):
            for j in range(n):
                if data[i, j]:
                    ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=6.5,
                            color="white" if data[i, j] > 0.6 * data.max() else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _draw_curves(ax, curves: dict[str, list[MatchTable]], cat: int, per_class: pd.DataFrame, colours, small: bool,
                 classes=CLASSES):
    drawn = False
    for name, tables in curves.items():
        curve = pr_curve(tables, cat)
        if curve.empty:
            continue
        if len(tables) > 1:  # the curve pools the folds: its legend gives the pooled curve's own AP
            label = name if small else f"{name} (pooled AP {pooled_ap(tables, cat):.3f})"
        else:
            ap = per_class[(per_class["name"] == name) & (per_class["class"] == classes[cat])]["ap"]
            label = name if small else f"{name} (AP {ap.iloc[0]:.3f})" if len(ap) and not math.isnan(ap.iloc[0]) else name
        recall = np.concatenate([[0.0], curve["recall"].to_numpy()])
        precision = np.concatenate([[curve["envelope"].iloc[0]], curve["envelope"].to_numpy()])
        ax.step(recall, precision, where="post", color=colours[name], lw=1.2 if small else 1.8, label=label)
        drawn = True
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    if not drawn:
        ax.text(0.5, 0.5, "no ground truth\nor no detections", ha="center", va="center", fontsize=7 if small else 10,
                color="0.4", transform=ax.transAxes)
    return drawn


def pooled_ap(tables: list[MatchTable], cat: int) -> float:
    """pycocotools' 101-point AP of the pooled curve (its detections in score order, all folds' boxes)."""
    rows = pd.concat([t.det[(t.det["category_id"] == cat) & ~t.det["ignore"]] for t in tables])
    rows = rows.iloc[np.argsort(-rows["score"].to_numpy(float), kind="mergesort")]
    tp = rows["tp"].to_numpy(bool)
    return ap101(tp, ~tp, sum(t.n_gt().get(cat, 0) for t in tables))


def pr_figures(curves: dict[str, list[MatchTable]], per_class: pd.DataFrame, out_dir: Path,
               classes=CLASSES) -> dict[str, Path]:
    """pr/<class>.png for every class with ground truth, and pr/overview.png (small multiples, one per class);
    `classes`: the dataset's class names by category id."""
    plt = _pyplot()
    names = list(curves)
    colours = _model_colours(names)
    paths = {}
    with_gt = [cat for cat in range(len(classes))
               if any(t.n_gt().get(cat, 0) for tables in curves.values() for t in tables)]
    for cat in with_gt:
        fig, ax = plt.subplots(figsize=(5.6, 4.6))
        _draw_curves(ax, curves, cat, per_class, colours, small=False, classes=classes)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision (interpolated, as pycocotools)")
        ax.set_title(f"{classes[cat]}: precision-recall at IoU 0.4", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8, frameon=True, framealpha=0.85)
        paths[f"pr_{cat}_png"] = save_figure(fig, out_dir / f"{_slug(classes[cat])}.png")
    cols = 5
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.3 + 0.8), sharex=True, sharey=True)
    for cat, ax in enumerate(axes.ravel()):
        if cat >= len(classes):
            ax.set_axis_off()
            continue
        _draw_curves(ax, curves, cat, per_class, colours, small=True, classes=classes)
        ax.set_title(classes[cat], fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.25)
    handles = [plt.Line2D([], [], color=colours[n], lw=2, label=n) for n in names]
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(names)), fontsize=8, frameon=False)
    fig.suptitle("Precision-recall at IoU 0.4 per class (out-of-fold: folds pooled)", fontsize=10)
    fig.subplots_adjust(bottom=0.12, top=0.9)
    paths["pr_overview_png"] = save_figure(fig, out_dir / "overview.png")
    return paths


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()


def size_chart(sizes: pd.DataFrame, bands: SizeBands, path: Path) -> Path:
    plt = _pyplot()
    names = list(dict.fromkeys(sizes["name"]))
    colours = _model_colours(names)
    groups = ("all", *BAND_NAMES)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 0.4 * len(names)), 4.2))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        rows = sizes[sizes["name"] == name].set_index("band")
        values = [rows.loc[g, "map40"] for g in groups]
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(values), width=width * 0.92, color=colours[name], label=name)
    n_gt = sizes.drop_duplicates("band").set_index("band")["n_gt"]
    a, b = bands.edges
    edges = {"all": "", "small": f"< {a:.0f} px²", "medium": f"{a:.0f}–{b:.0f} px²", "large": f"≥ {b:.0f} px²"}
    ax.set_xticks(x)
    ax.set_xticklabels([f"{g}\n{edges[g]}\n{int(n_gt.get(g, 0))} GT boxes" for g in groups], fontsize=8)
    ax.set_ylabel("mAP@0.4")
    ax.set_ylim(0, 1.0)
    ax.set_title("AP@0.4 by box size (bands: terciles of the ground-truth box areas)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(4, len(names)), fontsize=8, frameon=False)
    return save_figure(fig, path)


def froc_chart(curves: pd.DataFrame, cpm: dict[str, float], rates, path: Path, pooled: bool = False) -> Path:
    """Sensitivity against false positives per image (log axis), all classes pooled, one line per model;
    the CPM's rates marked. Legend: CPM (mean over folds)."""
    plt = _pyplot()
    names = list(dict.fromkeys(curves["name"])) or list(cpm)
    colours = _model_colours(names)
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for name in names:
        curve = curves[(curves["name"] == name) & (curves["class"] == "all")]
        if curve.empty:
            continue
        fppi = np.concatenate([[rates[0] / 4], curve["fp_per_image"].to_numpy(float)])
        sens = np.concatenate([[0.0], curve["sensitivity"].to_numpy(float)])
        fppi = np.maximum(fppi, rates[0] / 4)
        # extend the last point to the right edge: the sensitivity stays where all detections are kept
        fppi, sens = np.append(fppi, max(rates[-1] * 2, fppi[-1])), np.append(sens, sens[-1])
        value = cpm.get(name, math.nan)
        ax.step(fppi, sens, where="post", color=colours[name], lw=1.8,
                label=f"{name} (CPM {value:.3f})" if not math.isnan(value) else name)
    for rate in rates:
        ax.axvline(rate, color="0.75", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlim(rates[0] / 2, rates[-1] * 2)
    ax.set_xticks(list(rates))
    ax.set_xticklabels(["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per image (dotted: the CPM's rates)")
    ax.set_ylabel("lesion sensitivity")
    where = "out-of-fold: folds pooled" if pooled else "val images"
    ax.set_title(f"FROC, all classes ({where}); legend: CPM, mean over folds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=True, framealpha=0.85)
    return save_figure(fig, path)


def operating_points_chart(points: pd.DataFrame, budget: pd.DataFrame, path: Path) -> Path:
    """Per model: precision, recall and F1 against the score threshold; the threshold within the FP budget
    marked (dashed)."""
    plt = _pyplot()
    names = list(dict.fromkeys(points["name"]))
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.6), squeeze=False, sharey=True)
    chosen = budget.set_index("name") if not budget.empty else None
    for ax, name in zip(axes.ravel(), names):
        rows_ = points[points["name"] == name]
        for key, colour in (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green")):
            ax.plot(rows_["threshold"], rows_[key], color=colour, lw=1.5, label=key if key != "f1" else "F1")
        if chosen is not None and name in chosen.index and not math.isnan(chosen.loc[name, "budget threshold"]):
            ax.axvline(chosen.loc[name, "budget threshold"], color="0.3", ls="--", lw=1,
                       label=f"≤ {chosen.loc[name, 'fp_budget']:g} FP/image")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("score threshold", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    fig.suptitle("Operating points: precision, recall (lesion sensitivity) and F1 against the score threshold",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
