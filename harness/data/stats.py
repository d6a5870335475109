"""Data statistics of a prepared dataset: what there is to learn, per class.

Tables (CSV + Markdown): images and fused boxes per class, raw reader boxes, box sizes (relative to
the image, so sizes compare across resolutions), readers per fused finding. Charts (PNG): the
original study's "data amount per label" bar chart, box size distribution, reader agreement.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from harness import atomic
from harness.classes import NO_FINDING_NAME, class_names


def class_table(coco: dict, raw_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per class of the labels' own class list (+ "No finding": images without boxes): images,
    fused boxes, reader boxes, sizes, reader support."""
    classes = class_names(coco)
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    ann = pd.DataFrame(coco["annotations"], columns=["image_id", "category_id", "bbox", "num_readers"])
    if len(ann):
        w = np.array([b[2] for b in ann["bbox"]], float)
        h = np.array([b[3] for b in ann["bbox"]], float)
        iw = ann["image_id"].map(lambda i: sizes[i][0]).to_numpy(float)
        ih = ann["image_id"].map(lambda i: sizes[i][1]).to_numpy(float)
        ann["rel_size"] = np.sqrt((w / iw) * (h / ih))  # sqrt of the box's share of the image area
    else:
        ann["rel_size"] = []
    raw_keys = {img["image_key"] for img in coco["images"]}
    rows = []
    for cid, name in enumerate(classes):
        mine = ann[ann["category_id"] == cid]
        reader_boxes = 0
        if raw_rows is not None:
            reader_boxes = int(((raw_rows["class_id"] == cid) & raw_rows["image_id"].isin(raw_keys)).sum())
        sizes_c = mine["rel_size"].to_numpy(float)
        support = mine["num_readers"].to_numpy(int)
        rows.append({
            "class_id": cid, "class_name": name, "images": int(mine["image_id"].nunique()),
            "boxes": len(mine), "reader_boxes": reader_boxes,
            "size_p10": _q(sizes_c, 0.1), "size_median": _q(sizes_c, 0.5), "size_p90": _q(sizes_c, 0.9),
            "readers_1": int((support == 1).sum()), "readers_2": int((support == 2).sum()),
            "readers_3plus": int((support >= 3).sum()),
            "mean_readers": round(float(support.mean()), 2) if len(support) else float("nan"),
        })
    with_boxes = set(ann["image_id"])
    normals = sum(1 for img in coco["images"] if img["id"] not in with_boxes)
    rows.append({"class_id": len(classes), "class_name": NO_FINDING_NAME, "images": normals, "boxes": 0,
                 "reader_boxes": 0})
    table = pd.DataFrame(rows)
    for col in ("readers_1", "readers_2", "readers_3plus"):
        table[col] = table[col].astype("Int64")
    return table


def _q(values: np.ndarray, q: float) -> float:
    return round(float(np.quantile(values, q)), 4) if len(values) else float("nan")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (no tabulate dependency)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_per_label(table: pd.DataFrame, path: Path, title: str) -> None:
    """The "data amount per label" chart: horizontal bars, class names readable, counts on bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = table["class_name"].tolist()
    boxes = table["boxes"].tolist()
    images = table["images"].tolist()
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 6.5))
    bars_b = ax.barh(y - 0.2, boxes, height=0.4, label="boxes (fused)", color="#3b75af")
    bars_i = ax.barh(y + 0.2, images, height=0.4, label="images", color="#ef8636")
    top = max(max(boxes), max(images), 1)
    for bars in (bars_b, bars_i):
        for bar in bars:
            ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, f"{int(bar.get_width())}",
                    va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("count")
    ax.set_ylabel("label")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_box_sizes(coco: dict, path: Path, title: str) -> None:
    """Box plot per class of sqrt(box area / image area)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = {img["id"]: img["width"] * img["height"] for img in coco["images"]}
    classes = class_names(coco)
    data = [[] for _ in classes]
    for ann in coco["annotations"]:
        data[ann["category_id"]].append(np.sqrt(ann["bbox"][2] * ann["bbox"][3] / sizes[ann["image_id"]]))
    fig, ax = plt.subplots(figsize=(9, 6.5))
    ax.boxplot([d if d else [np.nan] for d in data], orientation="horizontal", showfliers=False)
    ax.set_yticks(np.arange(1, len(classes) + 1), [f"{n} (n={len(d)})" for n, d in zip(classes, data)])
    ax.invert_yaxis()
    ax.set_xlabel("box size: sqrt(box area / image area)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_readers(table: pd.DataFrame, path: Path, title: str) -> None:
    """Stacked bars: fused findings supported by 1, 2, 3 readers, per class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table[table["class_name"] != NO_FINDING_NAME]
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(9, 6.5))
    left = np.zeros(len(t))
    for col, label, color in (("readers_1", "1 reader", "#d62728"), ("readers_2", "2 readers", "#ff9f0e"),
                              ("readers_3plus", "3 readers", "#2ca02c")):
        vals = t[col].fillna(0).to_numpy(float)
        ax.barh(y, vals, left=left, label=label, color=color)
        left += vals
    for yi, total in zip(y, left):
        ax.text(total + max(left.max(), 1) * 0.01, yi, f"{int(total)}", va="center", fontsize=8)
    ax.set_yticks(y, t["class_name"])
    ax.invert_yaxis()
    ax.set_xlim(0, max(left.max(), 1) * 1.12)
    ax.set_xlabel("fused boxes")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def write_stats(coco: dict, out_dir: str | os.PathLike, raw_rows: pd.DataFrame | None = None,
                name: str = "dataset") -> dict[str, Path]:
    """Write class_stats.csv/.md and the three charts into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = class_table(coco, raw_rows)
    paths = {"csv": out / "class_stats.csv", "md": out / "class_stats.md", "per_label": out / "data_per_label.png",
             "box_sizes": out / "box_sizes.png", "readers": out / "readers_per_finding.png"}
    atomic.write_text(paths["csv"], table.to_csv(index=False))
    n_img, n_ann = len(coco["images"]), len(coco["annotations"])
    atomic.write_text(paths["md"], f"# {name}: {n_img} train images, {n_ann} fused boxes\n\n" + to_markdown(table))
    plot_per_label(table, paths["per_label"], f"Data amount per label — {name} ({n_img} images)")
    plot_box_sizes(coco, paths["box_sizes"], f"Box size per class — {name}")
    plot_readers(table, paths["readers"], f"Readers supporting each fused box — {name}")
    return paths
