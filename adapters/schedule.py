"""A native learning-rate schedule scaled to a run of another length, one rule for every framework:
the step milestones keep their fraction of training, and the warmup is the native one capped at a
fraction of the run (a short run would otherwise spend all of it warming up)."""
from __future__ import annotations

import math
from typing import Sequence

WARMUP_FRACTION = 0.1


def scaled_milestones(native_steps: Sequence[int], native_length: int, length: int) -> list[int]:
    """The native milestones at the same fractions of a run of `length` (iterations or epochs),
    inside the run (0 < m < length), without duplicates."""
    steps = sorted({round(step / native_length * length) for step in native_steps})
    return [step for step in steps if 0 < step < length]


def warmup_length(native_warmup: int, total: int, fraction: float = WARMUP_FRACTION) -> int:
    """min(native warmup, ceil(fraction x total)), at least 1."""
    return int(max(1, min(native_warmup, math.ceil(fraction * total))))
