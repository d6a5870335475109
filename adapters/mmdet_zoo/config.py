"""TrainSpec + architecture name -> the mmengine Config of mmdet's packaged file (see the package
docstring). Framework side: mmengine is imported inside the function."""
from __future__ import annotations

import copy

from adapters.mmdet_frcnn.config import GN, model_native, packaged_config_dir
from adapters.spec import TrainSpec
from adapters.zoo import arch


def _box_heads(model) -> list:
    """The model's box heads: a one-stage `bbox_head`, or the R-CNN stage heads (Cascade: a list)."""
    if "roi_head" in model:
        heads = model.roi_head.bbox_head
        return list(heads) if isinstance(heads, (list, tuple)) else [heads]
    return [model.bbox_head]


def _shared_test_cfg(model, spec: TrainSpec) -> None:
    test_cfg = model.test_cfg.rcnn if "rcnn" in model.test_cfg else model.test_cfg
    test_cfg.score_thr = float(spec.score_thr)
    test_cfg.max_per_img = int(spec.max_det)
    test_cfg.nms.iou_threshold = float(spec.nms_iou)  # multiclass_nms: per class
    if "rpn" in model.test_cfg and spec.max_det > model.test_cfg.rpn.max_per_img:
        model.test_cfg.rpn.max_per_img = int(spec.max_det)


def arch_model_config(spec: TrainSpec):
    """The packaged config of `spec.variant` (an `adapters.zoo.MMDET` name), adapted."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(packaged_config_dir() / arch("mmdet", spec.variant).config))
    model = cfg.model
    model.backbone.init_cfg = None  # never fetch torchvision:// or open-mmlab:// weights
    heads = _box_heads(model)
    for head in heads:
        head.num_classes = spec.num_classes
    if spec.weights is None:  # from scratch: GN everywhere, all stages trainable (configs/scratch)
        model.backbone.update(frozen_stages=-1, norm_cfg=copy.deepcopy(GN), norm_eval=False)
        model.neck.norm_cfg = copy.deepcopy(GN)
        if "roi_head" in model:
            for head in heads:
                head.update(type="Shared4Conv1FCBBoxHead", conv_out_channels=256, norm_cfg=copy.deepcopy(GN))
    if spec.channels == 1:
        preprocessor = model.data_preprocessor
        model.backbone.in_channels = 1
        preprocessor.update(mean=[sum(preprocessor.mean) / 3], std=[sum(preprocessor.std) / 3], bgr_to_rgb=False)
    _shared_test_cfg(model, spec)
    cfg.default_scope = "mmdet"
    overrides = model_native(spec.native or {})
    if overrides:
        cfg.merge_from_dict(copy.deepcopy(overrides))
    return cfg
