"""`data=nih_cxr14`: the NIH ChestX-ray14 box set read in the release's layout (real radiographs from
tests/data/nih-cxr14-mini), converted by the shared prepare step without a DICOM stage, with its own
8 classes, one reader per box, patient-grouped folds and optional "No Finding" normals."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.classes import NIH_CLASSES, NotVinBigData, class_names
from harness.data import folds as folds_mod
from harness.data.labels import LabelError
from harness.data.nih import parse_bbox_csv, prepare_nih
from nih_mini import NIH_MINI, box_rows, copy_mini, image_paths

ROOT = Path(__file__).resolve().parents[1]


def _prepare(raw_dir, out_dir, **kw):
    return prepare_nih(raw_dir, out_dir, workers=0, progress=False, folds=kw.pop("folds", 2), **kw)


def test_cxr_prepare_converts_every_image_and_writes_the_csv_boxes(tmp_path):
    """The acceptance check: `cxr-prepare data=nih_cxr14 data.raw_dir=<release layout>`."""
    env = {**os.environ, "CXR_BENCH_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "harness.cli.prepare", "data=nih_cxr14", f"data.raw_dir={NIH_MINI}",
                          "data.folds=2", "data.workers=1"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    prepared = tmp_path / "data" / "nih-cxr14"
    manifest = list(csv.DictReader(open(prepared / "manifest.csv")))
    assert {r["image_id"] + ".png" for r in manifest} == set(image_paths())  # found in images_001/ and images_002/
    assert all(r["status"] == "ok" and r["transfer_syntax"] == "PNG" for r in manifest)
    coco = json.loads((prepared / "labels" / "none.json").read_text())
    assert class_names(coco) == NIH_CLASSES
    rows = box_rows()
    assert len(coco["annotations"]) == len(rows) == 15
    key = {img["id"]: img["image_key"] for img in coco["images"]}
    got = sorted((key[a["image_id"]], NIH_CLASSES[a["category_id"]], *a["bbox"]) for a in coco["annotations"])
    want = sorted((r["name"][:-4], r["label"], *r["xywh"]) for r in rows)
    for g, w in zip(got, want):  # 1024 px: PNG pixels are the release's pixels; COCO keeps 2 decimals
        assert g[:2] == w[:2] and np.allclose(g[2:], w[2:], atol=0.006), (g, w)
    assert all(a["num_readers"] == 1 for a in coco["annotations"])
    # the PNG is the released image, unchanged at 1024
    name = manifest[0]["image_id"]
    assert np.array_equal(cv2.imread(str(prepared / manifest[0]["png"]), cv2.IMREAD_UNCHANGED),
                          cv2.imread(str(image_paths()[name + ".png"]), cv2.IMREAD_UNCHANGED))
    stats = list(csv.DictReader(open(prepared / "stats" / "none" / "class_stats.csv")))
    assert [r["class_name"] for r in stats] == [*NIH_CLASSES, "No finding"]


def test_resized_boxes_scale_with_the_image(tmp_path):
    summary = _prepare(NIH_MINI, tmp_path / "p", size=512)
    coco = json.loads(summary.labels.read_text())
    assert summary.converted == 11 and summary.failed == 0
    assert all(img["width"] == img["height"] == 512 for img in coco["images"])
    key = {img["id"]: img["image_key"] for img in coco["images"]}
    want = {(r["name"][:-4], r["label"]): r["xywh"] for r in box_rows()}
    for ann in coco["annotations"]:
        x, y, w, h = want[(key[ann["image_id"]], NIH_CLASSES[ann["category_id"]])]
        assert np.allclose(ann["bbox"], [x / 2, y / 2, w / 2, h / 2], atol=0.006)


def test_bad_images_are_reported_by_file_and_the_rest_converted(tmp_path):
    raw = copy_mini(tmp_path / "raw")
    paths = image_paths(raw)
    truncated, not_png = paths["00018366_010.png"], paths["00026911_005.png"]
    truncated.write_bytes(truncated.read_bytes()[:5000])
    not_png.write_text("not an image")
    summary = _prepare(raw, tmp_path / "p")
    assert summary.failed == 2 and summary.converted == 9
    reasons = dict(summary.failures)
    assert set(reasons) == {"00018366_010", "00026911_005"}
    assert str(not_png) in reasons["00026911_005"] and str(truncated) in reasons["00018366_010"]
    coco = json.loads(summary.labels.read_text())
    assert len(coco["images"]) == 9
    assert len(coco["annotations"]) == 15 - 2  # each failed image had one box
    # a rerun reuses the nine PNGs and reports the same two files
    again = _prepare(raw, tmp_path / "p")
    assert again.skipped == 9 and again.failed == 2


def test_box_file_as_released_and_bad_rows_named_by_line(tmp_path):
    table = parse_bbox_csv(NIH_MINI / "BBox_List_2017.csv")
    assert len(table.rows) == 15 and set(table.rows["rad_id"]) == {"NIH"}
    first = box_rows()[0]
    row = table.rows.iloc[0]
    assert [row.x_min, row.y_min, row.x_max - row.x_min, row.y_max - row.y_min] == pytest.approx(first["xywh"])
    text = (NIH_MINI / "BBox_List_2017.csv").read_text().splitlines()
    bad = tmp_path / "BBox_List_2017.csv"
    bad.write_text("\n".join([*text[:3],
                              "00000001_000.png,Infiltration,10,10,50,50,,,",  # the image-level spelling: accepted
                              "00000001_000.png,Fracture,10,10,50,50,,,",
                              "00000001_000.png,Mass,10,10,-5,50,,,",
                              "00000001_000.png,Mass,10,ten,5,50,,,"]) + "\n")
    with pytest.raises(LabelError) as err:
        parse_bbox_csv(bad)
    message = str(err.value)
    assert "3 bad row(s)" in message and "line 5: unknown Finding Label 'Fracture'" in message
    assert "line 6: empty box" in message and "line 7: non-numeric box" in message
    kept = parse_bbox_csv(bad, policy="drop-and-report", report_path=tmp_path / "problems.csv")
    assert len(kept.rows) == 3 and kept.rows.iloc[-1]["class_id"] == NIH_CLASSES.index("Infiltrate")
    assert "Fracture" in (tmp_path / "problems.csv").read_text()


def test_folds_never_split_a_patient(tmp_path):
    summary = _prepare(NIH_MINI, tmp_path / "p", folds=2)
    doc = json.loads(summary.folds.read_text())
    assert doc["group_by"] == "patient" and sorted(sum(doc["folds"], [])) == sorted(p[:-4] for p in image_paths())
    owner = {}
    for k, fold in enumerate(doc["folds"]):
        for key in fold:
            assert owner.setdefault(key.split("_")[0], k) == k, f"patient {key.split('_')[0]} in two folds"
    # and at scale: 300 images of 90 patients (1-8 images each), 5 folds
    rng = np.random.default_rng(0)
    images, anns = [], []
    for patient in range(90):
        for follow_up in range(int(rng.integers(1, 9))):
            images.append({"id": len(images) + 1, "image_key": f"{patient:08d}_{follow_up:03d}"})
            for cat in rng.choice(8, size=int(rng.integers(0, 3)), replace=False):
                anns.append({"image_id": len(images), "category_id": int(cat)})
    coco = {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in enumerate(NIH_CLASSES)]}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.json").write_text(json.dumps(coco))
    doc = json.loads(folds_mod.make_folds(tmp_path / "labels" / "x.json", 5, 0, group_by="patient").read_text())
    patients = [{key.split("_")[0] for key in fold} for fold in doc["folds"]]
    assert sum(len(p) for p in patients) == len(set().union(*patients)) == 90
    sizes = [len(fold) for fold in doc["folds"]]
    assert sum(sizes) == len(images) and max(sizes) - min(sizes) < len(images) * 0.15
    ungrouped = json.loads(folds_mod.make_folds(tmp_path / "labels" / "x.json", 5, 0, out_dir=tmp_path / "u").read_text())
    split_patients = {key.split("_")[0] for a in ungrouped["folds"] for b in ungrouped["folds"] if a is not b
                      for key in a if key.split("_")[0] in {k.split("_")[0] for k in b}}
    assert split_patients, "the ungrouped folds would split patients: the grouping is what prevents it"


def test_no_finding_images_from_data_entry_as_normals(tmp_path):
    raw = copy_mini(tmp_path / "raw")
    extra = raw / "images_003" / "images"
    extra.mkdir(parents=True)
    source = image_paths(raw)["00005532_016.png"]
    for name in ("00090001_000.png", "00090002_000.png", "00090003_001.png"):
        (extra / name).write_bytes(source.read_bytes())
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017.csv"):
        _prepare(raw, tmp_path / "p", normals=2)
    (raw / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID\n"
        "00090001_000.png,No Finding,0,90001\n00090002_000.png,No Finding,0,90002\n"
        "00090003_001.png,Infiltration,1,90003\n00005532_016.png,No Finding,16,5532\n")
    summary = _prepare(raw, tmp_path / "p", normals=5)  # more than there are: all that qualify
    coco = json.loads(summary.labels.read_text())
    keys = {img["image_key"] for img in coco["images"]}
    assert {"00090001_000", "00090002_000"} <= keys and "00090003_001" not in keys and len(keys) == 13
    assert summary.labels.name == "none-normals5" + ".json" and len(coco["annotations"]) == 15


def test_vinbigdata_only_paths_say_so():
    from harness.predictions import Predictions
    from harness.submission import submission_frame

    preds = Predictions("m", None, [1], [])
    with pytest.raises(NotVinBigData, match="Kaggle submission.*VinBigData-only"):
        submission_frame(preds, None, classes=NIH_CLASSES)
    from harness.eval import evaluate

    gt = {"images": [{"id": 1, "width": 64, "height": 64}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 20, 20]}],
          "categories": [{"id": i, "name": n} for i, n in enumerate(NIH_CLASSES)]}
    scores = evaluate(gt, Predictions("m", None, [1], [{"image_id": 1, "category_id": 7, "bbox": [1, 1, 20, 20],
                                                         "score": 0.9}]))
    assert scores["per_class"]["Pneumothorax"] == pytest.approx(1.0) and set(scores["per_class"]) == set(NIH_CLASSES)
    assert scores["voc_map40_15"] is None and scores["voc_per_class"]["Pneumothorax"] == pytest.approx(1.0)


def test_nih_cpu_preset_composes_with_the_nih_classes():
    from hydra import compose, initialize_config_dir

    from harness.cli.common import CONF_DIR
    from harness.jobs.config import train_spec

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=nih_cpu", "model=detectron2_frcnn"])
    assert cfg.data.layout == "nih_cxr14" and cfg.data.fusion == "none" and cfg.data.folds == 2
    spec = train_spec(cfg)
    assert spec.classes == list(NIH_CLASSES) and spec.imgsz == 256 and spec.variant == "R18-FPN"


@pytest.mark.slow
def test_train_job_and_report_on_nih_use_its_classes(tmp_path):
    """cxr-train on data=nih_cxr14 (the real subset, 2 patient-grouped folds), then cxr-report: the
    run's metrics and the report's per-class table carry the 8 NIH classes, and no VinBigData-only
    section appears."""
    from test_hydra_pipeline import run_app

    common = ["data=nih_cxr14", f"data.raw_dir={NIH_MINI}", "data.folds=2", "data.size=256", "sweep=nih"]
    run_app("harness.cli.train", [*common, "model=yolov5", "data.fold=0", "train.imgsz=128", "train.epochs=1",
                                  "train.batch_size=4", "per_model.yolov5.variant=yolov5n"], tmp_path)
    run = tmp_path / "runs" / "nih" / "yolov5" / "fold0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["per_class"]) == list(NIH_CLASSES) and metrics["voc_map40_15"] is None
    val = json.loads((run / "split" / "val.json").read_text())
    train = json.loads((run / "split" / "train.json").read_text())
    patients = [{img["image_key"].split("_")[0] for img in part["images"]} for part in (train, val)]
    assert not patients[0] & patients[1]
    run_app("harness.cli.report", ["sweep=nih", "report.overlays=1", "report.bootstrap.resamples=50"], tmp_path)
    results = (tmp_path / "runs" / "nih" / "report" / "results.md").read_text()
    assert "| Pneumothorax |" in results and "| Aortic enlargement |" not in results
    assert "No finding" not in results.split("## Failed jobs")[0].split("Per-class")[1]


def test_boxes_scale_from_the_release_space_to_downscaled_images(tmp_path):
    """The release's boxes are in 1024-px space; a copy of the release with its PNGs at 512 px gets its
    boxes halved (not rejected as outside the image, nor kept at twice their size), and says so."""
    from PIL import Image

    raw = copy_mini(tmp_path / "raw")
    for path in image_paths(raw).values():
        with Image.open(path) as im:
            im.resize((512, 512)).save(path)
    summary = _prepare(raw, tmp_path / "p", size=256)  # found at 512, prepared at 256
    coco = json.loads(summary.labels.read_text())
    assert all(img["orig_width"] == 512 and img["width"] == 256 for img in coco["images"])
    assert len(coco["info"]["box_scale"]) == 11 and set(map(tuple, coco["info"]["box_scale"].values())) == {(0.5, 0.5)}
    key = {img["id"]: img["image_key"] for img in coco["images"]}
    want = {(r["name"][:-4], r["label"]): r["xywh"] for r in box_rows()}
    assert len(coco["annotations"]) == 15
    for ann in coco["annotations"]:
        x, y, w, h = want[(key[ann["image_id"]], NIH_CLASSES[ann["category_id"]])]
        assert np.allclose(ann["bbox"], [x / 4, y / 4, w / 4, h / 4], atol=0.006)
    # at the release's own size nothing is scaled
    assert json.loads(_prepare(NIH_MINI, tmp_path / "q", size=256).labels.read_text())["info"]["box_scale"] == {}


def test_original_header_with_a_byte_order_mark_and_three_empty_trailing_columns(tmp_path):
    """The release's header as shipped ("Bbox [x,y,w,h]" split into four cells, then three empty ones),
    here saved with a UTF-8 byte-order mark as spreadsheet exports do."""
    rows = (NIH_MINI / "BBox_List_2017.csv").read_text().splitlines()[1:]
    path = tmp_path / "BBox_List_2017.csv"
    path.write_bytes(("\n".join(["Image Index,Finding Label,Bbox [x,y,w,h],,,", *rows]) + "\n").encode("utf-8-sig"))
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    table = parse_bbox_csv(path)
    assert len(table.rows) == 15 and table.rows.iloc[0]["image_id"] == box_rows()[0]["name"][:-4]


def test_unboxed_findings_of_data_entry_become_ignore_regions(tmp_path):
    """With Data_Entry_2017.csv, a finding the image-level labels give but the box list does not box is
    an ignore region (a whole-image iscrowd box): not a box to find, not background to be penalised."""
    from harness.eval import evaluate
    from harness.predictions import Predictions

    raw = copy_mini(tmp_path / "raw")
    assert json.loads(_prepare(raw, tmp_path / "p0").labels.read_text())["info"]["exhaustive"] is False
    (raw / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID\n"
        "00019124_045.png,Atelectasis|Effusion,45,19124\n"        # Atelectasis boxed; Effusion not
        "00005532_016.png,Cardiomegaly|Infiltration,16,5532\n")   # Infiltrate unboxed
    summary = _prepare(raw, tmp_path / "p")
    coco = json.loads(summary.labels.read_text())
    crowd = [a for a in coco["annotations"] if a.get("iscrowd")]
    key = {img["id"]: img for img in coco["images"]}
    assert sorted((key[a["image_id"]]["image_key"], NIH_CLASSES[a["category_id"]]) for a in crowd) == [
        ("00005532_016", "Infiltrate"), ("00019124_045", "Effusion")]
    assert all(a["bbox"] == [0, 0, key[a["image_id"]]["width"], key[a["image_id"]]["height"]] for a in crowd)
    assert coco["info"]["unboxed_findings"] == 2 and summary.boxes_per_class["Effusion"] == 2
    # scoring: an Effusion detection on the image whose Effusion is unboxed is neither TP nor FP
    effusion = NIH_CLASSES.index("Effusion")
    boxed = [a for a in coco["annotations"] if a["category_id"] == effusion and not a.get("iscrowd")]
    dets = [{"image_id": a["image_id"], "category_id": effusion, "bbox": a["bbox"], "score": 0.5} for a in boxed]
    ids = [img["id"] for img in coco["images"]]
    unboxed = next(a["image_id"] for a in crowd if a["category_id"] == effusion)
    extra = {"image_id": unboxed, "category_id": effusion, "bbox": [10, 10, 50, 50], "score": 0.9}
    assert evaluate(coco, Predictions("p", None, ids, [*dets, extra]))["per_class"]["Effusion"] == pytest.approx(1.0)
    without = {**coco, "annotations": [a for a in coco["annotations"] if not a.get("iscrowd")]}
    assert evaluate(without, Predictions("p", None, ids, [*dets, extra]))["per_class"]["Effusion"] < 0.7  # the FP ranks first
