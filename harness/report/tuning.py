"""The report's "tuned vs default" table for ensemble settings tuned on out-of-fold data.

Reads the `tuning` records that `hparams_search=wbf_optuna` leaves in
`<sweep>/ensemble/<method>-tuned/fold<k>/metrics.json` (harness/jobs/ensemble_tuning.py).
"""
from __future__ import annotations

import json
from pathlib import Path

METRIC_TITLES = {"map40": "mAP@0.4", "voc_map40": "VOC mAP@0.4"}


def collect_tuning(sweep_dir: str | Path) -> list[dict]:
    """[{name, fold, **tuning record}] for every tuned ensemble fold under the sweep, by (name, fold)."""
    found = []
    for path in sorted(Path(sweep_dir).glob("ensemble/*/fold*/metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # the results table lists unreadable files
        record = metrics.get("tuning") if isinstance(metrics, dict) else None
        if isinstance(record, dict):
            found.append({"name": f"ensemble:{metrics.get('variant')}", "fold": int(metrics["fold"]),
                          "path": str(path), **record})
    return sorted(found, key=lambda r: (r["name"], r["fold"]))


def _weights(settings: dict) -> str:
    return ", ".join(f"{model} {w:.2f}" for model, w in settings.get("weights", {}).items())


def tuning_markdown(records: list[dict]) -> list[str]:
    """Lines of the "tuned vs default" section (empty without records)."""
    if not records:
        return []
    lines = ["", "## Ensemble settings tuned on out-of-fold data (nested)", "",
             "Each scored fold's settings were chosen by Optuna (TPE, Hydra's Optuna sweeper) on the other folds' "
             "predictions only; the fold itself was never read while tuning. *default* is the same ensemble with "
             "the configured settings; both are scored on the scored fold. *OOF* is the best trial's mean over the "
             "tuning folds.", "",
             "| ensemble | fold | tuned on folds | trials | iou_thr | skip_box_thr | weights | metric | OOF | default | "
             "tuned | Δ |", "|" + "---|" * 12]
    for rec in records:
        tuned = rec["tuned"]["settings"]
        metric = rec["metric"]
        lines.append(
            f"| {rec['name']} | fold{rec['fold']} | {' '.join(str(f) for f in rec['tuned_on_folds'])} | "
            f"{rec['n_trials']} | {tuned['iou_thr']:.3f} | {tuned['skip_box_thr']:.4f} | {_weights(tuned)} | "
            f"{METRIC_TITLES.get(metric, metric)} | {rec['objective']:.4f} | {rec['default'][metric]:.4f} | "
            f"{rec['tuned'][metric]:.4f} | {rec['gain']:+.4f} |")
    for name in dict.fromkeys(rec["name"] for rec in records):
        group = [rec for rec in records if rec["name"] == name]
        metric = group[0]["metric"]
        default = sum(rec["default"][metric] for rec in group) / len(group)
        tuned = sum(rec["tuned"][metric] for rec in group) / len(group)
        gain = sum(rec["gain"] for rec in group) / len(group)
        lines.append(f"| **{name}** | **mean of {len(group)}** | | | | | | {METRIC_TITLES.get(metric, metric)} | | "
                     f"{default:.4f} | {tuned:.4f} | **{gain:+.4f}** |")
    default = records[0]["default"]["settings"]
    lines += ["", f"Default settings: iou_thr {default['iou_thr']}, skip_box_thr {default['skip_box_thr']}, "
                  f"weights {_weights(default)} ({default['method']}, conf_type {default['conf_type']})."]
    return lines


def tuning_rows(records: list[dict]) -> list[dict]:
    """results.csv rows (kind "tuning"): the tuned score on the scored fold in the metric's column,
    the gain over the defaults in "delta"; one "mean" row per tuned ensemble."""
    rows = []
    for rec in records:
        tuned = rec["tuned"]["settings"]
        rows.append({"kind": "tuning", "name": f"{rec['name']} vs default", "fold": f"fold{rec['fold']}",
                     "variant": f"iou_thr {tuned['iou_thr']:.4g}, skip_box_thr {tuned['skip_box_thr']:.4g}, "
                                f"weights {_weights(tuned)}; tuned on folds "
                                f"{' '.join(str(f) for f in rec['tuned_on_folds'])}",
                     rec["metric"]: rec["tuned"][rec["metric"]], "delta": rec["gain"]})
    for name in dict.fromkeys(rec["name"] for rec in records):
        group = [rec for rec in records if rec["name"] == name]
        metric = group[0]["metric"]
        rows.append({"kind": "tuning", "name": f"{name} vs default", "fold": "mean", "variant": "",
                     metric: sum(rec["tuned"][metric] for rec in group) / len(group),
                     "delta": sum(rec["gain"] for rec in group) / len(group)})
    return rows


__all__ = ["collect_tuning", "tuning_markdown", "tuning_rows"]
