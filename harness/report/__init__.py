"""The sweep report: tables, charts, overlays, failed jobs, protocol card.

    from harness.report import build_report, write_overlays
    paths = build_report("runs/demo")     # -> runs/demo/report/{results.md, results.csv, results.png, per_class.png,
                                          #                      protocol.md (when the runs recorded a protocol)}

Everything is rebuilt from the files in the sweep directory (metrics.json / failed.json), so a
report can be regenerated at any time, also for a partially failed sweep. `build_report` lives in
harness.report.build; each section has its own module.
"""
from harness.report.analysis import AnalysisSettings
from harness.report.build import build_report
from harness.report.charts import per_class_heatmap, results_chart
from harness.report.nofinding import NoFindingSettings
from harness.report.overlays import draw_overlay, write_overlays
from harness.report.protocol import (SweepProtocols, collect_protocols, fairness_summary, protocol_markdown,
                                     write_protocol)
from harness.report.reference import sweep_reference
from harness.report.tables import SweepResults, collect, long_table, markdown, summary, write_tables
from harness.report.tuning import collect_tuning
from harness.report.uncertainty import BootstrapSettings

__all__ = ["build_report", "write_overlays", "draw_overlay", "collect", "summary", "long_table", "markdown",
           "write_tables", "results_chart", "per_class_heatmap", "SweepResults", "SweepProtocols", "collect_protocols",
           "protocol_markdown", "write_protocol", "fairness_summary", "BootstrapSettings", "sweep_reference",
           "NoFindingSettings", "collect_tuning", "AnalysisSettings"]
