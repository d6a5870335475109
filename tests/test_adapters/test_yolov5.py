"""The YOLOv5 adapter on the real ultralytics, CPU, offline, on the toy dataset.

One learning test (fit fold 0, predict its held-out images, trained mAP@0.4 clearly above an
untrained model's), then cheaper real runs for the augmentation mapping, the 1-channel model,
process-global state between two fits, and bad input.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from adapters import AugSpec, TrainSpec, get_detector
from adapters.base import UnreadableImages
from adapters.yolov5 import XRAY_AUG_DEFAULTS, YoloV5Detector, train_args, ultralytics_offline
from harness.eval import evaluate
from harness.predictions import Predictions
from harness.split import ImageRef, check_categories, make_split

torch.set_num_threads(2)


def _spec(**kw) -> TrainSpec:
    base = dict(epochs=1, batch_size=4, imgsz=128, optimizer="sgd", lr=0.02, seed=0, workers=0,
                batch_predict=4, native={"warmup_epochs": 0, "nbs": 4})
    base.update(kw)
    return TrainSpec(**base)


def _score(split, images, dets) -> float:
    preds = Predictions("yolov5", split.split_hash, [im.id for im in images], dets)
    preds.validate()
    return evaluate(split.val_json, preds)["map40"]


def _first_conv(checkpoint: Path) -> torch.nn.Conv2d:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own trusted file
    model = ckpt.get("ema") or ckpt["model"]
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_fit_learns_offline_and_predicts_in_png_pixels(toy_dataset, forbid_network, tmp_path):
    """60 epochs (180 SGD steps) of yolov5n at 128 px learn the toy's Cardiomegaly disc. Fold 0's
    train images hold no Aortic enlargement box (class 0 is only on even images, all in fold 0's
    val), so a perfect model scores 0.5 = mean(AP class 3 = 1, AP class 0 = 0) on fold 0."""
    split = make_split(toy_dataset["labels"], toy_dataset["folds"], 0, tmp_path)
    det = get_detector("yolov5", _spec(epochs=60))
    assert isinstance(det, YoloV5Detector) and det.spec.variant == "yolov5n"
    native = tmp_path / "native"
    checkpoint = det.fit(split, native)
    assert checkpoint == native / "train" / "weights" / "last.pt" and checkpoint.is_file()
    # the default protocol (negatives=drop) trains on the 6 of fold 0's 12 train images with findings
    assert det.last_fit["train_images"] == 6 and det.last_fit["train_images_per_s"] > 0
    assert det.consumed == {"images": 6, "boxes": 12}

    val = split.images("val")
    trained = det.predict(checkpoint, val, native)
    untrained = det.predict(None, val, native)
    assert det.failed_images == []
    for dets in (trained, untrained):
        assert all(d["score"] >= det.spec.score_thr and 0 <= d["category_id"] < 14 for d in dets)
        counts = np.bincount([d["image_id"] for d in dets], minlength=1)
        assert counts.max(initial=0) <= det.spec.max_det
    assert {d["image_id"] for d in trained} == {im.id for im in val}  # every val image has boxes
    for d in trained:  # inside the 128 px PNG
        x, y, w, h = d["bbox"]
        assert -0.5 <= x and -0.5 <= y and x + w <= 128.5 and y + h <= 128.5

    map_trained, map_untrained = _score(split, val, trained), _score(split, val, untrained)
    assert map_trained >= 0.3, map_trained
    assert map_trained >= map_untrained + 0.2, (map_trained, map_untrained)

    # Boxes come back in the ORIGINAL image's pixels: the same images upscaled 2x (predicted at the
    # same imgsz, so the network sees the same letterboxed input) give the same boxes x2.
    big_dir = tmp_path / "big"
    big_dir.mkdir()
    big = []
    for ref in val[:4]:
        path = big_dir / Path(ref.path).name
        Image.open(ref.path).resize((256, 256), Image.Resampling.BILINEAR).save(path)
        big.append(ImageRef(ref.id, path, 256, 256))
    top = {}
    for dets, scale in ((det.predict(checkpoint, val[:4], native), 1.0), (det.predict(checkpoint, big, native), 2.0)):
        for d in sorted(dets, key=lambda d: -d["score"]):
            top.setdefault((scale, d["image_id"]), np.array(d["bbox"]) / scale)
    compared = [ref for ref in val[:4] if (1.0, ref.id) in top]
    assert compared, "no detections on the 128 px images to compare"
    for ref in compared:
        assert np.abs(top[(1.0, ref.id)] - top[(2.0, ref.id)]).max() < 4.0, (ref.path, top)

    assert forbid_network == []  # no connection or DNS lookup was attempted
    versions = det.versions()
    assert versions["ultralytics"] == "8.4.190" and "anchor-free" in versions["head"]


def test_train_args_follow_spec(tmp_path):
    spec = TrainSpec(epochs=7, batch_size=3, imgsz=320, optimizer="adamw", lr=3e-4, weight_decay=0.05,
                     seed=5, device="cuda:1", workers=2, amp=True, aug=AugSpec(rotate_deg=10, hflip=0.5, vflip=0.25),
                     native={"mosaic": 0.5, "hsv_v": 0.0})
    args = train_args(spec, tmp_path / "data.yaml", tmp_path)
    assert args["optimizer"] == "AdamW" and args["lr0"] == 3e-4 and args["weight_decay"] == 0.05
    assert (args["epochs"], args["batch"], args["imgsz"], args["seed"], args["workers"]) == (7, 3, 320, 5, 2)
    assert args["device"] == "1" and args["amp"] is True and args["deterministic"] is True
    assert (args["degrees"], args["fliplr"], args["flipud"]) == (10.0, 0.5, 0.25)
    assert args["hsv_h"] == 0.0 and args["hsv_s"] == 0.0  # gray images
    assert args["mosaic"] == 0.5 and args["hsv_v"] == 0.0  # native overrides win
    assert args["pretrained"] is False and args["project"] == str(tmp_path.resolve())
    for name, expected in (("sgd", "SGD"), ("adam", "Adam")):
        assert train_args(TrainSpec(optimizer=name), tmp_path / "d.yaml", tmp_path)["optimizer"] == expected
    assert train_args(TrainSpec(device="cuda"), tmp_path / "d.yaml", tmp_path)["device"] == "0"
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert train_args(TrainSpec(weights=str(weights)), tmp_path / "d.yaml", tmp_path)["pretrained"] == str(weights)
    with pytest.raises(ValueError, match="variant"):
        YoloV5Detector(TrainSpec(variant="yolov5q"))
    with pytest.raises(ValueError, match="device"):
        YoloV5Detector(TrainSpec(device="gpu0"))


def test_augmentation_and_gray_model_reach_ultralytics(toy_dataset, forbid_network, tmp_path):
    """The trainer's saved args and the transforms it actually built follow the AugSpec; channels=1
    gives a model whose first conv takes one channel, trained and predicted on gray input."""
    split = make_split(toy_dataset["labels"], toy_dataset["folds"], 1, tmp_path)
    aug = AugSpec(rotate_deg=7.0, hflip=0.3, vflip=0.2)
    det = YoloV5Detector(_spec(channels=1, aug=aug, optimizer="adamw", lr=0.001,
                               native={"warmup_epochs": 0, "translate": 0.05}))
    checkpoint = det.fit(split, tmp_path / "native")

    saved = yaml.safe_load((Path(det.last_fit["save_dir"]) / "args.yaml").read_text())
    assert (saved["degrees"], saved["fliplr"], saved["flipud"]) == (7.0, 0.3, 0.2)
    assert saved["optimizer"] == "AdamW" and saved["lr0"] == 0.001 and saved["translate"] == 0.05
    assert saved["hsv_h"] == 0.0 and saved["hsv_s"] == 0.0 and XRAY_AUG_DEFAULTS == {"hsv_h": 0.0, "hsv_s": 0.0}
    assert saved["mosaic"] == 1.0 and saved["close_mosaic"] == 10  # ultralytics' own recipe, untouched
    built = det.last_fit["train_transforms"]
    by_type = {}
    for entry in built:
        by_type.setdefault(entry["type"], []).append(entry)
    assert by_type["RandomPerspective"][0]["degrees"] == 7.0
    assert by_type["RandomPerspective"][0]["translate"] == 0.05
    flips = {e["direction"]: e["p"] for e in by_type["RandomFlip"]}
    assert flips == {"horizontal": 0.3, "vertical": 0.2}
    assert by_type["RandomHSV"][0]["hgain"] == 0.0 and by_type["RandomHSV"][0]["sgain"] == 0.0

    data = yaml.safe_load((tmp_path / "native" / "yolo_data" / "data.yaml").read_text())
    assert data["channels"] == 1 and data["nc"] == 14 and Path(data["path"]).is_absolute()
    assert _first_conv(checkpoint).in_channels == 1
    dets = det.predict(checkpoint, split.images("val")[:3], tmp_path / "native")  # gray input path
    assert det.failed_images == [] and all(d["image_id"] in {im.id for im in split.images("val")[:3]} for d in dets)
    untrained = det._untrained()  # noqa: SLF001 - the None-checkpoint model, built 1-channel too
    assert next(m for m in untrained.model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels == 1
    assert forbid_network == []


def test_two_fits_in_one_process_share_no_state(toy_dataset, tmp_path):
    """Each fit writes only under its workdir (own settings, fonts, data, weights) and leaves
    ultralytics' settings, callbacks, env, torch's thread count and determinism switches as it found
    them. The second fit fine-tunes from the first one's checkpoint (spec.weights) with lr 0: its
    weights must come back unchanged, which shows the local checkpoint was loaded into the variant's
    architecture."""
    with ultralytics_offline(tmp_path / "first_import"):  # if this test imports it first: no home dir
        import ultralytics.utils as uutils
        from ultralytics.utils import callbacks

    before_settings, before_file = dict(uutils.SETTINGS), uutils.SETTINGS.file_path
    before_mtime = before_file.stat().st_mtime_ns if before_file.exists() else None
    before_callbacks = {k: list(v) for k, v in callbacks.default_callbacks.items()}
    before_env = os.environ.get("YOLO_CONFIG_DIR")
    before_dir, threads = uutils.USER_CONFIG_DIR, torch.get_num_threads()
    # the trainer runs with deterministic=True (torch.use_deterministic_algorithms, process-wide) and
    # ultralytics 8.4 turns it off again when training ends: the next job in this process (a Faster R-CNN
    # in a local sweep) must not inherit it, whichever ultralytics version is installed
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic

    checkpoints = []
    for fold in (0, 1):
        run = tmp_path / f"fold{fold}"
        split = make_split(toy_dataset["labels"], toy_dataset["folds"], fold, run)
        spec = _spec() if fold == 0 else _spec(weights=str(checkpoints[0]), lr=0.0)
        checkpoints.append(YoloV5Detector(spec).fit(split, run / "native"))
        config = run / "native" / "ultralytics_config" / "Ultralytics"
        assert (config / "Arial.ttf").stat().st_size > 10_000 and (config / "Arial.Unicode.ttf").is_file()
        run_settings = json.loads((config / "settings.json").read_text())
        assert run_settings["sync"] is False and run_settings["comet"] is False
        saved = yaml.safe_load((run / "native" / "train" / "args.yaml").read_text())
        assert saved["data"] == str((run / "native" / "yolo_data" / "data.yaml").resolve())
        assert dict(uutils.SETTINGS) == before_settings and uutils.SETTINGS.file_path == before_file
        assert {k: list(v) for k, v in callbacks.default_callbacks.items()} == before_callbacks
        assert os.environ.get("YOLO_CONFIG_DIR") == before_env and uutils.USER_CONFIG_DIR == before_dir
        assert torch.get_num_threads() == threads
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert checkpoints[0] != checkpoints[1] and all(c.is_file() for c in checkpoints)
    first, tuned = (_first_conv(c).weight.float() for c in checkpoints)
    assert torch.equal(first, tuned)  # loaded from spec.weights, not trained (lr 0)
    with ultralytics_offline(tmp_path / "fresh"):
        torch.manual_seed(123)
        scratch = next(m for m in YoloV5Detector(_spec())._untrained().model.modules()  # noqa: SLF001
                       if isinstance(m, torch.nn.Conv2d)).weight.float()
    assert not torch.allclose(first, scratch)  # ...and not a coincidence of initialisation
    if before_mtime is not None:
        assert before_file.stat().st_mtime_ns == before_mtime  # nobody's settings file was rewritten


def test_bad_input_is_named_and_the_rest_completes(toy_dataset, tmp_path, caplog):
    split = make_split(toy_dataset["labels"], toy_dataset["folds"], 0, tmp_path)
    det = YoloV5Detector(_spec())
    good = split.images("val")[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    images = [good[0], ImageRef(9001, tmp_path / "missing.png", 128, 128), good[1],
              ImageRef(9002, broken, 128, 128), good[2]]
    dets = det.predict(None, images, tmp_path / "native")
    failed = dict(det.failed_images)
    assert set(failed) == {str(tmp_path / "missing.png"), str(broken)}
    assert "missing.png" in caplog.text and "broken.png" in caplog.text
    assert all(d["image_id"] in {im.id for im in good} for d in dets)
    with pytest.raises(UnreadableImages, match="1 image"):
        det.predict(None, [ImageRef(9001, tmp_path / "missing.png", 128, 128)], tmp_path / "native")

    coco = json.loads(split.train_json.read_text())
    coco["annotations"][0]["category_id"] = 14  # "No finding" is not a box class
    bad_json = tmp_path / "bad_train.json"
    bad_json.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=rf"bad_train\.json: annotation id {coco['annotations'][0]['id']}"):
        check_categories(coco, bad_json)  # the one category rule, applied where the split is made
    bad_labels = tmp_path / "labels" / "bad.json"
    bad_labels.parent.mkdir()
    bad_labels.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="bad.json: annotation id"):
        make_split(bad_labels, toy_dataset["folds"], 0, tmp_path / "bad_split")
    assert not (tmp_path / "bad_split" / "split").exists()  # nothing written


def test_ultralytics_does_not_leave_pil_patched(tmp_path):
    """ultralytics patches PIL.Image.open at import; after the adapter ran, other frameworks in the
    process must get Pillow's own UnidentifiedImageError for a broken file."""
    import PIL.Image

    from adapters.yolov5 import ultralytics_offline

    with ultralytics_offline(tmp_path / "cfg"):
        pass
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(PIL.UnidentifiedImageError):
        PIL.Image.open(broken)
