"""External validation: a model trained on the synthetic VinBigData-layout set, scored on the real NIH
ChestX-ray14 subset (tests/data/nih-cxr14-mini) through conf/mapping/vinbigdata_to_nih.yaml, for a
single run and for an ensemble; the table appears in the predict output and in the sweep's report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.classes import CLASSES, NIH_CLASSES
from harness.eval import evaluate
from harness.eval.external import ClassMapping, MappingError, class_scores
from harness.predictions import Predictions
from nih_mini import NIH_MINI
from test_hydra_pipeline import FAST, run_app

ROOT = Path(__file__).resolve().parents[1]
MAPPING = yaml.safe_load((ROOT / "conf" / "mapping" / "vinbigdata_to_nih.yaml").read_text())
MAPPED = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumothorax"]


def test_mapping_covers_both_label_sets_and_says_what_is_unmapped():
    mapping = ClassMapping.from_config(MAPPING)
    assert list(mapping.target_of()) == MAPPED
    assert mapping.target_of()["Nodule"] == mapping.target_of()["Mass"] == "Nodule/Mass"
    assert mapping.unmapped_target == ("Pneumonia",) and len(mapping.unmapped_source) == 8
    dropped = {**MAPPING, "unmapped_source": MAPPING["unmapped_source"][1:]}
    with pytest.raises(MappingError, match="source class 'Aortic enlargement' is neither mapped nor listed"):
        ClassMapping.from_config(dropped)
    with pytest.raises(MappingError, match="target class 'Effusoin' is not in the target label set"):
        ClassMapping.from_config({**MAPPING, "classes": {**MAPPING["classes"], "Pleural effusion": ["Effusoin"]}})
    # a Nodule/Mass detection is scored as a Nodule and as a Mass; unmapped classes' detections are left out
    preds = Predictions("m", None, [1], [
        {"image_id": 1, "category_id": CLASSES.index("Nodule/Mass"), "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": 1, "category_id": CLASSES.index("ILD"), "bbox": [1, 2, 3, 4], "score": 0.9}])
    mapped = mapping.map_predictions(preds)
    assert sorted(NIH_CLASSES[d["category_id"]] for d in mapped.detections) == ["Mass", "Nodule"]


def test_class_scores_match_pycocotools_and_bracket_the_point():
    gt = {"images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3, 4)],
          "annotations": [{"id": i, "image_id": i, "category_id": 2, "bbox": [10, 10, 30, 30]} for i in (1, 2, 3)],
          "categories": [{"id": i, "name": n} for i, n in enumerate(NIH_CLASSES)]}
    dets = [{"image_id": i, "category_id": 2, "bbox": [12 if i != 2 else 60, 10, 30, 30], "score": s}
            for i, s in ((1, 0.9), (2, 0.8), (3, 0.4), (4, 0.7))]
    preds = Predictions("m", None, [1, 2, 3, 4], dets)
    scores, mean = class_scores(gt, preds, ["Effusion", "Mass"], resamples=200)
    assert scores["Effusion"].ap == pytest.approx(evaluate(gt, preds)["per_class"]["Effusion"])
    assert scores["Effusion"].low <= scores["Effusion"].ap <= scores["Effusion"].high and scores["Effusion"].n_gt == 3
    assert scores["Mass"].ap is None and mean.ap == scores["Effusion"].ap


@pytest.mark.slow
def test_external_table_for_a_model_and_an_ensemble_in_predict_and_report(tmp_path):
    train = ["model=yolov5", "data.fold=0", *FAST, "train.epochs=1"]
    run_app("harness.cli.train", ["sweep=ext", *train], tmp_path)
    run_app("harness.cli.train", ["sweep=ext2", *train, "train.seed=1"], tmp_path)
    runs = [tmp_path / "runs" / "ext" / "yolov5" / "fold0", tmp_path / "runs" / "ext2" / "yolov5" / "fold0"]
    external = ["predict.input=external", "data=nih_cxr14", f"data.raw_dir={NIH_MINI}", "data.folds=2",
                "mapping=vinbigdata_to_nih", "report.bootstrap.resamples=200", "report.overlays=1"]
    no_mapping = run_app("harness.cli.predict", ["sweep=ext", f"predict.runs=[{runs[0]}]", *external[:4]], tmp_path,
                         check=False)
    assert no_mapping.returncode != 0 and "needs a class mapping: add mapping=<name>" in no_mapping.stderr
    single = tmp_path / "runs" / "ext" / "external" / "single"
    run_app("harness.cli.predict", ["sweep=ext", f"predict.runs=[{runs[0]}]", f"predict.out_dir={single}", *external],
            tmp_path)
    doc = json.loads((single / "external.json").read_text())
    assert [r["target"] for r in doc["rows"]] == [*MAPPED, "Nodule + Mass (merged)"] and doc["n_images"] == 11
    assert doc["unmapped_target"] == ["Pneumonia"] and "ILD" in doc["unmapped_source"]
    assert doc["unscored"]["target_boxes"] == {"Pneumonia": 1} and doc["exhaustive"] is False
    # external AP: the mapped predictions scored by the harness's evaluator on the NIH labels (with the
    # sibling class's boxes as ignore regions in the Nodule and Mass rows, and the merged class)
    mapping = ClassMapping.from_config(MAPPING)
    scoring = mapping.scoring_coco(json.loads(Path(doc["external_labels"]).read_text()))
    per_class = evaluate(scoring, mapping.scoring_predictions(Predictions.load(single / "predictions.json")))["per_class"]
    internal = json.loads((runs[0] / "metrics.json").read_text())["per_class"]
    for row in doc["rows"]:
        name = row["source"] if row["kind"] == "merged" else row["target"]
        assert row["external_ap"] == pytest.approx(per_class[name])
        assert row["external_low"] <= row["external_ap"] <= row["external_high"]
        assert row["external_gt"] == {"Atelectasis": 2, "Cardiomegaly": 1, "Effusion": 2, "Infiltrate": 2,
                                      "Mass": 4, "Nodule": 1, "Pneumothorax": 2, "Nodule/Mass": 5}[name]
        if internal.get(row["source"]) is None:
            assert row["internal_ap"] is None
        else:  # the same model's own validation fold score of the source class
            assert row["internal_ap"] == pytest.approx(internal[row["source"]])
    table = (single / "external_validation.md").read_text()
    assert "| Nodule ¹ | Nodule/Mass |" in table and "| **Nodule + Mass (merged)** | Nodule/Mass |" in table
    assert "Pneumonia (1 boxes)" in table and "Not scored" in table and "boxes are not exhaustive" in table
    assert "mean per vinbigdata class (6:" in table

    ensemble = tmp_path / "runs" / "ext" / "external" / "ensemble"
    run_app("harness.cli.predict", ["sweep=ext", f"predict.runs=[{runs[0]},{runs[1]}]", f"predict.out_dir={ensemble}",
                                    *external], tmp_path)
    doc = json.loads((ensemble / "external.json").read_text())
    assert doc["model"].startswith("ensemble:") and [r["target"] for r in doc["rows"]][:-1] == MAPPED
    assert doc["internal_mean"] is not None  # the members' fold-0 val predictions fused like the external ones

    run_app("harness.cli.report", ["sweep=ext", "report.overlays=0", "report.bootstrap.resamples=50"], tmp_path)
    results = (tmp_path / "runs" / "ext" / "report" / "results.md").read_text()
    assert results.count("## External validation:") == 2 and "on nih-cxr14" in results



def _nih_mini_coco() -> dict:
    """The NIH mini set's boxes as a COCO dict (release pixels; no preparation needed for scoring)."""
    from nih_mini import box_rows

    rows = box_rows()
    names = list(dict.fromkeys(r["name"] for r in rows))
    label = {"Infiltration": "Infiltrate"}
    return {"images": [{"id": i, "file_name": n, "width": 1024, "height": 1024, "image_key": n[:-4]}
                       for i, n in enumerate(names)],
            "annotations": [{"id": k + 1, "image_id": names.index(r["name"]),
                             "category_id": NIH_CLASSES.index(label.get(r["label"], r["label"])),
                             "bbox": r["xywh"], "area": r["xywh"][2] * r["xywh"][3], "iscrowd": 0}
                            for k, r in enumerate(rows)],
            "categories": [{"id": i, "name": n} for i, n in enumerate(NIH_CLASSES)]}


def test_a_perfect_vinbigdata_model_scores_one_on_every_mapped_nih_row():
    """A VinBigData model that finds exactly every NIH box of a mapped class (Nodule and Mass boxes as
    "Nodule/Mass"): every per-class row, the merged row and both means are 1.0 - a Nodule/Mass detection
    on a Mass box is ignored in the Nodule row, not counted false (the copy-into-both scoring gave 0.2)."""
    from harness.eval.external import external_rows, score_external, unscored

    mapping = ClassMapping.from_config(MAPPING)
    gt = _nih_mini_coco()
    source_of = {t: s for s, ts in mapping.classes.items() for t in ts}
    dets = [{"image_id": a["image_id"], "category_id": CLASSES.index(source_of[NIH_CLASSES[a["category_id"]]]),
             "bbox": a["bbox"], "score": 0.9} for a in gt["annotations"] if NIH_CLASSES[a["category_id"]] in source_of]
    preds = Predictions("perfect", None, [im["id"] for im in gt["images"]], dets)
    # the old scoring (each Nodule/Mass detection a Nodule and a Mass, nothing ignored) is far below 1
    old, _ = class_scores(gt, mapping.map_predictions(preds), MAPPED, resamples=50)
    assert old["Nodule"].ap < 0.5
    # the VinBigData side: the same boxes as the model's own validation fold
    internal_gt = {"images": gt["images"], "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)],
                   "annotations": [{**a, "category_id": d["category_id"]}
                                   for a, d in zip([a for a in gt["annotations"]
                                                    if NIH_CLASSES[a["category_id"]] in source_of], dets)]}
    scores = score_external(mapping, gt, preds, internal_gt, preds, resamples=100)
    rows = external_rows(mapping, scores.external, scores.internal)
    assert [r["target"] for r in rows] == [*MAPPED, "Nodule + Mass (merged)"]
    assert rows[-1]["kind"] == "merged" and rows[-1]["external_gt"] == 5
    for row in rows:
        assert row["external_ap"] == pytest.approx(1.0), row["target"]
        assert row["internal_ap"] == pytest.approx(1.0), row["target"]
    assert scores.external_mean.ap == pytest.approx(1.0) and scores.internal_mean.ap == pytest.approx(1.0)
    # the means are per VinBigData class: Nodule/Mass once (its merged row), on both sides
    assert scores.mean_sources == list(mapping.classes) and len(scores.mean_sources) == 6
    # a model that only ever says "Nodule/Mass" on the Mass boxes: the Nodule row has no true positive,
    # and its detections on Mass boxes are no false positives of the Nodule row either
    mass_only = Predictions("m", None, preds.image_ids, [d for d, a in zip(dets, [a for a in gt["annotations"]
                            if NIH_CLASSES[a["category_id"]] in source_of]) if NIH_CLASSES[a["category_id"]] == "Mass"])
    partial = score_external(mapping, gt, mass_only, resamples=50)
    assert partial.external["Mass"].ap == pytest.approx(1.0) and partial.external["Nodule"].ap == 0
    assert partial.external["Nodule/Mass"].ap == pytest.approx(81 / 101)  # recall 4/5, no false positive (101 points)
    missing = unscored(mapping, gt)
    assert missing["target_boxes"] == {"Pneumonia": sum(a["category_id"] == NIH_CLASSES.index("Pneumonia")
                                                        for a in gt["annotations"])}


def test_label_sets_are_told_apart_by_their_names_not_their_size():
    """is_vinbigdata by identity; predictions checked against the ground truth's categories (a category id
    the scored label set lacks is an error naming it, not silently dropped)."""
    from harness.classes import class_names, is_vinbigdata
    from harness.predictions import PredictionFileError

    assert is_vinbigdata(CLASSES) and is_vinbigdata(range(14)) and not is_vinbigdata(NIH_CLASSES)
    fourteen = [f"finding {i}" for i in range(14)]  # another label set with 14 named classes
    assert not is_vinbigdata(fourteen)
    coco = {"images": [{"id": 1, "width": 10, "height": 10}], "annotations": [],
            "categories": [{"id": i, "name": n} for i, n in enumerate(fourteen)]}
    assert class_names(coco) == tuple(fourteen)
    nih = {**coco, "categories": [{"id": i, "name": n} for i, n in enumerate(NIH_CLASSES)]}
    preds = Predictions("m", None, [1], [{"image_id": 1, "category_id": 12, "bbox": [1, 1, 2, 2], "score": 0.5}])
    with pytest.raises(PredictionFileError, match=r"category id\(s\) \[12\].*8 classes: Atelectasis"):
        evaluate(nih, preds)
    with pytest.raises(PredictionFileError, match="detection #0 is invalid"):
        preds.validate("x", num_classes=len(NIH_CLASSES))
    preds.validate("x", num_classes=14)
