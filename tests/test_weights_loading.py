"""An 80-class COCO checkpoint, built locally in each framework's own file format, initialises the
14-class model of every adapter: every backbone tensor equals the checkpoint's, the class head is
re-initialised by the framework, and the model then trains. The mmdet checkpoint is in the real
file's format (legacy pre-zip torch.save with mmdet 2.x `meta`). (No download: the checkpoints are
built here with the frameworks' own model builders and savers, at the smallest variants.)"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch

from adapters import get_detector
from adapters.base import AugSpec, TrainSpec
from harness.split import make_split
from harness.weights.formats import detect_format

torch.set_num_threads(2)


def spec(variant: str, weights: Path, **native) -> TrainSpec:
    return TrainSpec(variant=variant, epochs=1, batch_size=2, imgsz=128, lr=0.01, seed=0, device="cpu",
                     workers=0, aug=AugSpec(), weights=str(weights), native=native, score_thr=0.001,
                     max_det=100, batch_predict=4)


def assert_loaded(init: dict, checkpoint_state: dict, prefix: str, head_keys: set[str]) -> None:
    """Backbone (`prefix`) tensors all came from the checkpoint; the class head did not."""
    backbone = {k for k in checkpoint_state if k.startswith(prefix)}
    assert backbone, f"checkpoint has no {prefix} tensors"
    reinit = set(init["reinitialised"])
    assert not backbone & reinit, sorted(backbone & reinit)[:5]
    assert head_keys <= reinit, sorted(head_keys - reinit)
    assert init["loaded"] >= len(backbone) and init["loaded"] == init["total"] - len(reinit)


@pytest.fixture(scope="module")
def split(toy_dataset, tmp_path_factory):
    return make_split(toy_dataset["labels"], toy_dataset["folds"], 0, tmp_path_factory.mktemp("split"))


def test_yolov5_coco_checkpoint(split, tmp_path, forbid_network):
    from adapters.yolov5 import ultralytics_offline

    path = tmp_path / "yolov5n-coco80.pt"
    with ultralytics_offline(tmp_path / "ucfg"):
        from ultralytics import YOLO

        coco = YOLO("yolov5n.yaml", task="detect")  # the packaged yaml: nc 80
        assert coco.model.yaml["nc"] == 80 and coco.model.model[-1].nc == 80
        coco.save(path)  # ultralytics' own checkpoint format
    assert detect_format(path) == "ultralytics"
    state = {k: v.float() for k, v in torch.load(path, weights_only=False)["model"].state_dict().items()}
    # the Detect head (model.24): cv2 regresses boxes (class-independent), cv3 scores classes in three
    # layers per scale, the last of them class-count-sized
    detect = {k for k in state if k.startswith("model.24.")}
    head = {k for k in detect if re.match(r"model\.24\.cv3\.\d\.2\.", k)}
    hidden = {k for k in detect if re.match(r"model\.24\.cv3\.\d\.[01]\.", k)}
    box = {k for k in detect if k.startswith("model.24.cv2.")}
    assert len(head) == 6 and all(state[k].shape[0] == 80 for k in head) and hidden and box
    det = get_detector("yolov5", spec("yolov5n", path))
    checkpoint = det.fit(split, tmp_path / "run")
    assert checkpoint.is_file()
    assert_loaded(det.init, state, "model.0.", head)
    assert all(not k.startswith(tuple(f"model.{i}." for i in range(10))) for k in det.init["reinitialised"])
    # which head layers transfer, checked: exactly the class-count-sized cv3 layers start afresh; the
    # box branch and the hidden class layers (rebuilt at the checkpoint's width) come from the checkpoint
    reinit = set(det.init["reinitialised"])
    assert reinit & detect == head, sorted(reinit & detect)
    assert not (hidden | box) & reinit
    assert not [k for k in reinit if k.startswith("model.") and not k.startswith("model.24.")]
    rows = {r["key"]: r for r in det.protocol()}
    assert rows["init_weights"]["value"] == path.name and "tensors from the checkpoint" in rows["init_weights"]["note"]


def test_detectron2_coco_checkpoint(split, tmp_path, forbid_network):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from adapters.detectron2_frcnn import VARIANTS, zoo_config_path

    config_name, overrides = VARIANTS["R18-FPN"]
    cfg = get_cfg()
    cfg.merge_from_file(str(zoo_config_path(config_name)))
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
    cfg.MODEL.DEVICE = "cpu"
    coco = build_model(cfg)
    state = {k: v.detach().clone() for k, v in coco.state_dict().items()}
    path = tmp_path / "model_final_coco80.pkl"  # the model zoo's .pkl layout: numpy arrays
    with open(path, "wb") as handle:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "Detectron2 Model Zoo"}, handle)
    assert detect_format(path) == "detectron2"
    det = get_detector("detectron2_frcnn", spec("R18-FPN", path, **{
        "MODEL.RPN.POST_NMS_TOPK_TEST": 300, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64}))
    checkpoint = det.fit(split, tmp_path / "run")
    assert checkpoint.is_file()
    head = {f"roi_heads.box_predictor.{p}.{t}" for p in ("cls_score", "bbox_pred") for t in ("weight", "bias")}
    assert_loaded(det.init, state, "backbone.bottom_up.", head)
    assert not [k for k in det.init["reinitialised"] if k.startswith("backbone.")]


def test_mmdet_coco_checkpoint(split, tmp_path, forbid_network):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    from mmengine.runner import save_checkpoint

    register_all_modules(init_default_scope=False)
    placeholder = tmp_path / "placeholder.pth"
    placeholder.write_bytes(b"")
    cfg = get_detector("mmdet_frcnn", spec("R18-FPN", placeholder)).model_config()  # the pretrained (BN) layout
    cfg.model.roi_head.bbox_head.num_classes = 80
    torch.manual_seed(1)
    with DefaultScope.overwrite_default_scope("mmdet"):
        coco = MODELS.build(cfg.model)
        coco.init_weights()
    state = {k: v.detach().clone() for k, v in coco.state_dict().items()}
    path = tmp_path / "faster_rcnn_r18_fpn_1x_coco_20200130-00000000.pth"
    # the registry's real files (mmdet v2.0 model zoo, 2020) are legacy, pre-zip torch.save pickles with
    # mmdet 2.x's `meta` (mmdet/mmcv versions, the config as text, CLASSES, epoch/iter), no dataset_meta
    classes = tuple(f"class{i}" for i in range(80))
    meta = {"mmdet_version": "2.0.0", "mmcv_version": "0.5.1", "config": "model = dict(type='FasterRCNN')\n",
            "CLASSES": classes, "epoch": 12, "iter": 87960, "time": "Thu Jan 30 12:00:00 2020"}
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path) and detect_format(path) == "mmdet"
    # and mmengine's own (zip) save of the same weights still loads: the format check accepts both
    modern = tmp_path / "faster-rcnn_r18_coco80.pth"
    save_checkpoint({"meta": {"dataset_meta": {"classes": list(classes)}}, "state_dict": state}, str(modern))
    assert zipfile.is_zipfile(modern) and detect_format(modern) == "mmdet"
    det = get_detector("mmdet_frcnn", spec("R18-FPN", path, **{
        "model.train_cfg.rcnn.sampler.num": 64, "model.test_cfg.rpn.max_per_img": 300}))
    checkpoint = det.fit(split, tmp_path / "run")
    assert checkpoint.is_file()
    head = {f"roi_head.bbox_head.{p}.{t}" for p in ("fc_cls", "fc_reg") for t in ("weight", "bias")}
    assert_loaded(det.init, state, "backbone.", head)
    assert not [k for k in det.init["reinitialised"] if k.startswith(("backbone.", "neck."))]
