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
    assert [r["target"] for r in doc["rows"]] == MAPPED and doc["n_images"] == 11
    assert doc["unmapped_target"] == ["Pneumonia"] and "ILD" in doc["unmapped_source"]
    # external AP: the mapped predictions scored by the harness's evaluator on the NIH labels
    mapped = Predictions.load(single / "predictions_mapped.json")
    per_class = evaluate(doc["external_labels"], mapped)["per_class"]
    internal = json.loads((runs[0] / "metrics.json").read_text())["per_class"]
    for row in doc["rows"]:
        assert row["external_ap"] == pytest.approx(per_class[row["target"]])
        assert row["external_low"] <= row["external_ap"] <= row["external_high"]
        assert row["external_gt"] == {"Atelectasis": 2, "Cardiomegaly": 1, "Effusion": 2, "Infiltrate": 2,
                                      "Mass": 4, "Nodule": 1, "Pneumothorax": 2}[row["target"]]
        if internal.get(row["source"]) is None:
            assert row["internal_ap"] is None
        else:  # the same model's own validation fold score of the source class
            assert row["internal_ap"] == pytest.approx(internal[row["source"]])
    table = (single / "external_validation.md").read_text()
    assert "| Nodule | Nodule/Mass |" in table and "Pneumonia" in table and "Not scored" in table

    ensemble = tmp_path / "runs" / "ext" / "external" / "ensemble"
    run_app("harness.cli.predict", ["sweep=ext", f"predict.runs=[{runs[0]},{runs[1]}]", f"predict.out_dir={ensemble}",
                                    *external], tmp_path)
    doc = json.loads((ensemble / "external.json").read_text())
    assert doc["model"].startswith("ensemble:") and [r["target"] for r in doc["rows"]] == MAPPED
    assert doc["internal_mean"] is not None  # the members' fold-0 val predictions fused like the external ones

    run_app("harness.cli.report", ["sweep=ext", "report.overlays=0", "report.bootstrap.resamples=50"], tmp_path)
    results = (tmp_path / "runs" / "ext" / "report" / "results.md").read_text()
    assert results.count("## External validation:") == 2 and "on nih-cxr14" in results

