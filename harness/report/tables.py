"""Collecting a sweep's runs and turning them into the results tables (CSV and Markdown).

Why from files only: the report must be rebuildable from a sweep directory alone (also one copied
from a cluster), so it searches every `metrics.json` (finished model runs and ensembles),
`failed.json` (failed jobs) and `progress.json` (unfinished jobs) under the sweep and needs nothing else.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.sweep import SUPERSEDED_DIR, read_run_key, superseded_folders
from harness import atomic
from harness.classes import CLASSES
from harness.progress import PROGRESS_FILE, describe, read_progress
from harness.report.tuning import tuning_markdown, tuning_rows

METRICS = ("map40", "voc_map40", "voc_map40_15", "ap50", "ap50_95", "train_time_s", "predict_time_s")
METRIC_TITLES = {"map40": "mAP@0.4", "voc_map40": "VOC mAP@0.4", "voc_map40_15": "VOC 15-cls",
                 "ap50": "AP50", "ap50_95": "AP50:95", "train_time_s": "train s", "predict_time_s": "predict s"}
# mlflow: logger=mlflow's store; superseded: an earlier attempt's files, moved aside (listed, not rows)
SKIP_DIRS = {".hydra", "native", "split", "report", "overlays", "mlflow", SUPERSEDED_DIR}
SEED_TAG = " · seed {seed}"  # a run's name in a sweep over several training seeds: "<model> · seed <s>"
KEY_TAG = " · {label}"  # a keyed run's name (a multirun over e.g. train.lr): "<model> · train.lr=0.01"


@dataclass
class SweepResults:
    """Everything found under a sweep: one row per finished run, one per failed job, unreadable files."""

    runs: pd.DataFrame
    failed: list[dict] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unfinished: list[dict] = field(default_factory=list)  # jobs running or interrupted (progress.json)
    superseded: list[str] = field(default_factory=list)  # checkpoint folders a fresh start moved aside
    other_config: list[dict] = field(default_factory=list)  # rows whose config differs from their sweep's
    swept: list[str] = field(default_factory=list)  # the swept override keys of keyed runs: columns of `runs`


def swept_columns(frame: pd.DataFrame) -> list[str]:
    """The swept override keys a runs/summary table carries as columns (`train.lr`, `aug`, ...)."""
    return [c[len("swept "):] for c in frame.columns if c.startswith("swept ")]


def _fold_label(fold) -> str:
    if fold is None:
        return "all"
    if isinstance(fold, (int, float)) and not isinstance(fold, bool):
        return f"fold{int(fold)}"
    return str(fold)


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def _find(sweep_dir: Path, name: str) -> list[Path]:
    """Files called `name` under the sweep, not inside framework/Hydra/report folders."""
    found = []
    for root, dirs, files in os.walk(sweep_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if name in files:
            found.append(Path(root) / name)
    return found


def _seed(metrics: dict) -> int | None:
    """The training seed a model run used (per_model.<m>.train.seed over train.seed), from the config
    its metrics.json records; None when it records none (ensembles: see _seed_of_ensembles)."""
    config = metrics.get("config") or {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    per = ((config.get("per_model") or {}).get(metrics.get("model")) or {}).get("train") or {}
    seed = per.get("seed") if per.get("seed") is not None else train.get("seed")
    return int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None


def _seed_of_ensembles(frame: pd.DataFrame) -> None:
    """An ensemble's seed: the one seed of the model runs in its sweep (<sweep>/ensemble/<name>/fold<k>
    beside <sweep>/<model>/fold<k>), in place; None when they used several."""
    model_sweep = {Path(p).parents[1]: s for p, s, k in zip(frame["path"], frame["seed"], frame["kind"])
                   if k == "model"}
    by_sweep: dict[Path, set] = {}
    for sweep, seed in model_sweep.items():
        by_sweep.setdefault(sweep, set()).add(seed)
    for i in frame.index[(frame["kind"] == "ensemble") & frame["seed"].isna()]:
        seeds = set()
        for sweep in (Path(frame.at[i, "path"]).parents[2], Path(frame.at[i, "path"]).parents[1]):
            seeds |= by_sweep.get(sweep, set())
        frame.at[i, "seed"] = seeds.pop() if len(seeds) == 1 else None


def _run_row(path: Path, sweep_dir: Path, metrics: dict) -> dict:
    rel = path.parent.relative_to(sweep_dir).parts
    is_ensemble = metrics.get("model") == "ensemble" or (len(rel) > 0 and rel[0] == "ensemble")
    if is_ensemble:
        name = "ensemble:" + str(metrics.get("variant") or (rel[1] if len(rel) > 1 else "ensemble"))
    else:
        name = str(metrics.get("model") or (rel[0] if rel else path.parent.name))
    row = {
        "kind": "ensemble" if is_ensemble else "model",
        "name": name,
        "variant": str(metrics.get("variant") or ""),
        "fold": _fold_label(metrics.get("fold")),
        "split_hash": metrics.get("split_hash"),
        "n_images": metrics.get("n_images"),
        "device": metrics.get("device", ""),
        "seed": _seed(metrics),
        "path": str(path.parent),
        "sweep_config_hash": metrics.get("sweep_config_hash"),
    }
    run_key = read_run_key(path.parent)
    row["key"] = run_key.key
    row["key_label"] = run_key.label()
    row.update({f"swept {k}": v for k, v in run_key.swept.items()})
    for key in METRICS:
        row[key] = _number(metrics.get(key))
    for cls, ap in (metrics.get("per_class") or {}).items():
        row[f"AP {cls}"] = _number(ap)
    return row


def class_columns(frame: pd.DataFrame, suffix: str = "") -> list[str]:
    """The class names of a runs (suffix "") or summary (suffix " mean") table's per-class AP columns, in
    column order: each dataset brings its own class list (harness.classes), the tables follow it."""
    names = [c[3:len(c) - len(suffix)] for c in frame.columns if c.startswith("AP ") and c.endswith(suffix)]
    return [n for n in names if suffix or not n.endswith((" mean", " std"))]


def _class_order(rows: list[dict]) -> list[str]:
    """Class names in the order the runs' per_class dicts list them (VinBigData's when there are no runs)."""
    seen = dict.fromkeys(key[3:] for row in rows for key in row if key.startswith("AP "))
    return list(seen) or list(CLASSES)


def collect(sweep_dir: str | Path) -> SweepResults:
    """All runs (models and ensembles) and failed jobs under `sweep_dir`, found recursively."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    rows, failed, unreadable = [], [], []
    for path in _find(sweep_dir, "metrics.json"):
        try:
            metrics = json.loads(path.read_text())
            if isinstance(metrics, dict) and metrics.get("kind") == "classifier":
                continue  # the "No finding" classifier: its own section (harness.report.nofinding)
            if not isinstance(metrics, dict) or "map40" not in metrics:
                raise ValueError("no map40 key")
            rows.append(_run_row(path, sweep_dir, metrics))
        except (OSError, ValueError) as err:
            unreadable.append(f"{path}: {err}")
    for path in _find(sweep_dir, "failed.json"):
        if (path.parent / "metrics.json").is_file() and \
                (path.parent / "metrics.json").stat().st_mtime >= path.stat().st_mtime:
            continue  # a later rerun of the job succeeded
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            unreadable.append(f"{path}: {err}")
            continue
        error = str(info.get("error", "")).strip()
        label = read_run_key(path.parent).label()
        model = str(info.get("model", path.parent.parent.name)) + (f" ({label})" if label else "")
        failed.append({"model": model, "fold": _fold_label(info.get("fold")),
                       "error": error.splitlines()[0] if error else "(no error message)",
                       "path": str(path)})
    unfinished = _unfinished(sweep_dir)
    superseded = [str(path) for path in superseded_folders(sweep_dir)]
    other_config = _other_config(rows)
    swept = sorted({k[6:] for row in rows for k in row if k.startswith("swept ")})
    columns = ["kind", "name", "variant", "fold", "split_hash", "n_images", "device", "seed", "path",
               "key", "key_label", *[f"swept {k}" for k in swept], *METRICS, *[f"AP {c}" for c in _class_order(rows)]]
    frame = pd.DataFrame(rows, columns=columns).astype({"seed": object})
    frame["base"] = frame["name"]
    if not frame.empty:
        # two variants of one model (e.g. yolov5n and yolov5s) must not be averaged together
        mixed = frame.groupby("name")["variant"].transform("nunique") > 1
        frame.loc[mixed, "name"] = frame.loc[mixed, "name"] + " (" + frame.loc[mixed, "variant"] + ")"
        frame["base"] = frame["name"]
        # a sweep over train.seed (harness.report.seeds): one row group per model and seed, never averaged
        _seed_of_ensembles(frame)
        if frame["seed"].dropna().nunique() > 1:
            has = frame["seed"].notna()
            frame.loc[has, "name"] = [base + SEED_TAG.format(seed=int(seed))
                                      for base, seed in zip(frame.loc[has, "base"], frame.loc[has, "seed"])]
        # a multirun over more than models and folds (run keys, harness.sweep): one row group per model and
        # swept values, never averaged across them
        keyed = frame["key_label"].fillna("") != ""
        frame.loc[keyed, "name"] = [name + KEY_TAG.format(label=label)
                                    for name, label in zip(frame.loc[keyed, "name"], frame.loc[keyed, "key_label"])]
        frame = frame.sort_values(["kind", "name", "fold"], key=lambda s: s.map(_sort_key)).reset_index(drop=True)
    return SweepResults(frame, sorted(failed, key=lambda f: (f["model"], f["fold"])), unreadable, unfinished,
                        superseded, other_config, swept)


def _other_config(rows: list[dict]) -> list[dict]:
    """Model rows whose config (`sweep_config_hash`: the job's config hash without its fold) differs from
    the most common one among the rows of the same model in the same folder (`<model>/[<swept>/]`):
    a fold left over from an earlier config. Rows that record no such hash are not compared."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["kind"] == "model" and row.get("sweep_config_hash"):
            groups.setdefault((row["name"], str(Path(row["path"]).parent)), []).append(row)
    flagged = []
    for members in groups.values():
        counts: dict[str, int] = {}
        for row in members:
            counts[row["sweep_config_hash"]] = counts.get(row["sweep_config_hash"], 0) + 1
        if len(counts) < 2:
            continue
        common = max(counts.items(), key=lambda item: (item[1], item[0]))[0]
        flagged += [{"name": row["name"], "fold": row["fold"], "path": row["path"],
                     "config": row["sweep_config_hash"], "common": common}
                    for row in members if row["sweep_config_hash"] != common]
    return sorted(flagged, key=lambda f: (f["name"], f["fold"]))


def _newer(path: Path, than: Path) -> bool:
    return path.is_file() and path.stat().st_mtime >= than.stat().st_mtime


def _unfinished(sweep_dir: Path) -> list[dict]:
    """Jobs with a progress file and no metrics.json or failed.json written since: running, or
    interrupted (killed, preempted, out of memory) at some epoch."""
    found = []
    for path in _find(sweep_dir, PROGRESS_FILE):
        if _newer(path.parent / "metrics.json", path) or _newer(path.parent / "failed.json", path):
            continue
        progress = read_progress(path)
        if progress is None:
            continue
        found.append({"model": str(progress.get("model") or path.parent.parent.name),
                      "fold": path.parent.name, "epoch": progress.get("epoch"), "epochs": progress.get("epochs"),
                      "status": describe(progress), "checkpoint": progress.get("checkpoint"), "path": str(path.parent)})
    return sorted(found, key=lambda u: (u["model"], u["fold"]))


def _sort_key(value):
    """Models before ensembles; fold2 before fold10."""
    if value == "model":
        return (0, 0, "")
    if value == "ensemble":
        return (1, 0, "")
    text = str(value)
    if text.startswith("fold") and text[4:].isdigit():
        return (0, int(text[4:]), "")
    return (0, 1 << 30, text)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model/ensemble: n_folds, mean and std (sample, ddof=1; 0 for one fold) of every
    metric and per-class AP over its folds. A fold labelled "all" (an ensemble over all folds)
    is averaged like any other."""
    value_cols = [*METRICS, *[f"AP {c}" for c in class_columns(runs)]]
    swept = [f"swept {k}" for k in swept_columns(runs)]
    out = []
    for (kind, name), group in runs.groupby(["kind", "name"], sort=False):
        row = {"kind": kind, "name": name, "variant": group["variant"].iloc[0], "n_folds": len(group),
               "folds": " ".join(group["fold"]), **{c: group[c].iloc[0] for c in swept}}
        for col in value_cols:
            values = group[col].to_numpy(float)
            values = values[~np.isnan(values)]
            row[f"{col} mean"] = float(values.mean()) if values.size else math.nan
            row[f"{col} std"] = float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else math.nan)
        out.append(row)
    columns = ["kind", "name", "variant", "n_folds", "folds", *swept,
               *[f"{c} {stat}" for c in value_cols for stat in ("mean", "std")]]
    return pd.DataFrame(out, columns=columns)


CI_COLS = ["map40 ci_low", "map40 ci_high"]
#: Lesion- and image-level columns (harness.report.froc): CPM and image AUROC, with intervals on the mean rows.
SCREEN_COLS = ["cpm", "cpm ci_low", "cpm ci_high", "auroc", "auroc ci_low", "auroc ci_high"]
PAIR_COLS = ["delta", "delta_ci_low", "delta_ci_high", "p_a_gt_b", "verdict"]


def long_table(runs: pd.DataFrame, summ: pd.DataFrame, pairs: pd.DataFrame | None = None,
               reference: dict | None = None, tuning: list[dict] | None = None) -> pd.DataFrame:
    """results.csv: every run row, then per model/ensemble a "mean" and a "std" row (the "mean" row
    carries the bootstrap CI of the fold mean), then one "paired" row per compared pair (name "A vs B",
    fold = the shared folds), the human-reader "reference" row when there is one, and "tuning" rows
    (ensemble settings tuned on out-of-fold data vs the defaults, harness.report.tuning)."""
    classes = class_columns(summ, " mean") if not summ.empty else class_columns(runs)
    value_cols = [*METRICS, *[f"AP {c}" for c in classes]]
    screen = [c for c in SCREEN_COLS if c in summ or c in runs]
    swept = [f"swept {k}" for k in swept_columns(runs)]
    cols = ["kind", "name", "variant", *swept, "fold", *value_cols, *CI_COLS, *screen, *PAIR_COLS, "n_images", "split_hash",
            "path"]
    runs = runs.reindex(columns=list(dict.fromkeys([*runs.columns, *CI_COLS])))
    parts = [runs.reindex(columns=cols)] if not runs.empty else []
    for _, row in summ.iterrows():
        for stat in ("mean", "std"):
            values = {c: row[f"{c} {stat}"] for c in value_cols}
            if stat == "mean":
                values.update({c: row.get(c, math.nan) for c in (*CI_COLS, *screen)})
            parts.append(pd.DataFrame([{"kind": row["kind"], "name": row["name"], "variant": row["variant"],
                                        **{c: row.get(c) for c in swept}, "fold": stat, **values}], columns=cols))
    if pairs is not None and not pairs.empty:
        parts.append(pd.DataFrame([{"kind": "paired", "name": f"{p['a']} vs {p['b']}", "fold": p["folds"],
                                    **{c: p[c] for c in PAIR_COLS}} for _, p in pairs.iterrows()], columns=cols))
    if reference is not None:
        parts.append(pd.DataFrame([{"kind": "reference", "name": reference["name"], "variant": reference["variant"],
                                    "fold": "mean", "map40": reference["map40"], "voc_map40": reference["voc_map40"],
                                    **{f"AP {c}": _number(reference["per_class"].get(c)) for c in classes},
                                    "n_images": reference["n_images"]},
                                   {"kind": "reference", "name": reference["name"], "variant": reference["variant"],
                                    "fold": "std", "map40": reference["map40_std"],
                                    "voc_map40": reference["voc_map40_std"]}], columns=cols))
        ties = reference.get("map40_tie_orders")
        if ties:  # the spread over random tie orders (all reader boxes score 1.0)
            parts.append(pd.DataFrame([{"kind": "reference", "name": reference["name"], "variant": reference["variant"],
                                        "fold": f"tie orders {stat}", "map40": ties[stat]}
                                       for stat in ("mean", "std", "min", "max")], columns=cols))
    if tuning:
        parts.append(pd.DataFrame(tuning_rows(tuning), columns=cols))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def _fmt(value: float, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell(value) -> str:
    """A swept value in a table cell ("–" where the row has none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value).replace("|", "/")


def _pm(mean: float, std: float, n: int, digits: int = 4) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def _ci(low: float, high: float, digits: int = 3) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "–"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def markdown(results: SweepResults, summ: pd.DataFrame, title: str = "Results", protocol: str | None = None,
             pairs: pd.DataFrame | None = None, reference: dict | None = None, ci_note: str | None = None,
             extra: str | None = None, tuning: list[dict] | None = None,
             pair_warnings: list[str] | None = None, lead: str | None = None) -> str:
    """results.md: main table (model x fold + mean ± std), per-class AP table, failed jobs.
    `protocol` (the fairness summary, when a protocol.md was written next to it) adds a link at the
    top, so a table that compares unequal protocols says so where it is read."""
    runs = results.runs
    lines = [f"# {title}", ""]
    if protocol is not None:
        lines += ["Protocol and fairness check: [protocol.md](protocol.md)" + (f" — {protocol}" if protocol else ""),
                  ""]
    if lead:  # the first screen (harness.report.summary)
        lines += [lead.rstrip("\n"), ""]
    if runs.empty:
        lines += ["No finished runs (no metrics.json) were found.", ""]
    else:
        folds = sorted(runs["fold"].unique(), key=_sort_key)
        lines += ["## mAP@0.4 by model and fold", "",
                  "mAP@0.4 is pycocotools COCOeval at IoU 0.4 (mean ± sample std over folds); the VOC columns are the "
                  "Kaggle metric (all-point, IoU > 0.4; 15-cls adds \"No finding\").", ""]
        if ci_note:
            lines += [ci_note, ""]
        screen = "cpm" in summ  # harness.report.froc's CPM and image AUROC (intervals in its own section)
        swept = swept_columns(runs)
        header = ["model", "variant", *swept, *folds, "mean ± std", "CI", *(["CPM", "image AUROC"] if screen else []),
                  "VOC mAP@0.4", "VOC 15-cls", "AP50", "AP50:95", "train s", "predict s"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, srow in summ.iterrows():
            group = runs[(runs["kind"] == srow["kind"]) & (runs["name"] == srow["name"])]
            by_fold = dict(zip(group["fold"], group["map40"]))
            n = int(srow["n_folds"])
            cells = [f"**{srow['name']}**" if srow["kind"] == "ensemble" else srow["name"], srow["variant"] or "–",
                     *[_cell(srow.get(f"swept {k}")) for k in swept],
                     *[_fmt(by_fold.get(f, math.nan)) for f in folds],
                     _pm(srow["map40 mean"], srow["map40 std"], n),
                     _ci(srow.get("map40 ci_low", math.nan), srow.get("map40 ci_high", math.nan)),
                     *([_fmt(srow["cpm"], 3), _fmt(srow["auroc"], 3)] if screen else []),
                     *[_pm(srow[f"{m} mean"], srow[f"{m} std"], n) for m in ("voc_map40", "voc_map40_15", "ap50",
                                                                                  "ap50_95")],
                     _fmt(srow["train_time_s mean"], 0), _fmt(srow["predict_time_s mean"], 1)]
            lines.append("| " + " | ".join(cells) + " |")
        if reference is not None:
            ties = reference.get("map40_tie_orders")
            cells = [f"*{reference['name']}*", reference["variant"] + "; GT: the other two readers",
                     *["–" for _ in swept], *["–" for _ in folds], f"{reference['map40']:.4f} ± {reference['map40_std']:.4f}",
                     f"tie orders {_ci(ties['min'], ties['max'])}" if ties else "–", *(["–", "–"] if screen else []),
                     f"{reference['voc_map40']:.4f} ± {reference['voc_map40_std']:.4f}", "–", "–", "–", "–", "–"]
            lines.append("| " + " | ".join(cells) + " |")
            lines += ["", f"*{reference['name']}* (human-reader reference; its CI cell: the range of mAP@0.4 over "
                          f"random tie orders): {reference['note']}"]
        if pairs is not None and not pairs.empty:
            lines += ["", "## Paired comparisons (bootstrap over the same val images)", "",
                      "Δ = mAP@0.4(A) − mAP@0.4(B), mean over the folds both ran on the same images; its CI from "
                      "the paired bootstrap; P(A > B) = the share of resamples in which A scored higher than B "
                      "(not the probability that A is the better model). A CI that contains 0: "
                      "**not distinguishable**.", "",
                      "| A | B | folds | Δ | CI of Δ | P(A > B) | verdict |", "|---|---|---|---|---|---|---|"]
            for _, p in pairs.iterrows():
                v = p["verdict"] if p["verdict"] != "not distinguishable" else "**not distinguishable**"
                lines.append(f"| {p['a']} | {p['b']} | {p['folds']} | {p['delta']:+.4f} | "
                             f"{_ci(p['delta_ci_low'], p['delta_ci_high'], 4)} | {p['p_a_gt_b']:.3f} | {v} |")
        if pair_warnings:  # folds two models ran on different images: left out of their comparison, said here
            lines += ["", "**Not compared** (scored on different image sets):", ""]
            lines += [f"- {w}" for w in pair_warnings]
        lines += ["", "## Per-class AP@0.4 (mean over folds; – = no ground truth in the val images)", ""]
        names = list(summ["name"]) + ([reference["name"]] if reference is not None else [])
        lines += ["| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for cls in class_columns(summ, " mean"):
            values = list(summ[f"AP {cls} mean"])
            if reference is not None:
                values.append(_number(reference["per_class"].get(cls)))
            lines.append(f"| {cls} | " + " | ".join(_fmt(v, 3) for v in values) + " |")
    if tuning:
        lines += tuning_markdown(tuning)
    if extra:
        lines += ["", extra.rstrip("\n")]
    lines += ["", "## Failed jobs", ""]
    if results.failed:
        lines += ["| model | fold | error | details |", "|---|---|---|---|"]
        for fail in results.failed:
            error = fail["error"].replace("|", "\\|")
            lines.append(f"| {fail['model']} | {fail['fold']} | {error} | `{fail['path']}` |")
    else:
        lines.append("None.")
    if results.unfinished:
        lines += ["", "## Unfinished jobs", "",
                  "No metrics yet; rerunning the same command resumes each from its last checkpoint.", "",
                  "| model | fold | status | last checkpoint |", "|---|---|---|---|"]
        for job in results.unfinished:
            checkpoint = f"`{job['checkpoint']}`" if job["checkpoint"] else "–"
            lines.append(f"| {job['model']} | {job['fold']} | {job['status']} | {checkpoint} |")
    if results.other_config:
        lines += ["", "## Rows of another config", "",
                  "These folds ran another config than the rest of their model's folds in the same folder (an "
                  "earlier run's result; their mean mixes two configs): rerun them with the sweep's command.", "",
                  "| model | fold | config | the others' config | folder |", "|---|---|---|---|---|"]
        lines += [f"| {o['name']} | {o['fold']} | {o['config']} | {o['common']} | `{o['path']}` |"
                  for o in results.other_config]
    if results.superseded:
        lines += ["", "## Superseded checkpoints", "",
                  "Files of an earlier attempt (checkpoints, results) that a fresh start moved aside (kept; "
                  "delete them with `cxr-checkpoints --delete FOLDER`):", ""]
        lines += [f"- `{folder}`" for folder in results.superseded]
    if results.unreadable:
        lines += ["", "## Unreadable result files", ""] + [f"- `{item}`" for item in results.unreadable]
    return "\n".join(lines) + "\n"


def write_tables(results: SweepResults, summ: pd.DataFrame, out_dir: Path, title: str = "Results",
                 protocol: str | None = None, pairs: pd.DataFrame | None = None, reference: dict | None = None,
                 ci_note: str | None = None, extra: str | None = None,
                 tuning: list[dict] | None = None, pair_warnings: list[str] | None = None,
                 lead: str | None = None) -> dict[str, Path]:
    """Write results.csv and results.md atomically; returns their paths. See markdown() and long_table().
    `extra`: a Markdown section added before the failed jobs (the "No finding" stage)."""
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(csv_path) as tmp:
        long_table(results.runs, summ, pairs, reference, tuning).to_csv(tmp, index=False, float_format="%.6g")
    atomic.write_text(md_path, markdown(results, summ, title, protocol=protocol, pairs=pairs, reference=reference,
                                        ci_note=ci_note, extra=extra, tuning=tuning, pair_warnings=pair_warnings,
                                        lead=lead))
    return {"results_csv": csv_path, "results_md": md_path}
