"""Architectures by name (`model=<framework> model.arch=<name>`, adapters.zoo): every catalogued
architecture's smallest variant trains two iterations and predicts on the toy set at 64 px, the
post-processing on its card is read back from the built model (RT-DETR: "none (NMS-free)"), a
RetinaNet pair (detectron2 vs mmdet) has equal shared settings on the protocol card, an unknown name
fails at once with the list, and `experiment=same_arch` groups its report by architecture."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapters import get_detector
from adapters.byarch import NMS_FREE
from adapters.zoo import ARCHITECTURES, UnknownArchitecture, arch
from harness import atomic
from harness.report.protocol import collect_protocols, differences
from conftest import tiny_spec

torch.set_num_threads(2)


# CPU-sized R-CNN settings (the RoI heads dominate CPU time), stated as the card wants them
RCNN_SMALL = {
    "detectron2": ({"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64, "MODEL.RPN.POST_NMS_TOPK_TRAIN": 200,
                    "MODEL.RPN.POST_NMS_TOPK_TEST": 100}, "CPU test: fewer RoIs and proposals"),
    # (Cascade R-CNN, the one mmdet R-CNN here: a sampler per stage)
    "mmdet": ({"model.train_cfg.rpn_proposal.max_per_img": 200, "model.test_cfg.rpn.max_per_img": 100,
               **{f"model.train_cfg.rcnn.{stage}.sampler.num": 64 for stage in range(3)}},
              "CPU test: fewer RoIs and proposals"),
}

# the smallest variant of each catalogued family; Faster R-CNN is left out here: its packaged configs are the
# ones the detectron2_frcnn / mmdet_frcnn presets build, trained and predicted by the adapter tests
SMALLEST = [
    ("ultralytics", "yolov5nu"), ("ultralytics", "yolov8n"), ("ultralytics", "yolo11n"), ("ultralytics", "rtdetr-l"),
    ("detectron2", "COCO-Detection/retinanet_R_50_FPN_3x.yaml"),
    ("detectron2", "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml"),
    ("mmdet", "cascade-rcnn_r50_fpn_1x_coco"),
    ("mmdet", "retinanet_r18_fpn_1x_coco"), ("mmdet", "fcos_r50-caffe_fpn_gn-head_1x_coco"),
    ("mmdet", "atss_r50_fpn_1x_coco"),
]


def zoo_spec(framework: str, name: str, **overrides):
    """Two iterations (6 toy training images with boxes, batch 4, one epoch) at 64 px."""
    native, reasons = {}, {}
    if "rcnn" in name and framework in RCNN_SMALL:
        native, why = RCNN_SMALL[framework]
        reasons = {key: why for key in native}
    settings = dict(variant=name, batch_size=4, lr=0.001, batch_predict=2, native=native, reasons=reasons)
    settings.update(overrides)
    return tiny_spec("yolov5", **settings)


_TRAINED: dict[tuple[str, str], tuple] = {}


def trained(framework: str, name: str, split, root: Path):
    """(detector, predictions) of a two-iteration fit, once per session."""
    if (framework, name) not in _TRAINED:
        det = get_detector(framework, zoo_spec(framework, name))
        workdir = root / f"{framework}-{name.replace('/', '_')}"
        checkpoint = det.fit(split, workdir)
        assert Path(checkpoint).is_file()
        predictions = det.predict(checkpoint, split.images("val"), workdir / "predict")
        _TRAINED[(framework, name)] = (det, predictions)
    return _TRAINED[(framework, name)]


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")


def row(rows: list[dict], key: str) -> dict:
    return next(r for r in rows if r["key"] == key)


@pytest.mark.slow
@pytest.mark.parametrize("framework,name", SMALLEST)
def test_each_architecture_trains_two_iterations_and_predicts(framework, name, split0, zoo_root, forbid_network):
    det, predictions = trained(framework, name, split0, zoo_root)
    entry = arch(framework, name)
    assert det.consumed["images"] == 6  # the toy fold's training images with boxes (negatives dropped)
    val_ids = {ref.id for ref in split0.images("val")}
    # two iterations from scratch: a YOLO head may still score every box below 0.001 (its prior), so the
    # boxes are checked where there are some; every val image was predicted (images_scored below)
    assert {p["image_id"] for p in predictions} <= val_ids
    assert all(0 <= p["category_id"] < det.spec.num_classes and p["score"] >= det.spec.score_thr for p in predictions)
    per_image: dict[int, int] = {}
    for p in predictions:
        per_image[p["image_id"]] = per_image.get(p["image_id"], 0) + 1
    assert max(per_image.values(), default=0) <= det.spec.max_det
    rows = det.protocol()
    # read back from the predicting model; an NMS-free detector says so instead of pretending
    assert row(rows, "score_thr")["value"] == pytest.approx(0.001)
    assert row(rows, "max_det")["value"] == 100
    assert row(rows, "nms_iou")["value"] == (NMS_FREE if entry.nms_free else pytest.approx(0.5))
    assert row(rows, "images_scored")["value"] == {"predicted": len(val_ids), "failed": 0}
    assert row(rows, "image_size")["value"] == 64
    assert row(rows, "architecture")["value"].startswith(f"{entry.family}: {framework} {entry.config}")


@pytest.mark.slow
def test_retinanet_pair_card_shows_the_shared_settings_equal_and_read_back(split0, zoo_root, tmp_path):
    pair = {"detectron2_retinanet": trained("detectron2", "COCO-Detection/retinanet_R_50_FPN_3x.yaml", split0, zoo_root),
            "mmdet_retinanet": trained("mmdet", "retinanet_r18_fpn_1x_coco", split0, zoo_root)}
    root = tmp_path / "sweep"
    for model, (det, _) in pair.items():
        atomic.write_json(root / model / "fold0" / "metrics.json",
                          {"model": model, "variant": det.spec.variant, "fold": 0, "protocol": det.protocol()})
    collected = collect_protocols(root)
    assert {d["key"] for d in differences(collected, "shared")} == set()
    for det, _ in pair.values():  # what the card shows came from the frameworks' built objects
        assert all(getattr(det.ran, key) is not None
                   for key in ("score_thr", "nms_iou", "max_det", "train_size", "augmentation", "negatives"))
        assert all(r.get("source") in ("read", "applied") for r in det.protocol()), \
            [r["key"] for r in det.protocol() if r.get("source") not in ("read", "applied")]


def test_a_retinanet_nms_override_is_read_back_from_the_built_model(split0, tmp_path):
    """The card's NMS IoU is the built RetinaNet's (detectron2 keeps it on the meta-architecture)."""
    spec = zoo_spec("detectron2", "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
                    native={"MODEL.RETINANET.NMS_THRESH_TEST": 0.45},
                    reasons={"MODEL.RETINANET.NMS_THRESH_TEST": "test"})
    det = get_detector("detectron2", spec)
    det.predict(None, split0.images("val")[:2], tmp_path)
    assert row(det.protocol(), "nms_iou")["value"] == pytest.approx(0.45)


@pytest.mark.parametrize("framework", ["ultralytics", "detectron2", "mmdet"])
def test_an_unknown_architecture_fails_at_once_listing_the_choices(framework):
    from adapters.spec import TrainSpec

    with pytest.raises(UnknownArchitecture) as err:
        if framework == "mmdet":  # needs no mmcv: the name is checked before the framework is built
            arch("mmdet", "no-such-arch")
        else:
            get_detector(framework, TrainSpec(variant="no-such-arch"))
    message = str(err.value)
    assert "no-such-arch" in message and all(name in message for name in ARCHITECTURES[framework])
    assert "--models" in message


def test_doctor_lists_every_architecture():
    out = subprocess.run([sys.executable, "-m", "harness.cli.doctor", "--models"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    for framework, known in ARCHITECTURES.items():
        assert f"model={framework}" in out
        assert all(name in out for name in known)
    assert "detectron2_retinanet" in out and "mmdet_cascade" in out


def test_report_groups_models_by_architecture(tmp_path):
    """results.md's by-architecture table puts the same family of two frameworks together."""
    import pandas as pd

    from harness.report import by_arch

    runs, means = [], {}
    for model, family, value in (("detectron2_retinanet", "RetinaNet R50-FPN", 0.30),
                                 ("mmdet_retinanet", "RetinaNet R50-FPN", 0.25),
                                 ("yolov5", None, 0.4)):
        run_dir = tmp_path / model / "fold0"
        arch_value = f"{family}: x y (z)" if family else "yolov5n.yaml (YOLOv5 backbone/neck)"
        atomic.write_json(run_dir / "metrics.json", {"protocol": [{"key": "architecture", "value": arch_value}]})
        runs.append({"kind": "model", "name": model, "path": str(run_dir)})
        means[model] = value
    summ = pd.DataFrame({"name": list(means), "map40 mean": list(means.values())})
    text = by_arch.markdown(pd.DataFrame(runs), summ)
    assert "| RetinaNet R50-FPN | each framework's defaults | detectron2_retinanet | 0.3000 | – |" in text
    # no predictions here: no paired bootstrap, and the report says so
    assert ("| RetinaNet R50-FPN | each framework's defaults | mmdet_retinanet | 0.2500 | -0.0500 | "
            "– (no paired bootstrap) |") in text
    assert "yolov5" not in text


def test_the_cpu_smoke_preset_runs_the_same_pairs_as_same_arch():
    """experiment=same_arch_cpu is the CPU smoke run of same_arch: the same four models, RoI cuts equal in both."""
    from omegaconf import OmegaConf

    from harness.cli.common import CONF_DIR
    full, smoke = (OmegaConf.load(Path(CONF_DIR, "experiment", f"{name}.yaml")) for name in ("same_arch", "same_arch_cpu"))
    assert list(smoke.pipeline.models) == list(full.pipeline.models)
    d2, mm = smoke.per_model.detectron2_cascade.native, smoke.per_model.mmdet_cascade.native
    assert d2["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"] == mm["model.train_cfg.rcnn.0.sampler.num"] \
        == mm["model.train_cfg.rcnn.1.sampler.num"] == mm["model.train_cfg.rcnn.2.sampler.num"]
    assert d2["MODEL.RPN.POST_NMS_TOPK_TRAIN"] == mm["model.train_cfg.rpn_proposal.max_per_img"]
    assert d2["MODEL.RPN.POST_NMS_TOPK_TEST"] == mm["model.test_cfg.rpn.max_per_img"]
