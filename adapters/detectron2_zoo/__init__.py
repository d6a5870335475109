"""Any detector of detectron2's model zoo listed in `adapters.zoo.DETECTRON2`
(`model=detectron2 model.arch=<model_zoo/configs path>`: Faster R-CNN, RetinaNet, Cascade R-CNN, R50 /
R101 FPN) behind the shared `Detector`, with everything the Faster R-CNN adapter does
(adapters.detectron2_frcnn: the config mapping, trainer, resume, read-back, card).

Per architecture: the zoo YAML is merged as shipped (`variant_config`), then the same shared settings
as for Faster R-CNN: class count (`ROI_HEADS` and `RETINANET.NUM_CLASSES`), score threshold, NMS IoU
(`ROI_HEADS.*_TEST` and `RETINANET.*_TEST`), `TEST.DETECTIONS_PER_IMAGE`, sizes, solver, the scaled
3x schedule, and from scratch the zoo's scratch recipe (GN backbone/FPN, nothing frozen, 4conv-1fc GN
box head for the R-CNNs). The zoo's Cascade R-CNN is a Cascade *Mask* R-CNN: `MODEL.MASK_ON` is off
(the data has boxes only). The card reads the post-processing from the built model
(`adapters.detectron2_frcnn.heads`: RetinaNet's own attributes, Cascade's last stage).
The `*_aligned` presets add the overrides of `adapters.detectron2_zoo.aligned` (docs/same_arch.md);
`architecture_facts()` reads the built model back (`adapters.detectron2_zoo.facts`).
"""
from adapters.detectron2_zoo.detector import (
    Detectron2Cascade, Detectron2CascadeAligned, Detectron2Detector, Detectron2RetinaNet, Detectron2RetinaNetAligned,
)

__all__ = [
    "Detectron2Cascade", "Detectron2CascadeAligned", "Detectron2Detector", "Detectron2RetinaNet", "Detectron2RetinaNetAligned",
]
