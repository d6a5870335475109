"""When two recorded settings are the same: the one comparison the protocol card and the adapters share.

Values are JSON-like (numbers, strings, bools, None, lists, dicts) as a metrics.json row holds them.
Numbers compare with a relative tolerance, so 0.0005 == 5e-4 and 24 == 24.0; NaN equals only NaN; a bool
is not a number (True != 1); lists and dicts compare element by element with the same rule; anything else
compares as its JSON text.
"""
from __future__ import annotations

import json
import math
from typing import Any

REL_TOL = 1e-9


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(a: Any, b: Any) -> bool:
    """JSON equality with a relative tolerance for numbers (see the module doc)."""
    if _is_number(a) and _is_number(b):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
