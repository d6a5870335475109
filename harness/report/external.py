"""The "External validation" section: per mapped class, AP@0.4 on the external dataset beside the same
model's AP@0.4 on its own validation fold, each with its bootstrap interval (harness.eval.external,
written by `cxr-predict predict.input=external`). cxr-report collects every external.json under the
sweep into results.md."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from harness.sweep import SUPERSEDED_DIR

log = logging.getLogger(__name__)
RESULT_FILE = "external.json"


def _ap(value, low, high) -> str:
    if value is None:
        return "–"
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{value:.3f}{interval}"


def external_markdown(doc: dict, level: int = 2) -> str:
    """One external-validation result as a Markdown section."""
    ci = doc["bootstrap"]
    folds = ", ".join(f"fold {f}" for f in doc.get("folds") or []) or "–"
    lines = [f"{'#' * level} External validation: {doc['model']} on {doc['external_dataset']}", "",
             f"Trained on {doc['source_label_set']} ({folds}); scored on all {doc['n_images']} labelled images of "
             f"{doc['external_dataset']} through the class mapping `{doc['mapping']}`. AP@0.4 (pycocotools) with "
             f"{ci['ci']:.0%} bootstrap intervals ({ci['resamples']} resamples of the images, seed {ci['seed']}); "
             "internal = the same model on its own validation fold, for the source class.", "",
             f"| {doc['target_label_set']} class | {doc['source_label_set']} class | external AP@0.4 [CI] | "
             "external GT boxes | internal AP@0.4 [CI] | internal GT boxes |",
             "|---|---|---|---|---|---|"]
    for row in doc["rows"]:
        lines.append(f"| {row['target']} | {row['source']} | "
                     f"{_ap(row['external_ap'], row['external_low'], row['external_high'])} | {row['external_gt']} | "
                     f"{_ap(row['internal_ap'], row['internal_low'], row['internal_high'])} | "
                     f"{row['internal_gt'] if row['internal_gt'] is not None else '–'} |")
    ext, intl = doc["external_mean"], doc.get("internal_mean") or {}
    lines.append(f"| **mean of the mapped classes** | | {_ap(ext['ap'], ext['low'], ext['high'])} | {ext['n_gt']} | "
                 f"{_ap(intl.get('ap'), intl.get('low'), intl.get('high'))} | {intl.get('n_gt', '–')} |")
    lines += ["", f"Not scored — {doc['source_label_set']} classes without a counterpart: "
              f"{', '.join(doc['unmapped_source']) or 'none'}; {doc['target_label_set']} classes no source class "
              f"predicts: {', '.join(doc['unmapped_target']) or 'none'}. – = no ground truth (or no internal run files)."]
    return "\n".join(lines) + "\n"


def collect_external(sweep_dir: str | Path) -> list[dict]:
    """Every external.json under the sweep (outside report/ and framework folders), by path."""
    found = []
    for root, dirs, files in os.walk(sweep_dir):
        dirs[:] = sorted(d for d in dirs if d not in {"report", "native", ".hydra", "split", SUPERSEDED_DIR}
                         and not d.startswith("."))
        if RESULT_FILE in files:
            try:
                found.append(json.loads((Path(root) / RESULT_FILE).read_text()))
            except (OSError, ValueError) as err:
                log.warning("external validation: cannot read %s: %s", Path(root) / RESULT_FILE, err)
    return found


def sweep_external_markdown(sweep_dir: str | Path) -> str | None:
    docs = collect_external(sweep_dir)
    if not docs:
        return None
    return "\n".join(external_markdown(doc) for doc in docs)
