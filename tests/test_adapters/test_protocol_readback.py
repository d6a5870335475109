"""The protocol card reads what each framework actually ran, with real adapters (no hand-written rows).

Each case runs the real ultralytics / detectron2 / mmdet code (prediction with an untrained model
on two toy images, or one short fit), writes the adapter's protocol rows into a sweep folder as
the training job does, and checks the card (`harness.report.protocol`) built from those files:
an NMS IoU override via `native`, detectron2 with channels=1, a Faster R-CNN with
multi_label=false, a native test size, a YOLO mosaic override without a reason, an image one
framework cannot read - each is flagged; the unchanged settings of all three read "agree".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from adapters import get_detector
from adapters.yolov5 import predict_kwargs, train_args
from adapters.spec import AugSpec
from conftest import SMALL_VARIANTS as VARIANTS
from conftest import tiny_spec as base_spec
from harness import atomic
from harness.cli.common import CONF_DIR  # registers the config's resolvers
from harness.jobs.config import train_spec
from harness.report.protocol import collect_protocols, differences, fairness_summary, unexplained
from harness.split import ImageRef
from harness.tta import predict_with_hflip_tta

torch.set_num_threads(2)

MODELS = tuple(VARIANTS)
NMS_OVERRIDE = {"yolov5": {"iou": 0.45}, "detectron2_frcnn": {"MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.45},
                "mmdet_frcnn": {"model.test_cfg.rcnn.nms.iou_threshold": 0.45}}


def tiny_spec(model: str, **overrides):
    """64 px, batch 4, hflip 0.5, predicting 2 images a batch (the rest: conftest.tiny_spec)."""
    return base_spec(model, **{"batch_size": 4, "lr": 0.001, "aug": AugSpec(hflip=0.5), "batch_predict": 2,
                               **overrides})


def predicted_rows(model: str, refs: list[ImageRef], workdir: Path, **overrides) -> list[dict]:
    """The rows a real adapter reports after predicting `refs` with an untrained model."""
    det = get_detector(model, tiny_spec(model, **overrides))
    det.predict(None, refs, workdir / model)
    return det.protocol()


def card(tmp_path: Path, rows_by_model: dict[str, list[dict]]):
    """The protocol card's collected view of a one-fold sweep holding these rows."""
    root = tmp_path / "sweep"
    for model, rows in rows_by_model.items():
        atomic.write_json(root / model / "fold0" / "metrics.json",
                          {"model": model, "variant": VARIANTS[model], "fold": 0, "protocol": rows})
    return collect_protocols(root)


def shared_differences(collected) -> set[str]:
    return {d["key"] for d in differences(collected, "shared")}


def row(rows: list[dict], key: str) -> dict:
    return next(r for r in rows if r["key"] == key)


@pytest.fixture(scope="module")
def baseline(split0, tmp_path_factory):
    """Every framework predicting with the shared protocol unchanged."""
    workdir = tmp_path_factory.mktemp("baseline")
    refs = split0.images("val")[:2]
    return {model: predicted_rows(model, refs, workdir) for model in MODELS}


def test_unchanged_settings_agree_across_the_three_frameworks(baseline, tmp_path):
    collected = card(tmp_path, baseline)
    assert shared_differences(collected) == set()
    for model in MODELS:  # read back from the predicting model, not copied from the spec
        assert row(baseline[model], "nms_iou")["value"] == pytest.approx(0.5)
        assert row(baseline[model], "max_det")["value"] == 100
        assert row(baseline[model], "images_scored")["value"] == {"predicted": 2, "failed": 0}


@pytest.mark.parametrize("model", MODELS)
def test_an_nms_override_through_native_is_read_back_and_flagged(model, split0, baseline, tmp_path):
    rows = predicted_rows(model, split0.images("val")[:2], tmp_path, native=NMS_OVERRIDE[model])
    assert row(rows, "nms_iou")["value"] == pytest.approx(0.45)
    collected = card(tmp_path, {**baseline, model: rows})
    assert shared_differences(collected) == {"nms_iou"}
    assert "⚠" in fairness_summary(collected) and "nms_iou" in fairness_summary(collected)
    # the override itself has no reason given: flagged as unexplained too
    assert any(e["model"] == model and e["key"] == "native_overrides" for e in unexplained(collected))


def test_detectron2_channels_and_faster_rcnn_multi_label_are_flagged(split0, baseline, tmp_path):
    refs = split0.images("val")[:2]
    gray = {model: predicted_rows(model, refs, tmp_path / "gray", channels=1) for model in MODELS}
    assert {m: row(r, "channels")["value"] for m, r in gray.items()} == \
        {"yolov5": 1, "detectron2_frcnn": 3, "mmdet_frcnn": 1}  # detectron2's reader makes 3 channels
    assert shared_differences(card(tmp_path / "c1", gray)) == {"channels"}

    single = {model: predicted_rows(model, refs, tmp_path / "single", multi_label=False) for model in MODELS}
    assert {m: row(r, "multi_label")["value"] for m, r in single.items()} == \
        {"yolov5": False, "detectron2_frcnn": True, "mmdet_frcnn": True}  # R-CNN heads score every class
    assert shared_differences(card(tmp_path / "c2", single)) == {"multi_label"}


def test_a_native_test_size_reaches_prediction_and_the_card(split0, baseline, tmp_path):
    refs = split0.images("val")[:2]
    d2 = predicted_rows("detectron2_frcnn", refs, tmp_path,
                        native={"INPUT.MIN_SIZE_TEST": 96, "INPUT.MAX_SIZE_TEST": 96})
    yolo = predicted_rows("yolov5", refs, tmp_path, native={"imgsz": 96})
    assert row(d2, "image_size")["value"] == 96 and row(yolo, "image_size")["value"] == 96
    collected = card(tmp_path, {**baseline, "detectron2_frcnn": d2})
    assert shared_differences(collected) == {"image_size"}


def test_an_image_one_framework_cannot_read_changes_the_scored_set(split0, baseline, tmp_path):
    refs = split0.images("val")[:2]
    deep = tmp_path / "sixteen.png"
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(deep)
    refs = refs + [ImageRef(9001, deep, 64, 64)]
    rows = {model: predicted_rows(model, refs, tmp_path) for model in MODELS}
    assert row(rows["detectron2_frcnn"], "images_scored")["value"] == {"predicted": 2, "failed": 1}
    assert row(rows["yolov5"], "images_scored")["value"] == {"predicted": 3, "failed": 0}
    assert "images_scored" in shared_differences(card(tmp_path, rows))


def test_yolo_mosaic_override_needs_a_reason_and_multi_label_false_trains(split0, tmp_path, forbid_network):
    """One real fit: ultralytics' resolved args are read back (mosaic 0); `multi_label` reaches
    prediction only (ultralytics' train() rejects the key)."""
    native = {"mosaic": 0.0, "warmup_epochs": 0, "multi_label": False}
    det = get_detector("yolov5", tiny_spec("yolov5", native=native))
    checkpoint = det.fit(split0, tmp_path / "fit")
    det.predict(checkpoint, split0.images("val")[:2], tmp_path / "fit")
    rows = det.protocol()
    aug = row(rows, "framework_aug")
    assert aug["value"]["mosaic"] == 0.0 and "mosaic" in aug["unexplained"]
    assert "hsv_h" in aug["note"] and "hsv_h" not in aug["unexplained"]  # the harness's own change has its reason
    assert row(rows, "multi_label")["value"] is False
    assert row(rows, "image_size")["value"] == 64 and row(rows, "channels")["value"] == 3
    assert row(rows, "norm_decay")["value"] == 0.0 and row(rows, "grad_clip")["value"] == "max norm 10"
    assert {e["key"] for e in unexplained(card(tmp_path, {"yolov5": rows}))} >= {"framework_aug", "native_overrides"}

    explained = get_detector("yolov5", tiny_spec("yolov5", native=native, reasons={
        "mosaic": "tiny images", "warmup_epochs": "one epoch", "multi_label": "one label per box",
        "lr0": "a short test run"}))
    explained.ran = det.ran
    assert unexplained(card(tmp_path / "explained", {"yolov5": explained.protocol()})) == []
    assert forbid_network == []


def test_hflip_tta_keeps_the_max_det_cap(split0, tmp_path):
    det = get_detector("yolov5", tiny_spec("yolov5", score_thr=0.0, max_det=5))
    refs = split0.images("val")[:2]
    dets = predict_with_hflip_tta(det, None, refs, tmp_path)
    per_image = {ref.id: sum(d["image_id"] == ref.id for d in dets) for ref in refs}
    assert per_image == {ref.id: 5 for ref in refs}  # an untrained model fills the cap in both passes


def test_native_multi_label_is_not_a_training_argument():
    spec = tiny_spec("yolov5", native={"multi_label": False, "iou": 0.3, "imgsz": 96, "mosaic": 0.0})
    args = train_args(spec, Path("data.yaml"), Path("."))
    assert "multi_label" not in args and args["mosaic"] == 0.0
    kwargs = predict_kwargs(spec, Path("."))
    assert (kwargs["iou"], kwargs["imgsz"]) == (0.3, 96) and "multi_label" not in kwargs and "mosaic" not in kwargs


def test_the_demo_settings_read_as_fair(split0, tmp_path):
    """The demo's composed config: each model predicts with its own spec; the card's shared rows
    agree and every native override carries its reason."""
    rows = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        for model in MODELS:
            cfg = compose("train", overrides=["experiment=demo", f"model={model}"])
            spec = train_spec(cfg)
            spec.imgsz, spec.batch_predict = 64, 2
            det = get_detector(model, spec)
            det.predict(None, split0.images("val")[:2], tmp_path / model)
            rows[model] = det.protocol()
    collected = card(tmp_path, rows)
    assert shared_differences(collected) == set()
    assert [e for e in unexplained(collected) if e["key"] == "native_overrides"] == []
    assert json.dumps(rows)  # serialisable as metrics.json
