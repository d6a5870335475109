"""`Detectron2Detector`: the detectron2 Faster R-CNN adapter made general over the model zoo's configs."""
from __future__ import annotations

import dataclasses

from adapters.aligned import aligned_family
from adapters.byarch import ByArchitecture, with_architecture
from adapters.detectron2_frcnn.detector import Detectron2FasterRCNN
from adapters.detectron2_zoo import aligned
from adapters.zoo import DETECTRON2


class Detectron2Detector(ByArchitecture, Detectron2FasterRCNN):
    """Any `adapters.zoo.DETECTRON2` architecture (spec.variant = model.arch) via detectron2. `aligned`
    (the `*_aligned` presets): aligned with mmdet's build of the same architecture (adapters.aligned):
    its overrides join spec.native with their reasons, so the card states them."""

    name = "detectron2"
    zoo_framework = "detectron2"
    default_variant = "COCO-Detection/retinanet_R_50_FPN_3x.yaml"
    variants = tuple(DETECTRON2)
    aligned = False

    def __init__(self, spec) -> None:
        super().__init__(spec)
        if self.aligned:
            aligned.register_modules()
            native, reasons = aligned.overrides(self.arch.family)
            self.spec = dataclasses.replace(self.spec, native={**native, **(self.spec.native or {})},
                                            reasons={**reasons, **(self.spec.reasons or {})})

    def architecture_facts(self) -> dict:
        """What the built model and its training config are, by category (adapters.detectron2_zoo.facts),
        for the report's list of differences between frameworks (built on CPU, not trained)."""
        from adapters.detectron2_zoo.facts import facts

        return facts(self)

    def recipe(self) -> list[dict]:
        ran = self.ran.details
        built = f"{ran.get('backbone_norm') or 'FrozenBN'} backbone+FPN"
        if "RetinaNet" not in self.arch.family:
            built += f", {ran.get('head', 'box head')}"
        family = aligned_family(self.arch.family, self.aligned)
        return with_architecture(super().recipe(), "detectron2", self.arch.config, family, built)


class Detectron2RetinaNet(Detectron2Detector):
    """Preset: RetinaNet R50-FPN (experiment=same_arch)."""

    name, default_variant = "detectron2_retinanet", "COCO-Detection/retinanet_R_50_FPN_3x.yaml"


class Detectron2Cascade(Detectron2Detector):
    """Preset: Cascade R-CNN R50-FPN (experiment=same_arch)."""

    name, default_variant = "detectron2_cascade", "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml"


class Detectron2RetinaNetAligned(Detectron2RetinaNet):
    """Preset: RetinaNet R50-FPN aligned with mmdet's (experiment=same_arch)."""

    name, aligned = "detectron2_retinanet_aligned", True


class Detectron2CascadeAligned(Detectron2Cascade):
    """Preset: Cascade R-CNN R50-FPN aligned with mmdet's (experiment=same_arch)."""

    name, aligned = "detectron2_cascade_aligned", True
