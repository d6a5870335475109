"""Any detector of MMDetection's packaged configs listed in `adapters.zoo.MMDET`
(`model=mmdet model.arch=<config name>`: Faster R-CNN, Cascade R-CNN, RetinaNet R18/R50, FCOS, ATSS)
behind the shared `Detector`, with everything the Faster R-CNN adapter does (adapters.mmdet_frcnn:
training config, runner, trusted loading, resume, read-back, card).

Per architecture (`config.arch_model_config`): the packaged config as shipped, then the class count
on every box head (`bbox_head`, or each stage of `roi_head.bbox_head`), the shared post-processing in
`test_cfg` (one-stage: `test_cfg.score_thr / nms.iou_threshold / max_per_img`; two-stage: the same
under `test_cfg.rcnn`, and at least max_det RPN proposals), no ImageNet download
(`backbone.init_cfg=None`), and from scratch the scratch recipe of the Faster R-CNN adapter (GN in
backbone and neck, no frozen stages; the R-CNNs' box heads 4conv-1fc GN). The training schedule,
optimizer and pipeline are the shared ones of adapters.mmdet_frcnn (the packaged optimizer settings,
e.g. FCOS's bias lr x2 and gradient clipping, are replaced: the card's recipe rows show it).
"""
from adapters.mmdet_zoo.detector import MMDetCascade, MMDetCascadeAligned, MMDetDetector, MMDetRetinaNet, MMDetRetinaNetAligned

__all__ = ["MMDetCascade", "MMDetCascadeAligned", "MMDetDetector", "MMDetRetinaNet", "MMDetRetinaNetAligned"]
