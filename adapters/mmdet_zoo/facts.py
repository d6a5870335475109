"""mmdet's build of a packaged architecture as architecture facts (adapters.archfacts): the model built
on CPU from the adapter's config (`model_config`, initialised with `init_weights`), the training
schedule and pipeline from the same functions the training config uses; each fact read from the built
modules or the resolved config."""
from __future__ import annotations

from typing import Any

from adapters import archfacts as af
from adapters.mmdet_frcnn.config import (SCRATCH_PARAMWISE, TRAIN_BATCH_SAMPLER, optimizer_cfg, param_scheduler,
                                         train_pipeline)
from adapters.mmdet_zoo import aligned

NOMINAL_TRAIN_IMAGES = 96  # the schedule's images per epoch when the detector has not trained


def build(detector):
    """(config, model) on CPU, initialised with the spec's seed (as the adapter's build_model)."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    cfg = detector.model_config()
    with DefaultScope.overwrite_default_scope("mmdet"):
        torch.manual_seed(detector.spec.seed)
        model = MODELS.build(cfg.model)
        model.init_weights()
    model.train()
    return cfg, model


def groups(model) -> dict[str, Any]:
    out = {"backbone": model.backbone, "neck": model.neck}
    if hasattr(model, "rpn_head"):
        out["rpn"] = model.rpn_head
        out["head"] = model.roi_head
    else:
        out["head"] = model.bbox_head
    return out


def _assigner(assigner, border: int | None = None) -> dict[str, Any]:
    low = None
    if assigner.get("match_low_quality", True):
        low = assigner.get("min_pos_iou", 0.0)
    return {"positive IoU >=": assigner["pos_iou_thr"], "negative IoU <": assigner["neg_iou_thr"],
            "low-quality matches": af.low_quality(low),
            "anchors crossing the border": "used" if border is None or border < 0 else f"dropped beyond {border} px"}


def _loss_name(loss) -> str:
    kind = type(loss).__name__
    return af.box_loss(kind, getattr(loss, "beta", None))


def _resnet(facts, backbone) -> list:
    layers = [getattr(backbone, name) for name in backbone.res_layers]
    first = layers[1][0]
    facts["network"]["backbone"] = f"ResNet, blocks {[len(layer) for layer in layers]}"
    facts["network"]["backbone stride on"] = "1x1 conv" if tuple(first.conv1.stride) == (2, 2) else "3x3 conv"
    facts["network"]["backbone norm"] = af.norm_kinds([backbone])
    facts["network"]["backbone trainable params"] = af.trainable_count(backbone)
    return [block.norm3 if hasattr(block, "norm3") else block.norm2 for layer in layers for block in layer]


def _neck(facts, neck) -> None:
    own = neck.backbone_end_level - neck.start_level
    facts["network"]["neck norm (laterals, outputs)"] = af.norm_kinds([*neck.lateral_convs, *neck.fpn_convs[:own]])
    if not neck.add_extra_convs:
        facts["network"]["neck extra levels"] = "max-pool of the last output"
    else:
        source = {"on_input": "C5 (backbone)", "on_lateral": "lateral 5", "on_output": "P5 (neck output)"}[
            neck.add_extra_convs]
        relu = "ReLU before each but the first" if neck.relu_before_extra_convs else "no ReLU between them"
        facts["network"]["neck extra levels"] = f"stride-2 convs on {source}, {relu}"
        facts["network"]["neck extra convs norm"] = af.norm_kinds(neck.fpn_convs[own:])
    facts["network"]["neck levels"] = int(neck.num_outs)


def _schedule(facts, detector, n_train: int) -> None:
    spec = detector.spec
    schedule = aligned.iteration_schedule() if detector.aligned else None
    per_epoch = -(-n_train // max(1, spec.batch_size))
    total = spec.epochs * per_epoch
    warmup, steps = param_scheduler(spec, n_train, schedule)
    milestones = [int(m) * (per_epoch if steps["by_epoch"] else 1) for m in steps["milestones"]]
    optimizer = optimizer_cfg(spec)
    norm_mult = SCRATCH_PARAMWISE["norm_decay_mult"] if spec.weights is None else 1.0
    facts["schedule"].update({
        "iterations": total, "lr steps (iteration)": milestones, "lr step factor": float(steps["gamma"]),
        "warmup iterations": int(warmup["end"] - warmup["begin"]),
        "warmup": f"linear from {warmup['start_factor']:g}", "momentum": float(optimizer.get("momentum", 0.0)),
        "weight decay on norm layers": float(optimizer["weight_decay"] * norm_mult),
        "weight decay on biases": float(optimizer["weight_decay"]), "bias lr factor": 1.0})


def _data(facts, detector, model) -> None:
    resize = next(step for step in train_pipeline(detector.spec) if step["type"] == "Resize")
    size = resize["scale"]
    facts["data pipeline"]["train resize"] = (f"keep ratio, longer side {max(size)}" if resize.get("keep_ratio")
                                              else f"stretched to {size}")
    pre = model.data_preprocessor
    facts["data pipeline"]["batch padded to a multiple of"] = int(pre.pad_size_divisor)
    facts["data pipeline"]["aspect-ratio grouped batches"] = TRAIN_BATCH_SAMPLER["type"] == "AspectRatioBatchSampler"
    order = slice(None) if pre._channel_conversion else slice(None, None, -1)  # mean/std in the converted order
    facts["normalisation"]["pixel mean (RGB)"] = af.round_list(pre.mean.flatten().tolist()[order], 3)
    facts["normalisation"]["pixel std (RGB)"] = af.round_list(pre.std.flatten().tolist()[order], 3)


def _anchors(generator) -> list:
    return [af.anchor_shapes(a) for a in generator.base_anchors]


def _retinanet(facts, model) -> None:
    head = model.bbox_head
    facts["network"]["head convs (cls, box)"] = [len(head.cls_convs), len(head.reg_convs)]
    facts["network"]["head norm"] = af.norm_kinds([head.cls_convs, head.reg_convs])
    facts["network"]["anchors (w, h) per level"] = _anchors(head.prior_generator)
    facts["network"]["anchor centre offset"] = float(head.prior_generator.center_offset)
    facts["network"]["box coder weights"] = af.round_list([1.0 / s for s in head.bbox_coder.stds], 3)
    facts["init"]["head cls prior bias"] = round(float(head.retina_cls.bias.detach().mean()), 3)
    loss_cls = head.loss_cls
    facts["loss"]["cls loss"] = f"focal(alpha={loss_cls.alpha:g}, gamma={loss_cls.gamma:g})"
    facts["loss"]["box loss"] = _loss_name(head.loss_bbox)
    facts["loss"]["loss normaliser"] = "positive anchors in the batch"
    train_cfg = model.train_cfg
    facts["assignment"]["anchors"] = _assigner(train_cfg["assigner"], train_cfg.get("allowed_border", -1))
    sampler = (train_cfg.get("sampler") or {}).get("type", "PseudoSampler")
    facts["sampling"]["anchors"] = "all (no sampling)" if sampler == "PseudoSampler" else sampler
    facts["sampling"]["test candidates per level"] = int(model.test_cfg["nms_pre"])


def _rpn(facts, model) -> None:
    rpn, train_cfg, test_cfg = model.rpn_head, model.train_cfg, model.test_cfg
    facts["network"]["rpn anchors (w, h) per level"] = _anchors(rpn.prior_generator)
    facts["network"]["rpn box coder weights"] = af.round_list([1.0 / s for s in rpn.bbox_coder.stds], 3)
    facts["loss"]["rpn box loss"] = _loss_name(rpn.loss_bbox)
    facts["loss"]["rpn loss weights (cls, box)"] = [float(rpn.loss_cls.loss_weight), float(rpn.loss_bbox.loss_weight)]
    facts["assignment"]["rpn anchors"] = _assigner(train_cfg["rpn"]["assigner"], train_cfg["rpn"].get("allowed_border"))
    sampler = train_cfg["rpn"]["sampler"]
    facts["sampling"]["rpn anchors"] = {"per image": int(sampler["num"]), "positive fraction": float(sampler["pos_fraction"])}
    for when, proposal in (("train", train_cfg["rpn_proposal"]), ("test", test_cfg["rpn"])):
        facts["sampling"][f"proposals ({when}): per level before NMS, NMS IoU, kept"] = [
            int(proposal["nms_pre"]), float(proposal["nms"]["iou_threshold"]), int(proposal["max_per_img"])]


def _cascade(facts, model) -> None:
    heads = model.roi_head
    layer = heads.bbox_roi_extractor[0].roi_layers[0]
    output = layer.output_size
    facts["network"]["RoI pooling"] = {"output": list(output) if isinstance(output, tuple) else output,
                                       "sampling ratio": int(layer.sampling_ratio), "aligned": bool(layer.aligned)}
    facts["network"]["R-CNN stages"] = int(heads.num_stages)
    box_head = heads.bbox_head[0]
    facts["network"]["box head (convs, fcs)"] = [len(box_head.shared_convs), len(box_head.shared_fcs)]
    facts["network"]["box head norm"] = af.norm_kinds([box_head.shared_convs, box_head.shared_fcs])
    facts["network"]["box regression class-agnostic"] = [bool(h.reg_class_agnostic) for h in heads.bbox_head]
    facts["network"]["box coder weights per stage"] = [af.round_list([1.0 / s for s in h.bbox_coder.stds], 2)
                                                       for h in heads.bbox_head]
    facts["init"]["box head fc std x sqrt(fan_in)"] = af.init_scale(box_head.shared_fcs, ("Linear",))
    facts["init"]["box head conv std x sqrt(fan_in)"] = af.init_scale(box_head.shared_convs, ("Conv2d",))
    facts["init"]["box predictor std x sqrt(fan_in) (cls, box)"] = [af.init_scale(box_head.fc_cls),
                                                                    af.init_scale(box_head.fc_reg)]
    facts["loss"]["R-CNN box loss per stage"] = [_loss_name(h.loss_bbox) for h in heads.bbox_head]
    facts["loss"]["R-CNN stage loss weights"] = [float(w) * float(h.loss_bbox.loss_weight)
                                                 for w, h in zip(heads.stage_loss_weights, heads.bbox_head)]
    facts["loss"]["gradient into pooled features, per stage"] = 1.0  # mmdet's CascadeRoIHead scales none
    stages = model.train_cfg["rcnn"]
    facts["assignment"]["R-CNN stages"] = [_assigner(stage["assigner"]) for stage in stages]
    first = stages[0]["sampler"]
    facts["sampling"]["R-CNN stage 1"] = {"per image": int(first["num"]), "positive fraction": float(first["pos_fraction"]),
                                          "ground truth added": bool(first.get("add_gt_as_proposals", True))}
    later = [(int(s["sampler"]["num"]), float(s["sampler"]["pos_fraction"]),
              bool(s["sampler"].get("add_gt_as_proposals", True))) for s in stages[1:]]
    facts["sampling"]["R-CNN stages 2+"] = "; ".join(
        f"re-assigned and re-sampled: {num} per image, positive fraction {frac:g}"
        f"{', ground truth re-added' if gt else ''}" for num, frac, gt in dict.fromkeys(later))


def facts(detector, n_train: int | None = None) -> dict[str, dict[str, Any]]:
    """The architecture facts of `detector` (an MMDetDetector) by category."""
    cfg, model = build(detector)
    n = n_train or (detector.consumed or {}).get("images") or NOMINAL_TRAIN_IMAGES
    out = af.empty()
    parts = groups(model)
    out["network"]["parameters per group"] = {name: af.param_count(module) for name, module in parts.items()}
    residual_norms = _resnet(out, parts["backbone"])
    _neck(out, parts["neck"])
    out["init"]["backbone conv std x sqrt(fan_in)"] = af.init_scale(parts["backbone"], ("Conv2d",))
    out["init"]["neck conv std x sqrt(fan_in)"] = af.init_scale(parts["neck"], ("Conv2d",))
    out["init"]["residual branch last norm zero-initialised (share of blocks)"] = af.zero_weight_share(residual_norms)
    out["init"]["conv biases zero (backbone, neck)"] = [af.biases_zero(parts["backbone"]), af.biases_zero(parts["neck"])]
    _data(out, detector, model)
    _schedule(out, detector, n)
    if "rpn" in parts:
        _rpn(out, model)
        rpn = parts["rpn"]
        out["init"]["rpn conv std x sqrt(fan_in)"] = af.init_scale(rpn, ("Conv2d",))
        _cascade(out, model)
    else:
        _retinanet(out, model)
        out["init"]["head conv std x sqrt(fan_in)"] = af.init_scale(parts["head"], ("Conv2d",))
    return out
