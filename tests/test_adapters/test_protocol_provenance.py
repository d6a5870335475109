"""Every protocol-card value says where it came from, and the card shows what the frameworks resolved,
not the spec: each test below changes only the framework-resolved value (a `native` key the spec's own
field does not see, or a rule the framework applies) and checks that the card follows the framework.
Frameworks' objects are built without training where that is possible (detectron2's trainer, the
predictors); one tiny real YOLO fit covers ultralytics' trainer, and one guard mutates the spec after
fit and prediction to check that the card does not move.
"""
from __future__ import annotations

import copy

import pytest
import torch

from adapters import get_detector
from adapters.card import RAN_NOT_ASKED, native_reason, protocol_row
from adapters.readback import Read, ReadBack
from adapters.spec import AugSpec
from conftest import tiny_spec as base_spec

torch.set_num_threads(2)


def tiny_spec(model: str | None, **overrides):
    return base_spec(model, **{"batch_size": 4, "lr": 0.001, "aug": AugSpec(hflip=0.5), "batch_predict": 2,
                               **overrides})


def row(rows: list[dict], key: str) -> dict:
    return next(r for r in rows if r["key"] == key)


def predicted(model: str, split, workdir, **overrides):
    """A real adapter after predicting two images with an untrained model."""
    det = get_detector(model, tiny_spec(model, **overrides))
    det.predict(None, split.images("val")[:2], workdir / model)
    return det


# -- the row rules (adapters.card) ------------------------------------------------------------------
def test_a_canned_note_only_where_the_value_is_what_the_harness_asked():
    canned = "the protocol uses one NMS IoU for every model"
    as_asked = protocol_row("nms_iou", "nms", 0.5, 0.7, note=canned, asked=0.5, source="read", read_from="x")
    assert as_asked["note"] == canned and "unexplained" not in as_asked
    other = protocol_row("nms_iou", "nms", 0.45, 0.7, note=canned, asked=0.5, source="read", read_from="x")
    assert other["note"] == "" and other["unexplained"] == [RAN_NOT_ASKED]
    explained = protocol_row("nms_iou", "nms", 0.45, 0.7, note=canned, asked=0.5, source="read", read_from="x",
                             asked_reason="iou: matched to the study")
    assert explained["note"] == "iou: matched to the study" and "unexplained" not in explained
    # equal to the native default but not to what was asked: still flagged
    assert protocol_row("nms_iou", "nms", 0.7, 0.7, asked=0.5)["unexplained"] == [RAN_NOT_ASKED]


def test_native_reasons_are_found_by_key_and_prefix():
    spec = tiny_spec("mmdet_frcnn", native={"model.test_cfg.rcnn.nms.iou_threshold": 0.4, "train_cfg.max_epochs": 3},
                     reasons={"model.test_cfg.rcnn.nms.iou_threshold": "study value"})
    assert native_reason(spec, ("model.test_cfg.rcnn.nms.",)) == "model.test_cfg.rcnn.nms.iou_threshold: study value"
    assert native_reason(spec, ("train_cfg.",)) == ""  # overridden without a reason
    assert native_reason(spec, ("model.test_cfg.rcnn.max_per_img",)) == ""


def test_readback_record_round_trips_and_rejects_bare_values():
    record = ReadBack(train_size=Read(64, "trainer.args.imgsz"), recipe={"lr": Read(0.01, "trainer.optimizer")},
                      details={"head": "2fc box head"})
    again = ReadBack.from_dict(copy.deepcopy(record.as_dict()))
    assert again == record and again.test_size is None
    with pytest.raises(TypeError):
        record.update(test_size=64)
    with pytest.raises(TypeError):
        record.update(imgsz=Read(64, "x"))


def test_nothing_read_back_shows_the_spec_marked_asked():
    det = get_detector("yolov5", tiny_spec("yolov5"))
    rows = det.protocol()
    sources = {r["key"]: r["source"] for r in rows}
    for key in ("negatives", "image_size", "channels", "augmentation", "score_thr", "max_det", "nms_iou",
                "multi_label", "train_images", "seed", "tta", "epochs", "lr", "gpus"):
        assert sources[key] == "asked", key
    assert row(rows, "image_size")["value"] == 64 == row(rows, "image_size")["asked"]
    assert sources["native_overrides"] == "applied"


# -- ultralytics: prediction ---------------------------------------------------------------------------
def test_yolo_test_size_is_the_predictors_resolved_size(split0, tmp_path):
    """imgsz=100 is not a multiple of the stride: ultralytics predicts at 128 (predictor.imgsz) while
    predictor.args.imgsz stays 100."""
    det = predicted("yolov5", split0, tmp_path, imgsz=100)
    size = row(det.protocol(), "image_size")
    assert size["value"] == 128 and size["asked"] == 100 and size["source"] == "partly"
    assert "predictor.imgsz" in size["read_from"] and size["unexplained"] == [RAN_NOT_ASKED]
    assert det.ran.test_channels.value == 3  # read from the network inside ultralytics' AutoBackend


def test_yolo_native_augment_is_the_frameworks_own_tta(split0, tmp_path):
    plain = row(predicted("yolov5", split0, tmp_path / "plain").protocol(), "tta")
    assert plain["value"] == "none" and plain["source"] == "read"
    det = predicted("yolov5", split0, tmp_path / "aug", native={"augment": True},
                    reasons={"augment": "ultralytics' own flip/scale TTA"})
    tta = row(det.protocol(), "tta")
    assert tta["value"] == "the framework's own (ultralytics augment=True)" and tta["asked"] == "none"
    assert tta["note"] == "augment: ultralytics' own flip/scale TTA" and "predictor.args.augment" in tta["read_from"]
    with_hflip = row(det.protocol(tta=True), "tta")["value"]
    assert with_hflip == "the framework's own (ultralytics augment=True) + hflip (WBF, re-capped to max_det)"


# -- detectron2: the built trainer, without training ----------------------------------------------------
def built_detectron2(split, workdir, **overrides):
    from adapters.detectron2_frcnn.data import registered_split
    from adapters.trainset import count_split_training_set

    det = get_detector("detectron2_frcnn", tiny_spec("detectron2_frcnn", **overrides))
    workdir.mkdir(parents=True, exist_ok=True)
    n_train = count_split_training_set(split.train_json, det.spec.negatives)["images"]
    with registered_split(split) as (train_name, _):
        trainer, trainer_cls = det.build_trainer(train_name, workdir, n_train)
        det._check_consumed(split, trainer_cls.consumed, "the dataset dicts")
        det._read_back_training(split, trainer, trainer_cls)
    return det


def test_detectron2_training_size_and_flip_come_from_the_built_mapper(split0, tmp_path):
    """INPUT.MIN_SIZE_TRAIN / RANDOM_FLIP do not reach training: the mapper's augmentations replace them."""
    det = built_detectron2(split0, tmp_path, native={"INPUT.MIN_SIZE_TRAIN": (96,), "INPUT.MAX_SIZE_TRAIN": 96,
                                                     "INPUT.RANDOM_FLIP": "vertical"})
    rows = det.protocol()
    assert det.ran.train_size.value == 64 and "ResizeShortestEdge" in det.ran.train_size.source
    assert row(rows, "augmentation")["value"] == {"rotate_deg": 0.0, "hflip": 0.5, "vflip": 0.0}
    assert row(rows, "augmentation")["source"] == "read"


def test_detectron2_solver_rows_come_from_the_trainers_rescaled_config(split0, tmp_path):
    """SOLVER.REFERENCE_WORLD_SIZE=2 in one process: DefaultTrainer's auto_scale_workers halves the batch
    and the lr and doubles the iterations in its own config clone; the card follows trainer.cfg."""
    plain = built_detectron2(split0, tmp_path / "plain")
    scaled = built_detectron2(split0, tmp_path / "scaled", native={"SOLVER.REFERENCE_WORLD_SIZE": 2})
    before, after = ({r["key"]: r for r in d.protocol()} for d in (plain, scaled))
    assert [k for k, r in before.items() if r.get("unexplained")] == []  # the plain trainer ran as asked
    assert all(before[k]["source"] == "read" for k in ("negatives", "augmentation", "seed", "init_weights", "gpus",
                                                        "epochs", "iterations", "schedule", "warmup", "grad_clip"))
    assert before["batch_size"]["value"] == 4 and after["batch_size"]["value"] == 2
    assert after["lr"]["value"] == pytest.approx(before["lr"]["value"] / 2)
    assert after["iterations"]["value"] == 2 * before["iterations"]["value"]
    # the same 8 images drawn (2 x 4 vs 4 x 2): one epoch of 6 to within a batch of 4, 1.33 with batches of 2
    assert before["epochs"]["value"] == 1 and after["epochs"]["value"] == pytest.approx(1.33)
    assert after["batch_size"]["unexplained"] == [RAN_NOT_ASKED] and "batch_size" in [
        k for k, r in after.items() if r.get("unexplained")]
    assert after["batch_size"]["source"] == "read" and "trainer.cfg" in after["batch_size"]["read_from"]


def test_detectron2_prediction_rows_and_the_harness_cut_after_the_framework(split0, tmp_path):
    """The built box predictor's own cut, then the harness's (adapters.postprocess): a looser framework
    cap (300) leaves the harness's 100, applied by the harness; a stricter framework threshold (0.3)
    is what the predictions hold, read back, and needs its native key's reason."""
    det = predicted("detectron2_frcnn", split0, tmp_path, native={"TEST.DETECTIONS_PER_IMAGE": 300,
                                                                  "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.3},
                    reasons={"MODEL.ROI_HEADS.SCORE_THRESH_TEST": "a stricter cut"})
    rows = det.protocol()
    max_det, score_thr = row(rows, "max_det"), row(rows, "score_thr")
    assert max_det["value"] == 100 and max_det["source"] == "applied" and "unexplained" not in max_det
    assert "box_predictor.test_topk_per_image = 300" in max_det["read_from"]
    assert score_thr["value"] == pytest.approx(0.3) and score_thr["source"] == "read"
    assert score_thr["note"] == "MODEL.ROI_HEADS.SCORE_THRESH_TEST: a stricter cut"
    assert row(rows, "multi_label")["value"] is True and "FastRCNNOutputLayers" in row(rows, "multi_label")["read_from"]


# -- mmdet ----------------------------------------------------------------------------------------------
def test_mmdet_max_per_img_is_read_from_the_built_model(split0, tmp_path):
    det = predicted("mmdet_frcnn", split0, tmp_path, native={"model.test_cfg.rcnn.max_per_img": 50},
                    reasons={"model.test_cfg.rcnn.max_per_img": "fewer boxes"})
    max_det = row(det.protocol(), "max_det")
    assert max_det["value"] == 50 and max_det["note"] == "model.test_cfg.rcnn.max_per_img: fewer boxes"
    assert max_det["read_from"].startswith("model.roi_head.test_cfg.max_per_img = 50")


def test_mmdet_epochs_and_iterations_come_from_the_runner(split0, tmp_path):
    """One real tiny fit: a native train_cfg.max_epochs (2, the spec says 1) is what mmengine's train loop
    ran; the card's epochs and iterations follow runner.max_epochs / runner.iter and flag the difference."""
    det = get_detector("mmdet_frcnn", tiny_spec("mmdet_frcnn", native={
        "train_cfg.max_epochs": 2, "val_cfg": None, "val_dataloader": None, "val_evaluator": None}))
    det.fit(split0, tmp_path / "fit")
    rows = det.protocol()
    epochs, iterations = row(rows, "epochs"), row(rows, "iterations")
    assert epochs["value"] == 2 and epochs["asked"] == 1 and epochs["read_from"] == "runner.max_epochs"
    assert epochs["unexplained"] == [RAN_NOT_ASKED]  # train_cfg.max_epochs was given no reason
    per_epoch = -(-det.consumed["images"] // 4)
    assert iterations["value"] == 2 * per_epoch and iterations["source"] == "read"
    assert all(row(rows, key)["source"] == "read" for key in ("negatives", "augmentation", "seed", "init_weights",
                                                               "gpus", "lr", "schedule", "warmup", "grad_clip"))


# -- one real fit per framework: read back from the trainer, and a guard ---------------------------------
def test_yolo_fit_reads_fliplr_and_warmup_from_ultralytics_and_the_card_ignores_the_spec(split0, tmp_path,
                                                                                          forbid_network):
    """fliplr via `native` reaches the trainer (the spec still says 0.5); warmup_epochs=3 with epochs=1
    runs no warm-up (ultralytics keeps the last epoch out of it). Then the spec is changed after fit and
    prediction: the card's values do not move (only what was asked does)."""
    det = get_detector("yolov5", tiny_spec("yolov5", native={"fliplr": 0.25, "warmup_epochs": 3.0},
                                           reasons={"fliplr": "test"}))
    checkpoint = det.fit(split0, tmp_path / "fit")
    det.predict(checkpoint, split0.images("val")[:2], tmp_path / "fit")
    rows = det.protocol()
    aug = row(rows, "augmentation")
    assert aug["value"]["hflip"] == 0.25 and aug["asked"]["hflip"] == 0.5 and aug["note"] == "fliplr: test"
    warmup = row(rows, "warmup")
    assert warmup["value"].startswith("0 epochs (0 iterations)") and warmup["source"] == "read"
    assert row(rows, "epochs")["value"] == 1 and row(rows, "iterations")["source"] == "read"
    assert row(rows, "channels")["value"] == 3 and row(rows, "image_size")["value"] == 64
    assert [r["key"] for r in rows if r["source"] not in ("read", "applied")] == []
    # only the override without a reason (warmup_epochs) is flagged: every other row ran as asked or says why
    assert [r["key"] for r in rows if r.get("unexplained")] == ["native_overrides"]
    assert row(rows, "gpus")["value"] == 1 and row(rows, "gpus")["source"] == "read"
    # the natives are ultralytics' own: its defaults, and the optimizer its optimizer=auto rule builds for
    # a run this short (AdamW, lr fitted to the class count), not a typed copy
    from ultralytics.cfg import DEFAULT_CFG_DICT

    assert row(rows, "optimizer")["native"] == "AdamW(beta1 0.9) (optimizer=auto)"
    assert row(rows, "lr")["native"] == pytest.approx(round(0.002 * 5 / (4 + det.spec.num_classes), 6))
    assert row(rows, "framework_aug")["native"] == {k: DEFAULT_CFG_DICT[k] for k in row(rows, "framework_aug")["native"]}
    assert row(rows, "warmup")["native"] == "0 epochs (0 iterations)"  # the default 3 epochs, by the same rule

    before = {r["key"]: r["value"] for r in rows}
    spec = det.spec
    spec.imgsz, spec.epochs, spec.lr, spec.nms_iou, spec.channels = 96, 7, 0.5, 0.3, 1
    spec.aug = AugSpec(hflip=0.0, vflip=0.5)
    spec.negatives, spec.seed = "keep", 11
    after = {r["key"]: r["value"] for r in det.protocol()}
    moved = {k for k in before if before[k] != after[k]}
    # score_thr/max_det are the stricter of the framework's and the harness's cut: the harness's cut
    # is the spec; nothing else may follow the spec
    assert moved <= {"native_overrides"}, moved


def test_detectron2_natives_are_the_packaged_zoo_configs():
    """The native column is the zoo YAML as detectron2 ships it: RetinaNet's BASE_LR is 0.01, Faster
    R-CNN's 0.02 with the 3x schedule (checked against the packaged files themselves)."""
    import re

    from adapters.detectron2_frcnn import zoo_config_path

    def solver(name: str, key: str) -> float:  # the value as the packaged YAML file writes it
        return float(re.search(rf"^\s+{key}:\s*([\d.]+)", zoo_config_path(name).read_text(), re.M).group(1))

    retina = get_detector("detectron2_retinanet", tiny_spec(None, batch_predict=2))
    rows = retina.protocol()
    assert row(rows, "lr")["native"] == solver("Base-RetinaNet.yaml", "BASE_LR") == 0.01
    frcnn = get_detector("detectron2_frcnn", tiny_spec("detectron2_frcnn")).protocol()
    assert row(frcnn, "lr")["native"] == solver("Base-RCNN-FPN.yaml", "BASE_LR") == 0.02
    assert row(frcnn, "batch_size")["native"] == solver("Base-RCNN-FPN.yaml", "IMS_PER_BATCH") == 16
    max_iter = int(solver("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "MAX_ITER"))
    assert row(frcnn, "schedule")["native"] == f"x0.1 at 78% and 93% of {max_iter} iterations"


def test_yolo_rank0_readback_travels_to_the_jobs_process(split0, tmp_path, monkeypatch):
    """The multi-GPU path without GPUs: the on_train_end callback, run as rank 0 would run it, writes the
    read-back to ddp_result.json instead of recording it; the job's process collects it into the card
    (gradient clipping excepted: it is recorded in the job's process only, so it stays "asked")."""
    from adapters.yolov5 import ultralytics_offline

    det = get_detector("yolov5", tiny_spec("yolov5"))
    with ultralytics_offline(tmp_path / "cfg"):  # ultralytics binds its own RANK at import: import it first
        import ultralytics.engine.trainer  # noqa: F401
        import ultralytics.models.yolo.detect  # noqa: F401
    monkeypatch.setenv("RANK", "0")  # what the callback reads, as torch.distributed sets it in a DDP worker
    det.fit(split0, tmp_path / "fit")
    assert det.ran.train_size is None and det.ran.recipe == {}  # rank 0 wrote it, recorded nothing
    det._collect_ddp_readback((tmp_path / "fit").resolve())
    rows = {r["key"]: r for r in det.protocol()}
    assert rows["negatives"]["source"] == "read" and rows["augmentation"]["source"] == "read"
    assert rows["epochs"]["source"] == "read" and rows["warmup"]["read_from"].startswith("trainer._get_warmup")
    assert rows["grad_clip"]["source"] == "asked"
