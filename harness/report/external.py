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


NOT_EXHAUSTIVE = ("{target}'s boxes are not exhaustive: the box list was drawn for sampled findings, other findings "
                  "of the same images are unboxed, so a correct detection of an unboxed finding counts as a false "
                  "positive here and the external AP is a lower bound (add {entry} under data.raw_dir: the "
                  "image-level labels' unboxed findings then become ignore regions).")


def external_markdown(doc: dict, level: int = 2) -> str:
    """One external-validation result as a Markdown section."""
    ci = doc["bootstrap"]
    folds = ", ".join(f"fold {f}" for f in doc.get("folds") or []) or "–"
    src, tgt = doc["source_label_set"], doc["target_label_set"]
    units = "patients" if doc.get("grouped_by") else "images"
    lines = [f"{'#' * level} External validation: {doc['model']} on {doc['external_dataset']}", "",
             f"Trained on {src} ({folds}); scored on all {doc['n_images']} labelled images of "
             f"{doc['external_dataset']} through the class mapping `{doc['mapping']}`. AP@0.4 (pycocotools) with "
             f"{ci['ci']:.0%} BCa bootstrap intervals ({ci['resamples']} resamples of the {units}, seed {ci['seed']}); "
             "internal = the same model on its own validation fold, for the source class.", "",
             f"| {tgt} class | {src} class | external AP@0.4 [CI] | "
             "external GT boxes | internal AP@0.4 [CI] | internal GT boxes |",
             "|---|---|---|---|---|---|"]
    notes = []
    for row in doc["rows"]:
        label = row["target"]
        if row.get("kind") == "merged":
            label = f"**{label}**"
        elif row.get("siblings"):
            label = f"{label} ¹"
        lines.append(f"| {label} | {row['source']} | "
                     f"{_ap(row['external_ap'], row['external_low'], row['external_high'])} | {row['external_gt']} | "
                     f"{_ap(row['internal_ap'], row['internal_low'], row['internal_high'])} | "
                     f"{row['internal_gt'] if row['internal_gt'] is not None else '–'} |")
    if any(row.get("siblings") for row in doc["rows"]):
        merged = [r["target"] for r in doc["rows"] if r.get("kind") == "merged"]
        notes.append(f"¹ one {src} class scored as several {tgt} classes: in this row a detection on a box of the "
                     "other class(es) is ignored, not counted false; the merged row"
                     f"{'s' if len(merged) > 1 else ''} ({', '.join(merged)}) score{'' if len(merged) > 1 else 's'} "
                     f"those {tgt} classes as one class, each detection once, like the {src} class on its own fold.")
    ext, intl = doc["external_mean"], doc.get("internal_mean") or {}
    sources = doc.get("mean_sources")
    what = (f"mean per {src} class ({len(sources)}: {', '.join(sources)})" if sources is not None
            else "mean of the mapped classes")
    lines.append(f"| **{what}** | | {_ap(ext['ap'], ext['low'], ext['high'])} | {ext['n_gt']} | "
                 f"{_ap(intl.get('ap'), intl.get('low'), intl.get('high'))} | {intl.get('n_gt', '–')} |")
    unscored = doc.get("unscored") or {}
    boxes = unscored.get("target_boxes") or {}
    unmapped_t = ", ".join(f"{name} ({boxes[name]} boxes)" if name in boxes else name
                           for name in doc["unmapped_target"]) or "none"
    lines += ["", *notes, "", f"Not scored — {src} classes without a {tgt} counterpart (their detections are left out): "
              f"{', '.join(doc['unmapped_source']) or 'none'}; {tgt} classes no {src} class predicts (their boxes are "
              f"left out): {unmapped_t}."]
    if unscored.get("images_only_unmapped"):
        lines.append(f"{unscored['images_only_unmapped']} image(s) hold only boxes of those {tgt} classes: they are "
                     "scored as images without any mapped finding (their detections of mapped classes count as false "
                     "positives).")
    if doc.get("exhaustive") is False:
        lines.append(NOT_EXHAUSTIVE.format(target=tgt, entry="Data_Entry_2017.csv"))
    elif doc.get("unboxed_findings"):
        lines.append(f"{doc['unboxed_findings']} finding(s) that the image-level labels give but the box list does not "
                     "box are ignore regions (the whole image of that class): a detection of that class there is "
                     "neither true nor false.")
    lines.append("– = no ground truth (or no internal run files).")
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
