"""What the general (architecture-by-name) adapters share: the name check at construction
(`ByArchitecture`), the card's architecture row named after the packaged config the model was built
from, and the native defaults of NMS-free detectors."""
from __future__ import annotations

from typing import Any

from adapters.card import protocol_row
from adapters.zoo import Arch, arch

NMS_FREE = "none (NMS-free)"


class ByArchitecture:
    """Mixin before a framework's detector class: spec.variant is `model.arch`, an `adapters.zoo` name
    of `zoo_framework`; an unknown one fails at construction, listing the names (before anything is
    built or imported)."""

    zoo_framework = ""
    arch: Arch

    def __init__(self, spec) -> None:
        if spec.variant:
            arch(self.zoo_framework, spec.variant)
        super().__init__(spec)  # type: ignore[call-arg]
        self.arch = arch(self.zoo_framework, spec.variant)


def with_architecture(rows: list[dict], framework: str, arch: str, family: str, built: str) -> list[dict]:
    """`rows` with the architecture row replaced by the packaged config's name, its family and what
    was built from it (`built`: the adapter's own description of the model it read back)."""
    value = f"{family}: {framework} {arch} ({built})"
    old = next((r for r in rows if r.get("key") == "architecture"), {})
    row = protocol_row("architecture", "architecture", value, None,
                       note="the framework's packaged config; class count and data replaced",
                       source=old.get("source", "asked"), read_from=old.get("read_from", ""))
    return [row if r.get("key") == "architecture" else r for r in rows]


def nms_free_protocol(native: dict[str, tuple[Any, str]]) -> dict[str, tuple[Any, str]]:
    """The native defaults of the shared settings for an NMS-free detector: there is no NMS IoU, and
    each query carries one class."""
    return {**native, "nms_iou": (NMS_FREE, "the detector keeps its top queries; no NMS to set"),
            "multi_label": (False, "one class per query")}
