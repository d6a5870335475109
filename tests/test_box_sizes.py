"""AP@0.4 by box size (bands = terciles of the data's own box areas) and per-image TP/FP/FN counts."""
from __future__ import annotations

import pytest
from test_error_analysis import case
from test_eval_voc import random_case

from harness.eval import coco_map
from harness.eval.sizes import SizeBands, ap_by_size, size_bands


def test_bands_are_terciles_of_the_areas_and_stated():
    bands = size_bands([100, 200, 300, 400, 500, 600])
    assert bands.edges == pytest.approx((100 + 5 / 3 * 100, 100 + 10 / 3 * 100))
    assert "terciles" in bands.describe() and "px²" in bands.describe()
    with pytest.raises(ValueError):
        size_bands([])


def test_a_box_on_an_edge_is_in_one_band_only():
    box = (0, 0, 20, 25)  # area 500 = the small/medium edge: medium
    gt, preds = case([(1, 0, box)], [(1, 0, box, 0.9)])
    result = ap_by_size(gt, preds, SizeBands((500.0, 10_000.0)))
    assert [result[b]["n_gt"] for b in ("small", "medium", "large")] == [0, 1, 0]
    assert result["medium"]["per_class"][0] == pytest.approx(1.0, abs=1e-12) and result["small"]["map"] is None


def test_hand_built_small_found_large_missed():
    small, large = (0, 0, 10, 10), (100, 100, 200, 200)
    gt, preds = case([(1, 0, small), (1, 0, large)], [(1, 0, small, 0.9), (1, 0, (400, 400, 150, 150), 0.8)])
    result = ap_by_size(gt, preds, SizeBands((500.0, 10_000.0)))
    assert result["small"]["per_class"][0] == pytest.approx(1.0, abs=1e-12)
    assert result["large"]["per_class"][0] == 0.0          # the large false box counts against large
    assert result["medium"]["per_class"][0] is None and result["medium"]["map"] is None
    assert result["all"]["map"] == coco_map(gt, preds, backend="pycocotools")["map40"]
    assert [result[b]["n_gt"] for b in ("all", "small", "medium", "large")] == [2, 1, 0, 1]


@pytest.mark.parametrize("seed", range(3))
def test_all_band_is_the_metric(seed):
    gt, preds = random_case(seed, n_images=30)
    bands = size_bands(a["area"] for a in gt["annotations"])
    result = ap_by_size(gt, preds, bands)
    assert result["all"]["map"] == coco_map(gt, preds, backend="pycocotools")["map40"]
    assert sum(result[b]["n_gt"] for b in ("small", "medium", "large")) == result["all"]["n_gt"]


def test_per_image_counts_agree_with_the_confusion_matrix():
    import numpy as np

    from harness.eval.confusion import BACKGROUND, confusion_matrix
    from harness.eval.matches import MatchTable
    from harness.eval.per_image import per_image_counts

    gt, preds = random_case(4, n_images=30)
    preds.image_ids.append(999)  # an image without boxes or detections still gets a row
    gt["images"].append({"id": 999, "file_name": "999.png", "width": 256, "height": 256})
    table = MatchTable.from_coco(gt, preds)
    counts = per_image_counts(table, score_thr=0.3)
    assert len(counts) == 31 and counts.set_index("image_id").loc[999].sum() == 0
    matrix = confusion_matrix(table, score_thr=0.3)
    assert counts["tp"].sum() == np.trace(matrix.to_numpy()[:-1, :-1])
    assert counts["n_gt"].sum() == matrix.iloc[:-1].to_numpy().sum()
    assert counts["fn"].sum() >= matrix[BACKGROUND].sum()  # a confused box is an FN here, off-diagonal there
    assert (counts["tp"] + counts["fn"] == counts["n_gt"]).all() and (counts["tp"] + counts["fp"] == counts["n_det"]).all()


@pytest.mark.parametrize("seed", range(10))
def test_ap_by_size_from_the_match_table_equals_pycocotools_area_ranges(seed):
    """No second pass: the match table's bands give pycocotools' own area-range numbers exactly (odd seeds:
    scores rounded to 0.1, many ties)."""
    from harness.eval.matches import MatchTable
    from harness.eval.sizes import ap_by_size_from_table

    gt, preds = random_case(seed, n_images=30)
    if seed % 2:
        for det in preds.detections:
            det["score"] = round(det["score"] * 10) / 10
    bands = size_bands([a["area"] for a in gt["annotations"]])
    theirs = ap_by_size(gt, preds, bands)
    ours = ap_by_size_from_table(MatchTable.from_coco(gt, preds), bands)
    assert ours == theirs
    assert theirs["small"]["map"] != theirs["all"]["map"]  # the bands do differ from "all" here


def test_ap_by_size_from_the_table_refuses_crowd_regions():
    from harness.eval.matches import MatchTable
    from harness.eval.sizes import ap_by_size_from_table

    gt, preds = case([(1, 0, (0, 0, 50, 50))], [(1, 0, (0, 0, 50, 50), 0.9)])
    gt["annotations"][0]["iscrowd"] = 1
    with pytest.raises(ValueError, match="crowd"):
        ap_by_size_from_table(MatchTable.from_coco(gt, preds), SizeBands((500.0, 10_000.0)))
