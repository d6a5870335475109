"""The report's analysis sections on a sweep with known errors, and report/index.html in a real
headless browser (Debian's chromium): it renders, every image loads, no console error, and no request
leaves the file."""
from __future__ import annotations

import re

import pandas as pd
import pytest
from analysis_sweep import make_analysis_sweep
from browser import check_page, chromium_binary
from conftest import missing_reference

from harness.report import AnalysisSettings, BootstrapSettings, build_report


@pytest.fixture(scope="module")
def report(toy_dataset, tmp_path_factory):
    root = make_analysis_sweep(toy_dataset, tmp_path_factory.mktemp("analysis") / "sweep")
    paths = build_report(root, bootstrap=BootstrapSettings(resamples=200, seed=0),
                         analysis=AnalysisSettings(score_thr=0.25, gallery=2))
    return root, paths


def _gt_counts(root):
    import json

    boxes = {3: 0, 0: 0}
    images = 0
    for fold in (0, 1):
        gt = json.loads((root / "sharp" / f"fold{fold}" / "split" / "val.json").read_text())
        images += len(gt["images"])
        for ann in gt["annotations"]:
            boxes[ann["category_id"]] += 1
    return boxes, images


def test_error_analysis_finds_the_planted_errors(report):
    root, paths = report
    boxes, images = _gt_counts(root)
    errors = pd.read_csv(paths["errors_csv"]).set_index(["name", "type"])
    assert errors.loc[("loose", "loc"), "count"] == boxes[3]          # every class-3 box shifted to IoU ~0.3
    assert errors.loc[("loose", "cls"), "count"] == 2                 # one class-0 box per fold called class 2
    assert errors.loc[("loose", "loc"), "dap"] == pytest.approx(0.5)  # class 3: AP 0 -> 1, one of two classes
    assert errors.loc[("sharp", "bkg"), "count"] == images            # one box on nothing per image
    assert errors.loc[("ensemble:wbf", "bkg"), "count"] == 0 and errors.loc[("ensemble:wbf", "dap")].sum() == 0 \
        if ("ensemble:wbf", "dap") in errors.index else errors.xs("ensemble:wbf")["dap"].sum() == 0
    md = paths["results_md"].read_text()
    assert "## Why: error analysis (TIDE at IoU 0.4)" in md
    assert "- loose: mAP@0.4" in md and "localisation +50.0" in md
    assert "ensemble:wbf vs the best single model (sharp)" in md and "background 24→0" in md


def test_confusion_per_class_intervals_sizes_and_gallery(report):
    root, paths = report
    boxes, _ = _gt_counts(root)
    loose = pd.read_csv(paths["confusion_loose_csv"], index_col=0)
    assert loose.loc["Aortic enlargement", "Calcification"] == 2             # the planted class mix-up
    assert loose.loc["Cardiomegaly", "background"] == boxes[3]               # shifted boxes: missed at IoU 0.4
    assert loose.loc["Cardiomegaly"].sum() == boxes[3]
    per_class = pd.read_csv(paths["per_class_ap_csv"])
    row = per_class[(per_class["name"] == "loose") & (per_class["class"] == "Aortic enlargement")].iloc[0]
    assert row["ci_low"] <= row["ap"] <= row["ci_high"] and row["ci_low"] < row["ci_high"]
    results = pd.read_csv(paths["results_csv"])
    mean = results[(results["name"] == "loose") & (results["fold"] == "mean")].iloc[0]
    assert row["ap"] == pytest.approx(mean["AP Aortic enlargement"], abs=1e-12)  # same numbers as the table
    sizes = pd.read_csv(paths["ap_by_size_csv"]).set_index(["name", "band"])
    assert sizes.loc[("sharp", "small"), "n_gt"] + sizes.loc[("sharp", "medium"), "n_gt"] + \
        sizes.loc[("sharp", "large"), "n_gt"] == sizes.loc[("sharp", "all"), "n_gt"]
    assert "terciles of the ground-truth box areas" in paths["results_md"].read_text()
    per_image = pd.read_csv(paths["per_image_csv"])
    assert set(per_image["name"]) == {"loose", "sharp", "ensemble:wbf"}
    assert (per_image["tp"] + per_image["fn"] == per_image["n_gt"]).all()
    gallery = pd.read_csv(paths["gallery_csv"])
    assert sorted(gallery["rank"].unique()) == [1, 2] and len(gallery) == 6
    assert all((paths["gallery_csv"].parent / png).is_file() for png in gallery["png"])
    assert (paths["pr_overview_png"]).is_file() and paths["pr_3_png"].name == "cardiomegaly.png"


def test_index_html_is_self_contained(report):
    _, paths = report
    page = paths["index_html"].read_text()
    attributes = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert attributes and all(a.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "#")) or not re.match(r"[a-z]+:", a)
                              for a in attributes)
    assert "Content-Security-Policy" in page and "<script" not in page
    for section in ("mAP@0.4 by model and fold", "Paired comparisons", "Why: error analysis", "Per-class AP@0.4 with",
                    "AP@0.4 by box size", "Worst images", "No finding"):
        assert section in page, section


def _browser_or_skip():
    if chromium_binary() is None:
        missing_reference("chromium", "CXR_CHROMIUM", "apt-get install chromium (as .ci/run does), or name the "
                          "binary in CXR_CHROMIUM")


def test_browser_check_catches_a_broken_page(tmp_path):
    """The check itself: a page with a remote image, a missing file and a script error fails it."""
    _browser_or_skip()
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                   '<img src="http://example.invalid/a.png" alt="remote"><img src="missing.png" alt="missing">'
                   '<script>console.error("boom"); notDefined();</script></body></html>')
    result = check_page(bad)
    assert result.page["broken"] == ["remote", "missing"]
    assert result.outside_requests() == ["http://example.invalid/a.png"]
    assert result.console == ["boom"] and result.exceptions


def test_index_html_in_headless_chromium(report):
    _browser_or_skip()
    _, paths = report
    result = check_page(paths["index_html"])
    assert result.page["title"].startswith("Results:")
    assert result.page["images"] >= 10 and result.page["broken"] == []
    assert result.page["tables"] >= 5 and "Why: error analysis (TIDE at IoU 0.4)" in result.page["headings"]
    assert result.outside_requests() == []
    assert result.console == [] and result.exceptions == [] and result.log_errors == []
    # the first screen at 1280 x 800 answers: the summary box starts on it, with the ranking and the caveat
    page = result.page
    assert page["viewport"] == [1280, 800] and page["glance"] is not None and page["glance"]["top"] < 400
    assert "At a glance" in page["glance"]["text"] and "WBF ensemble" in page["glance"]["text"]
    assert "One training seed" in page["glance"]["text"] and "Cardiomegaly" in page["glance"]["text"]
    assert page["width"] <= 1280 and page["overflowing"] == []  # tables fit or scroll inside themselves
    assert page["nav"] == page["headings"]                           # full navigation labels
    assert page["headers_without_scope"] == 0 and page["tables_without_caption"] == 0
    assert not [alt for alt in page["alts"] if alt.endswith(".png") or len(alt) < 15]


def test_readable_names():
    from harness.report.names import display_name

    assert display_name("ensemble:wbf-iou0.55") == "WBF ensemble, IoU 0.55"
    assert display_name("ensemble:soft_nms-tuned") == "Soft-NMS ensemble, tuned on the other folds"
    assert display_name("detectron2_frcnn (R18-FPN) · seed 2") == "Detectron2 Faster R-CNN (R18-FPN) · seed 2"
    assert display_name("something") == "something"


def test_summary_box_ranks_with_verdicts_against_the_leader_and_states_the_caveats():
    from harness.report.summary import markdown
    from harness.report.uncertainty import BootstrapSettings, Uncertainty

    summ = pd.DataFrame({"kind": ["model", "model", "ensemble"], "name": ["yolov5", "mmdet_frcnn", "ensemble:wbf-iou0.55"],
                         "n_folds": [1, 1, 1], "map40 mean": [0.4681, 0.1645, 0.5601],
                         "map40 ci_low": [0.41, 0.12, 0.50], "map40 ci_high": [0.52, 0.21, 0.62]})
    unc = Uncertainty(BootstrapSettings())
    unc.pairs = pd.DataFrame([
        {"a": "yolov5", "b": "ensemble:wbf-iou0.55", "delta": -0.092, "delta_ci_low": -0.2, "delta_ci_high": 0.01,
         "verdict": "not distinguishable"},
        {"a": "ensemble:wbf-iou0.55", "b": "mmdet_frcnn", "delta": 0.3956, "delta_ci_low": 0.3, "delta_ci_high": 0.45,
         "verdict": "ensemble:wbf-iou0.55 better"}])
    text = markdown(summ, unc, [], ("a",), ["YOLOv5: mAP@0.4 46.8; fixing localisation +5.0 AP points"],
                    seed_sweep=False, n_images=120)
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[1] for r in rows] == ["WBF ensemble, IoU 0.55", "YOLOv5", "MMDetection Faster R-CNN"]
    assert "| 0.560 | [0.500, 0.620] | leader |" in rows[0]
    assert "**not distinguishable** (Δ -0.092 [-0.200, +0.010])" in rows[1]
    assert "behind (Δ -0.396 [-0.450, -0.300])" in rows[2]
    assert "One training seed" in text and "One fold" in text and "120 validation images" in text
    assert "- YOLOv5: mAP@0.4 46.8" in text
    assert "One training seed" not in markdown(summ, unc, [], ("a",), [], seed_sweep=True, n_images=5000)


def test_first_screen_counts_and_ap_by_size_explained(report):
    """The summary box counts each val set once; AP by size shows where the toy's "all 0.708 but every band
    1.000" comes from: sharp's box on nothing in every image is small, and class 3 has no small boxes."""
    import json

    root, paths = report
    boxes, images = _gt_counts(root)
    md = paths["results_md"].read_text()
    glance = md[md.index("## At a glance"):md.index("## mAP@0.4 by model and fold")]
    n_images = {c: 0 for c in boxes}
    for fold in (0, 1):
        gt = json.loads((root / "sharp" / f"fold{fold}" / "split" / "val.json").read_text())
        for cat in boxes:
            n_images[cat] += len({a["image_id"] for a in gt["annotations"] if a["category_id"] == cat})
    assert f"| Cardiomegaly | {n_images[3]} | {boxes[3]} |" in glance
    assert f"| Aortic enlargement | {n_images[0]} | {boxes[0]} |" in glance
    assert f"**{images} validation images**" in glance and "No validation boxes (left out of every mAP): Atelectasis" in glance
    sizes = pd.read_csv(paths["ap_by_size_csv"]).set_index(["name", "band"])
    assert sizes.loc[("sharp", "small"), "map40"] == 1.0 and sizes.loc[("sharp", "all"), "map40"] < 0.75
    assert sizes.loc[("sharp", "small"), "fp_left_out"] == images and sizes.loc[("sharp", "small"), "fp"] == 0
    assert sizes.loc[("sharp", "small"), "classes"] == "Aortic enlargement"
    assert "not an average of the bands" in md and "not TIDE's classification count" in md
    from harness.report.html import PAGE_BUDGET_BYTES
    assert paths["index_html"].stat().st_size < PAGE_BUDGET_BYTES
