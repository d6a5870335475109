"""What the general (architecture-by-name) adapters share on the protocol card: the architecture row
named after the packaged config it was built from, and the NMS rows of NMS-free detectors."""
from __future__ import annotations

from typing import Any

from adapters.card import protocol_row

NMS_FREE = "none (NMS-free)"


def with_architecture(rows: list[dict], framework: str, arch: str, family: str, built: str) -> list[dict]:
    """`rows` with the architecture row replaced by the packaged config's name, its family and what
    was built from it (`built`: the adapter's own description of the model it read back)."""
    value = f"{family}: {framework} {arch} ({built})"
    row = protocol_row("architecture", "architecture", value, None,
                       note="the framework's packaged config; class count and data replaced")
    return [row if r.get("key") == "architecture" else r for r in rows]


def nms_free_protocol(native: dict[str, tuple[Any, str]]) -> dict[str, tuple[Any, str]]:
    """The native defaults of the shared settings for an NMS-free detector: there is no NMS IoU, and
    each query carries one class."""
    return {**native, "nms_iou": (NMS_FREE, "the detector keeps its top queries; no NMS to set"),
            "multi_label": (False, "one class per query")}
