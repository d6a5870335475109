"""Data-parallel training inside one job (train.gpus=2) on CPU with the gloo backend, through each
framework's own launcher: detectron2's `launch` and mmengine's launcher=pytorch (adapters.ddp). Both
processes train (the model is DDP-wrapped over 2 processes, so every step all-reduces between them),
one checkpoint is written, and it predicts in the same format as a single-process fit. Tiny: 2
iterations at 64 px. ultralytics' DDP needs CUDA: it is refused on CPU here and run by
experiments/bench_gpu.py --yolo-ddp on GPUs."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_spec

from adapters.base import AugSpec, TrainSpec
from harness.predictions import Predictions

torch.set_num_threads(1)


def spec(**overrides) -> TrainSpec:
    """Two processes of R18-FPN on CPU (the rest: conftest.tiny_spec)."""
    return tiny_spec(**{"variant": "R18-FPN", "aug": AugSpec(hflip=0.5), "gpus": 2, **overrides})


def check_predictions(detector_cls, checkpoint, split, workdir) -> None:
    """The data-parallel checkpoint predicts, from a plain single-process detector, valid predictions."""
    val = split.images("val")[:3]
    single = detector_cls(spec(gpus=1, batch_size=2, native={}))
    dets = single.predict(checkpoint, val, workdir)
    preds = Predictions("ddp", split.split_hash, [img.id for img in val], dets)
    preds.validate(workdir / "predictions.json")  # raises on a wrong format
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])


def test_detectron2_two_processes_gloo(split0, tmp_path):
    from adapters.detectron2_frcnn import Detectron2FasterRCNN

    native = {"SOLVER.MAX_ITER": 2, "SOLVER.CHECKPOINT_PERIOD": 1000, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64}
    det = Detectron2FasterRCNN(spec(native=native))
    checkpoint = det.fit(split0, tmp_path / "d2")
    assert det.last_parallel == {"processes": 2, "model_wrapper": "DistributedDataParallel", "iterations": 2}
    assert checkpoint == tmp_path / "d2" / "model_final.pth" and checkpoint.is_file()
    assert sorted(p.name for p in (tmp_path / "d2").glob("*.pth")) == ["model_final.pth"]  # rank 0 alone saves
    metrics = [json.loads(line) for line in (tmp_path / "d2" / "metrics.json").read_text().splitlines()]
    assert metrics and metrics[-1]["iteration"] == 1  # detectron2's own log of the 2 iterations
    assert det.consumed["images"] > 0
    row = next(r for r in det.protocol() if r["key"] == "gpus")
    assert row["value"] == 2 and "1 per process" in row["note"]
    check_predictions(Detectron2FasterRCNN, checkpoint, split0, tmp_path / "pred")


def test_mmdet_two_processes_gloo(split0, tmp_path):
    from adapters.mmdet_frcnn import MMDetFasterRCNN

    native = {"val_cfg": None, "val_dataloader": None, "val_evaluator": None}
    det = MMDetFasterRCNN(spec(native=native, batch_size=4))
    checkpoint = det.fit(split0, tmp_path / "mm")
    parallel = det.last_parallel
    assert parallel["processes"] == 2 and parallel["model_wrapper"] == "MMDistributedDataParallel"
    # each process trains on its half of the data: 2 images per process and iteration
    n_train = det.consumed["images"]
    assert parallel["iterations"] == -(-n_train // 4)
    assert sorted(p.name for p in (tmp_path / "mm").glob("*.pth")) == ["epoch_1.pth"]
    check_predictions(MMDetFasterRCNN, checkpoint, split0, tmp_path / "pred")


def test_yolov5_ddp_needs_cuda(split0, tmp_path):
    from adapters.yolov5 import YoloV5Detector, train_args

    with pytest.raises(RuntimeError, match="needs train.device=cuda"):
        YoloV5Detector(spec(variant="yolov5n", gpus=2)).fit(split0, tmp_path / "y")
    args = train_args(spec(variant="yolov5n", gpus=4, batch_size=16, device="cuda"), tmp_path / "d.yaml", tmp_path)
    assert args["device"] == "0,1,2,3" and args["batch"] == 16  # ultralytics splits the total batch


def test_gpus_validation():
    with pytest.raises(ValueError, match="multiple of gpus"):
        spec(batch_size=3, gpus=2)
    with pytest.raises(ValueError, match="use device=cuda"):
        spec(device="cuda:1", gpus=2)


def test_yolov5_label_cache_counts_what_the_trainer_consumed(split0, tmp_path):
    """Under DDP the training dataset lives in ultralytics' worker processes; the adapter reads what
    they consumed from the label cache they write. On CPU (one process) it must equal the dataset's own."""
    from adapters.yolov5 import YoloV5Detector, cached_training_set_counts

    det = YoloV5Detector(spec(variant="yolov5n", gpus=1, batch_size=4, native={"mosaic": 0.0}))
    det.fit(split0, tmp_path / "y")
    assert cached_training_set_counts(tmp_path / "y" / "yolo_data" / "labels" / "train") == det.consumed
