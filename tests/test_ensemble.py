"""harness.ensemble (WBF & co. over prediction files) and harness.tta (hflip TTA through any detector)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coco_gt

from adapters.spec import TrainSpec
from harness.ensemble import fuse_files, fuse_predictions, image_sizes_from_coco
from harness.eval import evaluate
from harness.predictions import PredictionFileError, Predictions
from harness.split import ImageRef
from harness.tta import flip_image, predict_with_hflip_tta, unflip_detections

SIZES = {1: (200, 160), 2: (200, 160), 3: (120, 240)}


def gt_coco() -> dict:
    return coco_gt({1: [(0, [10, 10, 40, 30]), (3, [90, 60, 80, 70])],
                    2: [(0, [120, 20, 30, 30]), (3, [40, 70, 100, 60])],
                    3: [(0, [10, 30, 50, 40]), (3, [20, 120, 80, 90])]}, SIZES)


def as_preds(source, dets, split_hash="abc", ids=(1, 2, 3)) -> Predictions:
    return Predictions(source, split_hash, list(ids), [{"image_id": i, "category_id": c, "bbox": list(b), "score": s}
                                                       for i, c, b, s in dets])


RUN_A = [(1, 0, [11, 10, 40, 31], 0.9), (1, 5, [150, 5, 20, 20], 0.3), (2, 0, [121, 21, 29, 30], 0.8),
         (3, 0, [10, 31, 49, 40], 0.7)]


def test_wbf_of_a_file_with_itself_reproduces_it():
    """conf_type "avg": score = mean over the cluster x min(n_runs, n_boxes) / sum(weights) = the
    original score when both runs contribute the identical box."""
    run = as_preds("a", RUN_A)
    fused = fuse_predictions([run, run], SIZES, method="wbf", iou_thr=0.55)
    key = lambda d: (d["image_id"], d["category_id"], d["bbox"][0])  # noqa: E731
    assert len(fused.detections) == len(run.detections)
    for got, want in zip(sorted(fused.detections, key=key), sorted(run.detections, key=key)):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=0.011)
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    assert fused.split_hash == "abc" and fused.image_ids == [1, 2, 3]
    # a single run alone is also reproduced
    alone = fuse_predictions([run], SIZES)
    assert sorted(d["score"] for d in alone.detections) == sorted(d["score"] for d in run.detections)


def test_ensemble_of_complementary_runs_scores_higher():
    gt = gt_coco()
    finds_class0 = as_preds("a", RUN_A)
    finds_class3 = as_preds("b", [(1, 3, [92, 61, 78, 70], 0.8), (2, 3, [41, 70, 99, 61], 0.85),
                                  (3, 3, [21, 121, 80, 88], 0.6), (2, 7, [5, 5, 30, 30], 0.4)])
    fused = fuse_predictions([finds_class0, finds_class3], SIZES, method="wbf", iou_thr=0.55)
    a, b, ens = (evaluate(gt, p)["map40"] for p in (finds_class0, finds_class3, fused))
    assert a == pytest.approx(0.5) and b == pytest.approx(0.5)
    assert ens > max(a, b) and ens == pytest.approx(1.0)
    # boxes seen by one of two runs keep half their score under "avg"
    assert max(d["score"] for d in fused.detections) == pytest.approx(0.45, abs=1e-5)


def test_weights_and_agreement_move_boxes_and_scores():
    a = as_preds("a", [(1, 0, [10, 10, 40, 40], 0.8)])
    b = as_preds("b", [(1, 0, [14, 10, 40, 40], 0.8)])
    fused = fuse_predictions([a, b], SIZES, weights=[3, 1], iou_thr=0.5)
    (det,) = fused.detections
    assert det["bbox"][0] == pytest.approx(11.0, abs=0.02)  # (3*10 + 1*14) / 4
    assert det["score"] == pytest.approx(0.8, abs=1e-5)
    with pytest.raises(ValueError, match="2 weights for 3"):
        fuse_predictions([a, b, a], SIZES, weights=[1, 2])


@pytest.mark.parametrize("method", ["nms", "soft_nms", "nmw", "non_maximum_weighted", "wbf"])
def test_every_method_gives_a_valid_scored_prediction_set(method, tmp_path):
    gt = gt_coco()
    a = as_preds("a", RUN_A + [(3, 3, [20, 120, 80, 90], 0.5)])
    b = as_preds("b", [(1, 0, [12, 11, 40, 30], 0.6), (3, 3, [22, 118, 79, 92], 0.9), (2, 3, [40, 70, 100, 60], 0.7)])
    fused = fuse_predictions([a, b], SIZES, method=method, iou_thr=0.5)
    fused.validate()
    path = tmp_path / "fused.json"
    fused.save(path)
    loaded = Predictions.load(path)
    assert loaded.image_ids == [1, 2, 3] and len(loaded.detections) >= 4
    assert evaluate(gt, loaded)["map40"] > 0.5
    if method == "nms":  # overlapping same-class boxes collapse to the higher-scoring one
        img3 = [d for d in loaded.detections if d["image_id"] == 3 and d["category_id"] == 3]
        assert len(img3) == 1 and img3[0]["score"] == pytest.approx(0.9)


def test_boxes_are_clipped_to_the_image_and_bad_options_rejected():
    a = as_preds("a", [(3, 0, [100, -10, 50, 40], 0.9)])  # image 3 is 120 wide
    (det,) = fuse_predictions([a], SIZES).detections
    x, y, w, h = det["bbox"]
    assert x == pytest.approx(100) and y == pytest.approx(0) and x + w == pytest.approx(120) and h == pytest.approx(30)
    with pytest.raises(ValueError, match="unknown ensemble method"):
        fuse_predictions([a], SIZES, method="vote")
    with pytest.raises(ValueError, match="unknown conf_type"):
        fuse_predictions([a], SIZES, conf_type="median")
    with pytest.raises(PredictionFileError, match="no image size"):
        fuse_predictions([a], {1: (200, 160)})


def test_mismatched_inputs_are_errors_naming_the_files(tmp_path):
    gt_path = tmp_path / "val.json"
    gt_path.write_text(json.dumps(gt_coco()))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    as_preds("a", RUN_A).save(a)
    as_preds("b", RUN_A[:2], ids=(1, 2)).save(b)
    with pytest.raises(PredictionFileError, match=r"a\.json.*b\.json.*different image sets"):
        fuse_files([a, b], gt_path)
    as_preds("b", RUN_A, split_hash="other").save(b)
    with pytest.raises(PredictionFileError, match=r"b\.json \(split other\)"):
        fuse_files([a, b], gt_path)
    out = tmp_path / "ens" / "predictions.json"
    fused = fuse_files([a, a], gt_path, out_path=out, source="ensemble:test")
    assert Predictions.load(out).source == "ensemble:test" == fused.source
    assert image_sizes_from_coco(gt_path) == SIZES


# ---------------------------------------------------------------- hflip TTA


class BrightBoxDetector:
    """A deterministic stand-in for an adapter (our own Detector.predict interface, not a framework):
    it reports the bounding box of the bright pixels of each image it is given, with a score read
    from the image, and records what it was asked to predict."""

    def __init__(self):
        self.calls: list[list[Path]] = []
        self.spec = TrainSpec(max_det=100)  # the shared settings every detector carries (TTA re-caps to max_det)

    def predict(self, checkpoint, images, workdir):
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self.calls.append([img.path for img in images])
        dets = []
        for img in images:
            pixels = cv2.imread(str(img.path), cv2.IMREAD_UNCHANGED)
            ys, xs = np.nonzero(pixels > pixels.max() // 2)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            dets.append({"image_id": img.id, "category_id": 3, "bbox": [float(x1), float(y1), float(x2 - x1),
                                                                        float(y2 - y1)], "score": 0.75})
        return dets


def make_images(tmp_path) -> list[ImageRef]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    refs = []
    for image_id, (w, h), (x1, y1, x2, y2), dtype in [(1, (64, 48), (5, 10, 20, 30), np.uint8),
                                                      (2, (40, 56), (22, 3, 39, 9), np.uint16)]:
        pixels = np.full((h, w), 10, dtype)
        pixels[y1:y2, x1:x2] = np.iinfo(dtype).max
        path = tmp_path / f"{image_id}.png"
        cv2.imwrite(str(path), pixels)
        refs.append(ImageRef(image_id, path, w, h))
    return refs


def test_unflip_formula():
    dets = [{"image_id": 1, "category_id": 0, "bbox": [5.0, 7.0, 10.0, 4.0], "score": 0.5}]
    assert unflip_detections(dets, {1: 64})[0]["bbox"] == [49.0, 7.0, 10.0, 4.0]  # 64 - 5 - 10
    assert unflip_detections(unflip_detections(dets, {1: 64}), {1: 64}) == dets


def test_hflip_tta_unflips_exactly_and_merges(tmp_path):
    images = make_images(tmp_path / "png")
    detector = BrightBoxDetector()
    plain = BrightBoxDetector().predict(None, images, tmp_path / "plain")
    merged = predict_with_hflip_tta(detector, None, images, tmp_path / "tta")
    assert len(detector.calls) == 2
    mirrored_paths = detector.calls[1]
    for ref, flipped in zip(images, mirrored_paths):
        original = cv2.imread(str(ref.path), cv2.IMREAD_UNCHANGED)
        mirrored = cv2.imread(str(flipped), cv2.IMREAD_UNCHANGED)
        assert mirrored.dtype == original.dtype  # 16-bit stays 16-bit
        np.testing.assert_array_equal(mirrored, original[:, ::-1])
    # the mirrored pass, un-flipped, lands exactly on the original boxes ...
    mirrored_dets = BrightBoxDetector().predict(None, [ImageRef(r.id, p, r.width, r.height)
                                                       for r, p in zip(images, mirrored_paths)], tmp_path / "m")
    assert mirrored_dets[0]["bbox"] != plain[0]["bbox"]
    assert unflip_detections(mirrored_dets, {r.id: r.width for r in images}) == plain
    # ... so WBF of the two passes gives the same boxes and scores back
    assert len(merged) == 2
    for got, want in zip(sorted(merged, key=lambda d: d["image_id"]), plain):
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=0.011)
        assert got["score"] == pytest.approx(0.75, abs=1e-5)


def test_flip_image_reports_unreadable_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        flip_image(tmp_path / "missing.png", tmp_path / "out.png")
