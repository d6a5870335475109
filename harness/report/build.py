"""`build_report`: the whole sweep report from the files in a sweep directory.

    from harness.report import build_report, write_overlays
    paths = build_report("runs/demo")     # -> runs/demo/report/{results.md, results.csv, results.png, per_class.png,
                                          #                      protocol.md (when the runs recorded a protocol)}

Everything is rebuilt from the files in the sweep directory (metrics.json / failed.json), so a
report can be regenerated at any time, also for a partially failed sweep.
"""
from __future__ import annotations

from pathlib import Path

from harness import atomic
from harness.eval.errors import summary_line
from harness.report import analysis as analysis_section
from harness.report import by_arch
from harness.report import froc as froc_section
from harness.report import nofinding as nofinding_section
from harness.report import seeds, uncertainty
from harness.report import summary as glance
from harness.report.charts import per_class_heatmap, results_chart
from harness.report.analysis import AnalysisSettings
from harness.report.external import sweep_external_markdown
from harness.report.froc import FrocSettings
from harness.report.names import display_name
from harness.report.html import write_index
from harness.report.nofinding import NoFindingSettings
from harness.report.protocol import collect_protocols, fairness_summary, write_protocol
from harness.report.reference import sweep_reference
from harness.report.tables import collect, summary, write_tables
from harness.report.tuning import collect_tuning
from harness.report.uncertainty import BootstrapSettings


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None,
                 bootstrap: BootstrapSettings | None = None, reader_reference: bool = True,
                 nofinding: NoFindingSettings | None = None, analysis: AnalysisSettings | None = None,
                 froc: FrocSettings | None = None) -> dict[str, Path]:
    """Write results.md, results.csv, results.png and per_class.png into out_dir (default
    <sweep_dir>/report); returns {"results_md", "results_csv", "results_png", "per_class_png"}, plus
    "protocol_md" when at least one run recorded a protocol (a sweep from before the protocol card
    would get a card with nothing in it, so it gets none, and results.md no link to one).

    `bootstrap` (default: 1000 resamples, seed 0, 95%): CIs of mAP@0.4 over the val images for every
    run with a predictions.json, and paired comparisons (harness.report.uncertainty).
    `reader_reference`: add the "one radiologist vs two" row when the dataset has per-reader labels.
    `nofinding`: thresholds and grid of the "No finding" stage section (harness.report.nofinding):
    results.md gains its table, and nofinding.csv, nofinding_sweep.csv/.png are written.
    Ensembles tuned on out-of-fold data (hparams_search=wbf_optuna) add a "tuned vs default" table
    (harness.report.tuning); external validations under the sweep (`cxr-predict predict.input=external`,
    external.json) add their tables (harness.report.external).
    `analysis`: the error analysis, per-class curves, box sizes and worst-image gallery
    (harness.report.analysis, files under analysis/); index.html puts the whole report on one page.
    `froc` (default: on, the IoU-0.4 hit rule, 1 FP per image): FROC, CPM and image-level AUROC, operating
    points (harness.report.froc): cpm / auroc columns in results.csv, analysis/froc*.csv/png and
    operating_points*.csv/png; from the analysis' match tables (one pycocotools pass per run)."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    settings = bootstrap if bootstrap is not None else BootstrapSettings()
    results = collect(sweep_dir)
    summ = summary(results.runs)
    froc = froc or FrocSettings()
    analysis = analysis or AnalysisSettings()
    # each run's one pycocotools pass at IoU 0.4 (a MatchTable): the bootstrap, the analysis (TIDE, confusion,
    # PR, AP by size, gallery), FROC and the summary all read it
    loaded = analysis_section.load_runs(results.runs, sweep_dir, errors=analysis.enabled) \
        if not results.runs.empty and (analysis.enabled or froc.enabled or settings.enabled) else ([], [])
    tables = loaded[0]
    unc = uncertainty.compute(results.runs, sweep_dir, settings, {str(r.path): r.table for r in tables})
    uncertainty.add_ci_columns(results.runs, summ, unc)
    reference = sweep_reference(sweep_dir) if reader_reference else None
    protocols = collect_protocols(sweep_dir)
    protocol_md = write_protocol(sweep_dir, out_dir, protocols, extra=by_arch.differences_section(results.runs)) \
        if protocols.recorded else None
    ci_note = uncertainty.ci_note(unc)
    stage = nofinding_section.compute(results.runs, sweep_dir, nofinding or NoFindingSettings())
    why = analysis_section.compute(results.runs, summ, sweep_dir, analysis, settings, loaded)
    lesions = froc_section.compute(tables, list(zip(summ["kind"], summ["name"])), froc, settings,
                                   why.classes if why.runs else analysis_section.classes_of(tables))
    froc_section.add_columns(results.runs, summ, lesions)
    first_screen = glance.markdown(
        summ, unc, tables, why.classes if why.runs else analysis_section.classes_of(tables),
        [summary_line(display_name(n), analysis_section.mean_errors(why, k, n)) for k, n in why.order],
        seeds.is_seed_sweep(results.runs), glance.n_images(tables) if tables else None)
    seed_tables = None
    if seeds.is_seed_sweep(results.runs):  # a sweep over train.seed: mean ± sd over seeds, pairs per seed
        seed_tables = (seeds.spread(results.runs, summ, unc), seeds.pair_spread(results.runs, unc.pairs))
    extra = [by_arch.markdown(results.runs, summ, unc),
             seeds.markdown(*seed_tables, settings.ci) if seed_tables else None,
             nofinding_section.markdown(stage) if not stage.rows.empty else None, froc_section.markdown(lesions),
             analysis_section.markdown(why),
             sweep_external_markdown(sweep_dir)]
    paths = write_tables(results, summ, out_dir, title=f"Results: {sweep_dir.name}",
                         protocol=fairness_summary(protocols) if protocol_md else None, pairs=unc.pairs,
                         reference=reference, ci_note=ci_note, tuning=collect_tuning(sweep_dir),
                         extra="\n\n".join(e for e in extra if e) or None,
                         pair_warnings=unc.warnings, lead=first_screen or None)
    if seed_tables is not None:
        paths["seeds_csv"] = out_dir / "seeds.csv"
        with atomic.atomic_path(paths["seeds_csv"]) as tmp:
            seeds.frame(*seed_tables).to_csv(tmp, index=False, float_format="%.6g")
    if not stage.rows.empty:
        paths.update(nofinding_section.write(stage, out_dir))
    if protocol_md is not None:
        paths["protocol_md"] = protocol_md
    what = f"{settings.ci:.0%} bootstrap CI" if unc.runs else "std over folds"
    paths["results_png"] = results_chart(results.runs, summ, out_dir / "results.png",
                                         title=f"{sweep_dir.name}: mAP@0.4 per model (mean over folds, {what})",
                                         reference=reference)
    paths["per_class_png"] = per_class_heatmap(summ, out_dir / "per_class.png")
    paths.update(analysis_section.write(why, out_dir))
    paths.update(froc_section.write(lesions, out_dir))
    paths["index_html"] = write_index(out_dir, title=f"Results: {sweep_dir.name}", paths=paths)
    return paths
