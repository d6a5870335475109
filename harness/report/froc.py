"""The report's lesion- and image-level section: FROC curves, CPM and image-level AUROC per model and
ensemble (FROC per class too), and operating points (precision / recall / F1 against the score
threshold, and the threshold that meets an FP-per-image budget).

Every number comes from the runs' match tables (harness.eval.matches, the analysis' one pycocotools
pass per run; harness.eval.froc). Over several folds, CPM and AUROC are means over folds, as the
results table's mAP, with bootstrap intervals from the table's own draws (the same image resamples of
each fold, ImageMatches.counts, averaged over folds); the curves and operating
points pool the folds' val images (out-of-fold curves: one threshold for all images).

    section = compute(analysis.runs, order, FrocSettings(), bootstrap_settings)
    add_columns(results.runs, summ, section)   # cpm / auroc (+ ci) columns for results.csv
    paths = write(section, out_dir)            # analysis/froc.csv/.png, operating_points.csv/.png
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import atomic
from harness.eval import froc as lesion
from harness.eval.bootstrap import percentile_ci
from harness.report import analysis_charts
from harness.report.uncertainty import BootstrapSettings

COLUMNS = ["cpm", "cpm ci_low", "cpm ci_high", "auroc", "auroc ci_low", "auroc ci_high"]
RATE_LABELS = ("1/8", "1/4", "1/2", "1", "2", "4", "8")


@dataclass(frozen=True)
class FrocSettings:
    enabled: bool = True
    rule: str = lesion.DEFAULT_HIT_RULE   # "iou" (the metric's own match at IoU 0.4) or "centre" (centre in box)
    fp_budget: float = 1.0                # FP per image the operating-point threshold must stay within

    def __post_init__(self):
        if self.rule not in lesion.HIT_RULES:
            raise ValueError(f"report.froc.rule must be one of {', '.join(lesion.HIT_RULES)}, got {self.rule!r}")
        if not self.fp_budget > 0:
            raise ValueError(f"report.froc.fp_budget must be > 0 FP per image, got {self.fp_budget}")


@dataclass
class FrocSection:
    settings: FrocSettings
    bootstrap: BootstrapSettings
    runs: dict[str, dict] = field(default_factory=dict)             # run path -> {"cpm", "auroc"} (full set)
    models: pd.DataFrame = field(default_factory=pd.DataFrame)      # kind, name, n_folds, cpm (+ci), auroc (+ci),
                                                                    # sens@<rate>...
    per_class: pd.DataFrame = field(default_factory=pd.DataFrame)   # name, class, n_lesions, cpm, ci
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)      # name, class, threshold, fp_per_image, sensitivity
    points: pd.DataFrame = field(default_factory=pd.DataFrame)      # name, threshold, precision, recall, f1, ...
    budget: pd.DataFrame = field(default_factory=pd.DataFrame)      # name, the chosen thresholds
    classes: tuple[str, ...] = ()


def _interval(samples: list[np.ndarray], level: float) -> tuple[float, float]:
    if not samples:
        return math.nan, math.nan
    draws = np.mean(samples, axis=0)
    draws = draws[~np.isnan(draws)]
    return percentile_ci(draws, level) if draws.size else (math.nan, math.nan)


def compute(runs: list, order: list[tuple[str, str]], settings: FrocSettings | None = None,
            bootstrap: BootstrapSettings | None = None, classes: tuple[str, ...] = ()) -> FrocSection:
    """`runs`: objects with kind, name, path and table (harness.report.analysis.RunAnalysis); `order`:
    (kind, name) as in the results table."""
    settings = settings or FrocSettings()
    boot = bootstrap or BootstrapSettings()
    out = FrocSection(settings, boot, classes=tuple(classes))
    if not settings.enabled or not runs:
        return out
    rows, class_rows, curves, points, budget = [], [], [], [], []
    for kind, name in order:
        mine = [r for r in runs if (r.kind, r.name) == (kind, name)]
        if not mine:
            continue
        hits = [lesion.LesionHits.from_table(r.table, settings.rule) for r in mine]
        cats = mine[0].table.category_ids
        sens, cpms, aurocs, cpm_draws, auroc_draws = [], [], [], [], []
        class_cpm = {c: [] for c in cats}
        class_draws = {c: [] for c in cats}
        for run, h in zip(mine, hits):
            sens.append(lesion.sensitivity_at(h)[0])
            cpms.append(float(np.mean(sens[-1])))
            aurocs.append(float(lesion.auroc(h)[0]))
            out.runs[str(run.path)] = {"cpm": cpms[-1], "auroc": aurocs[-1]}
            weights = None
            if boot.enabled:  # the results table's draws: the same ids, seed and groups as ImageMatches.bootstrap
                weights = run.table.image_matches().counts(boot.resamples, boot.seed)
                cpm_draws.append(lesion.cpm(h, weights=weights))
                auroc_draws.append(lesion.auroc(h, weights=weights))
            for c in cats:
                class_cpm[c].append(float(lesion.cpm(h, c)[0]))
                if weights is not None:
                    class_draws[c].append(lesion.cpm(h, c, weights))
        row = {"kind": kind, "name": name, "n_folds": len(mine), "rule": settings.rule,
               "cpm": float(np.mean(cpms)), "auroc": float(np.mean(aurocs)) if not np.isnan(aurocs).any() else math.nan}
        row["cpm ci_low"], row["cpm ci_high"] = _interval(cpm_draws, boot.ci)
        row["auroc ci_low"], row["auroc ci_high"] = _interval(auroc_draws, boot.ci) if not math.isnan(row["auroc"]) \
            else (math.nan, math.nan)
        row.update({f"sens@{label}": float(v) for label, v in zip(RATE_LABELS, np.mean(sens, axis=0))})
        rows.append(row)
        pooled = lesion.pool(hits)
        for c in cats:
            n_lesions = int(pooled.lesions[c].sum())
            values = [v for v in class_cpm[c] if not np.isnan(v)]
            low, high = _interval([d for d in class_draws[c]], boot.ci) if len(values) == len(class_cpm[c]) \
                else (math.nan, math.nan)
            class_rows.append({"kind": kind, "name": name, "class": _class_name(c, classes), "n_lesions": n_lesions,
                               "cpm": float(np.mean(values)) if values and len(values) == len(class_cpm[c]) else math.nan,
                               "ci_low": low, "ci_high": high})
        for c in [None, *cats]:
            curve = lesion.froc_curve(pooled, c)
            if not curve.empty:
                curves.append(curve.assign(name=name, **{"class": "all" if c is None else _class_name(c, classes)}))
        ops = lesion.operating_points(pooled)
        if not ops.empty:
            points.append(ops.assign(name=name))
            chosen = lesion.threshold_for_budget(ops, settings.fp_budget)
            best = ops.iloc[int(np.argmax(ops["f1"].to_numpy()))]
            budget.append({"name": name, "fp_budget": settings.fp_budget,
                           **_point("budget", chosen), **_point("best_f1", best)})
    out.models = pd.DataFrame(rows)
    out.per_class = pd.DataFrame(class_rows)
    front = ["name", "class", "threshold", "fp_per_image", "sensitivity", "tp", "fp"]
    out.curves = pd.concat(curves, ignore_index=True)[front] if curves else pd.DataFrame(columns=front)
    cols = ["name", "threshold", "precision", "recall", "f1", "fp_per_image", "tp", "fp"]
    out.points = pd.concat(points, ignore_index=True)[cols] if points else pd.DataFrame(columns=cols)
    out.budget = pd.DataFrame(budget)
    return out


def _point(prefix: str, row) -> dict:
    keys = ("threshold", "fp_per_image", "recall", "precision", "f1")
    if row is None:
        return {f"{prefix} {k}": math.nan for k in keys}
    return {f"{prefix} {k}": float(row[k]) for k in keys}


def _class_name(cat: int, classes: tuple[str, ...]) -> str:
    return classes[cat] if 0 <= cat < len(classes) else str(cat)


def add_columns(runs: pd.DataFrame, summ: pd.DataFrame, section: FrocSection) -> None:
    """cpm / auroc columns on the run rows (full set of the fold) and the summary rows (fold mean + CI),
    in place; nothing when the section was not computed."""
    if section.models.empty:
        return
    for key in ("cpm", "auroc"):
        runs[key] = [section.runs.get(str(p), {}).get(key, math.nan) for p in runs["path"]]
    by_model = section.models.set_index(["kind", "name"])
    for col in COLUMNS:
        summ[col] = [by_model[col].get((k, n), math.nan) for k, n in zip(summ["kind"], summ["name"])]


def write(section: FrocSection, out_dir: str | Path) -> dict[str, Path]:
    """analysis/froc.csv (curves), froc_cpm.csv (per model and class), operating_points.csv (+ the
    budget's thresholds), froc.png and operating_points.png."""
    paths: dict[str, Path] = {}
    if section.models.empty:
        return paths
    out_dir = Path(out_dir) / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, frame in (("froc", section.curves), ("froc_cpm", section.per_class),
                       ("operating_points", section.points), ("operating_point_budget", section.budget)):
        path = out_dir / f"{key}.csv"
        with atomic.atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
        paths[f"{key}_csv"] = path
    cpm = dict(zip(section.models["name"], section.models["cpm"]))
    paths["froc_png"] = analysis_charts.froc_chart(section.curves, cpm, lesion.FP_RATES, out_dir / "froc.png",
                                                   pooled=bool((section.models["n_folds"] > 1).any()))
    if not section.points.empty:
        paths["operating_points_png"] = analysis_charts.operating_points_chart(
            section.points, section.budget, out_dir / "operating_points.png")
    return paths


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _ci(low, high) -> str:
    return "" if low is None or math.isnan(low) else f" [{low:.3f}, {high:.3f}]"


def rule_sentence(rule: str) -> str:
    if rule == "iou":
        return ("a mark finds a lesion when the metric matched it (same class, IoU ≥ 0.4, one mark per lesion, "
                "in score order)")
    return ("a mark finds a lesion of its class when the mark's centre lies inside the lesion's box (one mark per "
            "lesion, in score order)")


def markdown(section: FrocSection) -> str:
    if section.models.empty:
        return ""
    boot = section.bootstrap
    level = f"{boot.ci:.0%} bootstrap interval, the results table's draws" if boot.enabled else "no bootstrap"
    lines = ["## FROC and image-level AUROC", "",
             f"Lesion-hit rule: {rule_sentence(section.settings.rule)} (`report.froc.rule`: iou | centre). "
             "A second mark on a found lesion, and a mark of the wrong class, is a false positive. "
             "CPM = mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per image (all classes pooled; "
             "the best sensitivity whose FP per image stays within each rate). Image AUROC: abnormal (any box) vs "
             f"normal images, scored by the image's highest box score. Mean over folds; [ ] = {level}.", "",
             "| model | CPM | " + " | ".join(f"sens @ {r}" for r in RATE_LABELS) + " | image AUROC |",
             "|---|---|" + "---|" * len(RATE_LABELS) + "---|"]
    for rec in section.models.to_dict("records"):
        cells = [_fmt(rec["cpm"]) + _ci(rec["cpm ci_low"], rec["cpm ci_high"]),
                 *[_fmt(rec[f"sens@{r}"]) for r in RATE_LABELS],
                 _fmt(rec["auroc"]) + _ci(rec["auroc ci_low"], rec["auroc ci_high"])]
        lines.append(f"| {rec['name']} | " + " | ".join(cells) + " |")
    if section.models["auroc"].isna().any():
        lines += ["", "– AUROC: the scored images were all abnormal or all normal."]
    present = section.per_class[section.per_class["n_lesions"] > 0]
    if not present.empty:
        names = list(section.models["name"])
        lines += ["", "CPM per class (classes with lesions in the val images; n = lesions, all folds):", "",
                  "| class | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        table = present.set_index(["class", "name"])
        for cls in dict.fromkeys(present["class"]):
            n = int(present.loc[present["class"] == cls, "n_lesions"].iloc[0])
            cells = [_fmt(table.loc[(cls, name), "cpm"]) + _ci(table.loc[(cls, name), "ci_low"],
                                                             table.loc[(cls, name), "ci_high"])
                     if (cls, name) in table.index else "–" for name in names]
            lines.append(f"| {cls} | {n} | " + " | ".join(cells) + " |")
    if not section.budget.empty:
        budget = section.settings.fp_budget
        lines += ["", "## Operating points", "",
                  f"Precision, recall (lesion sensitivity) and F1 against the score threshold, all classes pooled over "
                  f"the folds' val images (`analysis/operating_points.csv`). \"Within budget\": the lowest threshold "
                  f"whose false positives stay within {budget:g} per image (`report.froc.fp_budget`); "
                  f"\"best F1\": the threshold with the highest F1.", "",
                  "| model | within budget: threshold | FP/image | recall | precision | best F1: threshold | F1 | "
                  "recall | precision |", "|---|---|---|---|---|---|---|---|---|"]
        for rec in section.budget.to_dict("records"):
            lines.append(f"| {rec['name']} | {_fmt(rec['budget threshold'])} | {_fmt(rec['budget fp_per_image'])} | "
                         f"{_fmt(rec['budget recall'])} | {_fmt(rec['budget precision'])} | "
                         f"{_fmt(rec['best_f1 threshold'])} | {_fmt(rec['best_f1 f1'])} | {_fmt(rec['best_f1 recall'])} | "
                         f"{_fmt(rec['best_f1 precision'])} |")
        if section.budget["budget threshold"].isna().any():
            lines += ["", f"– within budget: even the highest threshold gives more than {budget:g} FP per image."]
    return "\n".join(lines) + "\n"
