"""faster-coco-eval, the metric's default COCOeval, equals pycocotools (the reference) to 1e-12 at the
benchmark's thresholds (IoU 0.4, then 0.50:0.95): random cases, tied scores, more than 100 detections
per image, classes without ground truth, no detections."""
from __future__ import annotations

import numpy as np
import pytest
from test_eval_voc import random_case

from harness.eval import evaluate
from harness.eval.coco_map import DEFAULT_BACKEND, CocoMapEval, coco_map
from harness.predictions import Predictions

TOL = 1e-12


def _ties(preds: Predictions, decimals: int = 1) -> Predictions:
    return Predictions(preds.source, None, list(preds.image_ids),
                       [dict(d, score=round(d["score"], decimals)) for d in preds.detections])


def _crowded(preds: Predictions, copies: int = 40) -> Predictions:
    """Every detection of image 1 repeated with jitter: > 100 detections on one image."""
    rng = np.random.default_rng(0)
    extra = [dict(d, bbox=[v + float(rng.normal(0, 2)) if i < 2 else v for i, v in enumerate(d["bbox"])],
                  score=float(rng.uniform(0.01, 0.99)))
             for d in preds.detections if d["image_id"] == 1 for _ in range(copies)]
    return Predictions(preds.source, None, list(preds.image_ids), preds.detections + extra)


def _assert_equal(gt, preds):
    ref = CocoMapEval(gt, preds, backend="pycocotools").evaluate().accumulate()
    fast = CocoMapEval(gt, preds, backend="faster_coco_eval").evaluate().accumulate()
    a, b = ref.cocoeval.eval["precision"], fast.cocoeval.eval["precision"]
    assert a.shape == b.shape and np.array_equal(a == -1, b == -1)
    assert np.abs(a - b).max() <= TOL
    assert np.abs(ref.cocoeval.eval["recall"] - fast.cocoeval.eval["recall"]).max() <= TOL
    x, y = ref.summarize(), fast.summarize()
    assert x["max_dets"] == y["max_dets"]
    for key in ("map40", "ap50", "ap50_95"):
        assert x[key] == pytest.approx(y[key], abs=TOL), key
    assert [k for k, v in x["per_class"].items() if v is None] == [k for k, v in y["per_class"].items() if v is None]
    for name, value in x["per_class"].items():
        if value is not None:
            assert value == pytest.approx(y["per_class"][name], abs=TOL), name


@pytest.mark.parametrize("seed", range(12))
def test_same_numbers_as_pycocotools(seed):
    gt, preds = random_case(seed, n_images=30)
    _assert_equal(gt, preds)
    _assert_equal(gt, _ties(preds))


def test_more_than_100_detections_per_image_and_no_detections():
    gt, preds = random_case(3, n_images=10)
    crowded = _crowded(preds)
    assert max(sum(d["image_id"] == 1 for d in crowded.detections), 0) > 100
    _assert_equal(gt, crowded)
    empty = Predictions("none", None, preds.image_ids, [])
    assert coco_map(gt, empty, backend="faster_coco_eval") == coco_map(gt, empty, backend="pycocotools")


def test_the_metric_uses_the_default_backend_and_rejects_unknown_ones():
    assert DEFAULT_BACKEND == "faster_coco_eval"
    gt, preds = random_case(5, n_images=20)
    assert evaluate(gt, preds)["map40"] == pytest.approx(coco_map(gt, preds, backend="pycocotools")["map40"], abs=TOL)
    with pytest.raises(ValueError, match="unknown COCO evaluation backend"):
        coco_map(gt, preds, backend="detectron2")
