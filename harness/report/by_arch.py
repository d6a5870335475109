"""results.md's "by architecture" section: the models of a sweep grouped by the architecture they
ran (the family named on their protocol card's architecture row, e.g. "RetinaNet R50-FPN: detectron2
..." -> "RetinaNet R50-FPN"), so the same architecture in two frameworks sits on adjacent rows and
the framework effect reads directly (Δ against the group's first model). Models whose card names no
family (the Faster R-CNN / YOLOv5 presets) are left out; the section appears only when some family
has more than one model. Reads only the runs' metrics.json."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

FAMILY_SEPARATOR = ": "


def run_family(run_dir: str | Path) -> str | None:
    """The architecture family on a run's protocol card, or None."""
    try:
        rows = json.loads((Path(run_dir) / "metrics.json").read_text()).get("protocol") or []
    except (OSError, ValueError):
        return None
    for row in rows:
        value = row.get("value") if isinstance(row, dict) else None
        if row.get("key") == "architecture" and isinstance(value, str) and FAMILY_SEPARATOR in value:
            return value.split(FAMILY_SEPARATOR, 1)[0]
    return None


def families(runs: pd.DataFrame) -> dict[str, str]:
    """model name -> family, from the first run of each model that names one."""
    found: dict[str, str] = {}
    for _, run in runs[runs["kind"] == "model"].iterrows():
        if run["name"] not in found and (family := run_family(run["path"])):
            found[run["name"]] = family
    return found


def markdown(runs: pd.DataFrame, summ: pd.DataFrame) -> str | None:
    """The section, or None when no architecture is run by two models."""
    if runs.empty:
        return None
    by_model = families(runs)
    groups: dict[str, list[str]] = {}
    for name, family in by_model.items():
        groups.setdefault(family, []).append(name)
    if not any(len(names) > 1 for names in groups.values()):
        return None
    means = dict(zip(summ["name"], summ["map40 mean"]))
    lines = ["## mAP@0.4 by architecture (framework effect)", "",
             "Models grouped by the architecture their protocol card names; Δ = mAP@0.4 minus the group's first "
             "model (same protocol: see protocol.md).", "",
             "| architecture | model | mAP@0.4 | Δ |", "|---|---|---|---|"]
    for family in sorted(groups):
        names = sorted(groups[family])
        first = means.get(names[0], math.nan)
        for name in names:
            value = means.get(name, math.nan)
            delta = "–" if name == names[0] else f"{value - first:+.4f}"
            lines.append(f"| {family} | {name} | {value:.4f} | {delta} |")
    return "\n".join(lines) + "\n"
