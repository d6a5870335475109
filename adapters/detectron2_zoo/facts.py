"""detectron2's build of a zoo architecture as architecture facts (adapters.archfacts): the model
built on CPU from the adapter's config (`build_config`, the schedule for `n_train` images), each fact
read from the built modules or the resolved CfgNode."""
from __future__ import annotations

import inspect
from typing import Any

from adapters import archfacts as af
from adapters.detectron2_frcnn.config import build_config

NOMINAL_TRAIN_IMAGES = 96  # the schedule's images per epoch when the detector has not trained


def build(detector, n_train: int | None = None):
    """(cfg, model) on CPU, initialised with the spec's seed."""
    import torch
    from detectron2.modeling import build_model
    from detectron2.utils.env import seed_all_rng

    n = n_train or (detector.consumed or {}).get("images") or NOMINAL_TRAIN_IMAGES
    cfg = build_config(detector.spec, n_train=n)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    seed_all_rng(cfg.SEED)
    torch.manual_seed(cfg.SEED)
    model = build_model(cfg)
    model.train()
    return cfg, model


def groups(model) -> dict[str, Any]:
    """The module groups: backbone (ResNet), neck (FPN and its extra levels), rpn, head."""
    out = {"backbone": model.backbone.bottom_up, "neck": model.backbone}
    if hasattr(model, "proposal_generator"):
        out["rpn"] = model.proposal_generator
        out["head"] = model.roi_heads
    else:
        out["head"] = model.head
    return out


def _neck_counts(model) -> int:
    return af.param_count(model.backbone) - af.param_count(model.backbone.bottom_up)


def _matcher(matcher, border: int | None) -> dict[str, Any]:
    thresholds = [t for t in matcher.thresholds if abs(t) != float("inf")]
    labels = list(matcher.labels)
    neg = thresholds[0] if labels[0] == 0 else None
    pos = thresholds[labels.index(1) - 1] if 1 in labels else None
    return {"positive IoU >=": pos, "negative IoU <": neg,
            "low-quality matches": af.low_quality(True if matcher.allow_low_quality_matches else None),
            "anchors crossing the border": "used" if border is None or border < 0 else f"dropped beyond {border} px"}


def _resnet(facts, backbone) -> list:
    """Network facts of the ResNet; returns the residual branches' last norms."""
    stages = [getattr(backbone, name) for name in ("res2", "res3", "res4", "res5") if hasattr(backbone, name)]
    first = stages[1][0]
    facts["network"]["backbone"] = f"ResNet, blocks {[len(stage) for stage in stages]}"
    facts["network"]["backbone stride on"] = "1x1 conv" if tuple(first.conv1.stride) == (2, 2) else "3x3 conv"
    facts["network"]["backbone norm"] = af.norm_kinds([backbone])
    facts["network"]["backbone trainable params"] = af.trainable_count(backbone)
    return [block.conv3.norm if hasattr(block, "conv3") else block.conv2.norm for stage in stages for block in stage]


def _neck(facts, model) -> None:
    fpn = model.backbone
    facts["network"]["neck norm (laterals, outputs)"] = af.norm_kinds([*fpn.lateral_convs, *fpn.output_convs])
    top = fpn.top_block
    kind = type(top).__name__
    if kind == "LastLevelMaxPool":
        facts["network"]["neck extra levels"] = "max-pool of the last output"
    elif kind == "LastLevelP6P7":
        source = "C5 (backbone)" if top.in_feature.startswith("res") else "P5 (neck output)"
        facts["network"]["neck extra levels"] = f"stride-2 convs on {source}, ReLU before each but the first"
        facts["network"]["neck extra convs norm"] = af.norm_kinds([top.p6, top.p7])
    else:
        facts["network"]["neck extra levels"] = kind
    facts["network"]["neck levels"] = len(fpn._out_features)


def _schedule(facts, cfg) -> None:
    solver = cfg.SOLVER
    facts["schedule"].update({
        "iterations": int(solver.MAX_ITER), "lr steps (iteration)": [int(s) for s in solver.STEPS],
        "lr step factor": float(solver.GAMMA), "warmup iterations": int(solver.WARMUP_ITERS),
        "warmup": f"{solver.WARMUP_METHOD} from {solver.WARMUP_FACTOR:g}", "momentum": float(solver.MOMENTUM),
        "weight decay on norm layers": float(solver.WEIGHT_DECAY_NORM),
        "weight decay on biases": float(solver.WEIGHT_DECAY if solver.WEIGHT_DECAY_BIAS is None
                                        else solver.WEIGHT_DECAY_BIAS),
        "bias lr factor": float(solver.BIAS_LR_FACTOR)})


def _data(facts, cfg, model) -> None:
    sizes = tuple(cfg.INPUT.MIN_SIZE_TRAIN)
    if len(sizes) == 1 and sizes[0] == cfg.INPUT.MAX_SIZE_TRAIN:
        resize = f"keep ratio, longer side {sizes[0]}"
    else:
        resize = f"keep ratio, shorter side {list(sizes)}, longer side <= {cfg.INPUT.MAX_SIZE_TRAIN}"
    facts["data pipeline"]["train resize"] = resize
    facts["data pipeline"]["batch padded to a multiple of"] = int(model.backbone.size_divisibility)
    facts["data pipeline"]["aspect-ratio grouped batches"] = bool(cfg.DATALOADER.ASPECT_RATIO_GROUPING)
    order = slice(None, None, -1) if cfg.INPUT.FORMAT == "BGR" else slice(None)
    facts["normalisation"]["pixel mean (RGB)"] = af.round_list(model.pixel_mean.flatten().tolist()[order], 3)
    facts["normalisation"]["pixel std (RGB)"] = af.round_list(model.pixel_std.flatten().tolist()[order], 3)


def _retinanet(facts, model) -> None:
    head = model.head
    facts["network"]["head convs (cls, box)"] = [sum(type(m).__name__ == "Conv2d" for m in head.cls_subnet),
                                                 sum(type(m).__name__ == "Conv2d" for m in head.bbox_subnet)]
    facts["network"]["head norm"] = af.norm_kinds([head.cls_subnet, head.bbox_subnet])
    facts["network"]["anchors (w, h) per level"] = [af.anchor_shapes(a) for a in model.anchor_generator.cell_anchors]
    facts["network"]["anchor centre offset"] = float(model.anchor_generator.offset)
    facts["network"]["box coder weights"] = af.round_list(model.box2box_transform.weights, 3)
    facts["init"]["head cls prior bias"] = round(float(head.cls_score.bias.detach().mean()), 3)
    momentum = getattr(model, "loss_normalizer_momentum",
                       inspect.signature(model._ema_update).parameters["momentum"].default)
    facts["loss"]["cls loss"] = f"focal(alpha={model.focal_loss_alpha:g}, gamma={model.focal_loss_gamma:g})"
    facts["loss"]["box loss"] = af.box_loss(model.box_reg_loss_type, model.smooth_l1_beta)
    facts["loss"]["loss normaliser"] = ("positive anchors in the batch" if momentum == 0
                                        else f"EMA of positive anchors (momentum {momentum:g})")
    facts["assignment"]["anchors"] = _matcher(model.anchor_matcher, None)
    facts["sampling"]["anchors"] = "all (no sampling)"
    facts["sampling"]["test candidates per level"] = int(model.test_topk_candidates)


def _rpn(facts, rpn) -> None:
    facts["network"]["rpn anchors (w, h) per level"] = [af.anchor_shapes(a) for a in rpn.anchor_generator.cell_anchors]
    facts["network"]["rpn box coder weights"] = af.round_list(rpn.box2box_transform.weights, 3)
    facts["loss"]["rpn box loss"] = af.box_loss(rpn.box_reg_loss_type, rpn.smooth_l1_beta)
    facts["loss"]["rpn loss weights (cls, box)"] = [float(rpn.loss_weight["loss_rpn_cls"]),
                                                   float(rpn.loss_weight["loss_rpn_loc"])]
    facts["assignment"]["rpn anchors"] = _matcher(rpn.anchor_matcher, rpn.anchor_boundary_thresh)
    facts["sampling"]["rpn anchors"] = {"per image": int(rpn.batch_size_per_image),
                                        "positive fraction": float(rpn.positive_fraction)}
    facts["sampling"]["proposals (train): per level before NMS, NMS IoU, kept"] = [
        int(rpn.pre_nms_topk[True]), float(rpn.nms_thresh), int(rpn.post_nms_topk[True])]
    facts["sampling"]["proposals (test): per level before NMS, NMS IoU, kept"] = [
        int(rpn.pre_nms_topk[False]), float(rpn.nms_thresh), int(rpn.post_nms_topk[False])]


def _cascade(facts, heads) -> None:
    stages = len(heads.box_head)
    pooler = heads.box_pooler.level_poolers[0]
    facts["network"]["RoI pooling"] = {"output": list(pooler.output_size) if isinstance(pooler.output_size, tuple)
                                       else pooler.output_size, "sampling ratio": int(pooler.sampling_ratio),
                                       "aligned": bool(pooler.aligned)}
    facts["network"]["R-CNN stages"] = stages
    box_head = heads.box_head[0]
    facts["network"]["box head (convs, fcs)"] = [len(getattr(box_head, "conv_norm_relus", [])),
                                                 len(getattr(box_head, "fcs", []))]
    facts["network"]["box head norm"] = af.norm_kinds([box_head])
    predictors = heads.box_predictor
    facts["network"]["box regression class-agnostic"] = [p.bbox_pred.out_features == 4 for p in predictors]
    facts["network"]["box coder weights per stage"] = [af.round_list(p.box2box_transform.weights, 2)
                                                       for p in predictors]
    facts["init"]["box head fc std x sqrt(fan_in)"] = af.init_scale(box_head, ("Linear",))
    facts["init"]["box head conv std x sqrt(fan_in)"] = af.init_scale(box_head, ("Conv2d",))
    facts["init"]["box predictor std x sqrt(fan_in) (cls, box)"] = [
        af.init_scale(predictors[0].cls_score), af.init_scale(predictors[0].bbox_pred)]
    facts["loss"]["R-CNN box loss per stage"] = [af.box_loss(p.box_reg_loss_type, p.smooth_l1_beta) for p in predictors]
    facts["loss"]["R-CNN stage loss weights"] = [float(p.loss_weight.get("loss_box_reg", 1.0)) for p in predictors]
    scale = getattr(heads, "feature_gradient_scale", 1.0 / stages)  # CascadeROIHeads._run_stage: 1/stages
    facts["loss"]["gradient into pooled features, per stage"] = round(float(scale), 4)
    facts["assignment"]["R-CNN stages"] = [_matcher(m, None) for m in heads.proposal_matchers]
    facts["sampling"]["R-CNN stage 1"] = {"per image": int(heads.batch_size_per_image),
                                          "positive fraction": float(heads.positive_fraction),
                                          "ground truth added": bool(heads.proposal_append_gt)}
    facts["sampling"]["R-CNN stages 2+"] = "the previous stage's boxes, refined and re-matched (no new sample)"


def facts(detector, n_train: int | None = None) -> dict[str, dict[str, Any]]:
    """The architecture facts of `detector` (a Detectron2Detector) by category."""
    cfg, model = build(detector, n_train)
    out = af.empty()
    parts = groups(model)
    counts = {name: af.param_count(module) for name, module in parts.items()}
    counts["neck"] = _neck_counts(model)
    out["network"]["parameters per group"] = counts
    residual_norms = _resnet(out, parts["backbone"])
    _neck(out, model)
    out["init"]["backbone conv std x sqrt(fan_in)"] = af.init_scale(parts["backbone"], ("Conv2d",))
    fpn_convs = [m for m in model.backbone.modules() if type(m).__name__ == "Conv2d"
                 and not any(m is x for x in parts["backbone"].modules())]
    out["init"]["neck conv std x sqrt(fan_in)"] = _scale_of(fpn_convs)
    out["init"]["residual branch last norm zero-initialised (share of blocks)"] = af.zero_weight_share(residual_norms)
    out["init"]["conv biases zero (backbone, neck)"] = [af.biases_zero(parts["backbone"]),
                                                       all(float(c.bias.detach().abs().max()) == 0 for c in fpn_convs
                                                           if c.bias is not None)]
    _data(out, cfg, model)
    _schedule(out, cfg)
    if "rpn" in parts:
        _rpn(out, parts["rpn"])
        out["init"]["rpn conv std x sqrt(fan_in)"] = af.init_scale(parts["rpn"], ("Conv2d",))
        _cascade(out, parts["head"])
    else:
        _retinanet(out, model)
        out["init"]["head conv std x sqrt(fan_in)"] = af.init_scale(parts["head"], ("Conv2d",))
    return out


def _scale_of(convs: list) -> list[float]:
    import torch

    holder = torch.nn.ModuleList(convs)
    return af.init_scale(holder, ("Conv2d",))
