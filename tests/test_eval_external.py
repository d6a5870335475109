"""cxr-eval: predictions of a detector outside the three frameworks, scored on a prepared fold as a run
of a sweep (harness/jobs/eval_job.py, harness/cli/eval.py)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import FAST, run_app
from harness.eval import evaluate
from harness.jobs.eval_job import ExternalResultsError, read_results
from harness.predictions import Predictions


def _perfect_results(split, by_key: bool, skip_one: bool = True) -> list[dict]:
    """The val ground truth as a COCO results list (every box found, score 0.9), keyed by COCO id or by
    image key; with `skip_one`, one val image is left without any detection."""
    val = json.loads(Path(split.val_json).read_text())
    keys = {img["id"]: img["image_key"] for img in val["images"]}
    skipped = val["annotations"][0]["image_id"] if skip_one else None
    return [{"image_id": keys[a["image_id"]] if by_key else a["image_id"], "category_id": a["category_id"],
             "bbox": a["bbox"], "score": 0.9} for a in val["annotations"] if a["image_id"] != skipped]


@pytest.mark.parametrize("by_key", [False, True])
def test_coco_results_are_scored_on_every_val_image(split0, tmp_path, by_key):
    results = _perfect_results(split0, by_key)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    read = read_results(path, split0, "outside")
    val = json.loads(Path(split0.val_json).read_text())
    # every val image is scored, also the one the file has no detection for
    assert read.predictions.image_ids == [img["id"] for img in val["images"]]
    assert read.format == "coco-results" and read.predictions.split_hash == split0.split_hash
    assert len(read.predictions.detections) == len(results)
    # the skipped image's boxes count as missed (recall < 1), the rest are exact
    assert 0.5 < evaluate(split0.val_json, read.predictions)["map40"] < 1.0
    path.write_text(json.dumps(_perfect_results(split0, by_key, skip_one=False)))
    assert evaluate(split0.val_json, read_results(path, split0, "outside").predictions)["map40"] == 1.0


def test_results_that_do_not_fit_the_fold_are_refused_with_the_reason(split0, toy_dataset, tmp_path):
    good = _perfect_results(split0, by_key=False)
    val = json.loads(Path(split0.val_json).read_text())
    val_ids = {img["id"] for img in val["images"]}
    labels = json.loads(Path(toy_dataset["labels"]).read_text())
    other_fold = next(img["id"] for img in labels["images"] if img["id"] not in val_ids)
    cases = {
        "not one of the": [{**good[0], "image_id": other_fold}],
        "category_id 20": [{**good[0], "category_id": 20}],  # the label set has 14 classes
        "bbox": [{**good[0], "bbox": [1, 2, -3, 4]}],
        "score": [{**good[0], "score": "high"}],
    }
    for message, entries in cases.items():
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(entries))
        with pytest.raises(ExternalResultsError, match=message):
            read_results(path, split0, "outside")
    # a predictions.json made on another split
    other = Predictions("elsewhere", "0123456789abcdef", sorted(val_ids), [])
    other.save(tmp_path / "predictions.json")
    with pytest.raises(ExternalResultsError, match="made on split 0123456789abcdef"):
        read_results(tmp_path / "predictions.json", split0, "outside")
    # the same predictions.json on this split is read
    Predictions("mine", split0.split_hash, sorted(val_ids), good).save(tmp_path / "predictions.json")
    read = read_results(tmp_path / "predictions.json", split0, "outside")
    assert read.format == "cxr-bench-predictions/1" and len(read.predictions.detections) == len(good)


def _torchvision_results(split_val: Path, dataset_dir: Path, n_classes: int) -> list[dict]:
    """A torchvision Faster R-CNN (MobileNetV3, untrained, seeded: a detector none of the three
    frameworks provides) run on the fold's val PNGs, written as a COCO results list keyed by image key."""
    import torch
    from PIL import Image
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
    from torchvision.transforms.functional import to_tensor

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=n_classes + 1,
                                                  box_score_thresh=0.0).eval()
    val = json.loads(split_val.read_text())
    results = []
    with torch.no_grad():
        for img in val["images"]:
            pixels = to_tensor(Image.open(dataset_dir / img["file_name"]).convert("RGB"))
            out = model([pixels])[0]
            for box, label, score in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist()):
                x1, y1, x2, y2 = box
                results.append({"image_id": img["image_key"], "category_id": int(label) - 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


@pytest.mark.slow
def test_cxr_eval_scores_a_torchvision_detector_beside_a_trained_model(tmp_path):
    sweep = tmp_path / "runs" / "ext"
    run_app("harness.cli.train", ["sweep=ext", "model=yolov5", "data.fold=0", *FAST, "train.epochs=1"], tmp_path)
    trained = json.loads((sweep / "yolov5" / "fold0" / "metrics.json").read_text())
    val_json = sweep / "yolov5" / "fold0" / "split" / "val.json"
    n_classes = len(json.loads(val_json.read_text())["categories"])
    results = _torchvision_results(val_json, tmp_path / "data" / "synthetic-tiny", n_classes)
    assert results  # box_score_thresh 0: the untrained head still ranks boxes
    results_path = tmp_path / "torchvision_results.json"
    results_path.write_text(json.dumps(results))

    args = ["sweep=ext", "data.fold=0", *FAST, "eval.name=torchvision_frcnn", f"eval.results={results_path}",
            "eval.variant=mobilenet_v3_320_untrained"]
    out = run_app("harness.cli.eval", args, tmp_path)
    run_dir = sweep / "torchvision_frcnn" / "fold0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["external"]["format"] == "coco-results" and metrics["external"]["sha256"]
    assert metrics["split_hash"] == trained["split_hash"] and metrics["n_images"] == trained["n_images"]
    # scored exactly as the file says: the saved predictions are the file's boxes, and the score is theirs
    saved = Predictions.load(run_dir / "predictions.json")
    assert len(saved.detections) == len(results)
    assert metrics["map40"] == evaluate(val_json, saved)["map40"]
    assert "torchvision_frcnn fold 0: mAP@0.4" in out.stdout

    # the same file again: recognised, not rescored; another file under the same name, or a trained
    # model's name: refused, nothing overwritten
    again = run_app("harness.cli.eval", args, tmp_path)
    assert "scored here earlier" in again.stdout + again.stderr
    other = tmp_path / "other.json"
    other.write_text(json.dumps(results[: len(results) // 2]))
    before = (run_dir / "metrics.json").read_bytes()
    refused = run_app("harness.cli.eval", [*args[:-2], f"eval.results={other}"], tmp_path, check=False)
    assert refused.returncode != 0 and "already holds the score of another file" in refused.stderr
    assert (run_dir / "metrics.json").read_bytes() == before
    refused = run_app("harness.cli.eval", ["sweep=ext", "data.fold=0", *FAST, "eval.name=yolov5",
                                           f"eval.results={results_path}"], tmp_path, check=False)
    assert refused.returncode != 0 and "a trained model's run" in refused.stderr
    assert json.loads((sweep / "yolov5" / "fold0" / "metrics.json").read_text()) == trained
    assert not (sweep / "yolov5" / "fold0" / "eval.log").exists()  # Hydra's files of a refused call stay outside

    # the ensemble fuses it with the trained model; the report lists both, and the ensemble
    run_app("harness.cli.ensemble", ["sweep=ext"], tmp_path)
    fused = json.loads(next((sweep / "ensemble").glob("wbf*/fold0/metrics.json")).read_text())
    assert fused["members"] == ["torchvision_frcnn", "yolov5"]
    run_app("harness.cli.report", ["sweep=ext", "report.overlays=0"], tmp_path)
    rows = {row["name"]: row for row in csv.DictReader(open(sweep / "report" / "results.csv"))}
    assert {"yolov5", "torchvision_frcnn"} <= set(rows) and any(n.startswith("ensemble:wbf") for n in rows)
    assert rows["torchvision_frcnn"]["variant"] == "mobilenet_v3_320_untrained"
    table = (sweep / "report" / "results.md").read_text()
    assert "| torchvision_frcnn |" in table and "| yolov5 |" in table
    card = (sweep / "report" / "protocol.md").read_text()
    assert "torchvision_frcnn" in card and "external file (coco-results)" in card
