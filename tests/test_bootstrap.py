"""Bootstrap CIs and paired comparisons of mAP@0.4 from per-image match data."""
from __future__ import annotations

import numpy as np
import pytest
from test_eval_voc import random_case

from harness.eval import coco_map
from harness.eval.bootstrap import ImageMatches, bca_ci, paired, percentile_ci, resample_counts
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


def test_a_class_missing_from_a_resample_drops_out_of_its_mean_and_thin_classes_are_named():
    """The ordinary bootstrap, unconditioned: a class on one image of 30 is missing from ~36% of
    resamples, and those resamples average over the classes they hold (the full-set score's rule)."""
    gt, preds = _with_a_rare_class()
    matches = ImageMatches.from_coco(gt, preds)
    counts = matches.counts(400, seed=0)
    assert np.array_equal(counts, resample_counts(matches.image_ids, 400, 0))
    carrier = matches.image_ids.index(3)
    lost = counts[:, carrier] == 0
    assert 0.25 < lost.mean() < 0.5
    # the only carrier is drawn once on average, as every image (the redraw made it ~1.55)
    assert counts[:, carrier].mean() == pytest.approx(1.0, abs=0.15)
    per_class = matches.per_class_ap(counts)
    assert np.array_equal(np.isnan(per_class[9]), lost)
    others = np.stack([per_class[c] for c in per_class if c != 9], axis=1)
    for r in np.flatnonzero(lost)[:5]:
        row = others[r][~np.isnan(others[r])]
        assert matches.map(counts[r:r + 1])[0] == pytest.approx(row.mean())
    boot = matches.bootstrap(400, seed=0)
    assert np.array_equal(boot.samples, matches.map(counts))
    name = matches.names[9]
    assert (name, 1) in boot.thin and all(n < 5 for _, n in boot.thin)


def _grouped(gt: dict, patients: int) -> dict:
    """The case's images given image keys of `patients` patients and info.group_by = patient."""
    images = [{**im, "image_key": f"{im['id'] % patients:05d}_{im['id']:03d}"} for im in gt["images"]]
    return {**gt, "images": images, "info": {"group_by": "patient"}}


def test_cluster_bootstrap_keeps_a_patients_images_together():
    gt, preds = random_case(12, n_images=30)
    matches = ImageMatches.from_coco(_grouped(gt, patients=8), preds)
    assert matches.groups is not None and len(set(matches.groups)) == 8
    counts = matches.counts(300, seed=0)
    groups = np.array(matches.groups)
    for g in set(groups):  # every image of a patient comes in as often as the patient was drawn
        block = counts[:, groups == g]
        assert (block == block[:, :1]).all()
    per_patient = np.array([[counts[r, np.flatnonzero(groups == g)[0]] for g in sorted(set(groups))]
                            for r in range(len(counts))])
    assert (per_patient.sum(1) == 8).all()  # 8 patients drawn with replacement
    assert not (counts == counts[:, :1]).all()  # not one multiplicity for everything
    # images drawn one by one do not keep a patient together
    plain = resample_counts(matches.image_ids, 300, 0)
    assert any((plain[:, groups == g] != plain[:, groups == g][:, :1]).any() for g in set(groups))
    boot = matches.bootstrap(300, seed=0)
    assert boot.clustered and len(boot.influence) == 8  # jackknife over patients
    # an ungrouped scoring of the same images resamples images: a different, narrower distribution here
    assert not ImageMatches.from_coco(gt, preds).bootstrap(300, seed=0).clustered


def test_bca_interval_moves_with_bias_and_skew_and_falls_back_to_percentile():
    rng = np.random.default_rng(0)
    samples = rng.normal(0.5, 0.1, 4000)
    assert bca_ci(samples, 0.5, np.zeros(10)) == pytest.approx(percentile_ci(samples), abs=0.01)
    # the point above most resamples (a downward-biased bootstrap): BCa shifts the interval up
    low, high = bca_ci(samples, 0.6, np.zeros(10))
    assert low > percentile_ci(samples)[0] + 0.05
    skew = np.r_[np.zeros(9), 1.0]   # positive acceleration: the upper end moves out further
    low_a, high_a = bca_ci(samples, 0.5, skew)
    assert high_a > percentile_ci(samples)[1] + 0.02
    assert bca_ci(np.zeros(100), 0.0, skew) == (0.0, 0.0)  # degenerate: percentile


def test_pairing_is_refused_on_different_split_hashes():
    """Two runs on the same image ids but scored against other labels (another split hash) are not paired."""
    gt, preds = random_case(8, n_images=30)
    matches = ImageMatches.from_coco(gt, preds)
    a = matches.bootstrap(100, seed=0, split_hash="aaaa")
    assert paired(a, matches.bootstrap(100, seed=0, split_hash="aaaa")).summary()["delta"] == 0
    with pytest.raises(ValueError, match="same split: split_hash aaaa vs bbbb"):
        paired(a, matches.bootstrap(100, seed=0, split_hash="bbbb"))


def test_seed_interval_includes_the_seed_variance():
    """The seeds section's interval: mean ± t(n-1) sqrt(sd²/n + image variance); the sign test is exact."""
    from harness.report.seeds import seed_interval, sign_test, t_quantile

    values = [0.18, 0.27, 0.37]   # three seeds: a large seed-to-seed spread
    low, high = seed_interval(values, 0.0004, 0.95)
    sd = np.std(values, ddof=1)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert (high - low) / 2 == pytest.approx(4.3027 * np.sqrt(sd ** 2 / 3 + 0.0004), abs=1e-4)
    images_only = 2 * 1.96 * np.sqrt(0.0004)
    assert high - low > 4 * images_only   # the seeds widen it far beyond the images-only interval
    assert seed_interval([0.3, 0.3, 0.3], 0.0004, 0.95)[1] - 0.3 == pytest.approx(4.3027 * 0.02, abs=1e-4)
    assert sign_test(3, 0) == 0.25 and sign_test(5, 0) == 0.0625 and sign_test(2, 1) == 1.0


def test_coverage_simulation_runs(capsys):
    """experiments/bootstrap_coverage.py (the table in docs/benchmarks.md), as a tiny smoke run."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("bootstrap_coverage", ROOT / "experiments" / "bootstrap_coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--sets", "4", "--resamples", "50", "--population", "2000", "--rare", "5"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 5 |")]
    assert [r.split(" | ")[2] for r in rows] == ["percentile", "BCa", "shipped", "percentile", "BCa", "shipped",
                                                 "shipped, by patient"]
    assert all(0 <= float(r.split(" | ")[3]) <= 1 for r in rows)


def test_per_class_intervals_use_the_tables_draws():
    """The report's per-class intervals (harness.report.analysis, from a MatchTable) resample exactly the
    draws of the results table's mAP interval, by patient where the ground truth is grouped."""
    from harness.eval.bootstrap import mean_present
    from harness.eval.matches import MatchTable

    gt, preds = _with_a_rare_class()
    grouped = _grouped(gt, patients=9)
    for truth in (gt, grouped):
        boot = ImageMatches.from_coco(truth, preds).bootstrap(200, seed=5)
        table = MatchTable.from_coco(truth, preds).image_matches()
        assert table.groups == ImageMatches.from_coco(truth, preds).groups
        per_class = table.per_class_ap(table.counts(200, seed=5))
        assert np.allclose(mean_present(np.stack(list(per_class.values()), axis=1)), boot.samples)
