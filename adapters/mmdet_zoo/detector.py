"""`MMDetDetector`: the MMDetection Faster R-CNN adapter made general over mmdet's packaged configs."""
from __future__ import annotations

from adapters.byarch import ByArchitecture, with_architecture
from adapters.mmdet_frcnn.detector import MMDetFasterRCNN
from adapters.mmdet_zoo.config import arch_model_config
from adapters.zoo import MMDET


class MMDetDetector(ByArchitecture, MMDetFasterRCNN):
    """Any `adapters.zoo.MMDET` architecture (spec.variant = model.arch) via MMDetection."""

    name = "mmdet"
    zoo_framework = "mmdet"
    default_variant = "retinanet_r50_fpn_1x_coco"
    variants = tuple(MMDET)

    def model_config(self):
        return arch_model_config(self.spec)

    def recipe(self) -> list[dict]:
        ran = self.ran.details
        norm = "GN" if self.spec.weights is None else "BN"
        built = f"{norm} backbone+neck, {ran.get('head') or 'packaged head'}"
        return with_architecture(super().recipe(), "mmdet", self.arch.config, self.arch.family, built)


class MMDetRetinaNet(MMDetDetector):
    """Preset: RetinaNet R50-FPN (experiment=same_arch)."""

    name, default_variant = "mmdet_retinanet", "retinanet_r50_fpn_1x_coco"


class MMDetCascade(MMDetDetector):
    """Preset: Cascade R-CNN R50-FPN (experiment=same_arch, experiment=vinbigdata_2nd)."""

    name, default_variant = "mmdet_cascade", "cascade-rcnn_r50_fpn_1x_coco"
