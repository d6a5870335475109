"""`MMDetDetector`: the MMDetection Faster R-CNN adapter made general over mmdet's packaged configs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from adapters.aligned import aligned_family
from adapters.byarch import ByArchitecture, with_architecture
from adapters.mmdet_frcnn.config import train_config
from adapters.mmdet_frcnn.detector import MMDetFasterRCNN
from adapters.mmdet_zoo import aligned
from adapters.mmdet_zoo.config import arch_model_config
from adapters.zoo import MMDET
from harness.split import Split


class MMDetDetector(ByArchitecture, MMDetFasterRCNN):
    """Any `adapters.zoo.MMDET` architecture (spec.variant = model.arch) via MMDetection. `aligned`
    (the `*_aligned` presets): aligned with detectron2's build of the same architecture
    (adapters.aligned): its overrides join spec.native with their reasons, so the card states them."""

    name = "mmdet"
    zoo_framework = "mmdet"
    default_variant = "retinanet_r50_fpn_1x_coco"
    variants = tuple(MMDET)
    aligned = False

    def __init__(self, spec) -> None:
        super().__init__(spec)
        if self.aligned:
            native, reasons = aligned.overrides(self.arch.family)
            self.spec = dataclasses.replace(self.spec, native={**native, **(self.spec.native or {})},
                                            reasons={**reasons, **(self.spec.reasons or {})})

    def model_config(self):
        return arch_model_config(self.spec, aligned=self.aligned)

    def build_config(self, split: Split, workdir: Path, run_name: str | None = None):
        schedule = aligned.iteration_schedule() if self.aligned else None
        return train_config(self.spec, split, workdir, run_name, self.model_config(), iteration_schedule=schedule)

    def architecture_facts(self) -> dict:
        """What the built model and its training config are, by category (adapters.mmdet_zoo.facts),
        for the report's list of differences between frameworks (built on CPU, not trained)."""
        from adapters.mmdet_zoo.facts import facts

        return facts(self)

    def recipe(self) -> list[dict]:
        ran = self.ran.get("recipe") or {}
        norm = "GN" if self.spec.weights is None else "BN"
        built = f"{norm} backbone+neck, {ran.get('head') or 'packaged head'}"
        family = aligned_family(self.arch.family, self.aligned)
        return with_architecture(super().recipe(), "mmdet", self.arch.config, family, built)


class MMDetRetinaNet(MMDetDetector):
    """Preset: RetinaNet R50-FPN (experiment=same_arch)."""

    name, default_variant = "mmdet_retinanet", "retinanet_r50_fpn_1x_coco"


class MMDetCascade(MMDetDetector):
    """Preset: Cascade R-CNN R50-FPN (experiment=same_arch, experiment=vinbigdata_2nd)."""

    name, default_variant = "mmdet_cascade", "cascade-rcnn_r50_fpn_1x_coco"


class MMDetRetinaNetAligned(MMDetRetinaNet):
    """Preset: RetinaNet R50-FPN aligned with detectron2's (experiment=same_arch)."""

    name, aligned = "mmdet_retinanet_aligned", True


class MMDetCascadeAligned(MMDetCascade):
    """Preset: Cascade R-CNN R50-FPN aligned with detectron2's (experiment=same_arch)."""

    name, aligned = "mmdet_cascade_aligned", True
