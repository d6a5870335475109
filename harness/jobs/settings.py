"""Config → settings: the report's and the "No finding" stage's settings objects, read once from the
composed Hydra config. The layers below (harness.report, harness.nofinding) take these plain objects
and never see a config node. A key left out (or null) takes the settings object's own default.
"""
from __future__ import annotations

from typing import Any

from harness.nofinding import NoFindingSettings, check_thresholds
from harness.report.analysis import AnalysisSettings
from harness.report.froc import FrocSettings
from harness.report.uncertainty import BootstrapSettings


def _get(node: Any, key: str) -> Any:
    if node is None:
        return None
    return node.get(key) if hasattr(node, "get") else getattr(node, key, None)


def bootstrap_settings(node: Any) -> BootstrapSettings:
    """`report.bootstrap` ({enabled, resamples, seed, ci}) -> BootstrapSettings."""
    casts = {"resamples": int, "seed": int, "ci": float, "enabled": bool}
    return BootstrapSettings(**{key: cast(_get(node, key)) for key, cast in casts.items()
                                if _get(node, key) is not None})


def nofinding_settings(node: Any) -> NoFindingSettings:
    """`nofinding` ({low, high, scoring, grid: {low, high}}) -> NoFindingSettings (thresholds checked)."""
    values: dict[str, Any] = {key: float(_get(node, key)) for key in ("low", "high") if _get(node, key) is not None}
    if _get(node, "scoring") is not None:
        values["scoring"] = str(_get(node, "scoring"))
    grid = _get(node, "grid")
    for key in ("low", "high"):
        if _get(grid, key):  # an empty grid takes the default one
            values[f"grid_{key}"] = tuple(float(v) for v in _get(grid, key))
    settings = NoFindingSettings(**values)
    check_thresholds(settings.low, settings.high)
    return settings


def analysis_settings(node: Any) -> AnalysisSettings:
    """`report.analysis` ({enabled, score_thr, gallery}) -> AnalysisSettings."""
    casts = {"enabled": bool, "score_thr": float, "gallery": int}
    return AnalysisSettings(**{key: cast(_get(node, key)) for key, cast in casts.items() if _get(node, key) is not None})


def froc_settings(node: Any) -> FrocSettings:
    """`report.froc` ({enabled, rule, fp_budget}) -> FrocSettings (rule and budget checked)."""
    casts = {"enabled": bool, "rule": str, "fp_budget": float}
    return FrocSettings(**{key: cast(_get(node, key)) for key, cast in casts.items() if _get(node, key) is not None})
