"""The full-size path on CPU: each framework trains a couple of iterations at 1024 px (the size
`experiment=original_study` uses) on real NIH ChestX-ray14 radiographs (tests/data/nih-cxr14-mini,
prepared at their released 1024 x 1024) with the dataset's own 8 classes, then predicts its held-out
images at 1024 px. Small on purpose (batch 1, 2 training images: 2 iterations); the seconds per
iteration and peak memory at 512 and 1024 px are measured by experiments/bench_fullsize.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapters import get_detector
from adapters.base import AugSpec, TrainSpec
from harness.classes import NIH_CLASSES
from harness.data.nih import prepare_nih
from harness.eval import evaluate
from harness.predictions import Predictions
from harness.split import make_split
from nih_mini import NIH_MINI

torch.set_num_threads(2)
TRAIN = ["00018366_029", "00018366_010"]  # one patient's two images: 2 iterations at batch 1
VAL = ["00005532_016", "00019124_104"]
SIZE = 1024
SETTINGS = {  # the small variant of each framework; R-CNNs sample fewer proposals/ROIs (same architecture)
    "yolov5": ("yolov5n", {"warmup_epochs": 0, "nbs": 1, "mosaic": 0.0}),
    "detectron2_frcnn": ("R18-FPN", {"MODEL.RPN.POST_NMS_TOPK_TEST": 300, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128}),
    "mmdet_frcnn": ("R18-FPN", {"val_cfg": None, "val_dataloader": None, "val_evaluator": None}),
}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih1024")
    summary = prepare_nih(NIH_MINI, root / "data", size=SIZE, folds=2, workers=0, progress=False)
    folds = root / "folds.json"
    folds.write_text(json.dumps({"folds": [VAL, TRAIN]}))
    return make_split(summary.labels, folds, 0, root / "run")


def head_classes(name: str, checkpoint: Path) -> int:
    """The number of classes the trained checkpoint's detection head outputs."""
    if name == "yolov5":
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        return int(ckpt["model"].nc)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = state.get("model", state.get("state_dict", state))
    key = "roi_heads.box_predictor.cls_score.weight" if name == "detectron2_frcnn" else "roi_head.bbox_head.fc_cls.weight"
    return int(state[key].shape[0]) - 1  # + background


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_trains_and_predicts_at_1024_on_real_radiographs(name, split, tmp_path, forbid_network):
    variant, native = SETTINGS[name]
    spec = TrainSpec(variant=variant, epochs=1, batch_size=1, imgsz=SIZE, lr=0.001, seed=0, workers=0,
                     aug=AugSpec(hflip=0.5), native=native, batch_predict=1, classes=list(NIH_CLASSES))
    val = split.images("val")
    assert {(ref.width, ref.height) for ref in val} == {(SIZE, SIZE)}  # the released size, not resized
    detector = get_detector(name, spec)
    checkpoint = detector.fit(split, tmp_path / "native")
    assert detector.consumed == {"images": 2, "boxes": 3}  # both training radiographs and their 3 boxes
    assert head_classes(name, Path(checkpoint)) == len(NIH_CLASSES)
    detections = detector.predict(checkpoint, val, tmp_path / "native")
    preds = Predictions(name, split.split_hash, [ref.id for ref in val], detections)
    preds.validate()
    assert all(d["category_id"] < len(NIH_CLASSES) for d in detections)
    assert all(0 <= d["bbox"][0] and d["bbox"][0] + d["bbox"][2] <= SIZE + 0.01 for d in detections)
    scores = evaluate(split.val_json, preds)  # scored with NIH's class names (2 iterations: ~0)
    assert set(scores["per_class"]) == set(NIH_CLASSES) and scores["voc_map40_15"] is None
