"""harness.submission: PNG-pixel predictions back to original DICOM pixels in the Kaggle format."""
from __future__ import annotations


import cv2
import numpy as np
import pandas as pd
import pytest

from harness.data.manifest import read_manifest, write_manifest
from harness.data.prepare import ConvertSettings, convert_folders
from harness.predictions import PredictionFileError, Predictions, detection
from harness.submission import prediction_string, submission_frame, to_original_xyxy, write_submission
from harness.synth import dicomio

ORIG_H, ORIG_W = 300, 240
ORIG_BOX = (60, 90, 150, 210)  # x1, y1, x2, y2 in DICOM pixels


@pytest.fixture(scope="module")
def raw_dicom(tmp_path_factory):
    """One real DICOM (through the synthetic writer) with a bright rectangle at ORIG_BOX."""
    raw = tmp_path_factory.mktemp("raw")
    image = np.full((ORIG_H, ORIG_W), 0.1)
    x1, y1, x2, y2 = ORIG_BOX
    image[y1:y2, x1:x2] = 0.95
    (raw / "test").mkdir()
    dicomio.write(raw / "test" / "scan01.dicom", image, "scan01", np.random.default_rng(3))
    return raw


def parse(prediction_string_: str) -> list[tuple]:
    items = prediction_string_.split()
    assert len(items) % 6 == 0, prediction_string_
    return [(int(items[i]), float(items[i + 1]), *map(int, items[i + 2:i + 6])) for i in range(0, len(items), 6)]


@pytest.mark.parametrize("square", [False, True], ids=["aspect-kept", "stretched-square"])
def test_round_trip_through_prepared_png(raw_dicom, tmp_path, square):
    summary = convert_folders(raw_dicom, tmp_path, ConvertSettings(size=120, square=square), workers=0,
                              progress=False)
    manifest = read_manifest(summary.manifest)
    row = manifest.iloc[0]
    assert row["status"] == "ok" and (row["orig_width"], row["orig_height"]) == (ORIG_W, ORIG_H)
    sx, sy = float(row["scale_x"]), float(row["scale_y"])
    assert (sx == pytest.approx(sy)) != square  # stretched: different scales
    # PNG coords = original x scale: the bright rectangle is where the manifest says
    png_box = [ORIG_BOX[0] * sx, ORIG_BOX[1] * sy, ORIG_BOX[2] * sx, ORIG_BOX[3] * sy]
    pixels = cv2.imread(str(tmp_path / row["png"]), cv2.IMREAD_UNCHANGED)
    ys, xs = np.nonzero(pixels > (int(pixels.max()) + int(pixels.min())) // 2)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], png_box, atol=1.5)
    # a prediction at that PNG box comes back as the original box in the submission
    preds = Predictions("m", None, [1], [detection(1, 3, png_box, 0.8)])
    frame = submission_frame(preds, manifest.assign(coco_id=[1]))
    assert list(frame.columns) == ["image_id", "PredictionString"] and frame["image_id"][0] == "scan01"
    (lesion, normal) = parse(frame["PredictionString"][0])
    assert lesion[0] == 3 and lesion[1] == pytest.approx(0.8)
    np.testing.assert_allclose(lesion[2:], ORIG_BOX, atol=1)
    assert normal == (14, pytest.approx(0.2), 0, 0, 1, 1)


def test_no_finding_policies():
    dets = [{"image_id": 1, "category_id": 0, "bbox": [10, 10, 20, 20], "score": 0.6},
            {"image_id": 1, "category_id": 8, "bbox": [30, 30, 5, 5], "score": 0.9}]
    text = prediction_string(dets, 0.5, 0.5)
    assert text == "8 0.9000 60 60 70 70 0 0.6000 20 20 60 60 14 0.1000 0 0 1 1"  # sorted by score, p = 1 - 0.9
    assert prediction_string(dets, 0.5, 0.5, no_finding="empty_only") == "8 0.9000 60 60 70 70 0 0.6000 20 20 60 60"
    assert prediction_string([], 1, 1, no_finding="empty_only") == "14 1 0 0 1 1"
    assert prediction_string([], 1, 1) == "14 1.0000 0 0 1 1"
    assert prediction_string(dets, 1, 1, normal_score=0.33).endswith("14 0.3300 0 0 1 1")
    assert prediction_string(dets, 1, 1, score_thr=0.7, no_finding="empty_only") == "8 0.9000 30 30 35 35"
    with pytest.raises(ValueError, match="no_finding"):
        prediction_string(dets, 1, 1, no_finding="bogus")
    # boxes spilling over the image edge are clipped to the original image
    assert prediction_string([{"image_id": 1, "category_id": 2, "bbox": [90, -4, 20, 10], "score": 0.5}], 1, 1,
                             orig_width=100, orig_height=80, no_finding="empty_only") == "2 0.5000 90 0 100 6"
    assert to_original_xyxy([10, 20, 30, 40], 0.5, 0.25) == (20, 80, 80, 240)


def test_write_submission_from_manifest_file_and_coco(tmp_path):
    manifest = [
        {"image_id": "aa", "split": "train", "orig_height": 200, "orig_width": 100, "height": 100, "width": 50,
         "scale_x": 0.5, "scale_y": 0.5, "status": "ok"},
        {"image_id": "bb", "split": "train", "orig_height": 100, "orig_width": 100, "height": 50, "width": 50,
         "scale_x": 0.5, "scale_y": 0.5, "status": "ok"}]
    manifest_csv = write_manifest(manifest, tmp_path / "manifest.csv")
    coco = {"images": [{"id": 7, "image_key": "bb", "width": 50, "height": 50},
                       {"id": 9, "image_key": "aa", "width": 50, "height": 100}]}
    preds = Predictions("m", None, [9, 7], [{"image_id": 9, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.5}])
    out = write_submission(preds, manifest_csv, tmp_path / "sub" / "submission.csv", coco_json=coco)
    frame = pd.read_csv(out)
    assert list(frame["image_id"]) == ["aa", "bb"]
    assert frame["PredictionString"][0] == "1 0.5000 10 10 30 30 14 0.5000 0 0 1 1"
    assert frame["PredictionString"][1] == "14 1.0000 0 0 1 1"
    assert [p.name for p in out.parent.iterdir()] == ["submission.csv"]  # no temp file left
    with pytest.raises(ValueError, match="coco_json"):
        write_submission(preds, manifest_csv, tmp_path / "x.csv")
    with pytest.raises(PredictionFileError, match=r"\[9\]"):
        write_submission(preds, manifest_csv, tmp_path / "x.csv", coco_json={"images": coco["images"][:1]})


def test_round_trip_on_a_real_dicom_at_a_non_integer_scale(tmp_path):
    """The "original" box is drawn into a real chest CR (pydicom-data RG1, MONOCHROME1), found again in
    the PNG by comparing with the untouched image's PNG, exported, and compared in DICOM pixels: no
    value comes from the manifest's scale, which is what the export divides by."""
    import pydicom
    from testdata import require_pydicom_data

    src = require_pydicom_data("RG1_UNCR.dcm")
    ds = pydicom.dcmread(src)
    pixels = ds.pixel_array.copy()
    h, w = pixels.shape
    box = (int(w * 0.31), int(h * 0.27), int(w * 0.58), int(h * 0.49))  # x1, y1, x2, y2 in DICOM pixels
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = pixels.min()  # a value inside the stored range: windowing stays the same
    ds.PixelData = pixels.tobytes()
    for name, data in (("plain", None), ("drawn", ds)):
        (tmp_path / name / "test").mkdir(parents=True)
        if data is None:
            (tmp_path / name / "test" / "rg1.dicom").write_bytes(src.read_bytes())
        else:
            data.save_as(tmp_path / name / "test" / "rg1.dicom")
    size = 333  # 333 / longest side: a non-integer scale
    made = {name: convert_folders(tmp_path / name, tmp_path / f"{name}-out", ConvertSettings(size=size), workers=0,
                                  progress=False) for name in ("plain", "drawn")}
    manifest = read_manifest(made["drawn"].manifest)
    row = manifest.iloc[0]
    scale = float(row["scale_x"])
    assert row["status"] == "ok" and abs(1 / scale - round(1 / scale)) > 0.05
    png = {name: cv2.imread(str(tmp_path / f"{name}-out" / row["png"]), cv2.IMREAD_UNCHANGED).astype(float)
           for name in made}
    diff = np.abs(png["drawn"] - png["plain"])
    ys, xs = np.nonzero(diff > diff.max() / 2)
    png_box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # found in the image, not computed
    preds = Predictions("m", None, [1], [detection(1, 5, png_box, 0.7)])
    (lesion, _) = parse(submission_frame(preds, manifest.assign(coco_id=[1]))["PredictionString"][0])
    assert lesion[0] == 5
    tolerance = 1.5 / scale  # one and a half PNG pixels, in DICOM pixels
    np.testing.assert_allclose(lesion[2:], box, atol=tolerance)
    assert tolerance < 0.05 * (x2 - x1)  # tight enough that a wrong scale or axis would fail
