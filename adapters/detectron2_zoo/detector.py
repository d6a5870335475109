"""`Detectron2Detector`: the detectron2 Faster R-CNN adapter made general over the model zoo's configs."""
from __future__ import annotations

from adapters.byarch import ByArchitecture, with_architecture
from adapters.detectron2_frcnn.detector import Detectron2FasterRCNN
from adapters.zoo import DETECTRON2


class Detectron2Detector(ByArchitecture, Detectron2FasterRCNN):
    """Any `adapters.zoo.DETECTRON2` architecture (spec.variant = model.arch) via detectron2."""

    name = "detectron2"
    zoo_framework = "detectron2"
    default_variant = "COCO-Detection/retinanet_R_50_FPN_3x.yaml"
    variants = tuple(DETECTRON2)

    def recipe(self) -> list[dict]:
        ran = self.ran.details
        built = f"{ran.get('backbone_norm') or 'FrozenBN'} backbone+FPN"
        if "RetinaNet" not in self.arch.family:
            built += f", {ran.get('head', 'box head')}"
        return with_architecture(super().recipe(), "detectron2", self.arch.config, self.arch.family, built)


class Detectron2RetinaNet(Detectron2Detector):
    """Preset: RetinaNet R50-FPN (experiment=same_arch)."""

    name, default_variant = "detectron2_retinanet", "COCO-Detection/retinanet_R_50_FPN_3x.yaml"


class Detectron2Cascade(Detectron2Detector):
    """Preset: Cascade R-CNN R50-FPN (experiment=same_arch)."""

    name, default_variant = "detectron2_cascade", "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml"
