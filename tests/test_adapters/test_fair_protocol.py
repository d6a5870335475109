"""The fair-comparison protocol: every framework trains on the same images and is scored through
the same post-processing.

- `negatives=drop|keep` reaches all three frameworks: each one trains on one fold of the toy set and
  the images/boxes read back from its own built training dataset are equal across the three (and
  to what the split asks), for both settings.
- The shared post-processing in `adapters.base` (threshold, sort, cap, box checks) on hand cases.
- The shared NMS IoU / score threshold / max detections reach each framework's own predicting
  model, `native` model overrides reach prediction as well as training, and YOLO's NMS keeps
  several classes per box (as ultralytics' validation does).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters import get_detector
from adapters.base import AugSpec, RawDetections, TrainSpec, UnreadableImages, count_split_training_set
from adapters.postprocess import postprocess
from harness.compare import same
from harness.split import ImageRef
from conftest import SMALL_VARIANTS, tiny_spec

torch.set_num_threads(2)

MODELS = tuple(SMALL_VARIANTS)
# the cheapest real training each framework allows: the counts, not the learning, are under test
NATIVE_FAST = {
    "yolov5": {"warmup_epochs": 0},
    "detectron2_frcnn": {"MODEL.RPN.POST_NMS_TOPK_TEST": 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64},
    "mmdet_frcnn": {"val_cfg": None, "val_dataloader": None, "val_evaluator": None},
}


def spec_for(model: str, **overrides) -> TrainSpec:
    return tiny_spec(model, **{"batch_size": 4, "lr": 0.001, "aug": AugSpec(hflip=0.5),
                               "native": dict(NATIVE_FAST[model]), **overrides})


# ---------------------------------------------------------------------------------------------
# Same training images
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("negatives", ["drop", "keep"])
def test_all_frameworks_consume_the_same_training_images(split0, tmp_path, negatives, forbid_network):
    coco = json.loads(Path(split0.train_json).read_text())
    with_boxes = {ann["image_id"] for ann in coco["annotations"]}
    expected = {"images": len(with_boxes) if negatives == "drop" else len(coco["images"]),
                "boxes": len(coco["annotations"])}
    assert len(with_boxes) < len(coco["images"])  # the toy fold has normal images: the setting matters
    assert count_split_training_set(split0.train_json, negatives) == expected

    consumed, protocols = {}, {}
    for model in MODELS:
        det = get_detector(model, spec_for(model, negatives=negatives))
        det.fit(split0, tmp_path / model)
        consumed[model] = det.consumed
        protocols[model] = {row["key"]: row for row in det.protocol()}
    assert consumed == {model: expected for model in MODELS}, consumed
    for model in MODELS:  # ...and the protocol card says so
        assert protocols[model]["train_images"]["value"] == expected["images"]
        assert protocols[model]["train_boxes"]["value"] == expected["boxes"]
        assert protocols[model]["negatives"]["value"] == negatives
    shared = {model: {k: r["value"] for k, r in rows.items() if r["scope"] == "shared"}
              for model, rows in protocols.items()}
    assert shared["yolov5"] == shared["detectron2_frcnn"] == shared["mmdet_frcnn"]
    assert forbid_network == []


def test_yolo_training_folder_follows_negatives(split0, tmp_path):
    from adapters.yolov5 import write_yolo_dataset

    for negatives in ("drop", "keep"):
        write_yolo_dataset(split0, tmp_path / negatives, negatives=negatives)
    labels = {neg: sorted((tmp_path / neg / "labels" / "train").iterdir()) for neg in ("drop", "keep")}
    empty_kept = [p for p in labels["keep"] if p.read_text() == ""]
    assert empty_kept and not [p for p in labels["drop"] if p.read_text() == ""]
    assert len(labels["keep"]) == len(labels["drop"]) + len(empty_kept)
    # val always has every image, whatever the training setting
    assert len(list((tmp_path / "drop" / "images" / "val").iterdir())) == len(split0.images("val"))


# ---------------------------------------------------------------------------------------------
# Same post-processing
# ---------------------------------------------------------------------------------------------
def test_shared_postprocessing_on_hand_cases():
    ref = ImageRef(7, Path("x.png"), width=100, height=50)
    raw = RawDetections(
        boxes=[[10, 10, 20, 20],      # 0: fine, score 0.5
               [-5, -5, 30, 60],      # 1: clipped to the image -> [0, 0, 30, 50]
               [10, 10, 10, 20],      # 2: no width -> dropped
               [120, 10, 130, 20],    # 3: entirely right of the image -> no area after clipping
               [np.nan, 0, 5, 5],     # 4: not finite -> dropped
               [1, 1, 9, 9],          # 5: below the score threshold -> dropped
               [1, 1, 9, 9],          # 6: class 14 is not a box class -> dropped
               [2, 2, 8, 8],          # 7: ties with 0 on score: keeps the framework's order (after 0)
               [3, 3, 9, 9]],         # 8: lowest kept score, beyond max_det -> cut
        scores=[0.5, 0.9, 0.8, 0.7, 0.95, 0.0005, 0.99, 0.5, 0.2],
        labels=[3, 0, 1, 2, 4, 5, 14, 6, 7])
    dets = postprocess(ref, raw, score_thr=0.001, max_det=3, num_classes=14)
    assert [d["score"] for d in dets] == [0.9, 0.5, 0.5]
    assert [d["category_id"] for d in dets] == [0, 3, 6]
    assert dets[0]["bbox"] == [0.0, 0.0, 30.0, 50.0]  # clipped, COCO xywh
    assert dets[1]["bbox"] == [10.0, 10.0, 10.0, 10.0] and all(d["image_id"] == 7 for d in dets)
    assert len(postprocess(ref, raw, score_thr=0.001, max_det=100, num_classes=14)) == 4
    assert postprocess(ref, RawDetections(np.zeros((0, 4)), [], []), 0.001, 10, 14) == []
    with pytest.raises(ValueError, match="x.png"):
        postprocess(ref, RawDetections([[0, 0, 1, 1]], [0.5, 0.4], [1]), 0.001, 10, 14)


def test_protocol_settings_are_validated():
    with pytest.raises(ValueError, match="negatives"):
        TrainSpec(negatives="some")
    with pytest.raises(ValueError, match="nms_iou"):
        TrainSpec(nms_iou=0.0)
    assert same(0.0005, 5e-4) and not same(0.7, 0.5) and same({"a": 1}, {"a": 1})


def test_shared_nms_and_native_overrides_reach_the_predicting_models():
    """One NMS IoU / score threshold / max_det in every framework's predicting model; `native`
    model overrides (anchors, NMS) apply to prediction exactly as to training."""
    # detectron2: the model built for prediction
    d2 = get_detector("detectron2_frcnn", spec_for("detectron2_frcnn", nms_iou=0.3, max_det=50, score_thr=0.01,
                                                  native={"MODEL.ANCHOR_GENERATOR.SIZES": [[16], [32], [64], [128], [256]]}))
    model = d2.build_model(None)
    assert model.roi_heads.box_predictor.test_nms_thresh == 0.3
    assert model.roi_heads.box_predictor.test_topk_per_image == 50
    assert model.roi_heads.box_predictor.test_score_thresh == 0.01
    # size-16 anchors (default 32): the widest (aspect 0.5) reaches 16 * sqrt(2) / 2 from the centre
    assert float(next(iter(model.proposal_generator.anchor_generator.cell_anchors)).max()) == pytest.approx(8 * 2 ** 0.5)

    # mmdet: the model built for prediction, with a native anchor and NMS override
    mm = get_detector("mmdet_frcnn", spec_for("mmdet_frcnn", nms_iou=0.3, max_det=50, score_thr=0.01,
                                             native={"model.rpn_head.anchor_generator.scales": [4],
                                                     "model.test_cfg.rpn.nms.iou_threshold": 0.6}))
    model = mm.build_model(None)
    assert model.roi_head.test_cfg.nms.iou_threshold == 0.3
    assert model.roi_head.test_cfg.max_per_img == 50 and model.roi_head.test_cfg.score_thr == 0.01
    assert model.rpn_head.test_cfg.nms.iou_threshold == 0.6
    assert list(model.rpn_head.prior_generator.scales.tolist()) == [4.0]

    # ultralytics: what model.predict receives (native iou wins for prediction too)
    yolo = get_detector("yolov5", spec_for("yolov5", nms_iou=0.3, max_det=50, score_thr=0.01))
    kwargs = yolo.predict_kwargs(Path("."))
    assert (kwargs["iou"], kwargs["max_det"], kwargs["conf"]) == (0.3, 50, 0.01)
    assert get_detector("yolov5", spec_for("yolov5", native={"iou": 0.45})).predict_kwargs(Path("."))["iou"] == 0.45


def test_yolo_nms_keeps_several_classes_per_box(tmp_path):
    """ultralytics' predictor keeps one class per box; the adapter's runs its NMS as ultralytics'
    validation does (multi_label), like the Faster R-CNN heads that score every class."""
    from adapters.yolov5 import multi_label_predictor, ultralytics_offline
    from harness.classes import CLASSES, NUM_CLASSES

    with ultralytics_offline(tmp_path / "cfg"):
        predictor_cls = multi_label_predictor()
        raw = torch.zeros(1, 4 + NUM_CLASSES, 3)  # one image, 3 anchors: xywh then class scores
        raw[0, :4, 0] = torch.tensor([50.0, 40.0, 20.0, 10.0])
        raw[0, 4 + 0, 0], raw[0, 4 + 3, 0] = 0.9, 0.6  # one box, two classes above the threshold
        image = np.zeros((100, 100, 3), np.uint8)
        counts = {}
        for multi in (True, False):
            predictor = predictor_cls(overrides={"conf": 0.001, "iou": 0.5, "max_det": 100, "imgsz": 100})
            predictor.multi_label = multi
            predictor.batch = ([str(tmp_path / "a.png")],)
            predictor.model = type("Names", (), {"names": dict(enumerate(CLASSES))})()
            (result,) = predictor.postprocess(raw.clone(), torch.zeros(1, 3, 100, 100), [image])
            counts[multi] = sorted(result.boxes.cls.int().tolist())
    assert counts == {True: [0, 3], False: [0]}


def test_every_adapter_goes_on_past_unreadable_images(split0, tmp_path):
    """Bad-image handling is the shared one: all three name the file and predict the rest."""
    good = split0.images("val")[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG truncated")
    refs = [good[0], ImageRef(9001, broken, 128, 128), ImageRef(9002, tmp_path / "gone.png", 128, 128), good[1]]
    for model in MODELS:
        det = get_detector(model, spec_for(model, score_thr=0.0))
        dets = det.predict(None, refs, tmp_path / model)
        assert {path for path, _ in det.failed_images} == {str(broken), str(tmp_path / "gone.png")}, model
        assert {d["image_id"] for d in dets} <= {r.id for r in good}
        with pytest.raises(UnreadableImages, match="broken.png"):
            det.predict(None, [refs[1]], tmp_path / model)
