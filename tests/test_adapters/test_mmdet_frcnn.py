"""MMDetection Faster R-CNN adapter: real mmdet/mmengine/mmcv on CPU with the toy dataset.

One learning test (fit on fold 0, predict its held-out val images, trained mAP@0.4 clearly above an
untrained model's, offline), the AugSpec -> mmdet transform mapping applied to known boxes, the
category-id -> label mapping of mmdet's CocoDataset, and two jobs in one process (mmengine's
singletons must not leak between them).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import torch

from adapters import get_detector
from adapters.base import AugSpec, TrainSpec
from adapters.mmdet_frcnn import (
    MMDetFasterRCNN,
    aug_transforms,
    load_trusted_checkpoint,
)
from harness.classes import CLASSES, coco_categories
from harness.eval import evaluate
from harness.predictions import Predictions
from harness.split import check_categories, make_split

torch.set_num_threads(2)
NO_VAL = {"val_cfg": None, "val_dataloader": None, "val_evaluator": None}  # skip mmengine's own eval
# fewer sampled RoIs / test proposals than mmdet's COCO defaults, the same cut the detectron2 test makes:
# same model, much less CPU per step (the RoI head dominates it at 128 px)
FEWER_ROIS = {"model.train_cfg.rcnn.sampler.num": 128, "model.test_cfg.rpn.max_per_img": 300}


def map40(gt_json: Path, dets: list[dict], iou: float = 0.4) -> float:
    """mAP at `iou` with pycocotools: the harness's own scorer at 0.4, plain COCOeval otherwise
    (used to cross-check against mmengine's CocoMetric, which runs at 0.5)."""
    gt = json.loads(Path(gt_json).read_text())
    if iou == 0.4:
        return float(evaluate(gt, Predictions("test", None, [img["id"] for img in gt["images"]], dets))["map40"])
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not dets:
        return 0.0
    coco_gt = COCO(str(gt_json))
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes([dict(d) for d in dets]), "bbox")
    coco_eval.params.iouThrs = np.array([iou])
    coco_eval.evaluate()
    coco_eval.accumulate()
    precision = coco_eval.eval["precision"][0, :, :, 0, -1]  # [T, R, K, area=all, maxDets=100]
    per_class = [precision[:, k][precision[:, k] > -1].mean() for k in range(precision.shape[1])
                 if (precision[:, k] > -1).any()]
    return float(np.mean(per_class)) if per_class else 0.0


# --------------------------------------------------------------------------------------------
# Learning test
# --------------------------------------------------------------------------------------------
def test_fit_learns_predicts_offline(split0, forbid_network, tmp_path):
    spec = TrainSpec(variant="R18-FPN", epochs=12, batch_size=2, imgsz=128, optimizer="sgd", lr=0.02,
                     weight_decay=1e-4, seed=0, device="cpu", aug=AugSpec(rotate_deg=0, hflip=0.5, vflip=0.0),
                     score_thr=0.001, max_det=100, batch_predict=4, native=dict(FEWER_ROIS))
    det = get_detector("mmdet_frcnn", spec)
    assert isinstance(det, MMDetFasterRCNN)
    workdir = tmp_path / "native"
    ckpt = det.fit(split0, workdir)

    assert ckpt.is_file() and workdir in ckpt.parents
    assert len(list(workdir.rglob("*.pth"))) == spec.checkpoint_keep  # CheckpointHook max_keep_ckpts
    val = split0.images("val")
    val_ids = {ref.id for ref in val}
    trained = det.predict(ckpt, val, workdir)
    untrained = det.predict(None, val, workdir)

    for dets in (trained, untrained):
        Predictions("mmdet_frcnn", split0.split_hash, sorted(val_ids), dets).validate()
        assert all(d["score"] >= spec.score_thr for d in dets)
        per_image = {i: sum(d["image_id"] == i for d in dets) for i in val_ids}
        assert max(per_image.values()) <= spec.max_det
    assert {d["image_id"] for d in trained} == val_ids  # every val image predicted (low threshold)
    # Boxes are in PNG pixels (128 px images), not in the training resolution or normalised.
    boxes = np.array([d["bbox"] for d in trained])
    assert boxes[:, 0].min() >= 0 and (boxes[:, 0] + boxes[:, 2]).max() <= 128.01

    m_trained, m_untrained = map40(split0.val_json, trained), map40(split0.val_json, untrained)
    print(f"mmdet R18-FPN toy: mAP@0.4 trained {m_trained:.3f} untrained {m_untrained:.3f}")
    assert m_trained >= 0.3
    assert m_trained >= m_untrained + 0.2
    # mmdet's own CocoMetric ran on the same val images at the end of training: its AP50 must
    # agree with ours on our predictions (same model and pycocotools; checks our box mapping).
    scalars = [json.loads(line) for path in workdir.glob("*/vis_data/scalars.json")
               for line in path.read_text().splitlines()]
    native = [s["coco/bbox_mAP_50"] for s in scalars if "coco/bbox_mAP_50" in s]
    assert native and abs(native[-1] - map40(split0.val_json, trained, iou=0.5)) < 0.02
    assert forbid_network == []  # no network attempt recorded


# --------------------------------------------------------------------------------------------
# Augmentation mapping
# --------------------------------------------------------------------------------------------
def test_aug_spec_maps_to_mmdet_transforms(split0, tmp_path):
    assert aug_transforms(AugSpec(0, 0, 0)) == []
    assert aug_transforms(AugSpec(rotate_deg=10, hflip=0.5, vflip=0.25)) == [
        {"type": "Rotate", "prob": 1.0, "min_mag": 0.0, "max_mag": 10.0, "reversal_prob": 0.5, "img_border_value": 0},
        {"type": "RandomFlip", "prob": 0.5, "direction": "horizontal"},
        {"type": "RandomFlip", "prob": 0.25, "direction": "vertical"},
    ]
    with pytest.raises(ValueError, match="vertical"):
        aug_transforms(AugSpec(hflip=0.5, vflip=1.5))
    # The Config the Runner receives carries them right after Resize.
    spec = TrainSpec(variant="R18-FPN", imgsz=96, aug=AugSpec(rotate_deg=15, hflip=0.3, vflip=0.6))
    cfg = MMDetFasterRCNN(spec).build_config(split0, tmp_path / "native")
    types = [t["type"] for t in cfg.train_dataloader.dataset.pipeline]
    assert types == ["LoadImageFromFile", "LoadAnnotations", "Resize", "Rotate", "RandomFlip", "RandomFlip", "PackDetInputs"]
    assert cfg.train_dataloader.dataset.pipeline[2]["scale"] == (96, 96)
    assert [t.get("prob") for t in cfg.train_dataloader.dataset.pipeline[3:6]] == [1.0, 0.3, 0.6]
    assert cfg.train_dataloader.dataset.pipeline[3]["max_mag"] == 15.0


def _bright_bbox(img: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(img[..., 0] > 127)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _apply(transform_cfg: dict, img: np.ndarray, box: list[float]) -> tuple[np.ndarray, list[float]]:
    from mmdet.registry import TRANSFORMS
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope("mmdet"):
        transform = TRANSFORMS.build(transform_cfg)
    results = {"img": img.copy(), "img_shape": img.shape[:2], "ori_shape": img.shape[:2],
               "gt_bboxes": HorizontalBoxes(torch.tensor([box], dtype=torch.float32)),
               "gt_bboxes_labels": np.array([3]), "gt_ignore_flags": np.array([False])}
    out = transform(results)
    return out["img"], out["gt_bboxes"].tensor[0].tolist()


def test_flip_and_rotate_move_boxes_with_pixels():
    h, w = 60, 100
    img = np.zeros((h, w, 3), np.uint8)
    box = [10.0, 5.0, 30.0, 25.0]  # x1, y1, x2, y2 of a bright rectangle
    img[5:25, 10:30] = 255
    # Horizontal flip by hand: x -> w - x  => [70, 5, 90, 25]; vertical: y -> h - y => [10, 35, 30, 55].
    for direction, expected in (("horizontal", [70, 5, 90, 25]), ("vertical", [10, 35, 30, 55])):
        out_img, out_box = _apply({"type": "RandomFlip", "prob": 1.0, "direction": direction}, img, box)
        assert out_box == pytest.approx(expected)
        assert _bright_bbox(out_img) == expected  # the pixels moved where the box says
    # Probability 0: untouched.
    out_img, out_box = _apply({"type": "RandomFlip", "prob": 0.0, "direction": "horizontal"}, img, box)
    assert out_box == pytest.approx(box) and (out_img == img).all()
    # Rotation by exactly 90 degrees (min = max magnitude, no sign reversal), square image 101 px
    # with centre (50, 50): a quarter turn maps the rectangle onto another axis-aligned rectangle.
    sq = np.zeros((101, 101, 3), np.uint8)
    sq[5:25, 10:40] = 255
    rot90 = {"type": "Rotate", "prob": 1.0, "min_mag": 90.0, "max_mag": 90.0, "reversal_prob": 1.0, "img_border_value": 0}
    out_img, out_box = _apply(rot90, sq, [10.0, 5.0, 40.0, 25.0])
    # Quarter turn: width and height swap (30x20 -> 20x30), centre (25, 15) rotates about (50, 50).
    assert out_box[2] - out_box[0] == pytest.approx(20, abs=0.01)
    assert out_box[3] - out_box[1] == pytest.approx(30, abs=0.01)
    assert _bright_bbox(out_img) == pytest.approx(out_box, abs=1.5)  # pixels and box agree
    # A random angle within +-20 degrees: the box still encloses the rotated bright pixels.
    np.random.seed(0)
    for _ in range(3):
        out_img, out_box = _apply({"type": "Rotate", "prob": 1.0, "min_mag": 0.0, "max_mag": 20.0,
                                   "reversal_prob": 0.5, "img_border_value": 0}, sq, [10.0, 5.0, 40.0, 25.0])
        bright = _bright_bbox(out_img)
        assert out_box[0] <= bright[0] + 1.5 and out_box[1] <= bright[1] + 1.5
        assert out_box[2] >= bright[2] - 1.5 and out_box[3] >= bright[3] - 1.5
        assert (out_box[2] - out_box[0]) * (out_box[3] - out_box[1]) <= 1.6 * 30 * 20  # not blown up


# --------------------------------------------------------------------------------------------
# Category ids -> mmdet labels
# --------------------------------------------------------------------------------------------
def test_coco_category_ids_map_to_labels_in_order(split0, tmp_path):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    cfg = MMDetFasterRCNN(TrainSpec(variant="R18-FPN", imgsz=128)).build_config(split0, tmp_path / "n")
    ds_cfg = cfg.train_dataloader.dataset.to_dict()
    ds_cfg["pipeline"] = []
    with DefaultScope.overwrite_default_scope("mmdet"):
        dataset = DATASETS.build(ds_cfg)
    assert dataset.metainfo["classes"] == CLASSES
    assert dataset.cat2label == {i: i for i in range(14)}
    coco = json.loads(split0.train_json.read_text())
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["category_id"])
    assert len(dataset) == len(by_image)  # filter_empty_gt: only images with boxes are trained on
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        assert sorted(inst["bbox_label"] for inst in info["instances"]) == sorted(by_image[info["img_id"]])
        assert Path(info["img_path"]).is_file()
    # A file whose categories are in another order would permute labels silently: refused.
    bad = json.loads(split0.train_json.read_text())
    bad["categories"] = list(reversed(coco_categories()))
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="bad.json"):  # the one rule, applied where the split is made
        check_categories(json.loads(bad_path.read_text()), bad_path)


# --------------------------------------------------------------------------------------------
# Two jobs in one process
# --------------------------------------------------------------------------------------------
def test_two_jobs_in_one_process_do_not_share_state(toy_dataset, tmp_path):
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope

    scope_before = DefaultScope.get_current_instance()
    runs = []
    for fold, channels in ((0, 3), (1, 1)):
        split = make_split(toy_dataset["labels"], toy_dataset["folds"], fold, tmp_path / f"fold{fold}")
        spec = TrainSpec(variant="R18-FPN", epochs=1, batch_size=2, imgsz=64, channels=channels, seed=fold,
                         native=NO_VAL)
        det = MMDetFasterRCNN(spec)
        workdir = tmp_path / f"fold{fold}" / "native"
        ckpt = det.fit(split, workdir)
        runs.append((det, split, workdir, ckpt))
        assert DefaultScope.get_current_instance() is scope_before  # the job's scope was dropped

    (det0, _, wd0, ck0), (det1, split1, wd1, ck1) = runs
    assert det0.last_run_name != det1.last_run_name
    assert ck0.parent == wd0 and ck1.parent == wd1
    for det, workdir in ((det0, wd0), (det1, wd1)):
        # Each job's logger and visualizer are its own, and wrote under its own workdir.
        logger = MMLogger.get_instance(det.last_run_name)
        assert not any(isinstance(h, logging.FileHandler) for h in logger.handlers)  # closed after fit
        assert DetLocalVisualizer.check_instance_created(f"{det.last_run_name}-visualizer")
        vis = DetLocalVisualizer.get_instance(f"{det.last_run_name}-visualizer")
        assert [Path(b._save_dir).is_relative_to(workdir) for b in vis._vis_backends.values()] == [True]
        assert len(list(workdir.glob("*/*.log"))) == 1
    # The 1-channel model really has a 1-channel stem, and its own checkpoint reloads (torch's
    # default weights_only=True refuses mmengine checkpoints; the adapter trusts its own files).
    state = load_trusted_checkpoint(ck1)["state_dict"]
    assert state["backbone.conv1.weight"].shape[1] == 1
    with pytest.raises(Exception):
        torch.load(ck1, map_location="cpu")
    dets = det1.predict(ck1, split1.images("val")[:2], wd1)
    Predictions("x", None, [r.id for r in split1.images("val")[:2]], dets).validate()
    # A bad image is named and skipped; the rest of the batch is still predicted.
    refs = split1.images("val")[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    from harness.split import ImageRef

    dets = det1.predict(ck1, [ImageRef(999, broken, 64, 64), *refs], wd1)
    assert det1.failed_images and det1.failed_images[0][0] == str(broken)
    assert {d["image_id"] for d in dets} <= {r.id for r in refs} and dets
