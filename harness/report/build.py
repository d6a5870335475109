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
from harness.report import analysis as analysis_section
from harness.report import by_arch
from harness.report import nofinding as nofinding_section
from harness.report import seeds, uncertainty
from harness.report.charts import per_class_heatmap, results_chart
from harness.report.analysis import AnalysisSettings
from harness.report.external import sweep_external_markdown
from harness.report.html import write_index
from harness.report.nofinding import NoFindingSettings
from harness.report.protocol import collect_protocols, fairness_summary, write_protocol
from harness.report.reference import sweep_reference
from harness.report.tables import collect, summary, write_tables
from harness.report.tuning import collect_tuning
from harness.report.uncertainty import BootstrapSettings


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None,
                 bootstrap: BootstrapSettings | None = None, reader_reference: bool = True,
                 nofinding: NoFindingSettings | None = None, analysis: AnalysisSettings | None = None
                 ) -> dict[str, Path]:
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
    (harness.report.analysis, files under analysis/); index.html puts the whole report on one page."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    settings = bootstrap if bootstrap is not None else BootstrapSettings()
    results = collect(sweep_dir)
    summ = summary(results.runs)
    unc = uncertainty.compute(results.runs, sweep_dir, settings)
    uncertainty.add_ci_columns(results.runs, summ, unc)
    reference = sweep_reference(sweep_dir) if reader_reference else None
    protocols = collect_protocols(sweep_dir)
    protocol_md = write_protocol(sweep_dir, out_dir, protocols, extra=by_arch.differences_section(results.runs)) \
        if protocols.recorded else None
    ci_note = uncertainty.ci_note(unc)
    stage = nofinding_section.compute(results.runs, sweep_dir, nofinding or NoFindingSettings())
    why = analysis_section.compute(results.runs, summ, sweep_dir, analysis, settings)
    seed_tables = None
    if seeds.is_seed_sweep(results.runs):  # a sweep over train.seed: mean ± sd over seeds, pairs per seed
        seed_tables = (seeds.spread(results.runs, summ, unc), seeds.pair_spread(results.runs, unc.pairs))
    extra = [by_arch.markdown(results.runs, summ, unc),
             seeds.markdown(*seed_tables, settings.ci) if seed_tables else None,
             nofinding_section.markdown(stage) if not stage.rows.empty else None, analysis_section.markdown(why),
             sweep_external_markdown(sweep_dir)]
    paths = write_tables(results, summ, out_dir, title=f"Results: {sweep_dir.name}",
                         protocol=fairness_summary(protocols) if protocol_md else None, pairs=unc.pairs,
                         reference=reference, ci_note=ci_note, tuning=collect_tuning(sweep_dir),
                         extra="\n\n".join(e for e in extra if e) or None,
                         pair_warnings=unc.warnings)
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
    paths["index_html"] = write_index(out_dir, title=f"Results: {sweep_dir.name}", paths=paths)
    return paths
