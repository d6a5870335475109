"""prepare_dataset end to end on the synthetic tiny set: PNGs, manifest, COCO labels, folds, stats,
resumability, a broken DICOM in the batch, and bad CSV rows."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from harness.classes import CLASSES
from harness.data.fusion import fuse_readers
from harness.data.labels import LabelError, parse_train_csv
from harness.data.manifest import read_manifest
from harness.data.pipeline import prepare_dataset
from harness.split import make_split
from harness.synth import generate


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("raw"), "tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return out, prepare_dataset(raw, out, size=256, workers=2, progress=False)


def test_outputs(raw, prepared):
    out, s = prepared
    assert (s.converted, s.skipped, s.failed) == (48, 0, 0) and s.ok
    m = read_manifest(s.manifest)
    assert len(m) == 48 and (m["status"] == "ok").all() and set(m["split"]) == {"train", "test"}
    assert (np.maximum(m["height"], m["width"]) == 256).all()
    coco = json.loads(s.labels.read_text())
    assert s.labels == out / "labels" / "wbf.json" and len(coco["images"]) == 40 == s.train_images
    assert [c["id"] for c in coco["categories"]] == list(range(14))
    assert [img["id"] for img in coco["images"]] == list(range(1, 41))
    keys = [img["image_key"] for img in coco["images"]]
    assert keys == sorted(keys)
    assert sum(s.boxes_per_class.values()) == len(coco["annotations"]) > 20
    with_boxes = {a["image_id"] for a in coco["annotations"]}
    assert 0 < len(with_boxes) < 40  # normal images are listed without annotations
    # every box maps back to the fused DICOM-pixel box through the manifest's scale
    table = parse_train_csv(raw / "train.csv")
    fused = fuse_readers(table.rows, "wbf", 0.4)
    by_key = {img["id"]: img for img in coco["images"]}
    mrow = m.set_index("image_id")
    for ann in coco["annotations"][:10]:
        img = by_key[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and x + w <= img["width"] + 0.01 and 0 <= y and y + h <= img["height"] + 0.01
        r = mrow.loc[img["image_key"]]
        assert (img["orig_width"], img["orig_height"]) == (r.orig_width, r.orig_height)
        cand = fused[(fused["image_id"] == img["image_key"]) & (fused["class_id"] == ann["category_id"])]
        err = np.abs(cand[["x_min", "y_min"]].to_numpy() - [x / r.scale_x, y / r.scale_y]).sum(1).min()
        assert err < 0.1 and 1 <= ann["num_readers"] <= 3
        png = cv2.imread(str(out / img["file_name"]), cv2.IMREAD_UNCHANGED)
        assert png.shape == (img["height"], img["width"]) and png.dtype == np.uint8
    # folds: all images, every class with >= 5 images in every fold; the split module accepts them
    folds = json.loads(s.folds.read_text())
    assert sorted(k for f in folds["folds"] for k in f) == keys and folds["labels"] == "labels/wbf.json"
    fold_of = {key: f for f, fold_keys in enumerate(folds["folds"]) for key in fold_keys}
    for cid in range(14):
        ids = {a["image_id"] for a in coco["annotations"] if a["category_id"] == cid}
        if len(ids) >= 5:
            per_fold = np.bincount([fold_of[by_key[i]["image_key"]] for i in ids], minlength=5)
            assert per_fold.min() > 0, (CLASSES[cid], per_fold)
    split = make_split(s.labels, s.folds, 0, out / "run")
    assert len(split.images("val")) == len(folds["folds"][0])
    # stats
    stats = pd.read_csv(s.stats_dir / "class_stats.csv")
    assert len(stats) == 15 and stats["boxes"].sum() == len(coco["annotations"])
    assert stats.loc[14, "images"] == 40 - len(with_boxes)
    for chart in ("data_per_label.png", "box_sizes.png", "readers_per_finding.png"):
        assert cv2.imread(str(s.stats_dir / chart)).shape[1] > 600
    assert "| Cardiomegaly |" in (s.stats_dir / "class_stats.md").read_text()


def test_rerun_skips_finished_work(raw, prepared):
    out, first = prepared
    png = sorted(first.image_dir.glob("*.png"))[0]
    before = {p: p.stat().st_mtime_ns for p in (first.labels, first.folds, png, first.stats_dir / "class_stats.csv")}
    again = prepare_dataset(raw, out, size=256, workers=0, progress=False)
    assert (again.converted, again.skipped, again.failed) == (0, 48, 0)
    assert again.reused == ["labels", "folds", "stats"]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    other = prepare_dataset(raw, out, size=256, fusion="nms", folds=3, seed=1, workers=0, progress=False)
    assert other.labels.name == "nms.json" and other.folds.name == "mlstrat-k3-s1-nms.json" and other.reused == []
    assert other.skipped == 48


def test_broken_dicom_and_bad_rows(raw, tmp_path):
    src = tmp_path / "raw"
    shutil.copytree(raw, src)
    victim = sorted((src / "train").glob("*.dicom"))[0]
    victim.write_bytes(victim.read_bytes()[:3000])  # truncated mid-pixels
    stray = sorted((src / "test").glob("*.dicom"))[0]
    stray.rename(src / "train" / stray.name)  # a train DICOM without train.csv rows
    s = prepare_dataset(src, tmp_path / "out", size=128, workers=2, progress=False)
    assert (s.converted, s.failed) == (47, 1) and s.failures[0][0] == victim.stem
    assert s.unlabeled == 1  # left out of the labels, not passed off as a normal image
    assert not (s.image_dir / f"{victim.stem}.png").exists()
    assert not [p for p in s.image_dir.iterdir() if ".tmp" in p.name]
    coco = json.loads(s.labels.read_text())
    assert len(coco["images"]) == 39 and victim.stem not in {i["image_key"] for i in coco["images"]}
    row = read_manifest(s.manifest).set_index("image_id").loc[victim.stem]
    assert row.status == "failed" and row.reason

    lines = (src / "train.csv").read_text().splitlines()
    lines.append(f"{victim.stem},Cardiomegaly,3,R8,10,10,5,20")  # reversed box
    lines.append("deadbeef,Cardiomegaly,3,R8,10,10")  # malformed
    (src / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelError, match=rf"line {len(lines) - 1}: reversed.*\n.*line {len(lines)}: expected 8"):
        prepare_dataset(src, tmp_path / "out", size=128, workers=0, progress=False)
    s2 = prepare_dataset(src, tmp_path / "out", size=128, bad_rows="drop-and-report", workers=0, progress=False)
    assert s2.dropped_rows == 2 and s2.problems_report is not None
    assert "reversed" in s2.problems_report.read_text() and s2.skipped == 47


def test_a_replaced_or_moved_source_is_converted_again_and_a_failed_file_is_never_ok(raw, tmp_path, caplog):
    """The PNG cache is keyed by the source file (path, size, mtime) as well as the settings."""
    src, out = tmp_path / "raw", tmp_path / "out"
    BAD_ROWS = "drop-and-report"  # noqa: N806 - the donor image is smaller: the victim's boxes fall outside it
    shutil.copytree(raw, src)
    first = prepare_dataset(src, out, size=128, workers=0, progress=False, bad_rows=BAD_ROWS)
    assert (first.converted, first.skipped) == (48, 0)
    victim, donor = sorted((src / "train").glob("*.dicom"))[:2]
    victim.write_bytes(donor.read_bytes())  # a DICOM replaced in place by another image
    with caplog.at_level("WARNING"):
        again = prepare_dataset(src, out, size=128, workers=0, progress=False, bad_rows=BAD_ROWS)
    assert (again.converted, again.skipped, again.failed) == (1, 47, 0)
    assert "1 image(s) converted again instead of reusing their PNG: 1 source changed" in caplog.text
    assert victim.stem in caplog.text and "size" in caplog.text
    png = lambda stem: cv2.imread(str(again.image_dir / f"{stem}.png"), cv2.IMREAD_UNCHANGED)  # noqa: E731
    assert np.array_equal(png(victim.stem), png(donor.stem))  # the new source's pixels, not the old PNG's

    victim.write_bytes(b"not a DICOM at all")  # replaced by a broken file: failed, never "ok"
    for _ in range(2):  # ... also on the run after (the stale PNG is not reused)
        broken = prepare_dataset(src, out, size=128, workers=0, progress=False, bad_rows=BAD_ROWS)
        assert (broken.converted, broken.failed) == (0, 1) and broken.failures[0][0] == victim.stem
        assert read_manifest(broken.manifest).set_index("image_id").loc[victim.stem].status == "failed"
        assert victim.stem not in {i["image_key"] for i in json.loads(broken.labels.read_text())["images"]}

    other = tmp_path / "other_copy"  # data.raw_dir pointed at another copy (same names, sizes and mtimes)
    shutil.copytree(src, other)
    caplog.clear()
    with caplog.at_level("WARNING"):
        moved = prepare_dataset(other, out, size=128, workers=0, progress=False, bad_rows=BAD_ROWS)
    assert (moved.converted, moved.skipped, moved.failed) == (47, 0, 1)
    assert "48 source changed" in caplog.text and "path" in caplog.text  # the broken file too: tried again
