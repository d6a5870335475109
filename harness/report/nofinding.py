"""The report's "No finding" stage section: for every model and ensemble, the 15-class Kaggle metric
without the stage, with the detector-only score, and with the classifier, under each policy
(harness.nofinding); the classifier's own metrics; and the threshold sweep on out-of-fold
predictions (15-class score over low x high, pooled over the folds) with its chart.

Files: report/nofinding.csv (every run x p source x policy), report/nofinding_sweep.csv and
report/nofinding_sweep.png (the grid); the summary table goes into results.md.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import atomic
from harness.classes import NO_FINDING_NAME, class_names, is_vinbigdata
from harness.eval.coco_map import load_gt
from harness.nofinding import POLICIES, SCORINGS, AbnormalScores, NoFindingSettings, ThresholdGrid, policy_thresholds
from harness.predictions import Predictions
from harness.report.charts import _pyplot, save_figure
from harness.report.uncertainty import ground_truth_for
from harness.sweep import classifier_runs

log = logging.getLogger(__name__)

POLICY_TITLES = {"none": "no stage", "append": "append", "replace": "replace", "keep_add_replace": "keep/add/replace"}
SCORING_TITLES = {"one_minus_p": "14 (1-p)", "notebook": "14 p (notebook)"}
# the threshold sweep's best pair is chosen on the predictions it is scored on
OPTIMISTIC = "optimistic: the best (low, high) is picked on the same predictions it is scored on"


@dataclass
class NoFindingReport:
    rows: pd.DataFrame  # one per run x p source x policy
    summary: pd.DataFrame  # mean over folds per (kind, name, source, policy)
    classifier: pd.DataFrame  # the classifier's metrics per fold
    grids: list[dict] = field(default_factory=list)  # {"name", "source", "low", "high", "table", "folds"}
    settings: NoFindingSettings = field(default_factory=NoFindingSettings)


def _classifier_scores(sweep_dir: Path) -> tuple[dict[tuple[str, int], AbnormalScores], pd.DataFrame]:
    """{(run key, fold): the classifier's P(abnormal)} (a keyed sweep: a classifier per key, harness.sweep)
    and the classifier's metrics per run."""
    scores, rows = {}, []
    for run in classifier_runs(sweep_dir):
        try:
            scores[(run.key, run.fold)] = AbnormalScores.load(run.path / "abnormal.json")
            metrics = json.loads((run.path / "metrics.json").read_text())
        except (OSError, ValueError) as err:
            log.warning("no-finding report: skipping classifier run %s: %s", run.path, err)
            continue
        rows.append({"fold": f"{run.key}/fold{run.fold}" if run.key else f"fold{run.fold}",
                     "variant": metrics.get("variant"), "auc": metrics.get("auc"),
                     "accuracy": metrics.get("accuracy"), "n_images": metrics.get("n_images"),
                     "n_abnormal": metrics.get("n_abnormal"),
                     "sens_low": (metrics.get("at_low") or {}).get("sensitivity"),
                     "spec_low": (metrics.get("at_low") or {}).get("specificity"),
                     "sens_high": (metrics.get("at_high") or {}).get("sensitivity"),
                     "spec_high": (metrics.get("at_high") or {}).get("specificity"),
                     "train_time_s": metrics.get("train_time_s"), "split_hash": metrics.get("split_hash")})
    return scores, pd.DataFrame(rows)


def _sources(run_row, classifier: dict[tuple[str, int], AbnormalScores], preds: Predictions
             ) -> list[tuple[str, dict | None]]:
    """("detector", None) and, where the classifier ran on the same fold split (with the run's key), ("classifier", p)."""
    out: list[tuple[str, dict | None]] = [("detector", None)]
    fold = str(run_row["fold"])
    key = run_row.get("key") if isinstance(run_row.get("key"), str) else ""
    if fold.startswith("fold") and fold[4:].isdigit() and (key, int(fold[4:])) in classifier:
        scores = classifier[(key, int(fold[4:]))]
        if scores.split_hash not in (None, preds.split_hash):
            log.warning("no-finding report: classifier fold %s was trained on another split (%s, %s has %s): not used",
                        fold, scores.split_hash, run_row["name"], preds.split_hash)
        elif all(i in scores.p_abnormal for i in preds.image_ids):
            out.append(("classifier", scores.p_abnormal))
        else:
            log.warning("no-finding report: classifier fold %s lacks P(abnormal) for some of %s's images: not used",
                        fold, run_row["name"])
    return out


def compute(runs: pd.DataFrame, sweep_dir: str | Path, settings: NoFindingSettings | None = None) -> NoFindingReport:
    """Score every finished run with a predictions.json under each p source and policy."""
    sweep_dir = Path(sweep_dir)
    settings = settings or NoFindingSettings()
    classifier, clf_frame = _classifier_scores(sweep_dir)
    rows, pooled = [], {}
    for _, run in runs.iterrows():
        run_dir = Path(run["path"])
        if not (run_dir / "predictions.json").is_file():
            continue
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            gt_path = ground_truth_for(run_dir, metrics, sweep_dir)
            if gt_path is None:
                continue
            preds = Predictions.load(run_dir / "predictions.json")
            gt = load_gt(gt_path)
        except (OSError, ValueError) as err:
            log.warning("no-finding report: skipping %s: %s", run_dir, err)
            continue
        if not is_vinbigdata(class_names(gt)):
            continue  # the "No finding" stage is VinBigData-only: another label set has no class 14
        grid = ThresholdGrid(gt, preds, None)  # detections matched once; each policy is a (low, high) pair
        for source, p in _sources(run, classifier, preds):
            scorer = grid if p is None else grid.with_p(p)
            for policy in POLICIES:
                if policy == "none" and source != "detector":
                    continue  # does not depend on p
                low, high = policy_thresholds(policy, settings.low, settings.high)
                scored = scorer.score(low, high, settings.scoring)
                rows.append({"kind": run["kind"], "name": run["name"], "fold": run["fold"],
                             "source": "–" if policy == "none" else source, "policy": policy,
                             "scoring": settings.scoring,
                             "low": settings.low, "high": settings.high, "voc_map40_15": scored["map"],
                             "ap_no_finding": scored["per_class"].get(NO_FINDING_NAME),
                             **{f"n_{k}": v for k, v in scorer.actions(low, high).items()}})
            pooled.setdefault((run["kind"], run["name"]), []).append((run["fold"], gt, preds, p, source))
    frame = pd.DataFrame(rows, columns=["kind", "name", "fold", "source", "policy", "scoring", "low", "high",
                                        "voc_map40_15",
                                        "ap_no_finding", "n_replace", "n_add", "n_keep"])
    summ = (frame.groupby(["kind", "name", "source", "policy"], sort=False)
            .agg(voc_map40_15=("voc_map40_15", "mean"), ap_no_finding=("ap_no_finding", "mean"),
                 n_folds=("fold", "count")).reset_index()) if not frame.empty else frame
    grids = [g for (kind, name), parts in pooled.items() for g in _grids(kind, name, parts, settings)]
    return NoFindingReport(frame, summ, clf_frame, grids, settings)


def _grids(kind: str, name: str, parts: list, settings: NoFindingSettings) -> list[dict]:
    """The keep/add/replace rule over the threshold grid, on the folds' val predictions pooled
    (each image once: its out-of-fold prediction), for the detector-only score and, where every
    fold has one, the classifier's; each under both scorings of the added entry (14 (1-p) and the
    notebook's 14 p)."""
    images, anns, ids, dets, p_clf, folds = {}, [], [], [], {}, {}
    for fold, gt, preds, p, source in parts:
        if source == "classifier":
            p_clf.update({i: p[i] for i in preds.image_ids})
            continue
        folds[fold] = True
        for img in gt["images"]:
            images[img["id"]] = img
        anns.extend(gt.get("annotations", []))
        ids.extend(preds.image_ids)
        dets.extend(preds.detections)
    if len(set(ids)) != len(ids):
        log.warning("no-finding sweep: %s's folds share images; pooled grid skipped", name)
        return []
    gt = {"images": list(images.values()), "annotations": anns, "categories": parts[0][1].get("categories", [])}
    preds = Predictions(name, None, ids, dets)
    grid = ThresholdGrid(gt, preds, None)
    scorers = [("detector", grid)]
    if p_clf and all(i in p_clf for i in ids):
        scorers.append(("classifier", grid.with_p(p_clf)))
    elif p_clf:
        log.warning("no-finding sweep: the classifier did not run on every fold of %s; its grid is skipped", name)
    return [{"kind": kind, "name": name, "source": source, "scoring": scoring, "low": list(settings.grid_low),
             "high": list(settings.grid_high), "table": scorer.table(settings.grid_low, settings.grid_high, scoring),
             "folds": list(folds), "configured": scorer.score(settings.low, settings.high, scoring)["map"],
             "n_images": len(ids)} for source, scorer in scorers for scoring in SCORINGS]


def best_cell(grid: dict) -> tuple[float, float, float] | None:
    table = grid["table"]
    if np.all(np.isnan(table)):
        return None
    a, b = np.unravel_index(np.nanargmax(table), table.shape)
    return grid["low"][a], grid["high"][b], float(table[a, b])


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(report: NoFindingReport) -> str:
    """The results.md section."""
    s = report.settings
    lines = ["## \"No finding\" stage (15-class Kaggle metric)", "",
             f"Per image p = P(abnormal): p < low → all boxes replaced by `14 1 0 0 1 1`; low ≤ p < high → boxes kept "
             f"and `{SCORING_TITLES[s.scoring]} 0 0 1 1` added (`nofinding.scoring={s.scoring}`; the public 2-class "
             f"filter notebook adds `14 p`, scored as `notebook` in the sweep below); p ≥ high → boxes kept "
             f"unchanged (low {s.low:g}, high {s.high:g}; "
             "`nofinding.low/high`). *detector*: p = the image's highest box score; *classifier*: the sweep's "
             "classifier on the same fold. Policies: append = never replace, always add; replace = replace below "
             "low, else keep; keep/add/replace = both thresholds. Mean over folds.", ""]
    if report.summary.empty:
        return "\n".join(lines + ["No runs with predictions to score.", ""])
    sources = ["detector"] + (["classifier"] if (report.summary["source"] == "classifier").any() else [])
    columns = [("–", "none")] + [(src, pol) for src in sources for pol in POLICIES if pol != "none"]
    header = ["model", "no stage"] + [f"{src}: {POLICY_TITLES[pol]}" for src, pol in columns[1:]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (kind, name), group in report.summary.groupby(["kind", "name"], sort=False):
        values = {(r["source"], r["policy"]): r["voc_map40_15"] for _, r in group.iterrows()}
        best = max((v for v in values.values() if not math.isnan(v)), default=math.nan)
        cells = []
        for col in columns:
            v = values.get(col, math.nan)
            cells.append(f"**{_fmt(v)}**" if not math.isnan(v) and v == best else _fmt(v))
        label = f"**{name}**" if kind == "ensemble" else name
        lines.append("| " + " | ".join([label, *cells]) + " |")
    if not report.classifier.empty:
        c = report.classifier
        lines += ["", "Classifier (val fold of each classifier run): "
                  + "; ".join(f"{r['fold']} {r['variant']}: AUC {_fmt(r['auc'], 3)}, accuracy {_fmt(r['accuracy'], 3)}, "
                              f"sens/spec at low {_fmt(r['sens_low'], 2)}/{_fmt(r['spec_low'], 2)}, "
                              f"at high {_fmt(r['sens_high'], 2)}/{_fmt(r['spec_high'], 2)}"
                              for _, r in c.iterrows())
                  + " (sensitivity: abnormal images with p at or above the threshold; specificity: normal images below it)."]
    if report.grids:
        lines += ["", "Threshold sweep on the out-of-fold predictions (folds pooled), under both scorings of the "
                  "added entry: best (low, high) of the grid vs the configured pair — "
                  "[nofinding_sweep.png](nofinding_sweep.png), [nofinding_sweep.csv](nofinding_sweep.csv). "
                  f"The best pair is {OPTIMISTIC}.", "",
                  "| model | p source | added entry | folds | best low | best high | best | configured |",
                  "|---|---|---|---|---|---|---|---|"]
        for g in report.grids:
            best = best_cell(g)
            lines.append(f"| {g['name']} | {g['source']} | {SCORING_TITLES[g['scoring']]} | "
                         f"{' '.join(map(str, g['folds']))} | "
                         + (f"{best[0]:g} | {best[1]:g} | {best[2]:.4f}" if best else "– | – | –")
                         + f" | {_fmt(g['configured'])} |")
    return "\n".join(lines) + "\n"


def sweep_frame(report: NoFindingReport) -> pd.DataFrame:
    rows = []
    for g in report.grids:
        for a, low in enumerate(g["low"]):
            for b, high in enumerate(g["high"]):
                rows.append({"kind": g["kind"], "name": g["name"], "source": g["source"], "scoring": g["scoring"],
                             "low": low, "high": high, "voc_map40_15": g["table"][a, b], "note": OPTIMISTIC})
    return pd.DataFrame(rows, columns=["kind", "name", "source", "scoring", "low", "high", "voc_map40_15", "note"])


def sweep_chart(report: NoFindingReport, path: str | Path) -> Path:
    """One heatmap per model/ensemble and p source: 15-class score over low (rows) x high (columns);
    the best cell outlined, the configured pair marked with a dot."""
    plt = _pyplot()
    grids = report.grids
    n = max(1, len(grids))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(grids):]:
        ax.set_axis_off()
    if not grids:
        axes[0, 0].text(0.5, 0.5, "no runs with predictions", ha="center", va="center")
    for ax, g in zip(axes.flat, grids):
        table = g["table"]
        finite = table[~np.isnan(table)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        cmap = plt.get_cmap("viridis").with_extremes(bad="#EEEEEE")
        image = ax.imshow(np.ma.masked_invalid(table), cmap=cmap, vmin=vmin, vmax=max(vmax, vmin + 1e-9),
                          aspect="auto", origin="lower")
        ax.set_xticks(range(len(g["high"])))
        ax.set_xticklabels([f"{v:g}" for v in g["high"]], rotation=45, fontsize=8)
        ax.set_yticks(range(len(g["low"])))
        ax.set_yticklabels([f"{v:g}" for v in g["low"]], fontsize=8)
        ax.set_xlabel("high (keep unchanged at or above)")
        ax.set_ylabel("low (replace below)")
        for a in range(table.shape[0]):
            for b in range(table.shape[1]):
                if not np.isnan(table[a, b]):
                    ax.text(b, a, f"{table[a, b]:.3f}", ha="center", va="center", fontsize=6,
                            color="white" if table[a, b] < (vmin + vmax) / 2 else "black")
        best = best_cell(g)
        if best:
            a, b = g["low"].index(best[0]), g["high"].index(best[1])
            ax.add_patch(plt.Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, ec="red", lw=2))
        s = report.settings
        if s.low in g["low"] and s.high in g["high"]:
            ax.plot(g["high"].index(s.high), g["low"].index(s.low), "o", mfc="none", mec="red", ms=16, mew=1.5)
        ax.set_title(f"{g['name']} — p from {g['source']}, adds {SCORING_TITLES[g['scoring']]}\n(best {best[2]:.3f} at "
                     f"{best[0]:g}/{best[1]:g}; configured {g['configured']:.3f})" if best else g["name"], fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="15-class VOC mAP@0.4")
    fig.suptitle("\"No finding\" thresholds: out-of-fold 15-class Kaggle metric (box = best, circle = configured)\n"
                 f"{OPTIMISTIC[0].upper() + OPTIMISTIC[1:]}")
    fig.tight_layout()
    return save_figure(fig, Path(path))


def write(report: NoFindingReport, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"nofinding_csv": out_dir / "nofinding.csv", "nofinding_sweep_csv": out_dir / "nofinding_sweep.csv"}
    with atomic.atomic_path(paths["nofinding_csv"]) as tmp:
        report.rows.to_csv(tmp, index=False, float_format="%.6g")
    with atomic.atomic_path(paths["nofinding_sweep_csv"]) as tmp:
        sweep_frame(report).to_csv(tmp, index=False, float_format="%.6g")
    paths["nofinding_sweep_png"] = sweep_chart(report, out_dir / "nofinding_sweep.png")
    return paths
