"""The human-reader reference: one reader vs the WBF of the other two, on hand cases and the real train.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.data.labels import parse_train_csv
from harness.eval import coco_map
from harness.eval.bootstrap import ImageMatches
from harness.eval.reader_reference import NAME, reader_reference, reader_slots, rotation, tie_order_maps
from testdata import require_real_csv

COLS = ["image_id", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max", "line"]


def _rows(*rows):
    return pd.DataFrame([(*r, i + 2) for i, r in enumerate(rows)], columns=COLS)


def test_slots_follow_first_appearance_per_image():
    rows = _rows(("a", 3, "R9", 0, 0, 10, 10), ("a", 3, "R2", 0, 0, 10, 10), ("b", 14, "R2", *[np.nan] * 4),
                 ("a", 0, "R9", 5, 5, 9, 9), ("b", 14, "R7", *[np.nan] * 4), ("a", 3, "R5", 1, 1, 10, 10))
    assert list(reader_slots(rows)) == [0, 1, 0, 0, 1, 2]


def test_held_out_reader_is_scored_against_the_other_two():
    # image a: R1 and R2 agree on a box, R3 draws it elsewhere; image b: all three agree
    rows = _rows(("a", 3, "R1", 100, 100, 200, 200), ("a", 3, "R2", 102, 100, 202, 200),
                 ("a", 3, "R3", 400, 400, 500, 500),
                 ("b", 3, "R1", 10, 10, 50, 50), ("b", 3, "R2", 10, 10, 50, 52), ("b", 3, "R3", 11, 10, 50, 50),
                 ("c", 14, "R1", *[np.nan] * 4), ("c", 14, "R2", *[np.nan] * 4), ("c", 14, "R3", *[np.nan] * 4))
    gt, preds, n = rotation(rows, 2)
    assert n == 3 and len(preds.detections) == 2 and all(d["score"] == 1.0 for d in preds.detections)
    assert len(gt["annotations"]) == 2  # a: R1+R2 fused into one box; b: one box; c: nothing
    # the miss on a is ranked before the hit on b: precision 1/2 up to recall 1/2 of 101 points
    assert coco_map(gt, preds)["per_class"]["Cardiomegaly"] == pytest.approx(51 / 101 * 0.5, abs=1e-9)
    result = reader_reference(rows)
    assert result["name"] == NAME and len(result["rotations"]) == 3
    assert [r["slot"] for r in result["rotations"]] == [0, 1, 2]
    assert result["map40"] == pytest.approx(np.mean([r["map40"] for r in result["rotations"]]))
    assert "ties" in result["note"].lower() and "row order" in result["tie_rule"]
    assert "all three readers fused" in result["note"]  # its ground truth is not the models'
    ties = result["map40_tie_orders"]
    assert ties["orders"] == 20 and len(ties["maps"]) == 20 and ties["min"] <= ties["mean"] <= ties["max"]
    assert f"Over 20 random tie orders (seed 0) mAP@0.4 is {ties['mean']:.4f}" in result["note"]


def test_tie_order_is_image_then_row_order():
    """All scores are 1.0: a hit ranked first or last moves AP, so the documented order is checked."""
    rows = _rows(("a", 3, "R1", 0, 0, 10, 10), ("a", 3, "R2", 0, 0, 10, 10), ("a", 3, "R3", 50, 50, 60, 60),
                 ("b", 3, "R1", 0, 0, 10, 10), ("b", 3, "R2", 0, 0, 10, 10), ("b", 3, "R3", 0, 0, 10, 10))
    # slot 2 = R3: a miss on image a (ranked first), then a hit on b -> precision 1/2 at recall 1/2
    gt, preds, _ = rotation(rows, 2)
    assert [d["image_id"] for d in preds.detections] == [1, 2]
    ap = coco_map(gt, preds)["per_class"]["Cardiomegaly"]
    assert ap == pytest.approx(51 / 101 * 0.5, abs=1e-9)
    # swap the image ids' order: the hit is ranked first -> a higher AP (precision 1 at recall 1/2)
    swapped = rows.assign(image_id=rows["image_id"].map({"a": "z", "b": "a"}))
    gt2, preds2, _ = rotation(swapped, 2)
    assert coco_map(gt2, preds2)["per_class"]["Cardiomegaly"] == pytest.approx(51 / 101, abs=1e-9)
    # random tie orders reach both rankings (the hit first or last), seeded: the same draws every time
    maps = tie_order_maps(ImageMatches.from_coco(gt, preds), 20, seed=0)
    assert sorted({round(float(v), 9) for v in maps}) == [round(51 / 101 * 0.5, 9), round(51 / 101, 9)]
    assert np.array_equal(maps, tie_order_maps(ImageMatches.from_coco(gt, preds), 20, seed=0))


def test_real_vinbigdata_reference_reproduces_the_independent_number():
    path = require_real_csv()
    rows = parse_train_csv(path).rows
    result = reader_reference(rows)
    ties = result["map40_tie_orders"]
    print(f"\nreader reference on the real train.csv: mAP@0.4 {result['map40']:.4f} ± {result['map40_std']:.4f}, "
          f"VOC {result['voc_map40']:.4f}, P×R {result['pr_single']:.4f}; over {ties['orders']} tie orders "
          f"{ties['mean']:.4f} ± {ties['std']:.4f} [{ties['min']:.4f}, {ties['max']:.4f}]")
    assert result["n_images"] == 15000 and len(result["rotations"]) == 3
    assert result["map40"] == pytest.approx(0.234, abs=0.01)
    assert result["voc_map40"] == pytest.approx(0.232, abs=0.01)
    assert result["pr_single"] == pytest.approx(0.221, abs=0.01)
    assert result["map40_std"] < 0.02
    assert result["per_class"]["Cardiomegaly"] == pytest.approx(0.69, abs=0.03)
    assert result["per_class"]["Aortic enlargement"] == pytest.approx(0.64, abs=0.03)
    assert 0 < ties["std"] < 0.02 and ties["max"] - ties["min"] < 0.05
