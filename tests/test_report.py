"""harness.report: tables, charts and overlays rebuilt from a sweep directory's files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness import atomic
from harness.classes import CLASSES
from harness.eval import evaluate
from harness.predictions import Predictions
from harness.report import build_report, collect, write_overlays

FOLD_MAP = {"yolov5": [0.20, 0.30], "detectron2_frcnn": [0.25, 0.27], "mmdet_frcnn": [0.31, 0.29]}


def metrics(model: str, fold, map40: float, variant: str = "v") -> dict:
    per_class = {cls: None for cls in CLASSES}
    per_class.update({"Aortic enlargement": map40 + 0.3, "Cardiomegaly": map40 + 0.4, "Nodule/Mass": map40 - 0.1})
    return {"source": f"{model}:{variant}", "model": model, "variant": variant, "fold": fold, "split_hash": f"h{fold}",
            "n_images": 10, "map40": map40, "voc_map40": map40 - 0.01, "voc_map40_15": map40 + 0.1,
            "ap50": map40 - 0.05, "ap50_95": map40 / 3, "per_class": per_class, "train_time_s": 100.0,
            "predict_time_s": 5.0, "device": "cpu", "versions": {}, "config": {}}


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "demo"
    for model, values in FOLD_MAP.items():
        for fold, value in enumerate(values):
            run = root / model / f"fold{fold}"
            atomic.write_json(run / "metrics.json", metrics(model, fold, value, variant=model[:6]))
            atomic.write_json(run / "native" / "metrics.json", {"framework": "own file, not ours"})
    for fold, value in enumerate([0.36, 0.34]):
        atomic.write_json(root / "ensemble" / "wbf-iou0.55" / f"fold{fold}" / "metrics.json",
                          {**metrics("ensemble", fold, value, variant="wbf-iou0.55")})
    atomic.write_json(root / "yolov5x" / "fold0" / "failed.json",
                      {"model": "yolov5x", "fold": 0, "error": "RuntimeError: CUDA out of memory\nmore",
                       "traceback": "Traceback ..."})
    (root / "broken" / "fold0").mkdir(parents=True)
    (root / "broken" / "fold0" / "metrics.json").write_text("{not json")
    return root


def test_collect_finds_runs_ensembles_and_failures(sweep):
    results = collect(sweep)
    runs = results.runs
    assert len(runs) == 8  # 3 models x 2 folds + ensemble x 2 folds; native/ files ignored
    assert list(runs["kind"]).count("ensemble") == 2
    assert set(runs["name"]) == {*FOLD_MAP, "ensemble:wbf-iou0.55"}
    assert [f["model"] for f in results.failed] == ["yolov5x"]
    assert results.failed[0]["error"] == "RuntimeError: CUDA out of memory"
    assert len(results.unreadable) == 1 and "broken" in results.unreadable[0]
    # two variants of one model are kept apart, not averaged together
    atomic.write_json(sweep / "yolov5" / "fold1" / "metrics.json", metrics("yolov5", 1, 0.3, variant="yolov5s"))
    names = set(collect(sweep).runs["name"])
    assert {"yolov5 (yolov5)", "yolov5 (yolov5s)"} <= names


def test_build_report_tables(sweep, tmp_path):
    paths = build_report(sweep)
    assert set(paths) == {"results_md", "results_csv", "results_png", "per_class_png", "index_html"}
    assert all(Path(p).parent == sweep / "report" for p in paths.values())
    frame = pd.read_csv(paths["results_csv"])
    mean = frame[(frame["name"] == "yolov5") & (frame["fold"] == "mean")].iloc[0]
    std = frame[(frame["name"] == "yolov5") & (frame["fold"] == "std")].iloc[0]
    assert mean["map40"] == pytest.approx(0.25) and std["map40"] == pytest.approx(np.std([0.2, 0.3], ddof=1))
    assert mean["AP Cardiomegaly"] == pytest.approx(0.65) and np.isnan(mean["AP ILD"])
    assert len(frame) == 8 + 2 * 4  # runs + mean/std per model and ensemble
    md = paths["results_md"].read_text()
    assert "| yolov5 | yolov5 | 0.2000 | 0.3000 | 0.2500 ± 0.0707 |" in md
    assert "**ensemble:wbf-iou0.55**" in md
    assert "| Cardiomegaly | 0.660 | 0.700 | 0.650 | 0.750 |" in md  # models by name, then ensembles
    assert "| yolov5x | fold0 | RuntimeError: CUDA out of memory |" in md
    assert "Unreadable result files" in md
    # no temporary files left behind
    assert sorted(p.name for p in (sweep / "report").iterdir()) == ["index.html", "per_class.png", "results.csv",
                                                                   "results.md", "results.png"]
    # a custom output folder and an empty sweep work too
    empty = tmp_path / "empty"
    empty.mkdir()
    out = build_report(empty, tmp_path / "elsewhere")
    assert "No finished runs" in out["results_md"].read_text()


def test_build_report_charts_are_real_pngs(sweep):
    paths = build_report(sweep)
    for key in ("results_png", "per_class_png"):
        with Image.open(paths[key]) as img:
            assert img.format == "PNG" and img.width > 400 and img.height > 250
            assert np.asarray(img.convert("L")).std() > 10  # not blank


def test_overlays_from_gt_and_from_image_refs(toy_dataset, tmp_path):
    gt = json.loads(Path(toy_dataset["labels"]).read_text())
    rng = np.random.default_rng(0)
    dets = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [x + rng.normal(0, 2), y + rng.normal(0, 2), w, h], "score": float(rng.uniform(0.4, 1))})
    dets.append({"image_id": 1, "category_id": 10, "bbox": [5, 5, 30, 20], "score": 0.35})
    ids = [img["id"] for img in gt["images"]]
    preds = Predictions("toy-model", None, ids, dets)
    assert evaluate(gt, preds)["map40"] > 0.5
    written = write_overlays(preds, toy_dataset["labels"], toy_dataset["root"], tmp_path / "ov", n=3, score_thr=0.3)
    assert len(written) == 3 and all(p.suffix == ".png" and p.is_file() for p in written)
    with Image.open(written[0]) as img:
        assert img.width >= 128 and np.asarray(img.convert("RGB")).std() > 10
    # unlabeled images through ImageRefs (the predict step); an unreadable image is skipped, not fatal
    from harness.split import ImageRef

    refs = [ImageRef(img["id"], Path(toy_dataset["root"]) / img["file_name"], img["width"], img["height"])
            for img in gt["images"][:2]]
    refs.append(ImageRef(99, tmp_path / "missing.png", 128, 128))
    unlabeled = Predictions("toy-model", None, [1, 2, 99], [d for d in dets if d["image_id"] in (1, 2)])
    out = write_overlays(unlabeled, None, None, tmp_path / "ov2", n=5, images=refs)
    assert sorted(p.name for p in out) == ["toy0000.png", "toy0001.png"]


@pytest.fixture
def scored_sweep(tmp_path) -> Path:
    """Two models and an ensemble with real predictions on two folds, and a 3-reader train.csv."""
    from test_eval_voc import random_case

    root = tmp_path / "scored"
    raw = tmp_path / "raw"
    lines = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"]
    for fold in (0, 1):
        gt, good = random_case(20 + fold, n_images=40)
        for img in gt["images"]:
            img["image_key"] = f"f{fold}i{img['id']}"
        bad = Predictions("b", None, good.image_ids, [d for i, d in enumerate(good.detections) if i % 2])
        for name, preds in (("good", good), ("bad", bad)):
            run = root / name / f"fold{fold}"
            atomic.write_json(run / "split" / "val.json", gt)
            preds.save(run / "predictions.json")
            atomic.write_json(run / "metrics.json", {**evaluate(gt, preds), "model": name, "variant": "v",
                                                     "fold": fold, "split_hash": f"h{fold}",
                                                     "config": {"data": {"raw_dir": str(raw)}}})
        ens = root / "ensemble" / "wbf" / f"fold{fold}"
        good.save(ens / "predictions.json")
        atomic.write_json(ens / "metrics.json", {**evaluate(gt, good), "model": "ensemble", "variant": "wbf",
                                                 "fold": fold, "split_hash": f"h{fold}"})
        key = {img["id"]: img["image_key"] for img in gt["images"]}
        for ann in gt["annotations"]:
            x, y, w, h = ann["bbox"]
            for r, shift in (("R1", 0), ("R2", 2), ("R3", 30 * (ann["id"] % 2))):
                lines.append(f"{key[ann['image_id']]},{CLASSES[ann['category_id']]},{ann['category_id']},{r},"
                             f"{x + shift:.1f},{y:.1f},{x + w + shift:.1f},{y + h:.1f}")
    raw.mkdir()
    (raw / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def test_report_gives_bootstrap_cis_paired_comparisons_and_reader_reference(scored_sweep):
    from harness.report import BootstrapSettings

    paths = build_report(scored_sweep, bootstrap=BootstrapSettings(resamples=300, seed=0, ci=0.9))
    frame = pd.read_csv(paths["results_csv"])
    runs = frame[frame["kind"].isin(["model", "ensemble"]) & frame["fold"].str.startswith("fold")]
    assert len(runs) == 6 and runs["map40 ci_low"].notna().all()
    assert (runs["map40 ci_low"] < runs["map40"]).all() and (runs["map40"] < runs["map40 ci_high"]).all()
    mean = frame[(frame["name"] == "good") & (frame["fold"] == "mean")].iloc[0]
    assert mean["map40 ci_low"] < mean["map40"] < mean["map40 ci_high"]
    pairs = frame[frame["kind"] == "paired"].set_index("name")
    assert set(pairs.index) == {"bad vs good", "bad vs ensemble:wbf", "good vs ensemble:wbf"}
    assert pairs.loc["bad vs good", "delta"] < 0 and pairs.loc["bad vs good", "verdict"] == "good better"
    assert pairs.loc["bad vs good", "p_a_gt_b"] < 0.05
    same = pairs.loc["good vs ensemble:wbf"]  # identical predictions: Δ 0, never A > B
    assert same["delta"] == 0 and same["p_a_gt_b"] == 0 and same["verdict"] == "not distinguishable"
    md = paths["results_md"].read_text()
    assert "## Paired comparisons" in md and "**not distinguishable**" in md
    assert "90% bootstrap interval" in md and "300 resamples" in md
    reference = frame[frame["kind"] == "reference"]
    assert list(reference["fold"]) == ["mean", "std", "tie orders mean", "tie orders std", "tie orders min",
                                       "tie orders max"] and 0 < reference["map40"].iloc[0] < 1
    ties = reference.set_index("fold")["map40"]
    assert ties["tie orders min"] <= ties["tie orders mean"] <= ties["tie orders max"]
    assert "*one radiologist vs two*" in md and "row order in train.csv" in md
    assert "GT: the other two readers" in md and "all three readers fused" in md
    assert f"tie orders [{ties['tie orders min']:.3f}, {ties['tie orders max']:.3f}]" in md
    # the same settings give the same numbers; a different seed other draws
    again = pd.read_csv(build_report(scored_sweep, bootstrap=BootstrapSettings(300, 0, 0.9))["results_csv"])
    assert np.array_equal(again["map40 ci_low"].to_numpy(), frame["map40 ci_low"].to_numpy(), equal_nan=True)
    other = pd.read_csv(build_report(scored_sweep, bootstrap=BootstrapSettings(300, 1, 0.9))["results_csv"])
    assert not np.array_equal(other["map40 ci_low"].to_numpy(), frame["map40 ci_low"].to_numpy(), equal_nan=True)
    off = build_report(scored_sweep, bootstrap=BootstrapSettings(enabled=False), reader_reference=False)
    md_off = off["results_md"].read_text()
    assert "Paired comparisons" not in md_off and "one radiologist" not in md_off


def test_paired_comparison_says_when_image_sets_differ(scored_sweep):
    """A model scored on other images on one fold: that fold is left out of its paired comparisons,
    with a warning in results.md (not dropped silently); the intervals' scope is stated."""
    from harness.report import BootstrapSettings

    run = scored_sweep / "bad" / "fold1"
    preds = Predictions.load(run / "predictions.json")
    keep = preds.image_ids[:-5]
    Predictions(preds.source, None, keep, [d for d in preds.detections if d["image_id"] in set(keep)]).save(
        run / "predictions.json")
    paths = build_report(scored_sweep, bootstrap=BootstrapSettings(resamples=200, seed=0), reader_reference=False)
    frame = pd.read_csv(paths["results_csv"])
    pairs = frame[frame["kind"] == "paired"].set_index("name")
    assert pairs.loc["bad vs good", "fold"] == "fold0" and pairs.loc["good vs ensemble:wbf", "fold"] == "fold0 fold1"
    md = paths["results_md"].read_text()
    assert "**Not compared** (scored on different image sets):" in md
    assert "- bad vs good, fold1: scored on different image sets (35 vs 40 images, 0 only in bad, 5 only in good)" in md
    assert "the share of resamples in which A scored higher than B" in md
    assert "cover the choice of validation images only" in md and "drops out of that resample's mean" in md
def test_results_chart_labels_never_overlap_the_legend(sweep):
    """The value / interval labels of every bar (also the first, highest one) stay clear of the legend."""
    from harness.report.charts import results_figure
    from harness.report.tables import summary

    runs = collect(sweep).runs
    summ = summary(runs)
    summ["map40 ci_low"], summ["map40 ci_high"] = summ["map40 mean"] - 0.05, summ["map40 mean"] + 0.3
    for n in (1, len(summ)):
        fig = results_figure(runs, summ.head(n), reference={"name": "reader", "map40": 0.2})
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        labels = [t for t in ax.texts if "[" in t.get_text()]
        assert len(labels) == n
        for text in labels:
            assert not text.get_window_extent(renderer).overlaps(legend), text.get_text()
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_seed_sweep_reports_mean_and_sd_over_seeds_and_pairs_per_seed(tmp_path):
    """Two training seeds of two models (and their ensemble) on the same fold, one sweep per seed under
    one folder: the report never averages seeds as folds; per model it gives each seed's mAP, their mean
    ± sd beside the bootstrap interval, and compares the models seed by seed only."""
    from test_eval_voc import random_case

    from harness.report import BootstrapSettings

    root = tmp_path / "seeds"
    gt, full = random_case(30, n_images=40)
    points = {}
    for seed in (0, 1):
        for name, keep in (("good", 1), ("bad", 2 + seed)):  # bad keeps every 2nd / 3rd detection
            preds = Predictions(name, "h0", full.image_ids, full.detections[seed::keep] if name == "bad"
                                else full.detections[:len(full.detections) - 7 * seed])
            run = root / f"seed{seed}" / name / "fold0"
            atomic.write_json(run / "split" / "val.json", gt)
            preds.save(run / "predictions.json")
            metrics = {**evaluate(gt, preds), "model": name, "variant": "v", "fold": 0, "split_hash": "h0",
                       "config": {"train": {"seed": seed}, "per_model": {}}}
            atomic.write_json(run / "metrics.json", metrics)
            points[(name, seed)] = metrics["map40"]
        ens = root / f"seed{seed}" / "ensemble" / "wbf" / "fold0"
        Predictions("ensemble:wbf", "h0", full.image_ids, full.detections).save(ens / "predictions.json")
        atomic.write_json(ens / "metrics.json", {**evaluate(gt, full), "model": "ensemble", "variant": "wbf",
                                                 "fold": 0, "split_hash": "h0",
                                                 "val_json": str(run / "split" / "val.json")})
    results = collect(root)
    assert sorted(set(results.runs["name"])) == ["bad · seed 0", "bad · seed 1", "ensemble:wbf · seed 0",
                                                 "ensemble:wbf · seed 1", "good · seed 0", "good · seed 1"]
    paths = build_report(root, bootstrap=BootstrapSettings(resamples=200, seed=0), reader_reference=False)
    md = paths["results_md"].read_text()
    assert "## Training-seed spread (train.seed = 0, 1)" in md and "covers the choice of validation images only" in md
    seeds_csv = pd.read_csv(paths["seeds_csv"])
    good = seeds_csv[(seeds_csv["name"] == "good")].set_index("seed")
    close = dict(abs=1e-5)  # seeds.csv: 6 significant digits
    assert float(good.loc["0", "map40"]) == pytest.approx(points[("good", 0)], **close)
    assert float(good.loc["mean", "map40"]) == pytest.approx((points[("good", 0)] + points[("good", 1)]) / 2, **close)
    assert float(good.loc["mean", "sd"]) == pytest.approx(np.std([points[("good", 0)], points[("good", 1)]], ddof=1),
                                                          **close)
    assert float(good.loc["mean", "ci_low"]) < float(good.loc["mean", "map40"]) < float(good.loc["mean", "ci_high"])
    # the interval over seeds and images: a t interval (1 degree of freedom) whose variance adds the seeds'
    # sd²/2 to the images' bootstrap variance: wider than either part alone
    sd, mean = float(good.loc["mean", "sd"]), float(good.loc["mean", "map40"])
    low, high = float(good.loc["mean", "low"]), float(good.loc["mean", "high"])
    assert low < mean < high and (high - low) / 2 > 12.7 * sd / np.sqrt(2)  # t(0.975, 1) = 12.71
    assert high - low > float(good.loc["mean", "ci_high"]) - float(good.loc["mean", "ci_low"])
    assert "interval over seeds and images" in md
    mean_sd = f"{(points[('good', 0)] + points[('good', 1)]) / 2:.4f} ± "
    assert f"| good | 2 | 0: {points[('good', 0)]:.4f}, 1: {points[('good', 1)]:.4f} | {mean_sd}" in md
    # paired comparisons: seed by seed only (never seed 0 of one model against seed 1 of another)
    pairs = pd.read_csv(paths["results_csv"]).query("kind == 'paired'")["name"]
    assert all(p.split(" vs ")[0][-1] == p[-1] for p in pairs) and len(pairs) == 2 * 3
    over = seeds_csv[seeds_csv["kind"] == "paired"].set_index("name")
    assert over.loc["bad vs good", "a_better"] + over.loc["bad vs good", "b_better"] + \
        over.loc["bad vs good", "not_distinguishable"] == 2
    # the sign of Δ over the seeds with its exact two-sided sign test: good higher in 2 of 2 seeds, p = 0.5
    assert over.loc["bad vs good", "b_higher"] == 2 and over.loc["bad vs good", "sign_p"] == pytest.approx(0.5)
    assert "| bad | good | 2 |" in md and "| 0 of 2 (p = 0.5) |" in md
    assert over.loc["bad vs good", "delta"] == pytest.approx(
        np.mean([points[("bad", s)] - points[("good", s)] for s in (0, 1)]), **close)
