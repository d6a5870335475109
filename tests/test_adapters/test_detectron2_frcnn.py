"""Detectron2 Faster R-CNN adapter: real detectron2 on CPU, on the toy dataset.

The learning test trains the small R18-FPN variant from scratch (GN recipe) for a few epochs at
128 px and checks it beats the same, untrained, seeded model on the held-out fold. Sampling sizes of
the RPN/ROI heads are reduced through `spec.native` (detectron2's own keys) to keep CPU time low;
the architecture is the real one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adapters import get_detector, get_detector_class
from adapters.base import AugSpec, TrainSpec
from harness.classes import CLASSES, NUM_CLASSES
from harness.eval import evaluate
from harness.predictions import Predictions
from harness.split import ImageRef, make_split

torch.set_num_threads(2)

# fewer sampled proposals/ROIs than detectron2's COCO defaults: same model, much less CPU per step
FAST = {
    "MODEL.RPN.POST_NMS_TOPK_TEST": 300,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128,
}


def toy_spec(**overrides) -> TrainSpec:
    settings = dict(variant="R18-FPN", epochs=10, batch_size=2, imgsz=128, optimizer="sgd", lr=0.02,
                    seed=0, device="cpu", workers=0, aug=AugSpec(hflip=0.5), native=dict(FAST),
                    score_thr=0.001, max_det=100, batch_predict=4)
    settings.update(overrides)
    return TrainSpec(**settings)


def map40(gt_json: Path, preds: Predictions) -> float:
    """mAP@IoU0.4 (pycocotools) as the harness scores every run."""
    return float(evaluate(gt_json, preds)["map40"])


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_fit_learns_offline(toy_dataset, tmp_path, forbid_network):
    """Main test: fit fold 0, predict its held-out images; trained mAP@0.4 clearly beats untrained."""
    before = listing(toy_dataset["root"])
    split = make_split(toy_dataset["labels"], toy_dataset["folds"], 0, tmp_path)
    det = get_detector("detectron2_frcnn", toy_spec())
    val = split.images("val")
    val_ids = [ref.id for ref in val]

    untrained = Predictions("d2-untrained", split.split_hash, val_ids, det.predict(None, val, tmp_path / "native"))
    checkpoint = det.fit(split, tmp_path / "native")
    trained = Predictions("d2", split.split_hash, val_ids, det.predict(checkpoint, val, tmp_path / "native"))

    assert checkpoint.is_file() and checkpoint.parent == tmp_path / "native"
    cfg_text = (tmp_path / "native" / "config.yaml").read_text()
    assert "NUM_CLASSES: 14" in cfg_text and "WEIGHTS: ''" in cfg_text
    assert (tmp_path / "native" / "metrics.json").is_file()  # detectron2's own training log
    for preds in (untrained, trained):
        preds.validate()
        per_image: dict[int, int] = {}
        for d in preds.detections:
            per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
            assert d["score"] >= 0.001
            x, y, w, h = d["bbox"]
            assert -0.01 <= x and x + w <= 128.01 and -0.01 <= y and y + h <= 128.01
        assert max(per_image.values()) <= 100
    assert {d["image_id"] for d in trained.detections} == set(val_ids)  # every val image predicted

    m_untrained, m_trained = map40(split.val_json, untrained), map40(split.val_json, trained)
    print(f"detectron2 R18-FPN toy mAP@0.4: untrained {m_untrained:.3f}, trained {m_trained:.3f}")
    assert m_trained >= 0.3, m_trained
    assert m_trained >= m_untrained + 0.2, (m_trained, m_untrained)
    assert forbid_network == []
    assert listing(toy_dataset["root"]) == before  # nothing written into the dataset folder


def test_two_jobs_in_one_process(toy_dataset, tmp_path, forbid_network):
    """Two fits (two folds, adamw, a couple of iterations) in one process: unique dataset names, both
    removed from detectron2's catalogs afterwards, schedule from epochs when MAX_ITER is not forced."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = []
    for fold in (0, 1):
        split = make_split(toy_dataset["labels"], toy_dataset["folds"], fold, tmp_path / f"f{fold}")
        spec = toy_spec(optimizer="adamw", lr=1e-4, epochs=3, native={**FAST, "SOLVER.MAX_ITER": 2})
        ckpt = get_detector("detectron2_frcnn", spec).fit(split, tmp_path / f"f{fold}" / "native")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert state["iteration"] == 1 and "model" in state
        optimizer_state = state["trainer"]["_trainer"]["optimizer"]
        assert all("betas" in group for group in optimizer_state["param_groups"])  # Adam family, not SGD
        cfg_text = (tmp_path / f"f{fold}" / "native" / "config.yaml").read_text()
        assert "OPTIMIZER: ADAMW" in cfg_text and "MAX_ITER: 2" in cfg_text
        train_line = next(line for line in cfg_text.splitlines() if "cxr_" in line and "_train" in line)
        names.append(train_line.strip())
    assert names[0] != names[1]
    assert not [n for n in DatasetCatalog.list() if n.startswith("cxr_")]
    assert not [n for n in MetadataCatalog.list() if n.startswith("cxr_")]
    assert forbid_network == []


def test_registration_keeps_class_ids(toy_dataset, tmp_path):
    """load_coco_json's category mapping must be the identity on the 14 classes (class 3 stays 3)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from adapters.detectron2_frcnn import registered_split

    split = make_split(toy_dataset["labels"], toy_dataset["folds"], 1, tmp_path)  # trains on both classes
    coco = json.loads(split.train_json.read_text())
    expected = sorted((a["image_id"], a["category_id"]) for a in coco["annotations"])
    with registered_split(split) as (train_name, _):
        records = DatasetCatalog.get(train_name)
        got = sorted((r["image_id"], a["category_id"]) for r in records for a in r["annotations"])
        assert MetadataCatalog.get(train_name).thing_classes == list(CLASSES)
        assert len(records) == len(coco["images"])
    assert got == expected and {c for _, c in got} == {0, 3}
    assert train_name not in DatasetCatalog.list()


def test_augmentation_mapping_and_boxes():
    """AugSpec → detectron2 transforms with the right parameters; boxes follow the image."""
    from detectron2.data import transforms as T

    from adapters.detectron2_frcnn import train_augmentations

    augs = train_augmentations(AugSpec(rotate_deg=15, hflip=0.5, vflip=0.25), imgsz=200)
    assert [type(a).__name__ for a in augs] == ["ResizeShortestEdge", "RandomFlip", "RandomFlip", "RandomRotation"]
    assert augs[0].short_edge_length == (200,) and augs[0].max_size == 200
    assert (augs[1].prob, augs[1].horizontal, augs[1].vertical) == (0.5, True, False)
    assert (augs[2].prob, augs[2].horizontal, augs[2].vertical) == (0.25, False, True)
    assert list(augs[3].angle) == [-15.0, 15.0] and augs[3].expand is False
    assert [type(a).__name__ for a in train_augmentations(AugSpec(0, 0, 0), 128)] == ["ResizeShortestEdge"]

    # flips with probability 1 on a 100 x 200 (h x w) image, imgsz 200: resize ×1, then both flips
    image = np.zeros((100, 200, 3), np.uint8)
    box = np.array([[10.0, 20.0, 50.0, 40.0]])
    aug_input = T.AugInput(image, boxes=box.copy())
    T.AugmentationList(train_augmentations(AugSpec(0, 1.0, 1.0), imgsz=200))(aug_input)
    assert aug_input.image.shape[:2] == (100, 200)
    np.testing.assert_allclose(aug_input.boxes, [[200 - 50, 100 - 40, 200 - 10, 100 - 20]])

    # resize of a 64 x 64 image to imgsz 128 doubles the coordinates
    aug_input = T.AugInput(np.zeros((64, 64, 3), np.uint8), boxes=box.copy())
    T.AugmentationList(train_augmentations(AugSpec(0, 0, 0), imgsz=128))(aug_input)
    np.testing.assert_allclose(aug_input.boxes, box * 2)

    # rotation: the new box still contains the rotated box centre and stays close in size
    np.random.seed(0)
    for _ in range(5):
        box = np.array([[60.0, 30.0, 100.0, 70.0]])  # centre (80, 50) in a 200 x 100 image
        aug_input = T.AugInput(np.zeros((100, 200, 3), np.uint8), boxes=box.copy())
        tfms = T.AugmentationList(train_augmentations(AugSpec(30, 0, 0), imgsz=200))(aug_input)
        (cx, cy), = tfms.apply_coords(np.array([[80.0, 50.0]]))
        x1, y1, x2, y2 = aug_input.boxes[0]
        assert x1 <= cx <= x2 and y1 <= cy <= y2
        assert 40 <= x2 - x1 <= 40 * 1.5 and 40 <= y2 - y1 <= 40 * 1.5


def test_config_mapping(tmp_path):
    """Variants, scratch vs pretrained recipe, schedule, thresholds, native overrides."""
    from adapters.detectron2_frcnn import build_config

    cfg = build_config(toy_spec(variant="R50-FPN", native={}), n_train=9)
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == NUM_CLASSES
    assert cfg.MODEL.WEIGHTS == "" and cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.FPN.NORM == "GN"
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.SOLVER.MAX_ITER == 45  # ceil(10 epochs * 9 images / batch 2)
    assert cfg.SOLVER.STEPS == (35, 42)  # the 3x schedule's 210k/250k of 270k, scaled
    assert cfg.SOLVER.WARMUP_ITERS == 5
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.001 and cfg.TEST.DETECTIONS_PER_IMAGE == 100
    assert cfg.INPUT.MIN_SIZE_TRAIN == (128,) and cfg.INPUT.MAX_SIZE_TEST == 128
    assert cfg.SEED == 0 and cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED is False

    assert build_config(toy_spec(variant="R101-FPN")).MODEL.RESNETS.DEPTH == 101
    r18 = build_config(toy_spec(variant="R18-FPN"))
    assert r18.MODEL.RESNETS.DEPTH == 18 and r18.MODEL.RESNETS.RES2_OUT_CHANNELS == 64

    weights = tmp_path / "coco.pth"
    weights.write_bytes(b"not really a checkpoint")
    pre = build_config(toy_spec(variant="R50-FPN", weights=str(weights), amp=True, max_det=300))
    assert pre.MODEL.WEIGHTS == str(weights.resolve())
    assert pre.MODEL.RESNETS.NORM == "FrozenBN" and pre.MODEL.BACKBONE.FREEZE_AT == 2
    assert pre.SOLVER.AMP.ENABLED is False  # CPU: AMP switched off
    assert pre.TEST.DETECTIONS_PER_IMAGE == 300

    native = build_config(toy_spec(native={"SOLVER.MAX_ITER": 7, "SOLVER.MOMENTUM": 0.8}), n_train=9)
    assert native.SOLVER.MAX_ITER == 7 and native.SOLVER.STEPS == (5, 6) and native.SOLVER.MOMENTUM == 0.8
    with pytest.raises(ValueError, match="local file"):
        build_config(toy_spec(native={"MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-50.pkl"}))
    with pytest.raises(ValueError, match="unknown detectron2 variant"):
        build_config(toy_spec(variant="R999"))
    with pytest.raises(ValueError, match="SOLVER.NO_SUCH_KEY"):
        build_config(toy_spec(native={"SOLVER.NO_SUCH_KEY": 1}))


def test_optimizer_mapping():
    from adapters.detectron2_frcnn import build_config, trainer_class
    from detectron2.modeling import build_model

    trainer = trainer_class()
    model = build_model(build_config(toy_spec()))
    for kind, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        cfg = build_config(toy_spec(optimizer=kind, lr=3e-4, weight_decay=0.05))
        opt = trainer.build_optimizer(cfg, model)
        assert isinstance(opt, cls), (kind, type(opt).__mro__)
        assert {g["lr"] for g in opt.param_groups} == {3e-4}
        assert 0.05 in {g["weight_decay"] for g in opt.param_groups}


def test_predict_reports_bad_images_and_finishes_the_rest(toy_dataset, tmp_path):
    good = [ref for ref in make_split(toy_dataset["labels"], toy_dataset["folds"], 1, tmp_path).images("val")][:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not an image")
    deep = tmp_path / "sixteen.png"
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(deep)
    refs = [good[0], ImageRef(901, broken, 64, 64), good[1], ImageRef(902, deep, 64, 64), good[2]]
    det = get_detector("detectron2_frcnn", toy_spec(max_det=5))
    from adapters.base import UnreadableImages

    # like the other adapters (the shared Detector.predict): bad files named, the rest predicted
    dets = det.predict(None, refs, tmp_path / "native")
    failed = dict(det.failed_images)
    assert set(failed) == {str(broken), str(deep)} and "mode" in failed[str(deep)]
    assert {d["image_id"] for d in dets} == {r.id for r in good}
    assert all(sum(d["image_id"] == r.id for d in dets) <= 5 for r in good)
    with pytest.raises(UnreadableImages, match="broken.png"):
        det.predict(None, [refs[1]], tmp_path / "native")


def test_bad_categories_are_refused(toy_dataset, tmp_path):
    split = make_split(toy_dataset["labels"], toy_dataset["folds"], 0, tmp_path)
    coco = json.loads(split.train_json.read_text())
    coco["categories"] = coco["categories"][:2]
    split.train_json.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="train.json"):
        get_detector("detectron2_frcnn", toy_spec()).fit(split, tmp_path / "native")


def test_registry_and_versions():
    cls = get_detector_class("detectron2_frcnn")
    assert (cls.name, cls.framework, cls.default_variant) == ("detectron2_frcnn", "detectron2", "R50-FPN")
    assert cls(TrainSpec()).spec.variant == "R50-FPN"
    versions = cls(TrainSpec()).versions()
    assert versions["detectron2"] and versions["torch"].startswith(torch.__version__.split("+")[0])
