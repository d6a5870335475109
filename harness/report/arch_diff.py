"""The differences between two builds of one architecture, derived from what each run recorded (its
metrics.json `architecture_facts`: adapters.archfacts, read from the framework's built model and
resolved config), item by item and by category: network, init, normalisation, loss, assignment,
sampling, schedule, data pipeline. Nothing here is typed per framework: a fact both sides recorded is
compared, a fact only one side has is listed as such.

Numbers compare with a relative tolerance: 1e-6, except the init category's measured statistics
(std × √fan_in of freshly initialised weights), which are estimates: 10%.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("network", "init", "normalisation", "loss", "assignment", "sampling", "schedule", "data pipeline")
# differences of these categories mean the two are not the same network
ARCHITECTURE_LEVEL = ("network",)
TOLERANCE = {"init": 0.1}
DEFAULT_TOLERANCE = 1e-6
MISSING = "(not recorded)"


@dataclass(frozen=True)
class Difference:
    category: str
    item: str
    a: Any
    b: Any

    @property
    def architecture_level(self) -> bool:
        return self.category in ARCHITECTURE_LEVEL


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=tol, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    return a == b


def _items(value: Any, prefix: str) -> dict[str, Any]:
    """A fact's leaves: a dict fact splits into "fact: key" items; lists stay whole."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_items(sub, f"{prefix}: {key}"))
        return out
    return {prefix: value}


def differences(a: dict, b: dict) -> list[Difference]:
    """Every item where the facts of build `a` and build `b` differ, in category order."""
    out = []
    for category in CATEGORIES:
        tol = TOLERANCE.get(category, DEFAULT_TOLERANCE)
        left, right = {}, {}
        for key, value in (a.get(category) or {}).items():
            left.update(_items(value, key))
        for key, value in (b.get(category) or {}).items():
            right.update(_items(value, key))
        for item in dict.fromkeys([*left, *right]):
            x, y = left.get(item, MISSING), right.get(item, MISSING)
            if not _close(x, y, tol):
                out.append(Difference(category, item, x, y))
    return out


def _cell(value: Any) -> str:
    text = str(value).replace("|", "/")
    return text if len(text) <= 160 else text[:157] + "..."


def markdown(pair: tuple[str, str], found: list[Difference]) -> str:
    """A table of the differences of one pair (models `pair`), or a line saying there is none."""
    a, b = pair
    if not found:
        return f"No difference between {a} and {b} in what both recorded.\n"
    lines = [f"| category | item | {a} | {b} |", "|---|---|---|---|"]
    lines += [f"| {d.category} | {_cell(d.item)} | {_cell(d.a)} | {_cell(d.b)} |" for d in found]
    return "\n".join(lines) + "\n"
