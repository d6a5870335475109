"""Bootstrap CIs and paired comparisons of mAP@0.4 from per-image match data."""
from __future__ import annotations

import numpy as np
import pytest
from test_eval_voc import random_case

from harness.eval import coco_map
from harness.eval.bootstrap import ImageMatches, paired, resample_counts
from harness.predictions import Predictions


def _with_ties(preds: Predictions, decimals: int = 1) -> Predictions:
    dets = [dict(d, score=round(d["score"], decimals)) for d in preds.detections]
    return Predictions(preds.source, None, list(preds.image_ids), dets)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_full_set_reproduces_pycocotools_exactly(seed):
    gt, preds = random_case(seed, n_images=20)
    for p in (preds, _with_ties(preds)):  # ties among scores: pycocotools' order must be kept
        expected = coco_map(gt, p, backend="pycocotools")  # the reference, bit for bit
        matches = ImageMatches.from_coco(gt, p)
        ones = np.ones((1, len(matches.image_ids)))
        assert matches.map(ones)[0] == expected["map40"]
        per_class = matches.per_class_ap(ones)
        for cat, name in enumerate(expected["per_class"]):
            ours = per_class[cat][0]
            assert (None if np.isnan(ours) else ours) == expected["per_class"][name], name
        assert matches.bootstrap(resamples=10, seed=0).point == expected["map40"]


def test_a_resample_equals_pycocotools_on_the_resampled_images():
    """One resample drawn without duplicates (a subset) must score like pycocotools on that subset."""
    gt, preds = random_case(5, n_images=30)
    matches = ImageMatches.from_coco(gt, preds)
    keep = matches.image_ids[::3]
    weights = np.array([[1.0 if i in keep else 0.0 for i in matches.image_ids]])
    subset = Predictions("s", None, keep, [d for d in preds.detections if d["image_id"] in keep])
    assert matches.map(weights)[0] == pytest.approx(coco_map(gt, subset)["map40"], abs=1e-12)


def test_duplicated_image_counts_twice():
    """Drawing an image twice = that image's GT and detections twice (checked with renamed copies)."""
    gt, preds = random_case(6, n_images=8)
    matches = ImageMatches.from_coco(gt, preds)
    weights = np.ones((1, 8))
    weights[0, 2] = 2
    weights[0, 5] = 0
    src = matches.image_ids[2]
    copy_id = 1000
    gt2 = {**gt, "images": [im for im in gt["images"] if im["id"] != matches.image_ids[5]]
           + [{**next(im for im in gt["images"] if im["id"] == src), "id": copy_id}],
           "annotations": [a for a in gt["annotations"] if a["image_id"] != matches.image_ids[5]]
           + [{**a, "id": 10_000 + a["id"], "image_id": copy_id} for a in gt["annotations"] if a["image_id"] == src]}
    ids = [i for i in matches.image_ids if i != matches.image_ids[5]] + [copy_id]
    dets = [d for d in preds.detections if d["image_id"] in ids]
    dets += [{**d, "image_id": copy_id} for d in preds.detections if d["image_id"] == src]
    assert matches.map(weights)[0] == pytest.approx(coco_map(gt2, Predictions("c", None, ids, dets))["map40"],
                                                    abs=1e-12)


def test_ci_is_seeded_covers_the_point_and_shrinks_with_more_images():
    gt, preds = random_case(7, n_images=60)
    matches = ImageMatches.from_coco(gt, preds)
    a = matches.bootstrap(resamples=400, seed=3)
    b = matches.bootstrap(resamples=400, seed=3)
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, matches.bootstrap(resamples=400, seed=4).samples)
    low, high = a.ci(0.95)
    assert low < a.point < high and high - low > 0.01
    narrow = a.ci(0.5)
    assert low < narrow[0] < narrow[1] < high
    big_gt, big_preds = random_case(7, n_images=240)
    wide = high - low
    big = ImageMatches.from_coco(big_gt, big_preds).bootstrap(resamples=400, seed=3)
    assert big.ci(0.95)[1] - big.ci(0.95)[0] < wide


def test_paired_bootstrap_same_images_same_draws():
    gt, preds = random_case(8, n_images=60)
    # B = A with a third of its detections dropped: a real, paired difference
    worse = Predictions("w", None, preds.image_ids, [d for i, d in enumerate(preds.detections) if i % 3])
    a = ImageMatches.from_coco(gt, preds).bootstrap(500, seed=1)
    b = ImageMatches.from_coco(gt, worse).bootstrap(500, seed=1)
    result = paired(a, b).summary(0.95)
    assert result["delta"] == pytest.approx(a.point - b.point)
    assert result["low"] <= result["delta"] <= result["high"]
    self_pair = paired(a, a).summary()
    assert self_pair["low"] == self_pair["high"] == 0 and self_pair["p_a_gt_b"] == 0
    assert not self_pair["distinguishable"]
    assert result["p_a_gt_b"] > 0.9 and result["distinguishable"]
    # paired is much tighter than comparing two independent CIs
    assert result["high"] - result["low"] < (a.ci()[1] - a.ci()[0])
    other = ImageMatches.from_coco(*random_case(9, n_images=50)).bootstrap(500, seed=1)
    with pytest.raises(ValueError, match="same images"):
        paired(a, other)


def test_resample_counts_are_multinomial_draws():
    counts = resample_counts(list(range(40)), 300, seed=0)
    assert counts.shape == (300, 40) and (counts.sum(1) == 40).all()
    assert np.array_equal(counts, resample_counts(list(reversed(range(40))), 300, seed=0))
    assert 0.3 < (counts == 0).mean() < 0.43  # (1 - 1/n)^n ~ 0.36 of images left out per draw


def _with_a_rare_class(seed: int = 11, n_images: int = 30):
    """A random case plus one box of class 9 on a single image (and a detection that finds it)."""
    gt, preds = random_case(seed, n_images=n_images)
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] != 9]
    gt["annotations"].append({"id": 10_000, "image_id": 3, "category_id": 9, "bbox": [10, 10, 40, 40], "area": 1600,
                              "iscrowd": 0})
    dets = [*preds.detections, {"image_id": 3, "category_id": 9, "bbox": [11, 10, 40, 40], "score": 0.995}]
    return gt, Predictions(preds.source, None, preds.image_ids, dets)


def test_every_resample_holds_every_class_of_the_full_set():
    """A class on one image of 30 is missing from ~36% of ordinary resamples, which then average over
    one class fewer; here each such resample is drawn again, so every resample averages over the same
    classes as the full set, the share that needed it is reported, and the rest are the ordinary draws."""
    gt, preds = _with_a_rare_class()
    matches = ImageMatches.from_coco(gt, preds)
    classes = matches.class_images()
    assert list(classes[9]) == [matches.image_ids.index(3)]
    ordinary = resample_counts(matches.image_ids, 400, seed=0)
    counts, redrawn = resample_counts(matches.image_ids, 400, 0, classes, with_redrawn=True)
    needed = np.zeros(400, bool)
    for images in classes.values():
        needed |= ordinary[:, images].sum(1) == 0
    assert redrawn == needed.sum() and 0.25 < needed.mean() < 0.5
    assert np.array_equal(counts[~needed], ordinary[~needed])  # the others are the ordinary draws
    assert all((counts[:, images].sum(1) > 0).all() for images in classes.values())
    assert (counts.sum(1) == len(matches.image_ids)).all()
    per_class = matches.per_class_ap(counts)
    assert not any(np.isnan(per_class[cat]).any() for cat in classes)  # every resample: the same classes
    lost = np.isnan(matches.per_class_ap(ordinary)[9])  # the ordinary draws: class 9 drops out of those means
    assert lost.any() and (lost <= needed).all()
    boot = matches.bootstrap(400, seed=0)
    assert boot.redrawn_share == pytest.approx(redrawn / 400)
    assert np.array_equal(boot.samples, matches.map(counts))
    # paired runs on the same images and ground truth get the same (redrawn) resamples
    fewer = Predictions("f", None, preds.image_ids, preds.detections[::2] + preds.detections[-1:])
    other = ImageMatches.from_coco(gt, fewer).bootstrap(400, seed=0)
    assert other.redrawn_share == boot.redrawn_share
    assert paired(boot, other).summary()["p_a_gt_b"] > 0.9
