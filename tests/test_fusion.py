"""Reader fusion: hand-made cases with known answers, and the real VinBigData train.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.classes import CLASSES
from harness.data.fusion import counts_per_class, fuse_readers
from harness.data.labels import parse_train_csv
from testdata import require_real_csv

COLS = ["image_id", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]


def _rows(*rows):
    return pd.DataFrame(rows, columns=COLS)


def test_wbf_merges_agreeing_readers_and_counts_them():
    rows = _rows(
        ("a", 3, "R8", 100, 100, 300, 200), ("a", 3, "R9", 110, 100, 310, 210), ("a", 3, "R10", 90, 95, 290, 200),
        ("a", 8, "R9", 400, 400, 420, 420),  # one reader only
        ("a", 0, "R8", 100, 100, 300, 200),  # same place, other class: not merged with class 3
        ("b", 14, "R1", np.nan, np.nan, np.nan, np.nan),
    )
    fused = fuse_readers(rows, "wbf", 0.4, sizes={"a": (1000, 800)})
    assert len(fused) == 3 and set(fused["image_id"]) == {"a"}
    cardio = fused[fused["class_id"] == 3].iloc[0]
    assert cardio.num_readers == 3
    np.testing.assert_allclose(cardio[["x_min", "y_min", "x_max", "y_max"]].astype(float), [100, 98.33, 300, 203.33], atol=0.05)
    nodule = fused[fused["class_id"] == 8].iloc[0]
    assert nodule.num_readers == 1
    np.testing.assert_allclose(nodule[["x_min", "y_min", "x_max", "y_max"]].astype(float), [400, 400, 420, 420], atol=1e-3)
    # scale-free: without sizes the same boxes come out
    np.testing.assert_allclose(fuse_readers(rows)[["x_min", "x_max"]], fused[["x_min", "x_max"]], atol=1e-3)


def test_nms_none_and_reader_filter():
    rows = _rows(("a", 3, "R8", 100, 100, 300, 200), ("a", 3, "R9", 110, 100, 310, 210),
                 ("a", 3, "R10", 600, 600, 700, 700))
    nms = fuse_readers(rows, "nms", 0.4)
    assert len(nms) == 2 and sorted(nms["num_readers"]) == [1, 2]
    kept = nms[nms["num_readers"] == 2].iloc[0]
    assert [kept.x_min, kept.x_max] in ([100, 300], [110, 310])  # NMS keeps a drawn box, does not average
    none = fuse_readers(rows, "none")
    assert len(none) == 3 and (none["num_readers"] == 1).all()
    only = fuse_readers(rows, "wbf", readers_drop=["R8", "R9"])
    assert len(only) == 1 and only.iloc[0].x_min == 600
    assert len(fuse_readers(rows, "wbf", readers_keep=["R8", "R9"])) == 1
    with pytest.raises(ValueError, match="fusion method"):
        fuse_readers(rows, "mean")


@pytest.fixture(scope="module")
def real_rows():
    return parse_train_csv(require_real_csv()).rows


def test_real_train_csv_fusion(real_rows):
    findings = real_rows[real_rows["class_id"] != 14]
    assert len(real_rows) == 67914 and real_rows["image_id"].nunique() == 15000
    fused = fuse_readers(real_rows, "wbf", 0.4)
    counts = counts_per_class(fused)
    print("\nfused boxes per class (WBF iou 0.4, real train.csv):")
    for cid, n in counts.items():
        print(f"  {CLASSES[cid]:<20} {n:>5}  (reader boxes {int((findings['class_id'] == cid).sum())})")
    assert (counts > 0).all()
    assert len(findings) / 3 < len(fused) < len(findings)
    raw_counts = findings["class_id"].value_counts().sort_index()
    assert (counts <= raw_counts).all()
    assert fused["num_readers"].between(1, 3).all() and set(fused["num_readers"]) == {1, 2, 3}
    assert fused["image_id"].nunique() == findings["image_id"].nunique() == 4394


def test_one_reader_alone_is_unchanged(real_rows):
    mine = real_rows[(real_rows["rad_id"] == "R9") & (real_rows["class_id"] != 14)]
    fused = fuse_readers(real_rows, "wbf", 0.4, readers_keep=["R9"])
    key = ["image_id", "class_id", "x_min", "y_min", "x_max", "y_max"]
    a = mine[key].sort_values(key).reset_index(drop=True)
    b = fused[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert (fused["num_readers"] == 1).all()
