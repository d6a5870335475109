"""FROC, CPM and image-level AUROC (harness.eval.froc) against an independent brute-force count written
here: every threshold re-matched from scratch, every positive/negative image pair compared, and the
bootstrap's weighted rows checked against the same count on a data set with the images copied."""
from __future__ import annotations

import numpy as np
import pytest

from harness.eval.froc import FP_RATES, LesionHits, auroc, cpm, froc_curve, sensitivity_at
from harness.eval.matches import MatchTable
from harness.predictions import Predictions


# ----- the independent count -----
def _iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union > 0 else 0.0


def _inside(det, box):
    cx, cy = det[0] + det[2] / 2, det[1] + det[3] / 2
    return box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3]


def _count(gt, dets, threshold, rule, category=None):
    """(TP, FP) of the detections scoring >= threshold, matched from scratch: per image and class, in
    score order (input order on ties), each detection takes a free box of its class - IoU >= 0.4,
    the best IoU (the later box on equal IoU, as pycocotools) - or, centre rule, a free box holding its
    centre with the best IoU (the earlier box on equal IoU)."""
    tp = fp = 0
    for image_id in {img["id"] for img in gt["images"]}:
        for cat in {c["id"] for c in gt["categories"]}:
            if category is not None and cat != category:
                continue
            boxes = [a["bbox"] for a in gt["annotations"] if a["image_id"] == image_id and a["category_id"] == cat]
            mine = [d for d in dets if d["image_id"] == image_id and d["category_id"] == cat and d["score"] >= threshold]
            mine = sorted(mine, key=lambda d: -d["score"])  # stable: input order on ties
            free = [True] * len(boxes)
            for d in mine:
                best, best_iou = None, None
                for g, box in enumerate(boxes):
                    if not free[g]:
                        continue
                    iou = _iou(d["bbox"], box)
                    if rule == "iou" and iou >= 0.4 and (best_iou is None or iou >= best_iou):
                        best, best_iou = g, iou
                    if rule == "centre" and _inside(d["bbox"], box) and (best_iou is None or iou > best_iou):
                        best, best_iou = g, iou
                if best is None:
                    fp += 1
                else:
                    free[best] = False
                    tp += 1
    return tp, fp


def _brute_sensitivities(gt, dets, rule, category=None, rates=FP_RATES):
    n_images = len(gt["images"])
    n_lesions = sum(1 for a in gt["annotations"] if category is None or a["category_id"] == category)
    points = [(0, 0)] + [_count(gt, dets, t, rule, category) for t in sorted({d["score"] for d in dets})]
    return [max(tp / n_lesions for tp, fp in points if fp / n_images <= rate) for rate in rates]


def _brute_auroc(gt, dets):
    abnormal = {a["image_id"] for a in gt["annotations"]}
    top = {img["id"]: max([d["score"] for d in dets if d["image_id"] == img["id"]], default=0.0) for img in gt["images"]}
    pos = [s for i, s in top.items() if i in abnormal]
    neg = [s for i, s in top.items() if i not in abnormal]
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


# ----- constructed cases -----
def _case(seed: int, n_images: int = 14, n_classes: int = 3):
    """Boxes of several classes (some images without any: normal), detections near them (hits,
    near-misses, duplicates, wrong class), stray ones; scores from a few values, so many tie."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    levels = [0.9, 0.8, 0.7, 0.55, 0.4, 0.3, 0.2, 0.1]
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 300, "height": 300})
        n_boxes = 0 if image_id % 3 == 0 else int(rng.integers(1, 4))
        for _ in range(n_boxes):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(15, 90, 2)
            cat = int(rng.integers(0, n_classes))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            for _ in range(int(rng.integers(0, 3))):  # hits, near-misses (centre in, IoU < 0.4), duplicates
                s = rng.uniform(0.4, 1.6)
                bw, bh = w * s, h * s
                bx, by = x + w / 2 - bw / 2 + rng.normal(0, w / 5), y + h / 2 - bh / 2 + rng.normal(0, h / 5)
                dcat = cat if rng.random() < 0.85 else int(rng.integers(0, n_classes))
                dets.append({"image_id": image_id, "category_id": dcat, "bbox": [bx, by, bw, bh],
                             "score": float(rng.choice(levels))})
        for _ in range(int(rng.integers(0, 3))):  # stray
            x, y = rng.uniform(0, 250, 2)
            dets.append({"image_id": image_id, "category_id": int(rng.integers(0, n_classes)),
                         "bbox": [x, y, 30.0, 30.0], "score": float(rng.choice(levels))})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"class{c}"} for c in range(n_classes)]}
    return gt, dets


def _hits(gt, dets, rule):
    preds = Predictions("case", None, [img["id"] for img in gt["images"]], dets)
    return LesionHits.from_table(MatchTable.from_coco(gt, preds), rule)


@pytest.mark.parametrize("rule", ["iou", "centre"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_froc_and_cpm_match_the_brute_force_count(seed, rule):
    gt, dets = _case(seed)
    assert len({d["score"] for d in dets}) < len(dets)  # tied scores are part of the case
    hits = _hits(gt, dets, rule)
    expected = _brute_sensitivities(gt, dets, rule)
    assert sensitivity_at(hits)[0] == pytest.approx(expected, abs=1e-12)
    assert cpm(hits)[0] == pytest.approx(np.mean(expected), abs=1e-12)
    assert 0 < cpm(hits)[0] < 1
    for cat in range(3):
        expected = _brute_sensitivities(gt, dets, rule, category=cat)
        assert sensitivity_at(hits, category=cat)[0] == pytest.approx(expected, abs=1e-12)
    curve = froc_curve(hits)
    tp, fp = _count(gt, dets, curve["threshold"].iloc[3], rule)
    assert (curve["tp"].iloc[3], curve["fp"].iloc[3]) == (tp, fp)
    assert curve["fp_per_image"].iloc[3] == pytest.approx(fp / len(gt["images"]))


def test_the_two_hit_rules_differ_where_they_should():
    """A mark whose centre lies in the lesion but overlaps it at IoU < 0.4 hits under "centre" only;
    a mark at IoU >= 0.4 whose centre lies outside the lesion hits under "iou" only."""
    gt = {"images": [{"id": 1, "file_name": "1.png", "width": 300, "height": 300},
                     {"id": 2, "file_name": "2.png", "width": 300, "height": 300}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [100, 100, 100, 100], "area": 1e4,
                           "iscrowd": 0},
                          {"id": 2, "image_id": 2, "category_id": 0, "bbox": [100, 100, 20, 100], "area": 2e3,
                           "iscrowd": 0}],
          "categories": [{"id": 0, "name": "a"}]}
    dets = [{"image_id": 1, "category_id": 0, "bbox": [140, 140, 20, 20], "score": 0.9},   # centre in, IoU 0.04
            {"image_id": 2, "category_id": 0, "bbox": [100, 100, 42, 100], "score": 0.8}]  # IoU 0.476, centre out
    assert list(_hits(gt, dets, "iou").hit) == [False, True]
    assert list(_hits(gt, dets, "centre").hit) == [True, False]
    with pytest.raises(ValueError, match="lesion-hit rule"):
        _hits(gt, dets, "overlap")


@pytest.mark.parametrize("seed", [0, 3])
def test_image_level_auroc_matches_the_pairwise_count(seed):
    gt, dets = _case(seed, n_images=18)
    dets = [d for d in dets if d["image_id"] != 4]  # an abnormal image without detections (score 0)
    value = auroc(_hits(gt, dets, "iou"))[0]
    assert value == pytest.approx(_brute_auroc(gt, dets), abs=1e-12)
    assert 0.5 < value < 1


def test_auroc_is_undefined_without_normal_images():
    gt, dets = _case(0, n_images=6)
    gt["images"] = [img for img in gt["images"] if any(a["image_id"] == img["id"] for a in gt["annotations"])]
    dets = [d for d in dets if d["image_id"] in {img["id"] for img in gt["images"]}]
    assert np.isnan(auroc(_hits(gt, dets, "iou"))[0])


def _copied(gt, dets, counts):
    """The data set with image i present counts[i] times (new ids), for the weighted rows."""
    images, anns, out = [], [], []
    for i, img in enumerate(gt["images"]):
        for copy in range(int(counts[i])):
            new_id = len(images) + 1
            images.append({**img, "id": new_id})
            anns += [{**a, "id": len(anns) + 1, "image_id": new_id} for a in gt["annotations"] if a["image_id"] == img["id"]]
            out += [{**d, "image_id": new_id} for d in dets if d["image_id"] == img["id"]]
    return {**gt, "images": images, "annotations": anns}, out


@pytest.mark.parametrize("rule", ["iou", "centre"])
def test_bootstrap_rows_equal_the_count_on_the_drawn_images(rule):
    gt, dets = _case(5, n_images=10)
    hits = _hits(gt, dets, rule)
    rng = np.random.default_rng(1)
    weights = np.stack([rng.multinomial(10, np.full(10, 0.1)) for _ in range(3)]).astype(float)
    sens, areas = sensitivity_at(hits, weights=weights), auroc(hits, weights=weights)
    for row, counts in enumerate(weights):
        cgt, cdets = _copied(gt, dets, counts)
        assert sens[row] == pytest.approx(_brute_sensitivities(cgt, cdets, rule), abs=1e-12)
        assert cpm(hits, weights=weights)[row] == pytest.approx(np.mean(sens[row]))
        if len({a["image_id"] for a in cgt["annotations"]}) not in (0, len(cgt["images"])):
            assert areas[row] == pytest.approx(_brute_auroc(cgt, cdets), abs=1e-12)


def test_report_gives_cpm_and_auroc_columns_curves_and_operating_points(toy_dataset, tmp_path):
    """build_report: results.csv's cpm / auroc equal the brute-force count on each fold's files (mean over
    folds on the mean row, inside its interval), results.md has the section, the charts and CSVs exist."""
    import json

    import pandas as pd
    from analysis_sweep import make_analysis_sweep

    from harness.report import AnalysisSettings, BootstrapSettings, build_report
    from harness.report.uncertainty import ground_truth_for

    root = make_analysis_sweep(toy_dataset, tmp_path / "sweep")
    paths = build_report(root, bootstrap=BootstrapSettings(resamples=40), analysis=AnalysisSettings(gallery=0))
    table = pd.read_csv(paths["results_csv"])
    for name in ("loose", "sharp"):
        cpms = []
        for fold in ("fold0", "fold1"):
            run = root / name / fold
            gt = json.loads(ground_truth_for(run, json.loads((run / "metrics.json").read_text()), root).read_text())
            dets = Predictions.load(run / "predictions.json").detections
            cpms.append(np.mean(_brute_sensitivities(gt, dets, "iou")))
            row = table[(table["name"] == name) & (table["fold"] == fold)].iloc[0]
            assert row["cpm"] == pytest.approx(cpms[-1], abs=1e-5)
            if len({a["image_id"] for a in gt["annotations"]}) < len(gt["images"]):
                assert row["auroc"] == pytest.approx(_brute_auroc(gt, dets), abs=1e-5)
        mean = table[(table["name"] == name) & (table["fold"] == "mean")].iloc[0]
        assert mean["cpm"] == pytest.approx(np.mean(cpms), abs=1e-5)
        assert mean["cpm ci_low"] <= mean["cpm"] <= mean["cpm ci_high"]
    assert table.loc[table["name"] == "loose", "cpm"].iloc[0] < table.loc[table["name"] == "sharp", "cpm"].iloc[0]
    text = paths["results_md"].read_text()
    assert "## FROC and image-level AUROC" in text and "## Operating points" in text and "| CPM | image AUROC |" in text
    curves = pd.read_csv(paths["froc_csv"])
    assert set(curves["name"]) == {"loose", "sharp", "ensemble:wbf"} and "all" in set(curves["class"])
    budget = pd.read_csv(paths["operating_point_budget_csv"]).set_index("name")
    assert (budget["budget fp_per_image"] <= 1.0).all()
    for key in ("froc_png", "operating_points_png"):
        assert paths[key].stat().st_size > 5000
    page = paths["index_html"].read_text()
    assert page.index('id="froc-and-image-level-auroc"') < page.index('alt="FROC: lesion sensitivity') \
        < page.index('id="operating-points"') < page.index('alt="Precision, recall and F1 against the score')
