"""The sweep report: tables, charts, overlays, failed jobs, protocol card.

    from harness.report import build_report, write_overlays
    paths = build_report("runs/demo")     # -> runs/demo/report/{results.md, results.csv, results.png, per_class.png,
                                          #                      protocol.md (when the runs recorded a protocol)}

Everything is rebuilt from the files in the sweep directory (metrics.json / failed.json), so a
report can be regenerated at any time, also for a partially failed sweep.
"""
from __future__ import annotations

from pathlib import Path

from harness.report.charts import per_class_heatmap, results_chart
from harness.report.overlays import draw_overlay, write_overlays
from harness.report.protocol import (SweepProtocols, collect_protocols, fairness_summary, protocol_markdown,
                                     write_protocol)
from harness.report.tables import SweepResults, collect, long_table, markdown, summary, write_tables


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write results.md, results.csv, results.png and per_class.png into out_dir (default
    <sweep_dir>/report); returns {"results_md", "results_csv", "results_png", "per_class_png"}, plus
    "protocol_md" when at least one run recorded a protocol (a sweep from before the protocol card
    would get a card with nothing in it, so it gets none, and results.md no link to one)."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    results = collect(sweep_dir)
    summ = summary(results.runs)
    protocols = collect_protocols(sweep_dir)
    protocol_md = write_protocol(sweep_dir, out_dir, protocols) if protocols.recorded else None
    paths = write_tables(results, summ, out_dir, title=f"Results: {sweep_dir.name}",
                         protocol=fairness_summary(protocols) if protocol_md else None)
    if protocol_md is not None:
        paths["protocol_md"] = protocol_md
    paths["results_png"] = results_chart(results.runs, summ, out_dir / "results.png",
                                         title=f"{sweep_dir.name}: mAP@0.4 per model (mean ± std over folds)")
    paths["per_class_png"] = per_class_heatmap(summ, out_dir / "per_class.png")
    return paths


__all__ = ["build_report", "write_overlays", "draw_overlay", "collect", "summary", "long_table", "markdown",
           "write_tables", "results_chart", "per_class_heatmap", "SweepResults", "SweepProtocols", "collect_protocols",
           "protocol_markdown", "write_protocol", "fairness_summary"]
