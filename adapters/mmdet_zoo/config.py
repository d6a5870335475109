"""TrainSpec + architecture name -> the mmengine Config of mmdet's packaged file (see the package
docstring). Framework side: mmengine is imported inside the function."""
from __future__ import annotations

import copy

from adapters.mmdet_zoo.aligned import register_modules
from adapters.mmdet_frcnn.config import box_heads, model_native, packaged_config_dir, scratch_recipe
from adapters.spec import TrainSpec
from adapters.zoo import arch


def _shared_test_cfg(model, spec: TrainSpec) -> None:
    test_cfg = model.test_cfg.rcnn if "rcnn" in model.test_cfg else model.test_cfg
    test_cfg.score_thr = float(spec.score_thr)
    test_cfg.max_per_img = int(spec.max_det)
    test_cfg.nms.iou_threshold = float(spec.nms_iou)  # multiclass_nms: per class
    if "rpn" in model.test_cfg and spec.max_det > model.test_cfg.rpn.max_per_img:
        model.test_cfg.rpn.max_per_img = int(spec.max_det)


def arch_model_config(spec: TrainSpec, aligned: bool = False):
    """The packaged config of `spec.variant` (an `adapters.zoo.MMDET` name), adapted. `aligned`: the
    aligned variant's overrides are already in spec.native (adapters.mmdet_zoo.aligned); the one module
    they name that mmdet lacks is registered first."""
    from mmengine.config import Config

    if aligned:
        register_modules()

    cfg = Config.fromfile(str(packaged_config_dir() / arch("mmdet", spec.variant).config))
    model = cfg.model
    model.backbone.init_cfg = None  # never fetch torchvision:// or open-mmlab:// weights
    for head in box_heads(model):
        head.num_classes = spec.num_classes
    if spec.weights is None:  # from scratch: the one scratch builder of the Faster R-CNN adapter
        scratch_recipe(model)
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
