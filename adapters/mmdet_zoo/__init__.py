"""Any detector of MMDetection's packaged configs listed in `adapters.zoo.MMDET`
(`model=mmdet model.arch=<config name>`: Faster R-CNN, Cascade R-CNN, RetinaNet R18/R50, FCOS, ATSS)
behind the shared `Detector`, with everything the Faster R-CNN adapter does (adapters.mmdet_frcnn:
training config, runner, trusted loading, resume, read-back, card).

Per architecture (`config.arch_model_config`): the packaged config as shipped, then the class count
on every box head (`bbox_head`, or each stage of `roi_head.bbox_head`), the shared post-processing in
`test_cfg` (one-stage: `test_cfg.score_thr / nms.iou_threshold / max_per_img`; two-stage: the same
under `test_cfg.rcnn`, and at least max_det RPN proposals), no ImageNet download
(`backbone.init_cfg=None`), and from scratch the one scratch builder it shares with the Faster R-CNN
adapter (`adapters.mmdet_frcnn.config.scratch_recipe`: GN in backbone and neck, no frozen stages,
`zero_init_residual=False` as mmdet's scratch config; the R-CNNs' box heads 4conv-1fc GN).
The `*_aligned` presets add the overrides of `adapters.mmdet_zoo.aligned` (docs/same_arch.md);
`architecture_facts()` reads the built model back (`adapters.mmdet_zoo.facts`). The training schedule,
optimizer and pipeline are the shared ones of adapters.mmdet_frcnn (the packaged optimizer settings,
e.g. FCOS's bias lr x2 and gradient clipping, are replaced: the card's recipe rows show it).
"""
from adapters.mmdet_zoo.detector import (
    MMDetCascade, MMDetCascadeAligned, MMDetDetector, MMDetRetinaNet, MMDetRetinaNetAligned,
)

__all__ = [
    "MMDetCascade", "MMDetCascadeAligned", "MMDetDetector", "MMDetRetinaNet", "MMDetRetinaNetAligned",
]
