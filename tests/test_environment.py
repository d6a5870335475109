"""The one environment: all three frameworks import in one process and build their models on CPU;
the harness core stays framework-free; `cxr-doctor` reports all three usable."""
from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

FRAMEWORKS = ("ultralytics", "detectron2", "mmdet", "mmcv", "mmengine", "torch", "torchvision")


def test_harness_never_imports_a_framework():
    import harness

    modules = [m.name for m in pkgutil.walk_packages(harness.__path__, "harness.")]
    assert len(modules) > 10, modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"leaked = sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})\n"
        "print(','.join(leaked))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"harness imported framework modules: {out.stdout.strip()}"


def test_three_frameworks_in_one_process_build_their_models():
    import torch

    os.environ.setdefault("YOLO_OFFLINE", "1")
    import detectron2
    import mmdet
    import ultralytics

    assert ultralytics.__version__ == "8.4.190"
    assert mmdet.__version__ == "3.3.0"
    assert detectron2.__file__.endswith("detectron2/__init__.py") and detectron2.__version__

    # YOLOv5 (ultralytics' yaml, anchor-free head) with 14 classes
    from ultralytics.nn.tasks import DetectionModel

    yolo = DetectionModel("yolov5n.yaml", ch=3, nc=14, verbose=False)
    assert yolo.model[-1].nc == 14

    # Detectron2 Faster R-CNN R50-FPN from the model-zoo config, from scratch (GN)
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 14
    cfg.MODEL.RESNETS.NORM = cfg.MODEL.FPN.NORM = "GN"
    d2 = build_model(cfg)
    assert d2.roi_heads.box_predictor.cls_score.out_features == 15  # 14 + background

    # MMDetection Faster R-CNN R50-FPN from the packaged config, no weight download
    import mmdet.registry
    from mmengine.config import Config
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    config_file = Path(mmdet.__file__).parent / ".mim/configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
    mcfg = Config.fromfile(str(config_file))
    mcfg.model.backbone.init_cfg = None
    mcfg.model.roi_head.bbox_head.num_classes = 14
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmdet"):
        mm = mmdet.registry.MODELS.build(mcfg.model)
    assert mm.roi_head.bbox_head.fc_cls.out_features == 15

    with torch.no_grad():
        out = yolo(torch.zeros(1, 3, 64, 64))
    assert out is not None


def test_doctor_reports_all_three_frameworks_usable():
    out = subprocess.run([sys.executable, "-m", "harness.cli.doctor"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3/3 detector frameworks usable" in out.stdout
    for name in ("ultralytics", "detectron2", "mmdet", "mmcv ops"):
        assert name in out.stdout


def test_setup_is_idempotent_on_a_ready_venv():
    """A rerun of setup on the ready venv is a no-op that says so."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "setup_env.sh")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout
