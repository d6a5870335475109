"""The report's "why" sections: error decomposition, confusion matrices, per-class PR curves and AP with
intervals, AP by box size, per-image counts and the worst-image gallery, for every model and ensemble.

Every number comes from one MatchTable per run (harness.eval.matches: pycocotools' own matches at IoU
0.4), so the analyses count what the metric counted. Over several folds: error counts and confusion
cells are summed, dAP and AP are means over folds (as the results table), the PR curves pool the
folds' val images (out-of-fold curves), and intervals are the bootstrap of the fold mean with the
report's resampling settings (the same draws as the results table's CI).

    analysis = compute(results.runs, summ, sweep_dir, AnalysisSettings(), bootstrap_settings)
    paths = write(analysis, out_dir)   # CSVs and PNGs; harness.report.html puts them on one page
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import atomic
from harness.classes import CLASSES, class_names
from harness.eval.bootstrap import bca_ci, influence
from harness.eval.coco_map import load_gt
from harness.eval.confusion import SCORE_THR, confusion_matrix
from harness.eval.errors import ERROR_NAMES, ERROR_TYPES, ErrorAnalysis, summary_line, tide_errors
from harness.eval.matches import MatchTable
from harness.eval.per_image import per_image_counts
from harness.eval.sizes import BAND_NAMES, SizeBands, ap_by_size, ap_by_size_from_table, size_bands
from harness.predictions import Predictions
from harness.report import analysis_charts, gallery
from harness.report.gallery import slugify
from harness.report.uncertainty import BootstrapSettings, ground_truth_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisSettings:
    enabled: bool = True
    score_thr: float = SCORE_THR   # confusion matrix, per-image counts, gallery
    gallery: int = 6               # worst images shown


@dataclass
class RunAnalysis:
    kind: str
    name: str
    fold: str
    path: Path
    gt_path: Path
    preds: Predictions
    table: MatchTable
    errors: ErrorAnalysis | None          # None: loaded without the TIDE decomposition (load_runs(errors=False))
    max_dets: int | None = None


@dataclass
class SweepAnalysis:
    settings: AnalysisSettings
    runs: list[RunAnalysis] = field(default_factory=list)
    order: list[tuple[str, str]] = field(default_factory=list)       # (kind, name) as in the results table
    errors: pd.DataFrame = field(default_factory=pd.DataFrame)        # name, type, count, dap
    lines: list[str] = field(default_factory=list)                    # where each model's AP goes
    ensemble_lines: list[str] = field(default_factory=list)           # what an ensemble fixes vs the best model
    confusion: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> counts (summed over folds)
    per_class: pd.DataFrame = field(default_factory=pd.DataFrame)     # name, class, ap, ci_low, ci_high
    bands: SizeBands | None = None
    sizes: pd.DataFrame = field(default_factory=pd.DataFrame)         # name, band, map, n_gt
    per_image: pd.DataFrame = field(default_factory=pd.DataFrame)     # name, fold, image_id, ..., counts
    skipped: list[str] = field(default_factory=list)
    bootstrap: BootstrapSettings | None = None
    classes: tuple[str, ...] = CLASSES                                # the dataset's class names by category id

    def tables(self, kind: str, name: str) -> list[MatchTable]:
        return [r.table for r in self.runs if (r.kind, r.name) == (kind, name)]


def load_runs(runs: pd.DataFrame, sweep_dir: Path, errors: bool = True) -> tuple[list[RunAnalysis], list[str]]:
    """One MatchTable (the one pycocotools pass) per run with predictions and val ground truth, and the
    runs left out with why."""
    found, skipped = [], []
    for row in runs.itertuples():
        run_dir = Path(row.path)
        preds_path, metrics_path = run_dir / "predictions.json", run_dir / "metrics.json"
        try:
            if not preds_path.is_file():
                skipped.append(f"{row.name} {row.fold}: no predictions.json")
                continue
            metrics = json.loads(metrics_path.read_text())
            gt_path = ground_truth_for(run_dir, metrics, sweep_dir)
            if gt_path is None:
                skipped.append(f"{row.name} {row.fold}: no val ground truth found")
                continue
            preds = Predictions.load(preds_path)
            table = MatchTable.from_coco(load_gt(gt_path), preds, max_dets=metrics.get("max_dets"))
            found.append(RunAnalysis(row.kind, row.name, row.fold, run_dir, gt_path, preds, table,
                                     tide_errors(table) if errors else None,
                                     metrics.get("max_dets")))
        except (OSError, ValueError) as err:
            log.warning("analysis skipped for %s: %s", run_dir, err)
            skipped.append(f"{row.name} {row.fold}: {err}")
    return found, skipped


def classes_of(runs: list[RunAnalysis]) -> tuple[str, ...]:
    """The dataset's class names by category id (from the first run's val ground truth)."""
    return tuple(class_names(load_gt(runs[0].gt_path))) if runs else tuple(CLASSES)


def compute(runs: pd.DataFrame, summ: pd.DataFrame, sweep_dir: str | Path, settings: AnalysisSettings | None = None,
            bootstrap: BootstrapSettings | None = None,
            loaded: tuple[list[RunAnalysis], list[str]] | None = None) -> SweepAnalysis:
    """`loaded`: load_runs()'s result when the report already built the match tables."""
    settings = settings or AnalysisSettings()
    out = SweepAnalysis(settings, bootstrap=bootstrap or BootstrapSettings())
    if not settings.enabled or runs.empty:
        return out
    out.runs, out.skipped = loaded if loaded is not None else load_runs(runs, Path(sweep_dir))
    present = {(r.kind, r.name) for r in out.runs}
    out.order = [(k, n) for k, n in zip(summ["kind"], summ["name"]) if (k, n) in present]
    if not out.runs:
        return out
    out.classes = classes_of(out.runs)
    out.errors = _errors_frame(out)
    out.lines = [summary_line(name, mean_errors(out, kind, name)) for kind, name in out.order]
    out.ensemble_lines = _ensemble_lines(out, summ)
    out.confusion = {name: sum(confusion_matrix(t, settings.score_thr, out.classes) for t in out.tables(kind, name))
                     for kind, name in out.order}
    out.per_class = _per_class_ci(out)
    areas = {}
    for run in out.runs:  # each val file once: the data's own box sizes
        areas.setdefault(str(run.gt_path), run.table.gt.loc[~run.table.gt["ignore"], "area"].tolist())
    all_areas = [a for values in areas.values() for a in values]
    if all_areas:
        out.bands = size_bands(all_areas)
        out.sizes = _sizes_frame(out)
    frames = []
    for run in out.runs:
        counts = per_image_counts(run.table, settings.score_thr)
        counts.insert(0, "fold", run.fold)
        counts.insert(0, "name", run.name)
        frames.append(counts)
    out.per_image = pd.concat(frames, ignore_index=True)
    return out


def mean_errors(analysis: SweepAnalysis, kind: str, name: str) -> ErrorAnalysis:
    """One model's errors over its folds: counts summed, mAP and dAP averaged."""
    runs = [r.errors for r in analysis.runs if (r.kind, r.name) == (kind, name)]
    first = runs[0]
    return ErrorAnalysis(float(np.mean([e.map for e in runs])),
                         {k: int(sum(e.counts[k] for e in runs)) for k in ERROR_TYPES},
                         {k: float(np.mean([e.delta_ap[k] for e in runs])) for k in first.delta_ap},
                         first.det_type, first.gt_missed)


def _errors_frame(analysis: SweepAnalysis) -> pd.DataFrame:
    rows = []
    for kind, name in analysis.order:
        errors = mean_errors(analysis, kind, name)
        for key in (*ERROR_TYPES, "false_pos", "false_neg"):
            rows.append({"kind": kind, "name": name, "type": key, "description": ERROR_NAMES[key],
                         "count": errors.counts.get(key, np.nan), "dap": errors.delta_ap[key], "map40": errors.map})
    return pd.DataFrame(rows)


def _ensemble_lines(analysis: SweepAnalysis, summ: pd.DataFrame) -> list[str]:
    models = [(k, n) for k, n in analysis.order if k == "model"]
    if not models:
        return []
    means = dict(zip(zip(summ["kind"], summ["name"]), summ["map40 mean"]))
    best = max(models, key=lambda m: means.get(m, -1))
    base = mean_errors(analysis, *best)
    lines = []
    for kind, name in analysis.order:
        if kind != "ensemble":
            continue
        ens = mean_errors(analysis, kind, name)
        changes = []
        for key in ERROR_TYPES:
            before, after = base.counts[key], ens.counts[key]
            if before != after:
                changes.append(f"{ERROR_NAMES[key]} {before}→{after}")
        moved = sorted(ERROR_TYPES, key=lambda k: ens.delta_ap[k] - base.delta_ap[k])
        fixed = [f"{ERROR_NAMES[k]} ({(base.delta_ap[k] - ens.delta_ap[k]) * 100:+.1f} pts less lost)" for k in moved
                 if base.delta_ap[k] - ens.delta_ap[k] > 0.0005][:2]
        lines.append(f"{name} vs the best single model ({best[1]}): mAP@0.4 {base.map * 100:.1f} → {ens.map * 100:.1f}; "
                     f"errors {', '.join(changes) or 'unchanged'}; fixes mostly "
                     f"{', '.join(fixed) or 'nothing (no error type loses less AP)'}")
    return lines


def _per_class_ci(analysis: SweepAnalysis) -> pd.DataFrame:
    """Per class AP@0.4 (mean over folds) and its BCa bootstrap interval from the results table's
    draws (ImageMatches.counts: the same resamples, by patient where the folds are grouped); a resample
    without the class's images leaves that class out of that resample."""
    settings = analysis.bootstrap
    rows = []
    for kind, name in analysis.order:
        tables = analysis.tables(kind, name)
        points, samples, jacks = [], [], []
        for table in tables:
            matches = table.image_matches()
            n = len(matches.image_ids)
            points.append(matches.per_class_ap(np.ones((1, n))))
            if settings.enabled:
                samples.append(matches.per_class_ap(matches.counts(settings.resamples, settings.seed)))
                jacks.append(matches.per_class_ap(matches.jackknife_weights()))
        for cat, cls in enumerate(analysis.classes):
            values = [p[cat][0] for p in points if cat in p]
            point = float(np.mean(values)) if values and not np.isnan(values).any() else np.nan
            low = high = np.nan
            if samples and not np.isnan(point):
                draws = np.mean([s[cat] for s in samples], axis=0)
                draws = draws[~np.isnan(draws)]
                infl = np.concatenate([np.nan_to_num(influence(j[cat]) if (~np.isnan(j[cat])).any() else j[cat])
                                       for j in jacks]) / len(jacks)
                if draws.size:
                    low, high = bca_ci(draws, point, infl, settings.ci)
            rows.append({"kind": kind, "name": name, "class": cls, "ap": point, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def _band_false_positives(table: MatchTable, lo: float, hi: float) -> tuple[set, int, int]:
    """(classes with ground truth in the band, false positives of those classes in the band, false positives
    in the band of classes without ground truth there - which the band's mAP leaves out), from the
    metric's match over all boxes; a detection's band is its own box area."""
    gt = table.gt[~table.gt["ignore"]]
    present = set(gt.loc[(gt["area"] >= lo) & (gt["area"] <= hi), "category_id"])
    det = table.det[~table.det["ignore"] & ~table.det["tp"]]
    area = det["w"] * det["h"]
    in_band = det[(area >= lo) & (area <= hi)]
    counted = int(in_band["category_id"].isin(present).sum())
    return present, counted, int(len(in_band) - counted)


def _sizes_frame(analysis: SweepAnalysis) -> pd.DataFrame:
    rows = []
    ranges = dict(zip(("all", *BAND_NAMES), [(0.0, 1e10), *analysis.bands.ranges()]))
    for kind, name in analysis.order:
        per_band: dict[str, list] = {band: [] for band in ("all", *BAND_NAMES)}
        n_gt = {band: 0 for band in per_band}
        classes: dict[str, set] = {band: set() for band in per_band}
        fp = {band: [0, 0] for band in per_band}
        for run in (r for r in analysis.runs if (r.kind, r.name) == (kind, name)):
            try:  # from the run's match table: no second pycocotools pass
                result = ap_by_size_from_table(run.table, analysis.bands)
            except ValueError:  # crowd regions: pycocotools' own area-range pass
                result = ap_by_size(load_gt(run.gt_path), run.preds, analysis.bands, max_dets=run.max_dets)
            for band, values in result.items():
                per_band[band].append(values["map"])
                n_gt[band] += values["n_gt"]
                present, counted, left_out = _band_false_positives(run.table, *ranges[band])
                classes[band] |= present
                fp[band][0] += counted
                fp[band][1] += left_out
        for band, values in per_band.items():
            present = [v for v in values if v is not None]
            rows.append({"kind": kind, "name": name, "band": band, "map40": float(np.mean(present)) if present else np.nan,
                         "n_gt": n_gt[band], "classes": "; ".join(analysis.classes[c] for c in sorted(classes[band])),
                         "fp": fp[band][0], "fp_left_out": fp[band][1]})
    return pd.DataFrame(rows)


def write(analysis: SweepAnalysis, out_dir: str | Path, image_root_of=None) -> dict[str, Path]:
    """CSV files and charts into out_dir/analysis; returns their paths by name (nothing without runs)."""
    out_dir = Path(out_dir) / "analysis"
    paths: dict[str, Path] = {}
    if not analysis.runs:
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)

    def csv(name: str, frame: pd.DataFrame) -> Path:
        path = out_dir / f"{name}.csv"
        with atomic.atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
        paths[f"{name}_csv"] = path
        return path

    csv("errors", analysis.errors)
    csv("per_class_ap", analysis.per_class)
    csv("per_image", analysis.per_image)
    if not analysis.sizes.empty:
        csv("ap_by_size", analysis.sizes)
        paths["ap_by_size_png"] = analysis_charts.size_chart(analysis.sizes, analysis.bands, out_dir / "ap_by_size.png")
    paths["errors_png"] = analysis_charts.errors_chart(analysis.errors, out_dir / "errors.png")
    for kind, name in analysis.order:
        counts = analysis.confusion[name]
        slug = slugify(name)
        path = out_dir / "confusion" / f"{slug}.csv"
        with atomic.atomic_path(path) as tmp:
            counts.to_csv(tmp)
        paths[f"confusion_{slug}_csv"] = path
        paths[f"confusion_{slug}_png"] = analysis_charts.confusion_chart(
            counts, out_dir / "confusion" / f"{slug}.png",
            title=f"{name}: confusion at IoU {analysis.runs[0].table.iou_thr:g}, score ≥ {analysis.settings.score_thr:g}")
    curves = {name: analysis.tables(kind, name) for kind, name in analysis.order}
    paths.update(analysis_charts.pr_figures(curves, analysis.per_class, out_dir / "pr", analysis.classes))
    paths.update(gallery.write_gallery(analysis, out_dir / "gallery"))
    return paths


def markdown(analysis: SweepAnalysis) -> str:
    """The Markdown section for results.md (and index.html): where the AP goes, per-class AP with intervals,
    AP by size; the charts are linked."""
    if not analysis.runs:
        return ""
    lines = ["## Why: error analysis (TIDE at IoU 0.4)", "",
             "dAP = mAP@0.4 points gained if only that error type were fixed (Bolya et al., ECCV 2020; "
             "background IoU 0.1), from the metric's own matches; counts summed over folds.", ""]
    lines += [f"- {line}" for line in analysis.lines]
    lines += [f"- **{line}**" for line in analysis.ensemble_lines]
    lines += ["", "| model | " + " | ".join(ERROR_NAMES[k] for k in ERROR_TYPES) + " | all FP | all FN |",
              "|---|" + "---|" * (len(ERROR_TYPES) + 2)]
    for kind, name in analysis.order:
        rows = analysis.errors[analysis.errors["name"] == name].set_index("type")
        cells = [f"{rows.loc[k, 'dap'] * 100:.1f} ({int(rows.loc[k, 'count'])})" for k in ERROR_TYPES]
        cells += [f"{rows.loc[k, 'dap'] * 100:.1f}" for k in ("false_pos", "false_neg")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: dAP in AP points (error count). The confusion matrices below are not TIDE's classification "
              f"count: they keep only detections scoring ≥ {analysis.settings.score_thr:g}, count a detection as a "
              "confusion only with another class's box that no kept detection found (each box once), and do not test "
              "localisation first (a detection 0.1–0.4 IoU from a box of its own class that covers another class's "
              "free box is a confusion there, a localisation error in TIDE).", ""]
    lines += _per_class_markdown(analysis)
    if analysis.bands is not None:
        lines += ["", "## AP@0.4 by box size", "", f"Bands: {analysis.bands.describe()}.", "",
                  "| model | all | " + " | ".join(BAND_NAMES) + " |", "|---|---|" + "---|" * len(BAND_NAMES)]
        for kind, name in analysis.order:
            rows = analysis.sizes[analysis.sizes["name"] == name].set_index("band")
            cells = [_fmt(rows.loc[b, "map40"]) + f" ({int(rows.loc[b, 'n_gt'])})" for b in ("all", *BAND_NAMES)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Cells: mAP@0.4 (ground-truth boxes in the band). \"all\" is the mAP over every box, not an average "
                  "of the bands: each band's mAP averages only the classes with ground truth in that band, and a class "
                  "without boxes in a band drops out of it together with its false positives in that band.", ""]
        first = analysis.sizes[analysis.sizes["name"] == analysis.order[0][1]].set_index("band")
        lines += ["| band | classes with boxes in the band | " + " | ".join(f"{n}: FP counted / left out"
                                                                              for _, n in analysis.order) + " |",
                  "|---|---|" + "---|" * len(analysis.order)]
        for band in BAND_NAMES:
            cells = []
            for _, name in analysis.order:
                row = analysis.sizes[(analysis.sizes["name"] == name) & (analysis.sizes["band"] == band)].iloc[0]
                cells.append(f"{int(row['fp'])} / {int(row['fp_left_out'])}")
            lines.append(f"| {band} | {first.loc[band, 'classes'] or '–'} | " + " | ".join(cells) + " |")
        lines += ["", "False positives by the detection's own box area, from the IoU-0.4 match over all boxes; \"left "
                  "out\": false positives of classes without ground truth in the band, which that band's mAP does "
                  "not see.", ""]
    if analysis.skipped:
        lines += ["", "Not analysed: " + "; ".join(analysis.skipped), ""]
    return "\n".join(lines)


def _per_class_markdown(analysis: SweepAnalysis) -> list[str]:
    names = [name for _, name in analysis.order]
    level = f"{analysis.bootstrap.ci:.0%}" if analysis.bootstrap.enabled else None
    lines = ["## Per-class AP@0.4" + (f" with {level} bootstrap intervals" if level else ""), "",
             "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    table = analysis.per_class.set_index(["name", "class"])
    for cls in analysis.classes:
        cells = []
        for name in names:
            row = table.loc[(name, cls)]
            cell = _fmt(row["ap"])
            if not np.isnan(row["ci_low"]):
                cell += f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            cells.append(cell)
        if all(c == "–" for c in cells):
            continue
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    lines += ["", "– = no ground truth of the class in the scored images.", ""]
    return lines


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
